"""The admin listener: a small HTTP/1.1 server on its own port, apart from proxy traffic.

Serves `GET /healthz` now; metrics and the REST API mount here as routes later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("aigw_proxy.admin")


@dataclass(slots=True)
class AdminResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: object) -> AdminResponse:
        return cls(status, json.dumps(value).encode() + b"\n", {"Content-Type": "application/json"})


Handler = Callable[[str, str, dict[str, str]], Awaitable[AdminResponse]]  # (method, target, headers)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Error", 503: "Service Unavailable"}


class AdminServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.prefix_routes: dict[str, Handler] = {}  # path prefix → handler, for whole trees such as /api/
        self._server: asyncio.Server | None = None

    def route(self, path: str, handler: Handler, *, prefix: bool = False) -> None:
        """Serve `path` exactly, or with `prefix=True` every path that starts with it (longest prefix wins;
        exact routes win over prefixes)."""
        if prefix:
            self.prefix_routes[path] = handler
        else:
            self.routes[path] = handler

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = [*lines[0].split(" "), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                if int(headers.get("content-length", "0") or 0) > 0:
                    await reader.readexactly(int(headers["content-length"]))
                resp = await self._dispatch(method, target, headers)
                keep = headers.get("connection", "").lower() != "close"
                hdrs = {"Content-Length": str(len(resp.body)), **resp.headers}
                if not keep:
                    hdrs["Connection"] = "close"
                status_line = f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}\r\n"
                writer.write(
                    (status_line + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode()
                    + resp.body
                )
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, method: str, target: str, headers: dict[str, str]) -> AdminResponse:
        path = target.split("?", 1)[0]
        handler = self.routes.get(path)
        if handler is None:
            matches = [p for p in self.prefix_routes if path.startswith(p)]
            handler = self.prefix_routes[max(matches, key=len)] if matches else None
        if handler is None:
            return AdminResponse.json(404, {"message": f"no such endpoint: {target}"})
        try:
            return await handler(method, target, headers)
        except Exception:
            log.exception("admin handler for %s failed", target)
            return AdminResponse.json(500, {"message": "internal error"})
