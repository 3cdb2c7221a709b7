"""A page of sessions filtered by call attributes and/or a time window, read from the session slices
(session_slices.py) instead of grouping the matching interceptions.

For a window [after, before] on `started_at` a slice is either
* inside: its first start ≥ after and its last start ≤ before — every interception in it matches, so the slice
  row *is* the grouped answer (first/last time, counts, `last_active_at`);
* outside: no start in the window — it does not match; or
* straddling: starts on both sides of a window edge. Only these few (the sessions active at the moment of an
  edge) are grouped from their interceptions.
A second attribute works the same way through the slice row's `only_<attribute>`: the other value there means
the row matches whole, another value means it does not match, NULL (the session mixes values) means it is
grouped from its interceptions. Inside rows are paged straight from the (last_active_at DESC, session_id DESC)
index and merged with the grouped ones; the count is the inside rows counted plus the grouped ones that match.
So a filter over all time, or over a month of a provider with half the traffic, costs a page and an index count.

On SQLite the queries name their index (INDEXED BY, `Backend.index_hint`): without statistics for the table it
could otherwise page through the window index and sort a month of sessions. PostgreSQL plans from statistics.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.read.filters import InterceptionFilter, filter_conditions
from aigw_proxy.storage.schema.session_slices import ATTRIBUTES, PAGE_INDEX, WINDOW_INDEX
from aigw_proxy.storage.schema.summaries import interception_days
from aigw_proxy.storage.schema.tables import UTCDateTime, interceptions

_i = interceptions.c
_ROW_TYPES = {"last_active_at": UTCDateTime, "started_at": UTCDateTime, "ended_at": UTCDateTime,
              "interceptions": sa.Integer, "threads": sa.Integer}
_ROW_COLUMNS = "session_id, initiator_id, " + ", ".join(_ROW_TYPES)

# The sessions list's per-session columns over matching interceptions `m` grouped by (session_id, initiator_id):
# the aggregates a slice row stores (session_slices.py), computed from the interceptions.
_PER_SESSION: dict[str, Callable[[Any], sa.ColumnElement[Any]]] = {
    "last_active_at": lambda m: sa.type_coerce(
        sa.func.coalesce(sa.func.max(m.last_prompt_at), sa.func.min(m.started_at)), UTCDateTime),
    "started_at": lambda m: sa.type_coerce(sa.func.min(m.started_at), UTCDateTime),
    "ended_at": lambda m: sa.type_coerce(sa.func.max(m.ended_at), UTCDateTime),
    "interceptions": lambda m: sa.func.count(),
    "threads": lambda m: sa.func.sum(sa.case((m.thread_root_id.is_(None), 1), else_=0)),
}


def per_session(m: Any, *names: str) -> list[sa.Label[Any]]:
    """The named per-session columns over the grouped matching interceptions `m` (a subquery's columns)."""
    return [_PER_SESSION[name](m).label(name) for name in names]


@dataclass(frozen=True, slots=True)
class SlicePlan:
    """Read the slice (kind, value); its rows match whole where their `only_<attribute>` is each of `others`,
    and need grouping where one of those is NULL (a session mixing values)."""

    kind: str
    value: str
    others: tuple[tuple[str, str], ...] = ()


async def slice_of(conn: AsyncConnection, flt: InterceptionFilter) -> SlicePlan | None:
    """How to answer a filter from the slices; None when it names a user or session (their rows are few:
    grouped directly).

    Two or more attributes: when the daily counts show that one value implies the others (every ended
    interception with it has the others too: a model names its provider, say), that value's slice answers alone.
    Otherwise the slice of the value with the fewest interceptions is read, checking the others."""
    if flt.by_user:
        return None
    named = [(kind, getattr(flt, kind)) for kind in ATTRIBUTES if getattr(flt, kind) is not None]
    if len(named) <= 1:
        return SlicePlan(*named[0]) if named else SlicePlan("all", "")
    d = interception_days.c
    each = [d[kind] == value for kind, value in named]
    counts = (await conn.execute(sa.select(
        *(sa.func.coalesce(sa.func.sum(sa.case((test, d.interceptions), else_=0)), 0) for test in each),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(*each), d.interceptions), else_=0)), 0),
    ).where(sa.or_(*each)))).one()
    *alone, together = (int(n) for n in counts)
    ranked = sorted(zip(named, alone, strict=True), key=lambda item: item[1])
    for (kind, value), n in ranked:
        if n == together:
            return SlicePlan(kind, value)
    (kind, value), _ = ranked[0]
    return SlicePlan(kind, value, tuple(a for a in named if a != (kind, value)))


class _Window:
    """The SQL conditions on slice rows for the filter's window and other attributes; `params` binds them."""

    def __init__(self, plan: SlicePlan, after: datetime | None, before: datetime | None) -> None:
        self.after, self.before = after, before
        self.params: dict[str, Any] = {"kind": plan.kind, "value": plan.value, "after": after, "before": before}
        # The rows inside the window that match the other attributes whole: these terms (given kind and value),
        # spelt for each index as a range of it.
        core = []
        for attribute, value in plan.others:
            core.append(f"only_{attribute} = :only_{attribute}")
            self.params[f"only_{attribute}"] = value
        if after is not None:
            core.append("started_at >= :after")
        if before is not None:
            core.append("last_started_at <= :before")
        # last_active_at ≥ started_at ≥ after (a prompt is stamped when its call ends): bounds the page index walk
        # for windows that match fewer sessions than a page; last_started_at ≥ started_at likewise for the window
        # index.
        page_bound = ["last_active_at >= :after"] if after is not None else []
        window_bound = ["last_started_at >= :after"] if after is not None else []
        self.inside = " AND ".join(["kind = :kind", "value = :value", *core, *page_bound])
        self.inside_by_window = " AND ".join(["kind = :kind", "value = :value", *core, *window_bound])
        self.inside_in_slice = " AND ".join(core) or "1 = 1"
        self.mixed = " OR ".join(f"only_{attribute} IS NULL" for attribute, _ in plan.others)

    @property
    def checks_others(self) -> bool:
        return bool(self.mixed)

    def text(self, sql: str, **extra: Any) -> sa.TextClause:
        params = {**self.params, **extra}
        clause = sa.text(sql).bindparams(*(sa.bindparam(k, type_=UTCDateTime) for k in ("after", "before", "at")
                                           if k in params and f":{k}" in sql))
        return clause.bindparams(**{k: v for k, v in params.items() if f":{k}" in sql})


async def _scan_with_others(conn: AsyncConnection, w: _Window) -> tuple[int, set[tuple[str, str]]]:
    """(the rows inside the window that match the other attributes whole, counted; the keys of the rows that
    mix their values) in one pass over the slice: `only_*` is in no index."""
    backend = backend_of(conn)
    row = (await conn.execute(w.text(
        f"SELECT count(*) FILTER (WHERE {w.inside_in_slice}), "
        f"{backend.pairs_agg('session_id', 'initiator_id', w.mixed)} "
        f"FROM aigw_session_slices WHERE kind = :kind AND value = :value"))).one()
    return int(row[0] or 0), {(sid, uid) for sid, uid in backend.decode_json(row[1]) or ()}


async def _irregular(
    conn: AsyncConnection, flt: InterceptionFilter, w: _Window, mixed: set[tuple[str, str]]
) -> list[Any]:
    """The slices that do not match whole — straddling a window edge, or `mixed` (mixing values of the other
    attributes) — grouped over their matching interceptions (those with none are dropped)."""
    hint = backend_of(conn).index_hint
    edges = []
    if w.after is not None:
        edges.append("last_started_at >= :after AND started_at < :after")
    if w.before is not None:
        edges.append("last_started_at > :before AND started_at <= :before")
    keys = set(mixed)
    for edge in edges:
        rows = await conn.execute(w.text(
            f"SELECT session_id, initiator_id FROM aigw_session_slices{hint(WINDOW_INDEX)} "
            f"WHERE kind = :kind AND value = :value AND {edge}"))
        keys.update((r.session_id, r.initiator_id) for r in rows)
    if not keys:
        return []
    m = (sa.select(_i.session_id, _i.initiator_id, _i.started_at, _i.ended_at, _i.thread_root_id, _i.last_prompt_at)
         .where(*filter_conditions(flt), backend_of(conn).in_list(_i.session_id, sorted({k[0] for k in keys})))
         .subquery("matching").c)
    grouped = await conn.execute(sa.select(m.session_id, m.initiator_id, *per_session(m, *_PER_SESSION))
                                 .group_by(m.session_id, m.initiator_id))
    return [r for r in grouped if (r.session_id, r.initiator_id) in keys]


def _order_key(r: Any) -> tuple[datetime, str]:
    return (r.last_active_at, r.session_id)


async def slice_page(
    conn: AsyncConnection,
    flt: InterceptionFilter,
    plan: SlicePlan,
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
    hint = backend_of(conn).index_hint
    w = _Window(plan, after, before)
    n_inside, mixed = await _scan_with_others(conn, w) if w.checks_others else (0, set())
    irregular = await _irregular(conn, flt, w, mixed)
    listed_irregular = irregular  # those after the cursor, if any

    cursor_cond = ""
    extra: dict[str, Any] = {}
    if after_session_id is not None:
        found = [r for r in irregular if r.session_id == after_session_id]
        found += list(await conn.execute(w.text(
            f"SELECT {_ROW_COLUMNS} FROM aigw_session_slices{hint(PAGE_INDEX)} "
            f"WHERE {w.inside} AND session_id = :sid", sid=after_session_id).columns(**_ROW_TYPES)))
        if not found:
            raise LookupError(after_session_id)
        at = max(found, key=_order_key).last_active_at
        cursor_cond = " AND (last_active_at, session_id) < (:at, :sid)"
        extra = {"at": at, "sid": after_session_id}
        listed_irregular = [r for r in irregular if _order_key(r) < (at, after_session_id)]

    inside = list(await conn.execute(w.text(
        f"SELECT {_ROW_COLUMNS} FROM aigw_session_slices{hint(PAGE_INDEX)} "
        f"WHERE {w.inside}{cursor_cond} ORDER BY last_active_at DESC, session_id DESC LIMIT :n",
        n=offset + limit, **extra).columns(**_ROW_TYPES)))
    merged = heapq.merge(inside, sorted(listed_irregular, key=_order_key, reverse=True), key=_order_key,
                         reverse=True)
    page = list(merged)[offset:offset + limit]

    total = None
    if count:
        if after is None and before is None and not w.checks_others:  # the whole slice (no row: no session yet)
            n_inside = int((await conn.execute(w.text(
                "SELECT sessions FROM aigw_session_slice_counts WHERE kind = :kind AND value = :value"))).scalar() or 0)
        elif not w.checks_others:
            n_inside = int((await conn.execute(w.text(
                f"SELECT count(*) FROM aigw_session_slices{hint(WINDOW_INDEX)} WHERE {w.inside_by_window}"
            ))).scalar_one())
        total = n_inside + len(irregular)
    return total, page
