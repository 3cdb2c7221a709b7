"""Retention settings and the daemon's purge loop (docs/compatibility.md#retention): every 10 minutes, delete
interceptions older than the window (default 60 days; `0` keeps everything) with all their child rows, in small
batches."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from aigw_proxy.config.durations import parse_duration
from aigw_proxy.storage import Database
from aigw_proxy.storage.retention import PurgeResult, purge_old_records

log = logging.getLogger("aigw_proxy.retention")

DEFAULT_RETENTION = "60d"
PURGE_EVERY = 600.0  # seconds, as Coder's dbpurge loop


def parse_retention(text: str) -> timedelta | None:
    """`60d`, `12h`, `30m`, `90s`, combinations such as `1d12h`, or `0` (keep forever → None)."""
    if text.strip() == "0":
        return None
    try:
        seconds = parse_duration(text, bare_seconds=False, whole=True)
    except ValueError:
        raise ValueError(f"{text!r} is not a retention period (e.g. 60d, 12h, 30m, or 0 to keep everything)") from None
    return timedelta(seconds=seconds) if seconds else None


def cutoff(window: timedelta, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - window


async def purge_now(db: Database, window: timedelta) -> tuple[PurgeResult, datetime]:
    before = cutoff(window)
    return await purge_old_records(db, before), before


class RetentionLoop:
    """Background task on the daemon's loop; the database work runs in the driver's thread, batch by batch."""

    def __init__(self, db: Database, window: timedelta, *, every: float = PURGE_EVERY, first_after: float = 30.0):
        self._db = db
        self._window = window
        self._every = every
        self._first_after = first_after
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.deleted = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-retention")

    async def _run(self) -> None:
        await asyncio.sleep(self._first_after)
        while True:
            try:
                result, _ = await purge_now(self._db, self._window)
                self.deleted += result.deleted_interceptions
            except Exception:
                log.exception("retention purge failed; trying again in %.0fs", self._every)
            self.runs += 1
            await asyncio.sleep(self._every)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
