"""The Overview's figures kept warm: reused for up to a minute per (window, grouping, viewer) and recomputed in
the background while someone looks at them, so that no page view waits for the one read that grows with the data
(a 30-day window sums ~130k session rows on the 1M-interception bench database: 0.3-0.5 s on 2 cores).

A view within `fresh_for` of the figures' computation is served from memory: up to `FRESH_SECONDS`, less for
figures that are cheap to compute (a small database's are about as fresh as its records). The refresher
recomputes, ahead of time, every entry viewed within the last `WARM_FOR_SECONDS` that is about to turn stale.
Only the first look at a window (per grouping and viewer) since the start or since a quiet spell of
`WARM_FOR_SECONDS` computes on the request: figures are never older than `FRESH_SECONDS` plus one computation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aigw_proxy.admin.console.overview import WINDOWS, Overview, overview
from aigw_proxy.storage import Database

log = logging.getLogger(__name__)

FRESH_SECONDS = 60.0  # figures need not be newer than a minute ...
MIN_FRESH_SECONDS = 0.5  # ... but what is cheap to compute stays about as fresh as the records
FRESH_PER_SECOND_COMPUTED = 120.0  # a 0.5 s computation is reused for a minute, a 5 ms one for half a second
WARM_FOR_SECONDS = 15 * 60.0  # how long after its last view an entry keeps being refreshed
REFRESH_AHEAD_SECONDS = 15.0  # recompute this long before an entry would turn stale
MAX_ENTRIES = 512

Key = tuple[str, str, str | None, str | None, str | None]  # window, grouping, viewer, custom start/end days


@dataclass(slots=True)
class _Entry:
    start: datetime  # the window as computed (a rolling window moves on at each refresh)
    end: datetime
    value: Overview
    computed_at: float
    viewed_at: float
    fresh_for: float  # seconds, from what the computation cost


class OverviewCache:
    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic,
                 stopwatch: Callable[[], float] = time.perf_counter) -> None:
        self.db = db
        self._clock = clock
        self._stopwatch = stopwatch  # times a computation (its cost sets how long the figures are reused)
        self._entries: dict[Key, _Entry] = {}
        self._computing: dict[Key, asyncio.Task[Overview]] = {}

    @staticmethod
    def key(window: str, series_by: str, visible_to: str | None, start: datetime, end: datetime) -> Key:
        custom = window == "custom"
        return (window, series_by, visible_to, start.date().isoformat() if custom else None,
                end.date().isoformat() if custom else None)

    async def get(self, window: str, start: datetime, end: datetime, visible_to: str | None,
                  series_by: str = "model") -> Overview:
        key = self.key(window, series_by, visible_to, start, end)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.computed_at < entry.fresh_for:
            entry.viewed_at = now
            return entry.value
        value = await self._compute(key, start, end, visible_to, series_by)
        self._viewed(key)
        return value

    async def _compute(self, key: Key, start: datetime, end: datetime, visible_to: str | None,
                       series_by: str) -> Overview:
        # One computation per key at a time: a view arriving while the refresher computes waits for that one
        # (shielded: a view whose client went away does not cancel it for the others).
        task = self._computing.get(key)
        if task is None:
            task = asyncio.create_task(self._run(key, start, end, visible_to, series_by))
            self._computing[key] = task
            task.add_done_callback(lambda _: self._computing.pop(key, None))
        return await asyncio.shield(task)

    async def _run(self, key: Key, start: datetime, end: datetime, visible_to: str | None,
                   series_by: str) -> Overview:
        began = self._stopwatch()
        value = await overview(self.db, start, end, visible_to, series_by)
        took = self._stopwatch() - began
        fresh_for = min(FRESH_SECONDS, max(MIN_FRESH_SECONDS, took * FRESH_PER_SECOND_COMPUTED))
        if len(self._entries) >= MAX_ENTRIES and key not in self._entries:
            self._evict()
        old = self._entries.get(key)
        now = self._clock()
        # A new entry is a view's (the refresher only recomputes existing ones): viewed now, or the refresher
        # could drop it as long unviewed before the view that asked for it marks it.
        self._entries[key] = _Entry(start, end, value, now, old.viewed_at if old else now, fresh_for)
        return value

    def _viewed(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.viewed_at = self._clock()

    def _evict(self) -> None:
        """Drop the least recently viewed quarter."""
        by_view = sorted(self._entries, key=lambda k: self._entries[k].viewed_at)
        for k in by_view[: max(1, len(by_view) // 4)]:
            del self._entries[k]

    def _window(self, key: Key, entry: _Entry) -> tuple[datetime, datetime]:
        window = key[0]
        if window in WINDOWS:
            now = datetime.now(UTC)
            return now - WINDOWS[window], now
        return entry.start, entry.end

    async def refresh_due(self) -> int:
        """Recompute the entries viewed lately that are about to turn stale; returns how many."""
        now = self._clock()
        due = [(k, e) for k, e in self._entries.items()
               if now - e.viewed_at < WARM_FOR_SECONDS
               and now - e.computed_at >= e.fresh_for - min(REFRESH_AHEAD_SECONDS, e.fresh_for / 4)]
        for key, entry in due:
            start, end = self._window(key, entry)
            await self._compute(key, start, end, key[2], key[1])
        for key in [k for k, e in self._entries.items() if now - e.viewed_at >= WARM_FOR_SECONDS]:
            del self._entries[key]  # nobody looked for a while: the next look computes
        return len(due)

    async def keep_warm(self, interval: float = 5.0) -> None:
        """Refresh what is viewed, until cancelled. Nothing is computed ahead of a first view: figures computed
        at start would be shown as they were then to whoever looks first. A failed computation (a locked or
        missing database) is logged and retried at the next round; page views then compute and show their own
        error."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_due()
            except Exception as exc:  # the console keeps serving whatever the database does
                log.warning("overview refresh failed: %s", exc)
