"""The record writer: the proxy's event loop hands events over with `submit()` (never blocks, never awaits the
database); a background task takes them off the queue in batches and writes each batch in one transaction, in
submission order (batch.py; the rows come from rows.py, the thread lineage from lineage.py). Listeners are told
about each event once it is committed, with what the writer resolved for it (`CommitInfo`).

Failure handling:
* database locked / I/O errors: the batch stays in memory and is retried with exponential backoff for up to
  `retry_for` seconds, then dropped and counted as `dropped["db_error"]` (logged);
* one record the database refuses (duplicate id, value it cannot store): the batch is rewritten record by
  record inside savepoints and only that record is dropped (`dropped["invalid"]`);
* queue full: `submit()` returns False and counts `dropped["queue_full"]`.
Nothing is dropped without being counted and logged (drop logs are rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from aigw_proxy.recording.commits import CommitInfo, CommitListener
from aigw_proxy.recording.records import RecordEvent
from aigw_proxy.spend import Pricer
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.schema.tables import interceptions
from aigw_proxy.storage.write.batch import BatchResult, BatchWriter, InFlight, describe, is_database_error

log = logging.getLogger("aigw_proxy.storage")

DANGLING_MESSAGE: Final = "proxy stopped before the interception ended"
_EXPECTED_DROPS = frozenset({"already_ended", "unknown_interception", "closed"})  # logged as warnings
_LOG_EVERY = 10.0  # seconds between two warnings of the same kind


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """A read-only snapshot of the writer's state for health checks (times are `time.monotonic()`)."""

    running: bool
    queue_depth: int
    max_queue: int
    written: int
    dropped: dict[str, int]
    last_loss_at: dict[str, float]  # reason -> latest drop that lost records (not duplicate or orphan ends)
    last_commit_at: float | None  # the latest committed batch
    busy_since: float | None  # when the batch being written now was taken; None while waiting for events
    failing_since: float | None  # first failed attempt of the current run of failures; None once one succeeds
    consecutive_failures: int
    last_error: str | None


class _Stop:
    pass


_STOP: Final = _Stop()


class RecordWriter:
    """Queue + background batch writer for `InterceptionStarted` / `InterceptionEnded` events.

    `submit()` must be called from the event loop the writer was started on (it is not thread-safe).
    """

    def __init__(
        self,
        db: Database,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        retry_for: float = 30.0,
        max_backoff: float = 2.0,
        pricer: Pricer | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be positive")
        self._db = db
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_for = retry_for
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[RecordEvent | _Stop] = asyncio.Queue()  # bounded by submit()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # set once interceptions left open by a previous run are closed
        self._closing = False
        self._listeners: list[CommitListener] = []
        self._batches = BatchWriter(db, pricer)
        self._submitted = 0  # events accepted by submit()
        self._done = 0  # accepted events written or dropped
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._urgent = 0  # flush() callers waiting: do not linger for a fuller batch
        self._last_log: dict[str, float] = {}
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self.closed_dangling = 0
        self.last_loss_at: dict[str, float] = {}
        self.last_commit_at: float | None = None
        self.busy_since: float | None = None
        self.failing_since: float | None = None
        self.consecutive_failures = 0

    # -- the proxy side --------------------------------------------------------------------------------------

    def submit(self, event: RecordEvent) -> bool:
        """Queue an event without blocking; False (counted in `dropped`) if the queue is full or closed."""
        if self._closing:
            self._drop("closed", 1, "record writer closed; dropping records")
            return False
        if self._queue.qsize() >= self._max_queue:
            self._drop("queue_full", 1, f"record queue full ({self._max_queue}); dropping records")
            return False
        self._queue.put_nowait(event)
        self._submitted += 1
        return True

    def add_listener(self, fn: CommitListener) -> None:
        """Call `fn(event, info)` after each event is committed. Exceptions are logged, never raised."""
        self._listeners.append(fn)

    def remove_listener(self, fn: CommitListener) -> None:
        self._listeners.remove(fn)

    @property
    def pricer(self) -> Pricer:
        """What prices token-usage rows as they are written (the bundled price data and the config's overrides)."""
        return self._batches.pricer

    @pricer.setter
    def pricer(self, pricer: Pricer) -> None:
        """New prices (a config reload) apply to the rows written from now on; stored rows keep theirs."""
        self._batches.pricer = pricer

    @property
    def queue_depth(self) -> int:
        """Events accepted but not yet written or dropped (queued plus the batch being written)."""
        return self._submitted - self._done

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def health(self) -> WriterHealth:
        return WriterHealth(self.running, self.queue_depth, self._max_queue, self.written, dict(self.dropped),
                            dict(self.last_loss_at), self.last_commit_at, self.busy_since, self.failing_since,
                            self.consecutive_failures, self.last_error)

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (on the running loop). First it closes, as failed, every interception a
        previous process left open: one recording daemon per database. Idempotent."""
        if self._task is not None:
            return
        if self._closing:
            raise RuntimeError("the record writer was closed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-record-writer")

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every event submitted so far is written (or dropped and counted), and until the start-up
        clean-up of a previous run's dangling interceptions is done."""
        async with asyncio.timeout(timeout):
            await self._wait_flushed()

    async def _wait_flushed(self) -> None:
        target = self._submitted
        if self._done >= target and (self._task is None or self._ready.is_set()):
            return
        if not self.running:
            raise RuntimeError("the record writer is not running")
        await self._ready.wait()
        if self._done >= target:
            return
        if not self.running:
            raise RuntimeError("the record writer stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._urgent += 1
        try:
            await fut
        finally:
            self._urgent -= 1

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop accepting events, write everything queued, stop. After `timeout` seconds the rest is dropped
        (counted as `dropped["shutdown"]`). If another process holds the database lock at that moment, the
        write already waiting for it cannot be interrupted: close() can overrun by up to busy_timeout."""
        if self._closing:
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=timeout)
            return
        self._closing = True
        if self._task is None:
            self._abandon("record writer closed before it was started")
            return
        self._queue.put_nowait(_STOP)
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._abandon(f"record writer did not finish within {timeout}s")

    def _abandon(self, why: str) -> None:
        lost = self._submitted - self._done
        if lost:
            self.dropped["shutdown"] += lost
            self.last_loss_at["shutdown"] = time.monotonic()
            log.error("%s: %d records lost", why, lost)
            self._finish(lost)
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- the background task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._close_dangling()
            self._ready.set()
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    self.busy_since = time.monotonic()
                    try:
                        await self._process(batch)
                    except Exception as exc:  # a bug: never let the task die with records queued
                        self.last_error = describe(exc)
                        self.dropped["db_error"] += len(batch)
                        self.last_loss_at["db_error"] = time.monotonic()
                        log.exception("record batch of %d lost", len(batch))
                        self._finish(len(batch))
                    finally:
                        self.busy_since = None
                if stop:
                    return
        finally:
            self._ready.set()
            for _target, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("record writer stopped before the flushed events were written"))
            self._waiters.clear()

    async def _next_batch(self) -> tuple[list[RecordEvent], bool]:
        item = await self._queue.get()
        if isinstance(item, _Stop):
            return [], True
        batch: list[RecordEvent] = [item]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_interval
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._urgent or self._closing:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if isinstance(item, _Stop):
                return batch, True
            batch.append(item)
        return batch, False

    async def _process(self, batch: list[RecordEvent]) -> None:
        isolate = False
        attempt = 0
        first_failure: float | None = None
        while True:
            try:
                result = await self._write_batch(batch, isolate=isolate)
                self._committed()
                break
            except Exception as exc:
                if not isolate and not is_database_error(exc):
                    log.warning(
                        "the database refused a record in a batch of %d (%s); writing them one by one",
                        len(batch),
                        describe(exc),
                    )
                    isolate = True
                    continue
                first_failure = first_failure or time.monotonic()
                attempt += 1
                if not await self._backoff(exc, attempt, first_failure, f"a batch of {len(batch)} records"):
                    self._drop("db_error", len(batch), f"record batch dropped after retrying: {describe(exc)}")
                    self._finish(len(batch))
                    return

        self._batches.commit(result)
        for reason, n in result.drops.items():
            self._drop(reason, n, f"records not written: {reason}")
        self.written += len(result.committed)
        self._finish(len(batch))
        for event, info in result.committed:
            self._notify(event, info)

    async def _backoff(self, exc: BaseException, attempt: int, first_failure: float, what: str) -> bool:
        """Record the error and sleep before the next attempt; False once past `retry_for`."""
        self.last_error = describe(exc)
        self.failing_since = self.failing_since or time.monotonic()
        self.consecutive_failures += 1
        if time.monotonic() - first_failure >= self._retry_for:
            return False
        delay = min(self._max_backoff, 0.05 * 2 ** (attempt - 1))
        self._log_limited("retry", logging.WARNING, "database write failed (%s); retrying %s", self.last_error, what)
        await asyncio.sleep(delay)
        return True

    async def _close_dangling(self) -> None:
        attempt = 0
        first_failure: float | None = None
        while True:
            try:
                async with self._db.writer.begin() as conn:
                    result = await conn.execute(
                        sa.update(interceptions)
                        .where(interceptions.c.ended_at.is_(None))
                        .values(
                            ended_at=datetime.now(UTC),
                            status="failed",
                            error_type="unknown",
                            error_message=DANGLING_MESSAGE,
                        )
                    )
                self.closed_dangling = int(result.rowcount or 0)
                self._committed()
                if self.closed_dangling:
                    log.warning("closed %d interceptions left open by a previous run", self.closed_dangling)
                return
            except Exception as exc:
                first_failure = first_failure or time.monotonic()
                attempt += 1
                if not await self._backoff(exc, attempt, first_failure, "closing dangling interceptions"):
                    log.error("could not close dangling interceptions: %s", self.last_error)
                    return

    async def _write_batch(self, batch: list[RecordEvent], *, isolate: bool) -> BatchResult:
        return await self._batches.write(batch, isolate=isolate)

    @property
    def _inflight(self) -> dict[str, InFlight]:
        """The started interceptions whose start is kept in memory until they end."""
        return self._batches.inflight

    # -- helpers ---------------------------------------------------------------------------------------------

    def _finish(self, n: int) -> None:
        self._done += n
        pending: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self._done >= target:
                fut.set_result(None)
            else:
                pending.append((target, fut))
        self._waiters = pending

    def _notify(self, event: RecordEvent, info: CommitInfo) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, info)
            except Exception:
                log.exception("record listener %r failed", fn)

    def _committed(self) -> None:
        self.last_commit_at = time.monotonic()
        self.failing_since = None
        self.consecutive_failures = 0

    def _drop(self, reason: str, n: int, message: str) -> None:
        self.dropped[reason] += n
        if reason not in _EXPECTED_DROPS:
            self.last_loss_at[reason] = time.monotonic()
        self._log_limited(
            f"drop:{reason}",
            logging.WARNING if reason in _EXPECTED_DROPS else logging.ERROR,
            "%s (%s: %d dropped so far)",
            message,
            reason,
            self.dropped[reason],
        )

    def _log_limited(self, key: str, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._last_log[key] = now
            log.log(level, msg, *args)
