"""Data retention (docs/compatibility.md#retention): the retention window setting, and deleting interceptions
older than it with all their child rows, every 10 minutes in the daemon (`RetentionLoop`) or once from the CLI
(`purge_now`).

The window: `60d` by default, `0` keeps everything (`parse_retention`). The purge deletes interceptions started
before a cut-off, children first, in batches. Each batch is its own short write transaction on the writer engine
(the record writer's own single connection in the daemon, on SQLite), and the purge pauses between batches, so
queued records are written in between and the writer is never held for more than one batch. Freed pages go back
to the file system the same way, a few at a time (SQLite).

On PostgreSQL the days wholly older than the cut-off are dropped first, partition by partition (constant time
whatever their size), so the batches only delete the rows of the day the cut-off falls in.

Several processes or hosts may share a PostgreSQL database: the daemon's loop purges in one of them
(`Backend.cluster_job`: the first to take the job keeps it until it stops, then another takes over), the others
skip their rounds (logged once). The loop also runs the backend's periodic upkeep (on
PostgreSQL: partitions created ahead of time), with or without a retention window.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from aigw_proxy.config.durations import parse_duration
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.schema.tables import CHILD_TABLES, interceptions

log = logging.getLogger("aigw_proxy.storage")  # what was purged
loop_log = logging.getLogger("aigw_proxy.retention")  # the daemon's loop

PURGE_EVERY = 600.0  # seconds, as Coder's dbpurge loop

DEFAULT_BATCH = 250  # ~0.3 ms per interception warm, ~3 ms cold on 1M rows: the writer lock is held < 1 s


@dataclass(frozen=True, slots=True)
class PurgeResult:
    deleted_interceptions: int
    deleted_child_rows: int
    batches: int


async def purge_old_records(
    db: Database, before: datetime, *, batch_size: int = DEFAULT_BATCH, pause: float = 0.01
) -> PurgeResult:
    """Delete interceptions with `started_at < before` and all their child rows."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    backend = db.backend
    dropped, dropped_children = await backend.drop_before(db, before)  # PostgreSQL: whole days, SQLite: none
    total = children = batches = 0
    i = interceptions.c
    while True:
        async with db.writer.begin() as conn:
            ids = (await conn.execute(sa.select(i.id).where(i.started_at < before).limit(batch_size))).scalars().all()
            if not ids:
                break
            for child in CHILD_TABLES:
                only = backend.partition_range(child.c.interception_started_at, None, before)
                children += int((await conn.execute(sa.delete(child).where(child.c.interception_id.in_(ids), *only)))
                                .rowcount or 0)
            await conn.execute(sa.delete(interceptions).where(i.id.in_(ids), i.started_at < before))
        total += len(ids)
        batches += 1
        if len(ids) < batch_size:
            break
        await asyncio.sleep(pause)  # let the record writer have the connection between batches
    if total:
        await backend.reclaim_space(db, pause=pause)
        log.info("retention: deleted %d interceptions (%d child rows) started before %s", total, children,
                 before.isoformat())
    return PurgeResult(total + dropped, children + dropped_children, batches)


async def purge_interceptions(db: Database, before: datetime, *, batch_size: int = DEFAULT_BATCH) -> int:
    """Delete interceptions with `started_at < before` and all their child rows; return how many
    interceptions were deleted."""
    return (await purge_old_records(db, before, batch_size=batch_size)).deleted_interceptions


# -- the retention window and the daemon's loop ------------------------------------------------------------

def parse_retention(text: str) -> timedelta | None:
    """The retention window from its setting (`--retention`): `60d`, `12h`, `30m`, `90s`, combinations such as
    `1d12h`, or `0` (keep forever → None)."""
    if text.strip() == "0":
        return None
    try:
        seconds = parse_duration(text, bare_seconds=False, whole=True)
    except ValueError:
        raise ValueError(f"{text!r} is not a retention period (e.g. 60d, 12h, 30m, or 0 to keep everything)") from None
    return timedelta(seconds=seconds) if seconds else None


def cutoff(window: timedelta, now: datetime | None = None) -> datetime:
    """The start time before which interceptions fall out of `window`."""
    return (now or datetime.now(UTC)) - window


async def purge_now(db: Database, window: timedelta) -> tuple[PurgeResult, datetime]:
    """Purge what is older than `window` now: (what was deleted, the cut-off)."""
    before = cutoff(window)
    return await purge_old_records(db, before), before


class RetentionLoop:
    """Background task on the daemon's loop: every `every` seconds the backend's upkeep, then (with a window)
    the purge, in one process of those sharing the database at a time. `window` None: upkeep only."""

    def __init__(self, db: Database, window: timedelta | None, *, every: float = PURGE_EVERY,
                 first_after: float = 30.0):
        self._db = db
        self._window = window
        self._every = every
        self._first_after = first_after
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # rounds this loop ran (purged or not)
        self.purges = 0  # rounds in which this process held the cluster's retention job and purged
        self.deleted = 0
        self.skipped = 0  # rounds skipped: another process held the job

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-retention")

    async def run_once(self) -> PurgeResult | None:
        """One round: upkeep, then the purge if this process got the job (None if another one has it)."""
        await self._db.backend.maintain(self._db)
        if self._window is None:
            return None
        async with self._db.backend.cluster_job(self._db, "retention") as mine:
            if not mine:
                (loop_log.debug if self.skipped else loop_log.info)(
                    "retention: another process sharing the database runs the purge; skipping this round")
                self.skipped += 1
                return None
            result, _ = await purge_now(self._db, self._window)
        self.purges += 1
        self.deleted += result.deleted_interceptions
        return result

    async def _run(self) -> None:
        try:  # partitions for today and the next days straight away; the first purge after `first_after`
            await self._db.backend.maintain(self._db)
        except Exception:
            loop_log.exception("database upkeep failed; trying again in %.0fs", self._first_after)
        await asyncio.sleep(self._first_after)
        while True:
            try:
                await self.run_once()
            except Exception:
                loop_log.exception("retention purge failed; trying again in %.0fs", self._every)
            self.runs += 1
            await asyncio.sleep(self._every)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
