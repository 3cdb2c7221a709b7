"""Reading interceptions back: reader engine, one snapshot."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.errors import InvalidCursor
from aigw_proxy.storage.schema import (
    interceptions,
    model_thoughts,
    token_usages,
    tool_usages,
    user_prompts,
    users,
)
from aigw_proxy.storage.timefmt import rfc3339

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class InterceptionFilter:
    """All fields optional; set fields are ANDed. Times must be timezone-aware."""

    initiator: str | None = None  # user id or username
    provider: str | None = None  # provider type (anthropic | openai | copilot)
    provider_name: str | None = None
    model: str | None = None
    client: str | None = None
    session_id: str | None = None
    started_after: datetime | None = None  # inclusive
    started_before: datetime | None = None  # inclusive
    visible_to: str | None = None  # a member's user id: only their own records (API roles); None: everything

    @property
    def by_user(self) -> bool:
        """Narrowed to one user's or one session's rows: small enough to count and group directly."""
        return self.initiator is not None or self.visible_to is not None or self.session_id is not None

    @property
    def by_attribute(self) -> bool:
        """Narrowed by time or by what was called (needs the per-interception rows, not the summaries)."""
        return any(
            v is not None
            for v in (self.provider, self.provider_name, self.model, self.client, self.started_after,
                      self.started_before)
        )


def initiator_ids(value: str) -> sa.Select[tuple[str]]:
    """The user ids `value` may name: itself (an id, possibly of a deleted user) or a username's id."""
    return sa.select(sa.literal(value, sa.String)).union(sa.select(users.c.id).where(users.c.username == value))


def filter_conditions(flt: InterceptionFilter) -> list[sa.ColumnElement[bool]]:
    i = interceptions.c
    cond: list[sa.ColumnElement[bool]] = [i.ended_at.is_not(None)]
    if flt.visible_to is not None:
        cond.append(i.initiator_id == flt.visible_to)
    if flt.initiator is not None:
        cond.append(i.initiator_id.in_(initiator_ids(flt.initiator)))
    if flt.provider is not None:
        cond.append(i.provider == flt.provider)
    if flt.provider_name is not None:
        cond.append(i.provider_name == flt.provider_name)
    if flt.model is not None:
        cond.append(i.model == flt.model)
    if flt.client is not None:
        cond.append(sa.func.coalesce(i.client, "Unknown") == flt.client)
    if flt.session_id is not None:
        cond.append(i.session_id == flt.session_id)
    if flt.started_after is not None:
        cond.append(i.started_at >= flt.started_after)
    if flt.started_before is not None:
        cond.append(i.started_at <= flt.started_before)
    return cond


async def count_interceptions(db: Database, flt: InterceptionFilter | None = None) -> int:
    """How many ended interceptions match (ignores pagination)."""
    flt = flt or InterceptionFilter()
    async with db.reader.connect() as conn:
        if flt.by_user:  # a user has few enough rows to count them through an index
            query = sa.select(sa.func.count()).select_from(interceptions).where(*filter_conditions(flt))
            return int((await conn.execute(query)).scalar_one())
        from aigw_proxy.storage.counts import count_by_days  # it builds on this module's filters

        return await count_by_days(conn, flt)


async def list_interceptions(
    db: Database,
    flt: InterceptionFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    after_id: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Ended interceptions, newest first (`started_at DESC, id DESC`), with their children, JSON-ready.

    Pagination: keyset with `after_id` (the last id of the previous page; unknown → `InvalidCursor`) or
    `offset`, not both. `limit` 0 means the default (100).
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    if after_id is not None and offset:
        raise ValueError("cannot use both after_id and offset pagination")
    limit = limit or DEFAULT_LIMIT
    i = interceptions.c
    cond = filter_conditions(flt or InterceptionFilter())
    async with db.reader.connect() as conn:
        if after_id is not None:
            cursor = (
                await conn.execute(sa.select(i.started_at).where(i.id == after_id, *filter_conditions(
                    InterceptionFilter(visible_to=(flt or InterceptionFilter()).visible_to))))
            ).first()
            if cursor is None:
                raise InvalidCursor(f"invalid pagination cursor: no ended interception with id {after_id!r}")
            # A row-value comparison: SQLite seeks the (started_at, id) index to it; an OR would scan.
            cond.append(sa.tuple_(i.started_at, i.id) < sa.tuple_(
                sa.literal(cursor.started_at, i.started_at.type), sa.literal(after_id, i.id.type)))
        query = (
            sa.select(interceptions, users.c.username)
            .select_from(interceptions.outerjoin(users, users.c.id == i.initiator_id))
            .where(*cond)
            .order_by(i.started_at.desc(), i.id.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        children = await children_of([r.id for r in rows], conn)
    return [_interception_json(r, children) for r in rows]


async def children_of(ids: list[str], conn: AsyncConnection) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"token_usages": [], "user_prompts": [], "tool_usages": [], "model_thoughts": []}
    )
    for key, table, shape in (
        ("token_usages", token_usages, _token_usage_json),
        ("user_prompts", user_prompts, _user_prompt_json),
        ("tool_usages", tool_usages, _tool_usage_json),
        ("model_thoughts", model_thoughts, _model_thought_json),
    ):
        rows = await conn.execute(
            sa.select(table)
            .where(table.c.interception_id.in_(ids))
            .order_by(table.c.created_at.asc(), table.c.id.asc())
        )
        for row in rows:
            out[row.interception_id][key].append(shape(row))
    return out


def _interception_json(r: Any, children: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    kids = children[r.id]
    return {
        "id": r.id,
        "initiator": {"id": r.initiator_id, "username": r.username},
        "api_key_id": r.api_key_id,
        "provider": r.provider,
        "provider_name": r.provider_name,
        "model": r.model,
        "client": r.client or "Unknown",
        "client_session_id": r.client_session_id,
        "session_id": r.session_id,
        "thread_parent_id": r.thread_parent_id,
        "thread_root_id": r.thread_root_id,
        "status": r.status,
        "upstream_status": r.upstream_status,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "credential_kind": r.credential_kind,
        "credential_hint": r.credential_hint,
        "started_at": rfc3339(r.started_at),
        "ended_at": rfc3339(r.ended_at),
        "metadata": r.metadata or {},
        "token_usages": kids["token_usages"],
        "user_prompts": kids["user_prompts"],
        "tool_usages": kids["tool_usages"],
        "model_thoughts": kids["model_thoughts"],
    }


def _token_usage_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cache_read_input_tokens": r.cache_read_input_tokens,
        "cache_write_input_tokens": r.cache_write_input_tokens,
        "metadata": r.metadata or {},
        "created_at": rfc3339(r.created_at),
    }


def _user_prompt_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        "prompt": r.prompt,
        "metadata": r.metadata or {},
        "created_at": rfc3339(r.created_at),
    }


def _tool_usage_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "interception_id": r.interception_id,
        "provider_response_id": r.provider_response_id,
        "provider_tool_call_id": r.provider_tool_call_id,
        "provider_item_id": r.provider_item_id,
        "tool": r.tool,
        "input": r.input,
        "injected": bool(r.injected),
        "server_url": r.server_url,
        "invocation_error": r.invocation_error,
        "metadata": r.metadata or {},
        "created_at": rfc3339(r.created_at),
    }


def _model_thought_json(r: Any) -> dict[str, Any]:
    return {
        "interception_id": r.interception_id,
        "content": r.content,
        "metadata": r.metadata or {},
        "created_at": rfc3339(r.created_at),
    }
