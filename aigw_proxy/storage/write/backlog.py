"""The record writer's backlog while the database cannot take writes: kept in order in the spool file (spool.py)
and, where the spool cannot take it, in memory; written back oldest first once writes work again, with
exponential backoff between attempts; parked in the spool at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aigw_proxy.storage.write.batch import StoredEvent
from aigw_proxy.storage.write.commits import Committer
from aigw_proxy.storage.write.core import _Stop
from aigw_proxy.storage.write.spool import SpoolFull

log = logging.getLogger("aigw_proxy.storage")

_PAUSE_STEP = 0.1  # while backing off, the queue is moved to the spool this often


class Backlog(Committer):
    def _backlog(self) -> bool:
        return bool(self._held) or (self._spool is not None and self._spool.pending > 0)

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
