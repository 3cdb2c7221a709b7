"""The admin listener: uvicorn (h11) serving the Starlette apps of app.py, on a thread with its own event loop.

Why a thread of its own: a heavy API query, a large page of JSON, a slow or hostile client never runs on the
proxy's event loop. The health endpoints still report the proxy's loop: they hand it a no-op and wait at most
`HealthPolicy.loop_timeout` for it (health.py), so `/healthz` answers 200 only while that loop is responsive.

The listening sockets are bound by `bind()` on the caller's thread, before the proxy starts, so a taken port fails
start-up at once; `start()` serves them once the proxy runs (connections made meanwhile wait in the backlog).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from aigw_proxy.admin.api.app import ApiApp
from aigw_proxy.admin.app import AdminContext, admin_app, is_loopback, metrics_app
from aigw_proxy.admin.console.app import ConsoleApp
from aigw_proxy.admin.http import AdminLimits, protocol_class
from aigw_proxy.sockets import listening_socket
from aigw_proxy.storage import Database, DatabaseConfig, open_database

log = logging.getLogger("aigw_proxy.admin")


class AdminBindError(OSError):
    pass


@dataclass(slots=True)
class _Listener:
    what: str  # for messages: "admin listener", "metrics listener"
    sock: socket.socket

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port


def _bind(what: str, host: str, port: int) -> _Listener:
    try:
        sock = listening_socket(host, port, backlog=128)
    except OSError as exc:
        raise AdminBindError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror or exc}") from None
    return _Listener(what, sock)


def lower_thread_priority(by: int) -> None:
    """Raise this thread's nice value by `by` (Linux keeps one per thread; threads it starts inherit it)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + by)
    except (OSError, AttributeError) as exc:  # not Linux, or not allowed: the thread keeps its priority
        log.debug("could not lower the admin thread's priority: %s", exc)


class AdminServer:
    def __init__(self, admin_listen: tuple[str, int], metrics_listen: tuple[str, int] | None = None,
                 limits: AdminLimits | None = None, niceness: int = 0) -> None:
        self.limits = limits or AdminLimits()
        self._niceness = niceness
        self._listen = admin_listen
        self._metrics_listen = metrics_listen
        self._admin: _Listener | None = None
        self._metrics: _Listener | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    def bind(self) -> None:
        """Bind the listening sockets now (AdminBindError names the listener and the address)."""
        self._admin = _bind("admin listener", *self._listen)
        if self._metrics_listen is not None:
            try:
                self._metrics = _bind("metrics listener", *self._metrics_listen)
            except AdminBindError:
                self._admin.sock.close()
                raise

    @property
    def address(self) -> tuple[str, int]:
        assert self._admin is not None
        return self._admin.address

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return self._metrics.address if self._metrics is not None else None

    def metrics_loopback(self) -> bool:
        """Whether the listener that serves /metrics is reachable from this host only."""
        listener = self._metrics or self._admin
        assert listener is not None
        return is_loopback(listener.address[0])

    async def start(self, ctx: AdminContext, database_path: Path | DatabaseConfig, confdir: Path) -> None:
        """Start the thread, open the API's database there and serve; returns once serving."""
        assert self._admin is not None, "bind() first"
        if self._metrics is not None:
            host, port = self._metrics.address
            ctx.metrics_elsewhere = f"{host}:{port}"
        self._thread = threading.Thread(target=self._run, args=(ctx, database_path, confdir), name="aigw-admin",
                                        daemon=True)
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    def _run(self, ctx: AdminContext, database_path: Path | DatabaseConfig, confdir: Path) -> None:
        if self._niceness:
            lower_thread_priority(self._niceness)
        try:
            asyncio.run(self._main(ctx, database_path, confdir))
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("the admin listener stopped")

    def _config(self, app: object) -> uvicorn.Config:
        return uvicorn.Config(
            app,  # type: ignore[arg-type]
            http=protocol_class(self.limits),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,  # the daemon's logging stays as it is
            log_level=logging.WARNING,
            access_log=False,
            proxy_headers=False,  # never trust X-Forwarded-* from whoever connects
            server_header=False,
            timeout_keep_alive=self.limits.keep_alive,
            limit_concurrency=self.limits.max_connections,
            h11_max_incomplete_event_size=self.limits.max_head,
            timeout_graceful_shutdown=5,
        )

    async def _main(self, ctx: AdminContext, database_path: Path | DatabaseConfig, confdir: Path) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        db: Database = await open_database(database_path, migrate_schema=False)
        try:
            assert self._admin is not None
            console = ConsoleApp(db, confdir, ctx.metrics.registry if ctx.metrics is not None else None, ctx.console,
                                 config_budgets=ctx.config_budgets)
            api = ApiApp(db, confdir, ctx.config_budgets)
            apps = [(self._admin, admin_app(ctx, api, db, is_loopback(self._admin.address[0]), console))]
            if self._metrics is not None:
                apps.append((self._metrics, metrics_app(ctx, db, is_loopback(self._metrics.address[0]))))
            servers = [uvicorn.Server(self._config(app)) for _, app in apps]
            tasks = [asyncio.create_task(server.serve(sockets=[listener.sock]), name=f"uvicorn {listener.what}")
                     for server, (listener, _) in zip(servers, apps, strict=True)]
            while not all(s.started for s in servers):
                failed = [t for t in tasks if t.done()]
                if failed:
                    await failed[0]  # raises its error
                    raise RuntimeError("the admin listener stopped while starting")
                await asyncio.sleep(0.005)
            self._ready.set_result(None)
            # The console's Overview kept warm on this loop: no page view waits for its 30-day sums.
            refresher = asyncio.create_task(console.overview_cache.keep_warm(), name="overview refresher")
            await self._stop.wait()
            refresher.cancel()
            for server in servers:
                server.should_exit = True
            await asyncio.gather(refresher, *tasks, return_exceptions=True)
        finally:
            await db.close()

    async def close(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 15)
        for listener in (self._admin, self._metrics):
            if listener is not None:
                listener.sock.close()
