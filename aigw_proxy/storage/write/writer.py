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

This module is the queue and the background task (its database thread, batching, start, flush and close); the
parts it is made of are core.py (state and bookkeeping), file_guard.py, commits.py, backlog.py and dangling.py.
"""


from __future__ import annotations

import asyncio
import logging
from typing import Final

from aigw_proxy.storage.database import open_like
from aigw_proxy.storage.write.backlog import Backlog
from aigw_proxy.storage.write.batch import StoredEvent, describe
from aigw_proxy.storage.write.core import RECENT_WINDOW, WriterHealth, _Stop
from aigw_proxy.storage.write.dangling import DANGLING_MESSAGE, DanglingCleanup
from aigw_proxy.storage.write.db_thread import DatabaseThread

__all__ = ["DANGLING_MESSAGE", "RECENT_WINDOW", "RecordWriter", "WriterHealth"]

log = logging.getLogger("aigw_proxy.storage")

_STOP: Final = _Stop()


class RecordWriter(Backlog, DanglingCleanup):
    """Queue + background batch writer for record events.

    `submit()` must be called from the event loop the writer was started on (it is not thread-safe).
    `spool_max_bytes=0` turns the spool off (the backlog of a failing database is kept in memory only).
    """

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

    async def _write_new(self, batch: list[StoredEvent]) -> None:
        if not await self._write(batch, finished=len(batch)):
            self._held = batch  # the backlog starts here (there was none)
            await self._spill()
