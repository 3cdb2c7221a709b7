"""The record writer's commits: one batch of events in one transaction (record by record inside savepoints when
the database refuses one of them), its drops counted, and each committed start and end told to the listeners.
"""

from __future__ import annotations

import logging
import time

from aigw_proxy.capture.raw import CaptureRecord
from aigw_proxy.recording.records import InterceptionUsage
from aigw_proxy.storage.write.batch import BatchResult, StoredEvent, describe, is_database_error
from aigw_proxy.storage.write.file_guard import FileGuard

log = logging.getLogger("aigw_proxy.storage")


class Committer(FileGuard):
    async def _write(self, events: list[StoredEvent], *, finished: int, replay: bool = False) -> bool:
        """Write `events` in one transaction. True when they are done with (committed, or refused and counted);
        False when the database failed and they must be written later. `finished`: how many of them this run
        accepted (the rest came from an earlier run's spool)."""
        problem = self._wdb.file_problem()
        if problem is not None and not await self._reopen(problem):
            return False
        self.busy_since = time.monotonic()
        try:
            result = await self._attempt(events, replay)
        except Exception as exc:
            if is_database_error(exc):
                self._failed(exc)
                return False
            self.last_error = describe(exc)  # a bug: never let the task die with records queued
            log.exception("record batch of %d lost", len(events))
            self._drop("db_error", len(events), "record batch lost")
            self._finish(finished)
            return True
        finally:
            self.busy_since = None
        self._succeeded()
        self._batches.commit(result)
        for reason, n in result.drops.items():
            self._drop(reason, n, f"records not written: {reason}")
        self.written += len(result.committed)
        self._finish(finished)
        for event, info in result.committed:
            # Storage-internal progress and raw captures: listeners get starts and ends only.
            if not isinstance(event, InterceptionUsage | CaptureRecord):
                self._notify(event, info)
        return True

    async def _attempt(self, events: list[StoredEvent], replay: bool) -> BatchResult:
        try:
            return await self._on_db(self._batches.write(events, isolate=False, replay=replay))
        except Exception as exc:
            if is_database_error(exc):
                raise
            log.warning("the database refused a record in a batch of %d (%s); writing them one by one",
                        len(events), describe(exc))
        return await self._on_db(self._batches.write(events, isolate=True, replay=replay))
