"""The record writer: the proxy's event loop hands events over with `submit()` (never blocks, never awaits the
database); a background task takes them off the queue in batches and writes each batch in one transaction, in
submission order (batch.py; the rows come from rows.py, the thread lineage from lineage.py). Listeners are told
about each start and end once it is committed, with what the writer resolved for it (`CommitInfo`). `written`
counts the events committed, nothing else.

When the database cannot take writes (locked past busy_timeout, disk full, I/O errors, the file gone or not a
database any more), nothing is dropped for that alone: the failed batch and everything after it form a backlog,
kept in order in the spool file beside the database (spool.py; fsynced, so it survives a crash or a restart), and
the writer retries with exponential backoff (50 ms doubling up to `max_backoff`). Once a write succeeds it
writes the backlog, oldest first, then carries on with the queue. Where the spool cannot be written either (the
same full disk) the backlog waits in memory. Bounds, and the drops past them (counted in `dropped` by reason,
logged, rate-limited):

* `queue_full`: the in-memory queue holds `max_queue` events (10,000 by default) and the writer cannot move them
  to the spool (the database is slow or failing and the spool is off or cannot be written);
* `spool_full`: the same, because the spool reached `spool_max_bytes` (256 MiB by default);
* `invalid`: one record the database refuses (duplicate id, a value it cannot store): the batch is rewritten
  record by record inside savepoints and only that record is dropped;
* `spool_corrupt`: an unreadable line in a spool left by an earlier run; `db_error`: a bug writing a batch;
* `shutdown`: still queued when `close()` gave up (what the spool took is written at the next start).

Expected, not losses: `already_ended`, `already_written`, `unknown_interception`, `closed`.

The database file is checked before every write and every `check_interval` seconds when idle: deleted or
replaced under the running proxy, it is reopened (`Database.reopen`: a deleted one is restored from the handle
still open on it) and the interceptions in flight are carried over to a replacement, so records keep reaching
the file the path names.

`health()` is the read-only state health checks report from (see `WriterHealth`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from aigw_proxy.capture.raw import CaptureRecord
from aigw_proxy.recording.commits import CommitInfo, CommitListener
from aigw_proxy.recording.records import InterceptionUsage, RecordEvent
from aigw_proxy.spend import Pricer
from aigw_proxy.storage.database import Database, open_like
from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts
from aigw_proxy.storage.write.batch import (
    BatchResult,
    BatchWriter,
    InFlight,
    StoredEvent,
    describe,
    is_database_error,
)
from aigw_proxy.storage.write.db_thread import DatabaseThread
from aigw_proxy.storage.write.spool import Spool, SpoolFull

log = logging.getLogger("aigw_proxy.storage")

DANGLING_MESSAGE: Final = "proxy stopped before the interception ended"
DEFAULT_MAX_QUEUE: Final = 10_000
DEFAULT_SPOOL_MAX_BYTES: Final = 256 * 1024 * 1024
RECENT_WINDOW: Final = 60.0  # seconds of drops `WriterHealth.dropped_recently` covers
EXPECTED_DROPS: Final = frozenset({"already_ended", "already_written", "unknown_interception", "closed"})
_LOG_EVERY = 10.0  # seconds between two warnings of the same kind
_PAUSE_STEP = 0.1  # while backing off, the queue is moved to the spool this often


def default_spool_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + "-spool.jsonl")


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """A read-only snapshot of the writer for health checks. Times are `time.monotonic()` values.

    * `running`: the background task is alive; `queue_depth` / `max_queue`: events held in memory (queued, being
      written, or kept because the spool cannot take them) and the bound past which new ones are dropped;
    * `written`: events committed; `dropped`: by reason since start; `dropped_recently`: losses (expected drops
      left out) in the last `RECENT_WINDOW` seconds, by reason; `last_loss_at`: reason → latest loss;
    * `last_commit_at`: the latest committed batch; `busy_since`: when the write in progress began (None when
      idle); `failing_since`: first failure of the current run of failed writes (None once one succeeds);
      `consecutive_failures`; `last_error`: the latest database error;
    * `spooled` / `spool_bytes` / `spool_max_bytes`: events and bytes waiting in the spool file, and its bound
      (0: no spool);
    * `database_problem`: why the database file cannot be used now (deleted or replaced and not reopened yet),
      else None.
    """

    running: bool
    queue_depth: int
    max_queue: int
    written: int
    dropped: dict[str, int]
    dropped_recently: dict[str, int]
    last_loss_at: dict[str, float]
    last_commit_at: float | None
    busy_since: float | None
    failing_since: float | None
    consecutive_failures: int
    last_error: str | None
    spooled: int
    spool_bytes: int
    spool_max_bytes: int
    database_problem: str | None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Stop:
    pass


_STOP: Final = _Stop()


class RecordWriter:
    """Queue + background batch writer for record events.

    `submit()` must be called from the event loop the writer was started on (it is not thread-safe).
    `spool_max_bytes=0` turns the spool off (the backlog of a failing database is kept in memory only).
    """

    def __init__(
        self,
        db: Database,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_backoff: float = 5.0,
        spool_path: Path | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        check_interval: float = 1.0,
        pricer: Pricer | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be positive")
        self._db = db  # the caller's; the writer works on one of its own (`_wdb`), on its database thread
        self._wdb: Database = db
        self._io: DatabaseThread | None = None
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._check_interval = check_interval
        self._queue: asyncio.Queue[StoredEvent | _Stop] = asyncio.Queue()  # bounded by submit()
        # Beside the SQLite file; on PostgreSQL where the daemon says (the data directory), else none.
        spool_at = spool_path or (default_spool_path(db.path) if db.path is not None else None)
        self._spool = Spool(spool_at, spool_max_bytes) if spool_max_bytes and spool_at is not None else None
        self._spool_refusal: str | None = None  # why the last append to the spool failed ("full" or the error)
        self._inherited = 0  # events left in the spool by an earlier run, not written yet
        self._held: list[StoredEvent] = []  # backlog the spool did not take (newer than the spool's)
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
        self._recent: deque[tuple[float, str, int]] = deque()
        self._born = datetime.now(UTC)  # interceptions open from before this are a previous run's
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_loss_at: dict[str, float] = {}
        self.last_commit_at: float | None = None
        self.busy_since: float | None = None
        self.failing_since: float | None = None
        self.consecutive_failures = 0
        self.database_problem: str | None = None
        self.closed_dangling = 0

    # -- the proxy side --------------------------------------------------------------------------------------

    def submit(self, event: StoredEvent) -> bool:
        """Queue an event (a record event, or a raw capture: `--capture-bodies`) without blocking; False (counted
        in `dropped`) if the queue is full or closed."""
        if self._closing:
            self._drop("closed", 1, "record writer closed; dropping records")
            return False
        if self._queue.qsize() >= self._max_queue:
            if self._spool_refusal == "full":
                self._drop("spool_full", 1, f"the database is not taking writes, the spool is full "
                           f"({self._spool_max}) and so is the record queue ({self._max_queue}); dropping records")
            else:
                self._drop("queue_full", 1, f"record queue full ({self._max_queue}); dropping records")
            return False
        self._queue.put_nowait(event)
        self._submitted += 1
        return True

    def add_listener(self, fn: CommitListener) -> None:
        """Call `fn(event, info)` after each start or end is committed. Exceptions are logged, never raised."""
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
    def group_of(self) -> Callable[[str], str | None]:
        """The group whose budget a user's calls are charged to (spend controls), stored on their token rows as
        `effective_group_id` when the call ends; called on the writer's thread, so it must only read."""
        return self._batches.group_of

    @group_of.setter
    def group_of(self, fn: Callable[[str], str | None]) -> None:
        self._batches.group_of = fn

    @property
    def queue_depth(self) -> int:
        """Events accepted but not yet written or dropped that are held in memory (the spool's are not)."""
        return self._submitted - self._done - self._own_spooled

    @property
    def _own_spooled(self) -> int:
        return self._spool.pending - self._inherited if self._spool is not None else 0

    @property
    def spooled(self) -> int:
        """Events waiting in the spool file (this run's and any an earlier run left)."""
        return self._spool.pending if self._spool is not None else 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def _spool_max(self) -> str:
        return f"{self._spool.max_bytes} bytes" if self._spool is not None else "off"

    def health(self) -> WriterHealth:
        """The writer's state now, for /healthz and friends (cheap; call it on the writer's loop)."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > RECENT_WINDOW:
            self._recent.popleft()
        recent: Counter[str] = Counter()
        for _at, reason, n in self._recent:
            recent[reason] += n
        spool = self._spool
        return WriterHealth(
            running=self.running,
            queue_depth=self.queue_depth,
            max_queue=self._max_queue,
            written=self.written,
            dropped=dict(self.dropped),
            dropped_recently=dict(recent),
            last_loss_at=dict(self.last_loss_at),
            last_commit_at=self.last_commit_at,
            busy_since=self.busy_since,
            failing_since=self.failing_since,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
            spooled=self.spooled,
            spool_bytes=spool.bytes_pending if spool is not None else 0,
            spool_max_bytes=spool.max_bytes if spool is not None else 0,
            database_problem=self.database_problem,
        )

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
            "spooled": self.spooled,
            "failing_since": self.failing_since,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (on the running loop). It first writes what an earlier run left in the
        spool, then closes, as failed, every interception a previous process left open: one recording daemon per
        database. Idempotent."""
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
        """Stop accepting events, write everything queued, stop. If the database is not taking writes, the
        backlog goes to the spool (written at the next start). After `timeout` seconds the rest is dropped
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
        lost = self._submitted - self._done - self._own_spooled
        if lost > 0:
            self._drop("shutdown", lost, f"{why}: records lost")
            self._finish(lost)
        self._held.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- the background task ---------------------------------------------------------------------------------

    async def _start_thread(self) -> None:
        io = DatabaseThread()
        io.start()
        try:
            self._wdb = await io.run(open_like(self._db))
        except Exception as exc:  # write from this loop then
            log.warning("record writer: no database thread (%s); writing from the proxy's loop", describe(exc))
            await io.stop()
            return
        self._io = io
        self._batches.db = self._wdb

    async def _stop_thread(self) -> None:
        io, self._io = self._io, None
        if io is None:
            return
        try:
            await io.run(self._wdb.close())
        except Exception as exc:
            log.warning("record writer: closing its database: %s", describe(exc))
        await io.stop()

    async def _on_db[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a database coroutine on the writer's database thread (or here, without one)."""
        return await self._io.run(coro) if self._io is not None else await coro

    async def _run(self) -> None:
        try:
            await self._start_thread()
            await self._load_spool()
            cleaned = False
            while True:
                if self._backlog():
                    if await self._write_backlog():
                        continue
                    if self._closing:
                        await self._park_backlog()
                        return
                    await self._pause()
                    continue
                if not cleaned:
                    if await self._close_dangling():
                        cleaned = True
                        self._ready.set()
                        continue
                    if self._closing:
                        return
                    await self._pause()
                    continue
                batch, stop = await self._next_batch()
                if batch:
                    await self._write_new(batch)
                elif not stop:
                    await self._check_file()
                if stop and not self._backlog():
                    return
        finally:
            await self._stop_thread()
            self._ready.set()
            for _target, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("record writer stopped before the flushed events were written"))
            self._waiters.clear()

    async def _next_batch(self) -> tuple[list[StoredEvent], bool]:
        """The next batch; ([], False) after `check_interval` seconds without events.

        An event that arrives to an idle writer waits up to `flush_interval` for company (one transaction for
        many events); events that queued up while the previous batch was being written have waited already and
        are written at once, as many as there are (up to `batch_size`): the time from submit to commit stays
        about one flush interval plus one commit, at any load."""
        fresh = self._queue.empty()
        try:
            item = await asyncio.wait_for(self._queue.get(), self._check_interval)
        except TimeoutError:
            return [], False
        if isinstance(item, _Stop):
            return [], True
        batch: list[StoredEvent] = [item]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._flush_interval if fresh else 0.0)
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

    def _backlog(self) -> bool:
        return bool(self._held) or (self._spool is not None and self._spool.pending > 0)

    async def _write_new(self, batch: list[StoredEvent]) -> None:
        if not await self._write(batch, finished=len(batch)):
            self._held = batch  # the backlog starts here (there was none)
            await self._spill()

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

    def _failed(self, exc: BaseException) -> None:
        self.failing_since = self.failing_since or time.monotonic()
        self.consecutive_failures += 1
        self.last_error = describe(exc)
        self._log_limited("retry", logging.WARNING,
                          "database write failed (%s); %d record events kept (%d in the spool), retrying",
                          self.last_error, self._submitted - self._done, self.spooled)

    def _succeeded(self) -> None:
        now = time.monotonic()
        if self.failing_since is not None:
            log.warning("database writes work again after %.1f s of failures; writing the %d record events kept",
                        now - self.failing_since, self._submitted - self._done + self._inherited)
            self._last_log.pop("retry", None)
        self.failing_since = None
        self.consecutive_failures = 0
        self.last_commit_at = now

    # -- the backlog -----------------------------------------------------------------------------------------

    async def _load_spool(self) -> None:
        if self._spool is None:
            return
        try:
            self._inherited = await asyncio.to_thread(self._spool.load)
        except OSError as exc:
            log.error("cannot read the record spool %s left by an earlier run: %s", self._spool.path, exc)
            return
        if self._inherited:
            log.warning("%d record events left in %s by an earlier run: writing them first",
                        self._inherited, self._spool.path)

    async def _write_backlog(self) -> bool:
        """Write the backlog, oldest first: the spool, then what is held in memory. True once it is all
        written; False when the database failed again."""
        spool = self._spool
        while spool is not None and spool.pending:
            try:
                chunk = await asyncio.to_thread(spool.read, self._batch_size)
            except OSError as exc:
                self._lose_spool(f"cannot read the record spool {spool.path}: {exc}")
                break
            if not chunk.lines:  # the file no longer holds what was counted
                self._lose_spool(f"the record spool {spool.path} ended early")
                break
            inherited = min(self._inherited, chunk.lines)
            own = chunk.lines - inherited
            unreadable = chunk.lines - len(chunk.events)
            if unreadable:
                self._drop("spool_corrupt", unreadable, f"unreadable records in the spool {spool.path}")
            if chunk.events and not await self._write(chunk.events, finished=0, replay=True):
                return False
            self._inherited -= inherited
            if spool.advance(chunk):
                await asyncio.to_thread(spool.clear)
            self._finish(own)
        while self._held:
            part = self._held[: self._batch_size]
            if not await self._write(part, finished=len(part)):
                return False
            del self._held[: len(part)]
        return True

    def _lose_spool(self, why: str) -> None:
        assert self._spool is not None
        own = self._own_spooled
        log.error("%s; %d record events in it are lost", why, self._spool.pending)
        if own:
            self._drop("spool_corrupt", own, "record spool lost")
            self._finish(own)
        self._inherited = 0
        self._spool.clear()

    async def _spill(self) -> None:
        """Move the backlog held in memory, then what waits in the queue, to the spool, in order, while the
        spool takes it."""
        if self._spool is None:
            return
        while True:
            if not self._held:
                self._held = self._take_queued()
                if not self._held:
                    return
            try:
                await asyncio.to_thread(self._spool.append, self._held)
            except SpoolFull:
                self._refused("full", f"record spool {self._spool.path} full ({self._spool.max_bytes} bytes): "
                              "keeping the backlog in memory")
                return
            except OSError as exc:
                self._refused(str(exc), f"cannot write the record spool {self._spool.path} ({exc}): keeping the "
                              "backlog in memory")
                return
            if self._spool_refusal is not None:
                log.warning("the record spool %s takes the backlog again", self._spool.path)
                self._spool_refusal = None
            self._held = []

    def _refused(self, why: str, message: str) -> None:
        if self._spool_refusal != why:
            log.error("%s", message)
        self._spool_refusal = why

    def _take_queued(self) -> list[StoredEvent]:
        """Up to a batch of queued events, without waiting (a stop marker is left in place)."""
        taken: list[StoredEvent] = []
        while len(taken) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)  # seen again by the main loop
                break
            taken.append(item)
        return taken

    async def _pause(self) -> None:
        """Back off before the next attempt, moving new events to the spool meanwhile."""
        delay = min(self._max_backoff, 0.05 * 2 ** min(max(self.consecutive_failures - 1, 0), 16))
        deadline = time.monotonic() + delay
        while True:
            await self._spill()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return
            await asyncio.sleep(min(remaining, _PAUSE_STEP))

    async def _park_backlog(self) -> None:
        """Closing while the database fails: what the spool takes is written at the next start; the rest is
        lost (counted)."""
        await self._spill()
        lost = len(self._held) + len(self._drain_queue())  # _spill stops early only when the spool refuses
        self._held = []
        if lost:
            self._drop("shutdown", lost, "the database is not taking writes and the spool cannot either: records "
                       "lost at shutdown")
            self._finish(lost)
        if self._spool is not None and self._spool.pending:
            log.warning("%d record events left in the spool %s: written when the proxy next starts",
                        self._spool.pending, self._spool.path)

    def _drain_queue(self) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, _Stop):
                out.append(item)
        return out

    # -- the database file -----------------------------------------------------------------------------------

    async def _check_file(self) -> None:
        problem = self._wdb.file_problem()
        if problem is not None:
            await self._reopen(problem)

    async def _reopen(self, problem: str) -> bool:
        """The database file was deleted or replaced: switch to what the path names now."""
        path = self._wdb.path
        self.database_problem = f"the database file {path} was {problem} while the proxy had it open"
        self._log_limited("reopen", logging.ERROR, "%s: reopening it; records wait in the backlog meanwhile",
                          self.database_problem)
        carry = await self._on_db(self._open_rows()) if problem == "replaced" else None
        try:
            reopened = await self._on_db(self._wdb.reopen())
        except Exception as exc:
            self._failed(exc)
            return False
        if not reopened.same_contents:  # the rows of the calls in flight are not in the file at the path now
            try:
                if carry is None:
                    raise RuntimeError("nothing to carry over")
                await self._on_db(self._insert_rows(carry))
            except Exception as exc:
                log.error("the interceptions in flight were not carried over to %s (%s): their ends are dropped "
                          "as unknown", path, describe(exc))
                self._batches.forget_inflight()
        log.warning("the database file %s was %s: %s; recording continues there", path, problem, reopened.what)
        self.database_problem = None
        self._last_log.pop("reopen", None)
        return True

    async def _open_rows(self) -> dict[str, list[dict[str, Any]]] | None:
        """The in-flight interceptions (and their prompts and token rows so far) in the old file, read through
        the writer's connection still open on it."""
        if not self._wdb.writer_connected():
            return None  # a new connection would open the new file
        try:
            async with self._wdb.writer.connect() as conn:
                await conn.execution_options(**self._wdb.backend.read_only)
                columns = [c for c in interceptions.c if c.name != "session_id"]  # computed
                rows = (await conn.execute(sa.select(*columns).where(interceptions.c.ended_at.is_(None)))).mappings()
                out: dict[str, list[dict[str, Any]]] = {interceptions.name: [dict(r) for r in rows]}
                ids = [r["id"] for r in out[interceptions.name]]
                for table in (user_prompts, token_usages):
                    out[table.name] = []
                    for i in range(0, len(ids), 500):
                        part = ids[i:i + 500]
                        found = await conn.execute(sa.select(table).where(table.c.interception_id.in_(part)))
                        out[table.name] += [dict(r) for r in found.mappings()]
                return out
        except Exception as exc:
            log.error("could not read the interceptions in flight from the replaced database: %s", describe(exc))
            return None

    async def _insert_rows(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        ix = rows[interceptions.name]
        if not ix:
            return
        async with self._wdb.writer.begin() as conn:
            ids = [r["id"] for r in ix]
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                found = await conn.execute(sa.select(interceptions.c.id).where(interceptions.c.id.in_(ids[i:i + 500])))
                existing |= {r[0] for r in found}
            new = [r for r in ix if r["id"] not in existing]
            if not new:
                return
            await conn.execute(sa.insert(interceptions), new)
            keep = {r["id"] for r in new}
            for table in (user_prompts, token_usages):
                children = [r for r in rows[table.name] if r["interception_id"] in keep]
                if children:
                    await conn.execute(sa.insert(table), children)
        log.warning("carried %d interceptions in flight over to the new database file", len(new))

    async def _close_dangling(self) -> bool:
        """Close, as failed, the interceptions an earlier process left open. True once done (or given up on as
        a bug); False when the database failed (retried after a pause)."""
        try:
            result = await self._on_db(self._end_dangling())
        except Exception as exc:
            if is_database_error(exc):
                self._failed(exc)
                return False
            log.exception("could not close dangling interceptions")
            return True
        self._succeeded()
        self.closed_dangling = int(result or 0)
        if self.closed_dangling:
            log.warning("closed %d interceptions left open by a previous run", self.closed_dangling)
        return True

    async def _end_dangling(self) -> int:
        async with self._wdb.writer.begin() as conn:
            result = await conn.execute(
                sa.update(interceptions)
                .where(interceptions.c.ended_at.is_(None), interceptions.c.started_at < self._born)
                .values(
                    ended_at=datetime.now(UTC),
                    status="failed",
                    error_type="unknown",
                    error_message=DANGLING_MESSAGE,
                )
            )
        return int(result.rowcount or 0)

    @property
    def _inflight(self) -> dict[str, InFlight]:
        """The started interceptions whose start is kept in memory until they end."""
        return self._batches.inflight

    # -- helpers ---------------------------------------------------------------------------------------------

    def _finish(self, n: int) -> None:
        if n <= 0:
            return
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

    def _drop(self, reason: str, n: int, message: str) -> None:
        self.dropped[reason] += n
        expected = reason in EXPECTED_DROPS
        if not expected:
            now = time.monotonic()
            self.last_loss_at[reason] = now
            self._recent.append((now, reason, n))
        self._log_limited(
            f"drop:{reason}",
            logging.WARNING if expected else logging.ERROR,
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
