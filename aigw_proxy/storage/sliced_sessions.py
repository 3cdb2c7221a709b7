"""A page of sessions filtered by at most one attribute and/or a time window, read from the session slices
(session_slices.py) instead of grouping the matching interceptions.

For a window [after, before] on `started_at` a slice is either
* inside: its first start ≥ after and its last start ≤ before — every interception in it matches, so the slice
  row *is* the grouped answer (first/last time, counts, `last_active_at`);
* outside: no start in the window — it does not match; or
* straddling: starts on both sides of a window edge. Only these few (the sessions active at the moment of an
  edge) are grouped from their interceptions.
Inside slices are paged straight from the (last_active_at DESC, session_id DESC) index and merged with the
straddlers; the count is the inside slices counted from the window index plus the straddlers that match. So a
filter over all time, or over a month of a provider with half the traffic, costs a page and an index count.

The queries name their index (INDEXED BY): SQLite without statistics for the table could otherwise page through
the window index and sort a month of sessions.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.queries import InterceptionFilter, filter_conditions
from aigw_proxy.storage.schema import UTCDateTime, interceptions
from aigw_proxy.storage.session_slices import PAGE_INDEX, WINDOW_INDEX
from aigw_proxy.storage.summaries import interception_days

_i = interceptions.c
_ROW_TYPES = {"last_active_at": UTCDateTime, "started_at": UTCDateTime, "ended_at": UTCDateTime,
              "interceptions": sa.Integer, "threads": sa.Integer}
_ROW_COLUMNS = "session_id, initiator_id, last_active_at, started_at, ended_at, interceptions, threads"


async def slice_of(conn: AsyncConnection, flt: InterceptionFilter) -> tuple[str, str] | None:
    """The slice a filter can be answered from: (kind, value); None when it names a user or session (their rows
    are few: grouped directly) or two attributes no slice holds the intersection of.

    Two or more attributes are answered from one of their slices when it implies the others: every ended
    interception with that value has the other values too (a model names its provider, say). The daily counts
    tell, in the same snapshot: that value's count equals the count with all of them."""
    if flt.by_user:
        return None
    named = [(kind, value) for kind, value in (("provider", flt.provider), ("provider_name", flt.provider_name),
                                               ("model", flt.model), ("client", flt.client)) if value is not None]
    if len(named) <= 1:
        return named[0] if named else ("all", "")
    d = interception_days.c
    each = [d[kind] == value for kind, value in named]
    sums = [sa.func.coalesce(sa.func.sum(sa.case((test, d.interceptions), else_=0)), 0) for test in each]
    counts = (await conn.execute(sa.select(
        *sums, sa.func.coalesce(sa.func.sum(sa.case((sa.and_(*each), d.interceptions), else_=0)), 0)
    ).where(sa.or_(*each)))).one()
    *alone, together = (int(n) for n in counts)
    for (kind, value), n in sorted(zip(named, alone, strict=True), key=lambda item: item[1]):
        if n == together:
            return kind, value
    return None


class _Window:
    """The SQL conditions on slice rows for the filter's window; `params` binds them."""

    def __init__(self, kind: str, value: str, after: datetime | None, before: datetime | None) -> None:
        self.after, self.before = after, before
        self.params: dict[str, Any] = {"kind": kind, "value": value, "after": after, "before": before}
        inside = ["kind = :kind", "value = :value"]
        # last_active_at ≥ started_at ≥ after (a prompt is stamped when its call ends): bounds the page index walk
        # for windows that match fewer sessions than a page.
        if after is not None:
            inside += ["started_at >= :after", "last_active_at >= :after"]
        if before is not None:
            inside.append("last_started_at <= :before")
        self.inside = " AND ".join(inside)
        window = ["kind = :kind", "value = :value"]  # the same set, as a range of the window index
        if after is not None:
            window += ["last_started_at >= :after", "started_at >= :after"]
        if before is not None:
            window.append("last_started_at <= :before")
        self.inside_by_window = " AND ".join(window)

    def text(self, sql: str, **extra: Any) -> sa.TextClause:
        params = {**self.params, **extra}
        clause = sa.text(sql).bindparams(*(sa.bindparam(k, type_=UTCDateTime) for k in ("after", "before", "at")
                                           if k in params and f":{k}" in sql))
        return clause.bindparams(**{k: v for k, v in params.items() if f":{k}" in sql})


async def _straddlers(conn: AsyncConnection, flt: InterceptionFilter, w: _Window) -> list[Any]:
    """The straddling slices, grouped over their matching interceptions (those with none are dropped)."""
    edges = []
    if w.after is not None:
        edges.append("last_started_at >= :after AND started_at < :after")
    if w.before is not None:
        edges.append("last_started_at > :before AND started_at <= :before")
    keys: set[tuple[str, str]] = set()
    for edge in edges:
        rows = await conn.execute(w.text(
            f"SELECT session_id, initiator_id FROM aigw_session_slices INDEXED BY {WINDOW_INDEX} "
            f"WHERE kind = :kind AND value = :value AND {edge}"))
        keys.update((r.session_id, r.initiator_id) for r in rows)
    if not keys:
        return []
    m = (sa.select(_i.session_id, _i.initiator_id, _i.started_at, _i.ended_at, _i.thread_root_id, _i.last_prompt_at)
         .where(*filter_conditions(flt), _i.session_id.in_(sorted({k[0] for k in keys})))
         .subquery("matching").c)
    grouped = await conn.execute(
        sa.select(
            m.session_id,
            m.initiator_id,
            sa.type_coerce(sa.func.coalesce(sa.func.max(m.last_prompt_at), sa.func.min(m.started_at)),
                           UTCDateTime).label("last_active_at"),
            sa.type_coerce(sa.func.min(m.started_at), UTCDateTime).label("started_at"),
            sa.type_coerce(sa.func.max(m.ended_at), UTCDateTime).label("ended_at"),
            sa.func.count().label("interceptions"),
            sa.func.sum(sa.case((m.thread_root_id.is_(None), 1), else_=0)).label("threads"),
        ).group_by(m.session_id, m.initiator_id)
    )
    return [r for r in grouped if (r.session_id, r.initiator_id) in keys]


def _order_key(r: Any) -> tuple[datetime, str]:
    return (r.last_active_at, r.session_id)


async def slice_page(
    conn: AsyncConnection,
    flt: InterceptionFilter,
    kind: str,
    value: str,
    *,
    limit: int,
    after_session_id: str | None,
    offset: int,
    count: bool,
) -> tuple[int | None, list[Any]]:
    """(matching sessions, or None without `count`; the page) ordered by last_active_at, session_id descending.
    Rows carry the sessions list's per-session columns over the matching interceptions. Raises LookupError for
    an `after_session_id` that is not in the listed set."""
    after, before = flt.started_after, flt.started_before
    if after is not None and before is not None and after > before:
        if after_session_id is not None:
            raise LookupError(after_session_id)
        return (0 if count else None), []
    w = _Window(kind, value, after, before)
    straddlers = await _straddlers(conn, flt, w)
    listed_straddlers = straddlers  # those after the cursor, if any

    cursor_cond = ""
    extra: dict[str, Any] = {}
    if after_session_id is not None:
        found = [r for r in straddlers if r.session_id == after_session_id]
        found += list(await conn.execute(w.text(
            f"SELECT {_ROW_COLUMNS} FROM aigw_session_slices INDEXED BY {PAGE_INDEX} "
            f"WHERE {w.inside} AND session_id = :sid", sid=after_session_id).columns(**_ROW_TYPES)))
        if not found:
            raise LookupError(after_session_id)
        at = max(found, key=_order_key).last_active_at
        cursor_cond = " AND (last_active_at, session_id) < (:at, :sid)"
        extra = {"at": at, "sid": after_session_id}
        listed_straddlers = [r for r in straddlers if _order_key(r) < (at, after_session_id)]

    inside = list(await conn.execute(w.text(
        f"SELECT {_ROW_COLUMNS} FROM aigw_session_slices INDEXED BY {PAGE_INDEX} "
        f"WHERE {w.inside}{cursor_cond} ORDER BY last_active_at DESC, session_id DESC LIMIT :n",
        n=offset + limit, **extra).columns(**_ROW_TYPES)))
    merged = heapq.merge(inside, sorted(listed_straddlers, key=_order_key, reverse=True), key=_order_key,
                         reverse=True)
    page = [SimpleNamespace(**r._mapping) for r in list(merged)[offset:offset + limit]]

    total = None
    if count:
        if after is None and before is None:  # the whole slice
            n_inside = (await conn.execute(w.text(
                "SELECT sessions FROM aigw_session_slice_counts WHERE kind = :kind AND value = :value"))).scalar()
        else:
            n_inside = (await conn.execute(w.text(
                f"SELECT count(*) FROM aigw_session_slices INDEXED BY {WINDOW_INDEX} WHERE {w.inside_by_window}"
            ))).scalar_one()
        total = int(n_inside or 0) + len(straddlers)
    return total, page
