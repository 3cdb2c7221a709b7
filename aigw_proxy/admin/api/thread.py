"""The API thread: its own event loop and its own database engines, so a heavy query, a large page of JSON or a
slow client never runs on the proxy's event loop.

The admin listener stays on the proxy's loop (so `/healthz` answers only while that loop is responsive) and hands
each `/api/...` request over here; it only parses the request head and writes the finished response bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
from pathlib import Path

from aigw_proxy.admin.api.app import ApiApp
from aigw_proxy.admin.server import AdminResponse
from aigw_proxy.storage import Database, open_database

log = logging.getLogger("aigw_proxy.api")

BUSY_SWITCH_INTERVAL = 0.001  # seconds; see ApiThread.handle


class ApiThread:
    def __init__(self, database_path: Path, confdir: Path) -> None:
        self._path = database_path
        self._confdir = confdir
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: Database | None = None
        self._app: ApiApp | None = None
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._busy = 0  # API requests in progress (counted on the proxy's loop, where `handle` runs)
        self._idle_switch_interval = sys.getswitchinterval()

    async def start(self) -> None:
        """Start the thread and wait (without blocking the caller's loop) until its database is open."""
        self._thread = threading.Thread(target=self._run, name="aigw-api", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._db = loop.run_until_complete(open_database(self._path, migrate_schema=False))
        except BaseException as exc:
            self._ready.set_exception(exc)
            loop.close()
            return
        self._app = ApiApp(self._db, self._confdir)
        self._ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._db.close())
            loop.close()

    async def handle(self, method: str, target: str, headers: dict[str, str]) -> AdminResponse:
        """An admin-listener route handler (runs on the caller's loop; the work happens on the API thread)."""
        if self._loop is None or self._app is None or not self._loop.is_running():
            return AdminResponse.json(503, {"message": "The API is not running."})
        future = asyncio.run_coroutine_threadsafe(self._app.handle(method, target, headers), self._loop)
        self._busy += 1
        if self._busy == 1:
            # While the API thread works, a GIL it holds keeps the proxy's loop waiting up to the switch
            # interval (5 ms by default) each time: shorten it so a heavy query adds little to proxied requests
            # (measured p95 +11 ms -> +4 ms). Only while busy: more switching costs proxy throughput otherwise.
            self._idle_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(BUSY_SWITCH_INTERVAL)
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._busy -= 1
            if self._busy == 0:
                sys.setswitchinterval(self._idle_switch_interval)

    async def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
