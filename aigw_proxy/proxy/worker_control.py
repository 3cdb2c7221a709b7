"""A worker process's side of `--workers` (proxy/workers.py has the supervisor): the listening socket it inherited,
its own record spool, and its answers to the supervisor on a private Unix socket (`WorkerControl`).

Imported by daemon.py, which the supervisor's module imports in turn: nothing here imports either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from aigw_proxy.admin.health import HealthMonitor
    from aigw_proxy.proxy.monitoring import Monitoring
    from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.workers")

READ_TIMEOUT = 3.0  # one read of a worker's state


def worker_spool_path(database_path: Path | None, data_dir: Path, index: int) -> Path | None:
    """The record spool of worker `index` (0 also for a single process): beside the SQLite file (None: the writer's
    default, `aigw-proxy.db-spool.jsonl`, for the first), or in the data directory for a database without a file.
    Each worker has its own: a restarted worker replays its predecessor's."""
    if database_path is not None:
        return None if index == 0 else database_path.with_name(f"{database_path.name}-spool-{index}.jsonl")
    return data_dir / ("aigw-proxy-spool.jsonl" if index == 0 else f"aigw-proxy-spool-{index}.jsonl")


@dataclass(frozen=True, slots=True)
class WorkerRole:
    index: int
    sock: socket.socket  # the proxy's listening socket, bound by the supervisor
    control_path: Path  # the Unix socket the supervisor reads this worker's state on


def serve_on_socket(sock: socket.socket) -> None:
    """Make mitmproxy's regular mode accept on `sock` instead of binding its own (in a worker process only)."""
    from mitmproxy.proxy import mode_servers

    async def listen(self: Any, host: str, port: int) -> list[asyncio.Server]:
        return [await asyncio.start_server(self.handle_stream, sock=sock)]

    mode_servers.RegularInstance.listen = listen  # type: ignore[method-assign,assignment]


class WorkerControl:
    """A worker's answers to its supervisor, on a thread of its own (like the admin listener): one line in
    (`state`), one JSON document out: pid, health report (the proxy loop asked as /healthz does), metrics text."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._health: HealthMonitor | None = None
        self._metrics: Metrics | None = None
        self._monitoring: Monitoring | None = None

    def bind(self) -> None:
        path = self.role.control_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a restarted worker's predecessor left it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(16)
        sock.setblocking(False)
        self._sock = sock

    @property
    def address(self) -> tuple[str, int]:
        return str(self.role.control_path), 0

    def metrics_loopback(self) -> bool:
        return True  # a private Unix socket

    async def start(self, health: HealthMonitor, metrics: Metrics, monitoring: Monitoring | None) -> None:
        self._health, self._metrics, self._monitoring = health, metrics, monitoring
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="aigw-worker-control", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("the worker's control socket stopped")

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._answer, sock=self._sock)
        ready.set_result(None)
        async with server:
            await self._stop.wait()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            if line.strip() == b"state":
                writer.write(json.dumps(await self.state()).encode())
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def state(self) -> dict[str, Any]:
        assert self._health is not None and self._metrics is not None
        report = await self._health.check(None)  # the database is probed once, by the supervisor
        reload_at = self._monitoring.reloader.m.reload_success[0]._value.get() if self._monitoring else None
        return {"pid": os.getpid(), "index": self.role.index, "health": report.body(),
                "config_reloaded_at": reload_at, "metrics": self._metrics.render().decode()}

    async def close(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(OSError):
            self.role.control_path.unlink()


async def read_state(path: Path, wait: float = READ_TIMEOUT) -> dict[str, Any] | None:
    """One worker's state, or None if it does not answer in time."""
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(b"state\n")
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
        return cast(dict[str, Any], json.loads(data)) if data else None
    except (OSError, TimeoutError, ValueError):
        return None
