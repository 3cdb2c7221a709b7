"""Exact counts of ended interceptions: a user's or a session's through an index, the rest from the daily summary
(`aigw_interception_days`).

Whole UTC days inside the window are summed from the summary; the one or two partial days at its edges are
counted from the interceptions themselves through the covering `(started_at, provider, …)` index. So a count
over 90 days reads a few thousand summary rows and at most two days of index entries, never a million rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.read.filters import InterceptionFilter, filter_conditions
from aigw_proxy.storage.schema.summaries import interception_days
from aigw_proxy.storage.schema.tables import interceptions

_DAY_FORMAT = "%Y-%m-%d"


def _day(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_DAY_FORMAT)


def _midnight(day: str) -> datetime:
    return datetime.combine(datetime.strptime(day, _DAY_FORMAT).date(), time(), UTC)


def _summary_conditions(flt: InterceptionFilter) -> list[sa.ColumnElement[bool]]:
    d = interception_days.c
    cond: list[sa.ColumnElement[bool]] = []
    for column, value in ((d.provider, flt.provider), (d.provider_name, flt.provider_name), (d.model, flt.model),
                          (d.client, flt.client)):
        if value is not None:
            cond.append(column == value)
    return cond


async def _count_rows(conn: AsyncConnection, flt: InterceptionFilter) -> int:
    query = sa.select(sa.func.count()).select_from(interceptions).where(*filter_conditions(flt))
    return int((await conn.execute(query)).scalar_one())


async def count_interceptions(db: Database, flt: InterceptionFilter | None = None) -> int:
    """How many ended interceptions match (ignores pagination)."""
    flt = flt or InterceptionFilter()
    async with db.reader.connect() as conn:
        if flt.by_user:  # a user has few enough rows to count them through an index
            return await _count_rows(conn, flt)
        return await count_by_days(conn, flt)


async def count_by_days(conn: AsyncConnection, flt: InterceptionFilter) -> int:
    """Count for a filter without initiator or session (those are counted directly)."""
    after, before = flt.started_after, flt.started_before
    if after is not None and before is not None and after > before:
        return 0
    d = interception_days.c
    cond = _summary_conditions(flt)
    total = 0
    if after is not None and before is not None and _day(after) == _day(before):
        return await _count_rows(conn, flt)  # one partial day
    if after is not None:  # the rest of the first day
        first = _day(after)
        cond.append(d.day > first)
        total += await _count_rows(conn, _window(flt, after, _midnight(first) + timedelta(days=1), exclusive=True))
    if before is not None:  # the start of the last day
        last = _day(before)
        cond.append(d.day < last)
        total += await _count_rows(conn, _window(flt, _midnight(last), before, exclusive=False))
    summed = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(d.interceptions), 0)).where(*cond)))
    return total + int(summed.scalar_one())


def _window(flt: InterceptionFilter, start: datetime, end: datetime, *, exclusive: bool) -> InterceptionFilter:
    """`flt` limited to [start, end] (or [start, end) with `exclusive`: end is a midnight, counted by the summary)."""
    if exclusive:
        end = end - timedelta(microseconds=1)  # stored times have microsecond resolution
    return InterceptionFilter(provider=flt.provider, provider_name=flt.provider_name, model=flt.model,
                              client=flt.client, started_after=start, started_before=end)
