"""The spend report (`aigw-proxy spend`, `GET /api/v2/aibridge/spend`): token usage and its stored cost summed by
user, model, client, provider or day over the interceptions a filter selects.

Whole UTC days are read from the daily spend summaries (kept by triggers: schema/spend_days.py; the per-user one
when the report groups or filters by user, else the fleet's);
the partial days at the edges of a time window, and a session's rows, are summed from the token-usage rows
themselves. So a report over 90 days of a million interceptions reads the summary's rows for those days and at
most two partial days of rows, never the whole history. A row's day is its interception's start (UTC), as the
interceptions list filters by `started_at`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.read.costs import usd
from aigw_proxy.storage.read.filters import InterceptionFilter, filter_conditions, initiator_ids
from aigw_proxy.storage.schema.spend_days import TOKEN_COLUMNS, fleet_days, spend_days, user_months
from aigw_proxy.storage.schema.summaries import sessions as summary
from aigw_proxy.storage.schema.tables import interceptions, token_usages, users
from aigw_proxy.storage.timefmt import rfc3339

GROUPINGS: Final = ("user", "model", "client", "provider", "day")
_DAY_FORMAT = "%Y-%m-%d"
_COMPONENTS = {"input_price_micros": "input_micros", "output_price_micros": "output_micros",
               "cache_read_price_micros": "cache_read_micros", "cache_write_price_micros": "cache_write_micros",
               "other_price_micros": "other_micros"}
_ONE_MICROSECOND = timedelta(microseconds=1)


# What each source query sums per group: the two kinds' rows, unpriced rows and cost apart (conditional sums, so
# a group is one result row), tokens and price components over both.
_KIND_SUMS = ("api_records", "api_unpriced", "api_micros", "equivalent_records", "equivalent_unpriced",
              "equivalent_micros")
_SUMS = (*_KIND_SUMS, *TOKEN_COLUMNS, *_COMPONENTS)


_N = len(_SUMS)

# A group's sums: a list of ints in _SUMS order (a leaderboard has thousands of groups: plain lists are cheap).
Sums = list[int]


def _kind_cost(records: int, unpriced: int, micros: int) -> int | None:
    """A kind's cost: the priced rows' sum, null when every row of it is unpriced (costs.py's rule)."""
    return None if records and unpriced == records else micros


def _figures_json(s: Sums, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """A group's (or the total's) figures, added to `out` (its key's fields) when given. Unrolled: a leaderboard
    builds thousands of these."""
    (api_records, api_unpriced, api_micros, eq_records, eq_unpriced, eq_micros,
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
     input_price, output_price, cache_read_price, cache_write_price, other_price) = s
    api = _kind_cost(api_records, api_unpriced, api_micros)
    equivalent = _kind_cost(eq_records, eq_unpriced, eq_micros)
    records, unpriced = api_records + eq_records, api_unpriced + eq_unpriced
    if out is None:
        out = {}
    out["records"] = records
    out["input_tokens"] = input_tokens
    out["output_tokens"] = output_tokens
    out["cache_read_input_tokens"] = cache_read_tokens
    out["cache_write_input_tokens"] = cache_write_tokens
    out["cost"] = {
        "priced": unpriced == 0,
        "unpriced_records": unpriced,
        "cost_micros": api,
        "cost_usd": usd(api),
        "api_equivalent_micros": equivalent,
        "api_equivalent_usd": usd(equivalent),
    }
    # The list-price value of every priced row (API and API-equivalent together), by component; null when no row
    # is priced.
    out["price_components"] = {
        "input_micros": input_price,
        "output_micros": output_price,
        "cache_read_micros": cache_read_price,
        "cache_write_micros": cache_write_price,
        "other_micros": other_price,
    } if records > unpriced else None
    return out


def _day(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_DAY_FORMAT)


def _midnight(day: str) -> datetime:
    return datetime.combine(datetime.strptime(day, _DAY_FORMAT).date(), time(), UTC)


# -- the two sources ---------------------------------------------------------------------------------------------

_i = interceptions.c
_t = token_usages.c


def _summary_of(by: str | None, flt: InterceptionFilter) -> sa.Table:
    """The per-user summary when the report groups or filters by user, else the fleet's (far fewer rows)."""
    per_user = by == "user" or flt.initiator is not None or flt.visible_to is not None
    return spend_days if per_user else fleet_days


def _summary_group(d: Any, by: str | None) -> list[sa.ColumnElement[Any]]:
    match by:
        case "user":
            return [d.initiator_id]
        case "model":
            return [d.model]
        case "client":
            return [d.client]
        case "provider":
            return [d.provider, d.provider_name]
        case "day":
            return [d.day]
    return []


def _rows_group(by: str | None, conn: AsyncConnection) -> list[sa.ColumnElement[Any]]:
    match by:
        case "user":
            return [_i.initiator_id]
        case "model":
            return [_i.model]
        case "client":
            return [sa.func.coalesce(_i.client, "Unknown")]
        case "provider":
            return [_i.provider, _i.provider_name]
        case "day":  # the UTC day, as the summary's triggers take it
            return [backend_of(conn).day_expr(_i.started_at)]
    return []


def _summary_conditions(d: Any, flt: InterceptionFilter) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if flt.visible_to is not None:
        cond.append(d.initiator_id == flt.visible_to)
    if flt.initiator is not None:
        cond.append(d.initiator_id.in_(initiator_ids(flt.initiator)))
    for name, value in (("provider", flt.provider), ("provider_name", flt.provider_name), ("model", flt.model),
                        ("client", flt.client)):
        if value is not None:  # the monthly summary has none of these columns: never asked for them
            cond.append(d[name] == value)
    return cond


def _total(value: Any) -> sa.ColumnElement[int]:
    """The sum of `value` over a group as a 64-bit integer (0 over no rows). PostgreSQL's sum of bigints is a
    numeric, which the driver decodes as a Decimal, ~25 ms for a 2000-user leaderboard's 32,000 figures where
    bigints take a few; SQLite's sum of integers is one already (and fails beyond 64 bits, as the cast does)."""
    return sa.cast(sa.func.coalesce(sa.func.sum(value), 0), sa.BigInteger)


def _by_kind(equivalent: sa.ColumnElement[Any], records: Any, unpriced: Any, micros: Any) -> list[Any]:
    """The conditional sums of _KIND_SUMS, from one source's per-row values."""
    def only(api: bool, value: Any) -> sa.ColumnElement[Any]:
        return _total(sa.case((equivalent, 0 if api else value), else_=value if api else 0))
    return [only(True, records).label("api_records"), only(True, unpriced).label("api_unpriced"),
            only(True, micros).label("api_micros"), only(False, records).label("equivalent_records"),
            only(False, unpriced).label("equivalent_unpriced"), only(False, micros).label("equivalent_micros")]


async def _from_summary(conn: AsyncConnection, by: str | None, d: Any, cond: list[sa.ColumnElement[bool]],
                        out: dict[tuple[Any, ...], Sums]) -> None:
    group = _summary_group(d, by)
    sums = [*_by_kind(d.api_equivalent == sa.true(), d.records, d.unpriced_records, d.cost_micros),
            *(_total(d[c]).label(c) for c in (*TOKEN_COLUMNS, *_COMPONENTS))]
    query = sa.select(*group, *sums).where(*cond)
    for row in await conn.execute(query.group_by(*group) if group else query):
        _add(out, row, len(group))


async def _from_rows(conn: AsyncConnection, by: str | None, flt: InterceptionFilter,
                     out: dict[tuple[Any, ...], Sums], span: tuple[datetime, datetime] | None = None) -> None:
    """Sums over the token-usage rows of the interceptions `flt` selects (`span`: the first start and last end
    of the session `flt` names, which bound where its rows are)."""
    backend = backend_of(conn)
    group = _rows_group(by, conn)
    unpriced = sa.case((_t.cost_micros.is_(None), 1), else_=0)
    sums = [*_by_kind(_t.api_equivalent == sa.true(), 1, unpriced, sa.func.coalesce(_t.cost_micros, 0)),
            *(_total(_t[c]).label(c) for c in (*TOKEN_COLUMNS, *_COMPONENTS))]
    # The window (and the session's span) bound both tables' partition keys: a token row's is its interception's
    # start. Without them PostgreSQL hashes every token row of every day to join the few it wants.
    lo, hi = span or (None, None)
    bounds = [*backend.partition_range(_t.interception_started_at, flt.started_after, flt.started_before),
              *backend.partition_range(_i.started_at, lo, hi),
              *backend.partition_range(_t.interception_started_at, lo, hi)]
    query = (sa.select(*group, *sums)
             .select_from(token_usages.join(interceptions, sa.text(
                 backend.child_join(token_usages.name, interceptions.name))))
             .where(*filter_conditions(flt), *bounds))
    for row in await conn.execute(query.group_by(*group) if group else query):
        _add(out, row, len(group))


def _add(out: dict[tuple[Any, ...], Sums], row: Any, width: int) -> None:
    sums = list(row[width:])  # the query selects them in _SUMS order, as 64-bit integers (_total)
    if not sums[0] and not sums[3]:
        return  # an aggregate over no rows (no grouping)
    key = tuple(row[:width])
    group = out.get(key)
    if group is None:
        out[key] = sums
    else:
        out[key] = [a + b for a, b in zip(group, sums, strict=True)]


def _edge(flt: InterceptionFilter, start: datetime, end: datetime) -> InterceptionFilter:
    """`flt` limited to [start, end) (stored times have microsecond resolution; started_before is inclusive)."""
    return dataclasses.replace(flt, started_after=start, started_before=end - _ONE_MICROSECOND)


def _by_call(flt: InterceptionFilter) -> bool:
    """Narrowed by what was called (the monthly summary has no provider, model or client)."""
    return any(v is not None for v in (flt.provider, flt.provider_name, flt.model, flt.client))


def _month(day: str) -> str:
    return day[:7]


def _next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def _month_start(month: str) -> str:
    return f"{month}-01"


async def _whole_days(conn: AsyncConnection, by: str | None, flt: InterceptionFilter, first: str | None,
                      last: str | None, out: dict[tuple[Any, ...], Sums]) -> None:
    """Days [first, last) (None: unbounded) from the summaries: whole months of the leaderboard (by user, or the
    total, with no provider/model/client filter) from each user's months, the other days from the daily table."""
    table = _summary_of(by, flt)
    if table is spend_days and by in ("user", None) and not _by_call(flt):
        m_first = None if first is None else (_month(first) if first.endswith("-01") else _next_month(_month(first)))
        m_last = None if last is None else _month(last)  # months before `last`'s own
        if m_first is None or m_last is None or m_first < m_last:
            m = user_months.c
            cond = _summary_conditions(m, flt)
            if m_first is not None:
                cond.append(m.month >= m_first)
            if m_last is not None:
                cond.append(m.month < m_last)
            await _from_summary(conn, by, m, cond, out)
            if first is not None and (m_first is None or first < _month_start(m_first)):
                await _days(conn, by, table, flt, first, _month_start(m_first) if m_first else None, out)
            if last is not None and m_last is not None and _month_start(m_last) < last:
                await _days(conn, by, table, flt, _month_start(m_last), last, out)
            return
    await _days(conn, by, table, flt, first, last, out)


async def _days(conn: AsyncConnection, by: str | None, table: sa.Table, flt: InterceptionFilter, first: str | None,
                last: str | None, out: dict[tuple[Any, ...], Sums]) -> None:
    d = table.c
    cond = _summary_conditions(d, flt)
    if first is not None:
        cond.append(d.day >= first)
    if last is not None:
        cond.append(d.day < last)
    await _from_summary(conn, by, d, cond, out)


async def _collect(conn: AsyncConnection, flt: InterceptionFilter, by: str | None) -> dict[tuple[Any, ...], Sums]:
    """[start, end) as partial days from the rows and whole days (or months) from the summaries."""
    out: dict[tuple[Any, ...], Sums] = {}
    if flt.session_id is not None:  # one session: its rows, through the session index
        s = summary.c
        cond = [s.session_id == flt.session_id]
        if flt.visible_to is not None:
            cond.append(s.initiator_id == flt.visible_to)
        lo, hi = (await conn.execute(sa.select(sa.func.min(s.started_at), sa.func.max(s.ended_at))
                                     .where(*cond))).one()
        if lo is not None:  # no summary row: the session has no ended interception
            await _from_rows(conn, by, flt, out, (lo, hi))
        return out
    start = flt.started_after
    end = flt.started_before + _ONE_MICROSECOND if flt.started_before is not None else None  # [start, end)
    if start is not None and end is not None and start >= end:
        return out
    first: str | None = None  # whole days [first, last)
    last: str | None = None
    if start is not None:
        first = _day(start)
        if start != _midnight(first):  # the rest of the first day, from the rows
            next_midnight = _midnight(first) + timedelta(days=1)
            if end is not None and end <= next_midnight:  # the window is inside one day
                await _from_rows(conn, by, _edge(flt, start, end), out)
                return out
            await _from_rows(conn, by, _edge(flt, start, next_midnight), out)
            first = _day(next_midnight)
    if end is not None:
        last = _day(end)
        if end != _midnight(last):  # the start of the last day, from the rows
            await _from_rows(conn, by, _edge(flt, max(_midnight(last), start or _midnight(last)), end), out)
    if first is None or last is None or first < last:
        await _whole_days(conn, by, flt, first, last, out)
    return out


# -- the report --------------------------------------------------------------------------------------------------

async def spend_report(db: Database, flt: InterceptionFilter | None = None, *, by: str | None = "user") -> dict:
    """Token usage and cost of the ended interceptions `flt` selects, in total and grouped `by` one of
    GROUPINGS (None: the total only). Groups are ordered by value (cost plus API-equivalent value, highest
    first), days chronologically."""
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"cannot group spend by {by!r} (use one of {', '.join(GROUPINGS)})")
    flt = flt or InterceptionFilter()
    async with db.reader.connect() as conn:
        found = await _collect(conn, flt, by)
        names: dict[str, str] = {}
        if by == "user" and found:
            ids = {k[0] for k in found}
            # Many users: read every name (a 2000-value IN list costs SQLAlchemy more than the table).
            query = sa.select(users.c.id, users.c.username)
            if len(ids) <= 100:
                query = query.where(users.c.id.in_(sorted(ids)))
            names = {uid: name for uid, name in (await conn.execute(query)).all() if uid in ids}
    total = [sum(column) for column in zip(*found.values(), strict=True)] if found else [0] * _N
    if by == "day":
        order = sorted(found)
    else:  # by value: cost plus API-equivalent value
        order = sorted(found, key=lambda k: (-(found[k][2] + found[k][5]), k))
    groups = [_figures_json(found[k], _key_json(by, k, names)) for k in order]
    return {
        "by": by,
        "started_after": rfc3339(flt.started_after) if flt.started_after is not None else None,
        "started_before": rfc3339(flt.started_before) if flt.started_before is not None else None,
        "total": _figures_json(total),
        "groups": groups,
    }


def _key_json(by: str | None, key: tuple[Any, ...], names: dict[str, str]) -> dict[str, Any]:
    match by:
        case "user":
            return {"key": names.get(key[0], key[0]), "initiator": {"id": key[0], "username": names.get(key[0])}}
        case "provider":
            return {"key": key[1], "provider": key[0], "provider_name": key[1]}
        case None:
            return {}
    return {"key": key[0]}
