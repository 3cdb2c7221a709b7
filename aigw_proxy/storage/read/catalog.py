"""Distinct models and clients (docs/compatibility.md#models-and-clients), by prefix.

Everything visible: from the daily summary (thousands of rows, not a million). One member's own: from their
interceptions through the initiator index.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.read.filters import DEFAULT_LIMIT
from aigw_proxy.storage.schema.summaries import interception_days
from aigw_proxy.storage.schema.tables import interceptions


async def distinct_values(
    db: Database, kind: str, *, prefix: str = "", visible_to: str | None = None, limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> list[str]:
    """Sorted distinct `kind` ("model" or "client") values starting with `prefix` (case-sensitive)."""
    if kind not in ("model", "client"):
        raise ValueError(f"unknown kind {kind!r}")
    column: sa.ColumnElement[str]
    if visible_to is None:
        d = interception_days.c
        column = d.model if kind == "model" else d.client
        where = [d.interceptions > 0]
    else:
        i = interceptions.c
        column = i.model if kind == "model" else sa.func.coalesce(i.client, "Unknown")
        where = [i.initiator_id == visible_to, i.ended_at.is_not(None)]
    value = column.label("value")
    if prefix:
        where.append(sa.func.substr(column, 1, len(prefix)) == prefix)
    source = interception_days if visible_to is None else interceptions
    query = (sa.select(value).select_from(source).where(*where).group_by(value).order_by(value)
             .limit(limit or DEFAULT_LIMIT).offset(offset))
    async with db.reader.connect() as conn:
        return [r.value for r in await conn.execute(query)]
