"""One session in detail (docs/compatibility.md#session-detail): its threads in order, each with its prompt, model,
token usage and agentic actions (the model's thinking and tool calls, one action per model call).

A thread is a root interception (`thread_root_id IS NULL`) plus every interception whose `thread_root_id` is that
root. Threads page by `(started_at, id)` of their roots: `after_id` for the next page, `before_id` for the page
before (the threads just before the cursor), `limit` 1..200 (default 50).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.errors import InvalidCursor
from aigw_proxy.storage.read.costs import CostSums, cost_of_rows, session_costs
from aigw_proxy.storage.read.interceptions import children_of
from aigw_proxy.storage.schema.summaries import sessions as summary
from aigw_proxy.storage.schema.tables import UTCDateTime, interceptions, token_usages, users
from aigw_proxy.storage.timefmt import rfc3339

DEFAULT_THREADS = 50
MAX_THREADS = 200
_i = interceptions.c
_s = summary.c
_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


async def get_session(
    db: Database,
    session_id: str,
    *,
    visible_to: str | None = None,
    after_id: str | None = None,
    before_id: str | None = None,
    limit: int = DEFAULT_THREADS,
) -> dict[str, Any] | None:
    """The session with one page of threads, or None if the caller can see no session with this id."""
    if after_id is not None and before_id is not None:
        raise ValueError("cannot use both after_id and before_id")
    async with db.reader.connect() as conn:
        head = await _session_key(conn, session_id, visible_to)
        if head is None:
            return None
        mine = [_i.session_id == session_id, _i.initiator_id == head.initiator_id, _i.ended_at.is_not(None),
                # its calls all started between its first start and its last end: the partitions to look in
                *backend_of(conn).partition_range(_i.started_at, head.started_at, head.ended_at)]
        roots = sa.select(_i.id, _i.started_at).where(*mine, _i.thread_root_id.is_(None))
        cursor_id = after_id or before_id
        if cursor_id is not None:
            cursor = (await conn.execute(sa.select(_i.started_at).where(*mine, _i.id == cursor_id))).first()
            if cursor is None:
                raise InvalidCursor(f"invalid pagination cursor: no interception {cursor_id!r} in this session")
            if after_id is not None:
                roots = roots.where(_keyset_after(cursor.started_at, cursor_id))
            else:
                roots = roots.where(_keyset_before(cursor.started_at, cursor_id))
        page: Sequence[sa.Row[str, datetime]]
        if before_id is not None:  # the threads just before the cursor, still returned oldest first
            page = list(reversed((await conn.execute(
                roots.order_by(_i.started_at.desc(), _i.id.desc()).limit(limit))).all()))
        else:
            page = (await conn.execute(roots.order_by(_i.started_at, _i.id).limit(limit))).all()
        root_ids = [r.id for r in page]
        rows = (await conn.execute(
            sa.select(interceptions)
            .where(*mine, backend_of(conn).in_list(sa.func.coalesce(_i.thread_root_id, _i.id), root_ids))
            .order_by(_i.started_at, _i.id)
        )).all() if root_ids else []
        kids = await children_of([r.id for r in rows], conn,
                                 (min(r.started_at for r in rows), max(r.started_at for r in rows)) if rows else None)
        everything = (await conn.execute(
            sa.select(_i.id, _i.provider, _i.model, _i.client, _i.started_at).where(*mine)
            .order_by(_i.started_at, _i.id)
        )).all()
        first_metadata = (await conn.execute(
            sa.select(_i.metadata).where(_i.id == everything[0].id, *backend_of(conn).partition_range(
                _i.started_at, everything[0].started_at, everything[0].started_at)))).scalar() if everything else None
        extra = await _token_metadata_sums(conn, session_id, head)
        cost = (await session_costs(conn, [(session_id, head.started_at, head.ended_at)], head.initiator_id)).get(
            (session_id, head.initiator_id))
        username = (await conn.execute(sa.select(users.c.username).where(users.c.id == head.initiator_id))).scalar()

    threads = _by_key(rows, lambda r: r.thread_root_id or r.id)
    first = everything[0] if everything else None
    return {
        "id": session_id,
        "initiator": {"id": head.initiator_id, "username": username},
        "providers": sorted({r.provider for r in everything}),
        "models": sorted({r.model for r in everything}),
        "client": (first.client or "Unknown") if first is not None else None,
        "metadata": first_metadata or {},
        "page_started_at": rfc3339(min(r.started_at for r in rows)) if rows else None,
        "page_ended_at": rfc3339(max(r.ended_at for r in rows)) if rows else None,
        "started_at": rfc3339(head.started_at),
        "ended_at": rfc3339(head.ended_at),
        "threads_total": int(head.threads),
        "token_usage_summary": {**{t: int(getattr(head, t)) for t in _TOKENS}, "metadata": extra},
        "cost": (cost or CostSums()).json(),
        "threads": [_thread_json(threads[rid], kids) for rid in root_ids if threads.get(rid)],
    }


def _usage(token_rows: list[dict[str, Any]]) -> dict[str, Any]:
    extra: Counter[str] = Counter()
    for t in token_rows:
        for k, v in (t["metadata"] or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                extra[k] += int(v)
    return {**{k: sum(int(t[k]) for t in token_rows) for k in _TOKENS}, "metadata": dict(extra)}


def _thread_json(rows: list[Any], kids: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    root = rows[0]
    prompts = kids[root.id]["user_prompts"]
    actions = []
    for r in rows:
        k = kids[r.id]
        if not k["tool_usages"] and not k["model_thoughts"]:
            continue
        actions.append({
            "interception_id": r.id,
            "model": r.model,
            "token_usage": _usage(k["token_usages"]),
            "cost": cost_of_rows(k["token_usages"]),
            "thinking": [{"text": t["content"], "source": t["metadata"].get("source")} for t in k["model_thoughts"]],
            "tool_calls": [
                {key: t[key] for key in ("id", "interception_id", "provider_response_id", "provider_tool_call_id",
                                         "server_url", "tool", "injected", "input", "invocation_error", "metadata",
                                         "created_at")}
                for t in k["tool_usages"]
            ],
        })
    token_rows = [t for r in rows for t in kids[r.id]["token_usages"]]
    return {
        "id": root.id,
        "prompt": prompts[0]["prompt"] if prompts else None,
        "model": root.model,
        "provider": root.provider,
        "provider_name": root.provider_name,
        "client": root.client or "Unknown",
        "credential_kind": root.credential_kind,
        "credential_hint": root.credential_hint,
        "status": "failed" if any(r.status == "failed" for r in rows) else "completed",
        "started_at": rfc3339(root.started_at),
        "ended_at": rfc3339(max(r.ended_at for r in rows)),
        "interceptions": len(rows),
        "token_usage": _usage(token_rows),
        "cost": cost_of_rows(token_rows),
        "agentic_actions": actions,
    }


async def _session_key(conn: AsyncConnection, session_id: str, visible_to: str | None) -> Any:
    """The summary row of a session visible to the caller (the most recently active one if several users share
    the id), or None."""
    cond = [_s.session_id == session_id]
    if visible_to is not None:
        cond.append(_s.initiator_id == visible_to)
    query = sa.select(summary).where(*cond).order_by(_s.last_active_at.desc(), _s.initiator_id).limit(1)
    return (await conn.execute(query)).first()


async def _token_metadata_sums(conn: AsyncConnection, session_id: str, head: Any) -> dict[str, int]:
    """Extra token kinds (token usage `metadata`) summed over a whole session (`head`: its summary row)."""
    backend = backend_of(conn)
    each, key, number, is_number = backend.json_number_items(token_usages.c.metadata)
    t = token_usages.c
    rows = await conn.execute(
        sa.select(key, sa.func.sum(number))
        .select_from(interceptions.join(token_usages, t.interception_id == _i.id).join(each, sa.true()))
        .where(_i.session_id == session_id, _i.initiator_id == head.initiator_id, _i.ended_at.is_not(None), is_number,
               *backend.partition_range(_i.started_at, head.started_at, head.ended_at),
               *backend.partition_range(t.interception_started_at, head.started_at, head.ended_at))
        .group_by(key)
    )
    return {k: int(v) for k, v in rows}


def _keyset_after(started_at: datetime, iid: str) -> sa.ColumnElement[bool]:
    return sa.tuple_(_i.started_at, _i.id) > sa.tuple_(sa.literal(started_at, UTCDateTime), sa.literal(iid))


def _keyset_before(started_at: datetime, iid: str) -> sa.ColumnElement[bool]:
    return sa.tuple_(_i.started_at, _i.id) < sa.tuple_(sa.literal(started_at, UTCDateTime), sa.literal(iid))


def _by_key[T](rows: Sequence[T], key: Callable[[T], Any]) -> dict[Any, list[T]]:
    grouped: dict[Any, list[T]] = defaultdict(list)
    for r in rows:
        grouped[key(r)].append(r)
    return grouped
