"""Data retention (contract §6): delete interceptions started before a cut-off, children first, in batches."""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialect import reclaim_free_pages
from aigw_proxy.storage.schema import CHILD_TABLES, interceptions

log = logging.getLogger("aigw_proxy.storage")


async def purge_interceptions(db: Database, before: datetime, *, batch_size: int = 5000) -> int:
    """Delete interceptions with `started_at < before` and all their child rows; return how many
    interceptions were deleted. Each batch is its own short write transaction, so the record writer is never
    held up for long."""
    total = 0
    while True:
        async with db.writer.begin() as conn:
            ids = (
                (
                    await conn.execute(
                        sa.select(interceptions.c.id).where(interceptions.c.started_at < before).limit(batch_size)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            for child in CHILD_TABLES:
                await conn.execute(sa.delete(child).where(child.c.interception_id.in_(ids)))
            await conn.execute(sa.delete(interceptions).where(interceptions.c.id.in_(ids)))
        total += len(ids)
        if len(ids) < batch_size:
            break
    if total:
        async with db.writer.begin() as conn:
            await reclaim_free_pages(conn)
        log.info("retention: deleted %d interceptions started before %s", total, before.isoformat())
    return total
