"""The sessions list (docs/compatibility.md#sessions-list): ended interceptions grouped by (session_id,
initiator_id), newest activity first.

With a time or call filter, started/ended, threads and `last_active_at` cover only the matching interceptions
(as Coder groups them), while providers, models, client, metadata, token sums and the last prompt always
describe the whole session. Where the rows come from:
* no time or call filter: the `aigw_sessions` summary the database keeps (schema/summaries.py);
* a time window and/or provider, provider_name, model, client, not narrowed to a user or session: the session
  slices (schema/session_slices.py, read by sessions_from_slices.py);
* a user's or a session's rows: the matching interceptions, grouped here.
Either way only the page's sessions are looked at in detail ("page first, then enrich"); where the database builds
the page's JSON (PostgreSQL: dialects/postgresql_sessions.py) and the caller writes JSON with orjson (`as_json`),
it does so, the same JSON as `_session_details` and `_session_json` build here (tests/storage/test_sessions_json.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Literal, overload

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.errors import InvalidCursor
from aigw_proxy.storage.read.costs import CostSums
from aigw_proxy.storage.read.filters import DEFAULT_LIMIT, InterceptionFilter, filter_conditions, initiator_ids
from aigw_proxy.storage.read.sessions_from_slices import per_session, slice_of, slice_page
from aigw_proxy.storage.read.stored_values import driver_rows, metadata_json, time_json, untyped
from aigw_proxy.storage.schema.session_slices import slice_counts
from aigw_proxy.storage.schema.summaries import sessions as summary
from aigw_proxy.storage.schema.tables import UTCDateTime, interceptions, token_usages, user_prompts, users
from aigw_proxy.storage.timefmt import rfc3339

_i = interceptions.c
_s = summary.c
_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


class SessionCursorNotFound(InvalidCursor):
    """`after_session_id` names no session in the listed set."""


def _summary_conditions(flt: InterceptionFilter) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if flt.visible_to is not None:
        cond.append(_s.initiator_id == flt.visible_to)
    if flt.initiator is not None:
        cond.append(_s.initiator_id.in_(initiator_ids(flt.initiator)))
    if flt.session_id is not None:
        cond.append(_s.session_id == flt.session_id)
    return cond


def _matching(
    flt: InterceptionFilter, *columns: sa.ColumnElement[Any], of_sessions: sa.ColumnElement[bool] | None = None
) -> sa.CTE:
    """The matching interceptions' `columns` (only those `of_sessions` selects if given, a condition on the
    session id: found through the session index, never materialized).

    This path serves a user's or a session's rows (everything else reads the session slices), so they come
    through the initiator or session index and are materialized first: otherwise SQLite would walk the whole
    (session, initiator) index to avoid a sort, instead of the few rows the filter selects."""
    cond = filter_conditions(flt)
    if of_sessions is not None:
        return sa.select(*columns).where(*cond, of_sessions).cte("matching")
    return sa.select(*columns).where(*cond).cte("matching").prefix_with("MATERIALIZED")


def _grouped(flt: InterceptionFilter) -> sa.Subquery:
    """Matching interceptions grouped into sessions: the key and `last_active_at`, which pages are cut by. The
    other per-session columns are computed for the page's sessions only (`_grouped_totals`)."""
    m = _matching(flt, _i.session_id, _i.initiator_id, _i.started_at, _i.last_prompt_at).c
    return (
        sa.select(m.session_id, m.initiator_id, *per_session(m, "last_active_at"))
        .group_by(m.session_id, m.initiator_id)
        .subquery("grouped")
    )


async def _grouped_totals(
    conn: AsyncConnection, flt: InterceptionFilter, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """started_at, ended_at, interceptions and threads over the matching interceptions of a page of sessions."""
    m = _matching(flt, _i.session_id, _i.initiator_id, _i.started_at, _i.ended_at, _i.thread_root_id,
                  of_sessions=backend_of(conn).in_list(_i.session_id, sorted({k[0] for k in keys}))).c
    rows = await conn.execute(
        sa.select(m.session_id, m.initiator_id, *per_session(m, "started_at", "ended_at", "interceptions", "threads"))
        .group_by(m.session_id, m.initiator_id)
    )
    return {(r.session_id, r.initiator_id): r for r in rows}


def _source(flt: InterceptionFilter) -> tuple[Any, list[sa.ColumnElement[bool]]]:
    """(the selectable sessions come from, its conditions)."""
    if flt.by_attribute:
        return _grouped(flt), []
    return summary, _summary_conditions(flt)


def _count_query(flt: InterceptionFilter) -> sa.Select[Any]:
    if flt.by_attribute:  # distinct keys: no aggregate per session needed just to count them
        m = _matching(flt, _i.session_id, _i.initiator_id).c
        keys = sa.select(m.session_id, m.initiator_id).distinct().subquery()
        return sa.select(sa.func.count()).select_from(keys)
    cond = _summary_conditions(flt)
    if not cond:  # every session: the slice counts hold the number (counting the summary reads 400k rows)
        whole = sa.select(slice_counts.c.sessions).where(slice_counts.c.kind == "all").scalar_subquery()
        return sa.select(sa.func.coalesce(whole, 0))
    return sa.select(sa.func.count()).select_from(summary).where(*cond)


async def list_sessions(
    db: Database,
    flt: InterceptionFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    after_session_id: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Sessions ordered by `last_active_at DESC, session_id DESC`; keyset `after_session_id` or `offset`."""
    return (await sessions_page(db, flt, limit=limit, after_session_id=after_session_id, offset=offset,
                                count=False))[1]


@overload
async def sessions_page(
    db: Database, flt: InterceptionFilter | None = None, *, limit: int = DEFAULT_LIMIT,
    after_session_id: str | None = None, offset: int = 0, count: bool = True, as_json: Literal[False] = False,
) -> tuple[int | None, list[dict[str, Any]]]: ...
@overload
async def sessions_page(
    db: Database, flt: InterceptionFilter | None = None, *, limit: int = DEFAULT_LIMIT,
    after_session_id: str | None = None, offset: int = 0, count: bool = True, as_json: bool,
) -> tuple[int | None, list[dict[str, Any] | orjson.Fragment]]: ...
async def sessions_page(
    db: Database,
    flt: InterceptionFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    after_session_id: str | None = None,
    offset: int = 0,
    count: bool = True,
    as_json: bool = False,
) -> tuple[int | None, list[dict[str, Any] | orjson.Fragment]] | tuple[int | None, list[dict[str, Any]]]:
    """(total matching sessions, ignoring pagination, or None without `count`; one page of sessions).

    `as_json` (for orjson output only): where the database builds the page's JSON (PostgreSQL), each session is an
    `orjson.Fragment` of its JSON text, the same JSON as the dict."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    if after_session_id is not None and offset:
        raise ValueError("cannot use both after_session_id and offset pagination")
    flt = flt or InterceptionFilter()
    if flt.by_attribute:
        async with db.reader.connect() as conn:
            plan = await slice_of(conn, flt)
            if plan is not None:
                try:
                    total, page = await slice_page(conn, flt, plan, limit=limit or DEFAULT_LIMIT,
                                                   after_session_id=after_session_id, offset=offset, count=count)
                except LookupError:
                    raise _cursor_not_found(after_session_id) from None
                return total, await _enriched(conn, page, as_json=as_json, whole=False)
    return await _grouped_page(db, flt, limit=limit, after_session_id=after_session_id, offset=offset, count=count,
                               as_json=as_json)


def _cursor_not_found(session_id: str | None) -> SessionCursorNotFound:
    return SessionCursorNotFound(f"after_session_id: session {json.dumps(session_id)} not found")


async def _grouped_page(
    db: Database,
    flt: InterceptionFilter,
    *,
    limit: int,
    after_session_id: str | None,
    offset: int,
    count: bool,
    as_json: bool = False,
) -> tuple[int | None, list[Any]]:
    """`sessions_page` from the session summary (no attribute or time filter) or by grouping the matching
    interceptions. Also the reference the sliced path is tested against."""
    source, cond = _source(flt)
    c = source.c
    async with db.reader.connect() as conn:
        if after_session_id is not None:
            cursor = (
                await conn.execute(
                    sa.select(c.last_active_at)
                    .where(*cond, c.session_id == after_session_id)
                    .order_by(c.last_active_at.desc())
                    .limit(1)
                )
            ).first()
            if cursor is None:
                raise _cursor_not_found(after_session_id)
            cond = [*cond, sa.tuple_(c.last_active_at, c.session_id) < sa.tuple_(
                sa.literal(cursor.last_active_at, UTCDateTime), sa.literal(after_session_id))]
        columns = [c.session_id, c.initiator_id, *untyped(c.last_active_at)]  # as stored: see _time
        if not flt.by_attribute:
            columns += [*untyped(c.started_at, c.ended_at), c.interceptions, c.threads]
        page: list[Any] = list(
            (
                await conn.execute(
                    sa.select(*columns)
                    .where(*cond)
                    .order_by(c.last_active_at.desc(), c.session_id.desc())
                    .limit(limit or DEFAULT_LIMIT)
                    .offset(offset)
                )
            ).all()
        )
        total = int((await conn.execute(_count_query(flt))).scalar_one()) if count else None
        if not page:
            return total, []
        if flt.by_attribute:
            keys = [(r.session_id, r.initiator_id) for r in page]
            totals = await _grouped_totals(conn, flt, keys)
            page = [SimpleNamespace(**{**r._mapping, **totals[k]._mapping}) for r, k in zip(page, keys, strict=True)]
        return total, await _enriched(conn, page, as_json=as_json, whole=not flt.by_attribute)


async def _enriched(conn: AsyncConnection, page: Sequence[Any], *, as_json: bool, whole: bool) -> list[Any]:
    """The page's rows (the listed per-session columns) as the API's sessions: dicts, or with `as_json` JSON
    fragments where the database builds them. `whole`: the rows are session summary rows (their span is the
    whole session's)."""
    if not page:
        return []
    if as_json:
        rows = [(r.session_id, r.initiator_id, r.started_at, r.ended_at, int(r.threads or 0), int(r.interceptions),
                 r.last_active_at) for r in page]
        span = (min(r[2] for r in rows), max(r[3] for r in rows)) if whole else None
        built = await backend_of(conn).session_page_json(conn, rows, span)
        # (A session whose summary row went between the statements, as a purge can: its text is NULL. Python
        # builds such a page, as it would without `as_json`.)
        if built is not None and all(head is not None for head, *_ in built):
            return [orjson.Fragment(f"{head}{orjson.dumps(CostSums(*sums).json()).decode()}{tail}")
                    for head, *sums, tail in built]
    details = await _session_details(conn, [(r.session_id, r.initiator_id) for r in page])
    return [_session_json(r, details[(r.session_id, r.initiator_id)]) for r in page]


async def _session_details(conn: AsyncConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Whole-session facts for a page of sessions: providers, models, first client and metadata, token sums,
    cost, last prompt, the user (joined to the summary rows: a 1000-value IN list of user ids costs SQLAlchemy
    milliseconds to expand)."""
    wanted = set(keys)
    out: dict[tuple[str, str], dict[str, Any]] = {
        k: {"providers": set(), "models": set(), "first": None, "tokens": {}, "last_prompt": None, "username": None}
        for k in keys
    }
    session_ids = sorted({k[0] for k in keys})
    backend = backend_of(conn)
    spans: dict[str, tuple[Any, Any]] = {}  # session id -> (first start, last end) over its users on the page
    for sid, uid, username, first_start, last_end, *sums in await driver_rows(
        conn, f"SELECT s.session_id, s.initiator_id, u.username, s.started_at, s.ended_at, "
        f"{', '.join('s.' + t for t in _TOKENS)} FROM {summary.name} s LEFT JOIN {users.name} u "
        "ON u.id = s.initiator_id WHERE s.session_id IN_VALUES", session_ids
    ):
        if (sid, uid) in wanted:
            out[(sid, uid)]["tokens"] = dict(zip(_TOKENS, map(int, sums), strict=True))
            out[(sid, uid)]["username"] = username
            lo, hi = spans.get(sid, (first_start, last_end))
            spans[sid] = (min(lo, first_start), max(hi, last_end))
    page = [(sid, *spans[sid]) for sid in session_ids if sid in spans]

    # One statement for the rest (a page of 1000 sessions reads ~2500 interceptions, their prompts and token rows):
    # the page's calls, each session's newest prompt and its cost sums, as rows of three kinds. The calls are
    # plain driver tuples, start times compared as stored (SQLite's fixed-width text is in time order,
    # PostgreSQL's are datetimes), metadata kept as the driver returned it until each session's first call is
    # known.
    costs: dict[tuple[str, str], CostSums] = {}
    for kind, sid, uid, iid, text, model, client, started_at, metadata, equivalent, n, unpriced, micros in (
            await backend.rows_of_sessions(conn, _PAGE_FACTS.replace("JOIN_TOKENS", backend.child_join("t", "c"))
                                           .replace("JOIN_PROMPTS", backend.child_join("p", "c")), page)):
        d = out.get((sid, uid))
        if d is None:
            continue
        if kind == 1:  # a call: text is its provider
            d["providers"].add(text)
            d["models"].add(model)
            first = d["first"]
            if first is None or (started_at, iid) < (first[0], first[1]):
                d["first"] = (started_at, iid, client or "Unknown", metadata)
        elif kind == 2:  # the newest prompt
            d["last_prompt"] = text
        else:  # token rows of one kind (API or API-equivalent)
            costs.setdefault((sid, uid), CostSums()).add(bool(equivalent), int(n), int(unpriced), int(micros))
    for k, d in out.items():
        d["metadata"] = metadata_json(d["first"][3]) if d["first"] is not None else {}
        if k in costs:
            d["cost"] = costs[k]
    return out


# The page's sessions' ended calls (kind 1), each session's newest prompt (2) and its token rows' cost by kind (3)
# (Backend.rows_of_sessions): the calls are read once, through the session index, and the child rows joined to
# them; metadata as text (decoded for each session's first call only). NULL columns are typed in the first
# branch, which PostgreSQL types the union's columns by.
_PAGE_FACTS = f"""
    WITH calls AS MATERIALIZED (
        SELECT i.id, i.session_id, i.initiator_id, i.provider, i.model, i.client, i.started_at,
               CAST(i.metadata AS TEXT) AS metadata
        FROM {interceptions.name} i WHERE i.ended_at IS NOT NULL AND SESSIONS(i) PAGE_SPAN(i.started_at)),
    prompts AS (
        SELECT session_id, initiator_id, prompt FROM (
            SELECT c.session_id, c.initiator_id, p.prompt,
                   row_number() OVER (PARTITION BY c.session_id, c.initiator_id
                                      ORDER BY p.created_at DESC, p.id DESC) AS rank
            FROM calls c JOIN {user_prompts.name} p ON JOIN_PROMPTS WHERE 1 = 1 PAGE_SPAN(p.interception_started_at)
        ) AS ranked WHERE rank = 1),
    costs AS (
        SELECT c.session_id, c.initiator_id, t.api_equivalent, count(*) AS n, count(*) - count(t.cost_micros) AS u,
               COALESCE(sum(t.cost_micros), 0) AS m
        FROM calls c JOIN {token_usages.name} t ON JOIN_TOKENS WHERE 1 = 1 PAGE_SPAN(t.interception_started_at)
        GROUP BY c.session_id, c.initiator_id, t.api_equivalent)
    SELECT 1, session_id, initiator_id, id, provider, model, client, started_at, metadata,
           CAST(NULL AS BOOLEAN), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT) FROM calls
    UNION ALL
    SELECT 2, session_id, initiator_id, NULL, prompt, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM prompts
    UNION ALL
    SELECT 3, session_id, initiator_id, NULL, NULL, NULL, NULL, NULL, NULL, api_equivalent, n, u, m FROM costs"""


def _time(value: Any) -> str | None:
    """RFC 3339 of a timestamp read as stored (text) or through the column type (a datetime)."""
    return time_json(value) if isinstance(value, str) else rfc3339(value)


def _session_json(r: Any, d: dict[str, Any]) -> dict[str, Any]:
    first = d["first"]
    return {
        "id": r.session_id,
        "initiator": {"id": r.initiator_id, "username": d["username"]},
        "providers": sorted(d["providers"]),
        "models": sorted(d["models"]),
        "client": first[2] if first is not None else None,
        "metadata": d["metadata"],
        "started_at": _time(r.started_at),
        "ended_at": _time(r.ended_at),
        "threads": int(r.threads or 0),
        "interceptions": int(r.interceptions),
        "token_usage_summary": {t: d["tokens"].get(t, 0) for t in _TOKENS},
        "cost": d.get("cost", CostSums()).json(),
        "last_prompt": d["last_prompt"],
        "last_active_at": _time(r.last_active_at),
    }
