"""The record writer's database thread: an event loop of its own where every database call of the writer runs.

Why: one batch is ~100 awaits (SQLAlchemy's async adaptation makes every statement, cursor and fetch a round trip
to the driver's thread). On the proxy's loop each of them waits a whole loop iteration; with the proxy busy
relaying (many milliseconds an iteration) a batch of 50 records took 0.4–1.2 s to commit, and the time from a
response reaching the client to its record being committed (the durability window) grew past a second. On its
own loop the round trips only wait for the interpreter lock, which the proxy's loop gives up at every socket
call. The proxy's loop makes one hop per batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from aigw_proxy.aio import new_loop_like


class DatabaseThread:
    def __init__(self, name: str = "aigw-record-db") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (from the proxy's loop: the thread's loop is of the same kind, e.g. uvloop)."""
        loop = new_loop_like(asyncio.get_running_loop())
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        self._thread.start()

    async def run[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the thread's loop and wait for it here (cancelling this cancels it there)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the database thread is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
        if not thread.is_alive():
            loop.close()
