"""A scripted stand-in for the provider APIs: an HTTPS (or plain) HTTP/1.1 server on 127.0.0.1.

Tests queue `Reply`s; each request takes the next one (or the default reply) and is kept in `requests` for
assertions. Replies can be chunked with delays (SSE), gzip/br/zstd-compressed, or cut off mid-stream.
Runs its own event loop in a thread so synchronous SDK clients can call through the proxy into it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import brotli
import zstandard


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request body, chunked or sized by Content-Length (lower-cased header names)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


@dataclass
class Reply:
    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    content_type: str = "application/json"
    encoding: str | None = None  # gzip | deflate | br | zstd: the whole body is compressed, then re-chunked
    delay: float = 0.0  # seconds between chunks
    cut_after: int | None = None  # close the connection after this many chunks (a broken stream)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: object, status: int = 200, **kw: object) -> Reply:
        return cls(status=status, chunks=[json.dumps(obj).encode()], **kw)  # type: ignore[arg-type]

    @classmethod
    def sse(cls, events: list[tuple[str | None, object]], **kw: object) -> Reply:
        """SSE events as (event name or None, data object or raw string); one chunk per event."""
        chunks = []
        for name, data in events:
            payload = data if isinstance(data, str) else json.dumps(data)
            chunks.append((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())
        return cls(chunks=chunks, content_type="text/event-stream", **kw)  # type: ignore[arg-type]


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    tls_resumed: bool | None = None  # over TLS: whether the connection resumed an earlier TLS session

    def json(self) -> Any:
        return json.loads(self.body)


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "br":
        return brotli.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    raise ValueError(encoding)


class StandIn:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.replies: deque[Reply] = deque()
        self.default = Reply.json({"ok": True})
        self.requests: list[SeenRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> StandIn:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = fut.result(10)
        return self

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _close() -> None:
            if self._server:
                self._server.close()
        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.requests.clear()

    # -- serving ---------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                body = await read_body(reader, headers)
                tls = writer.get_extra_info("ssl_object")
                self.requests.append(SeenRequest(method, path, headers, body, time.monotonic(),
                                                 tls.session_reused if tls is not None else None))
                reply = self.replies.popleft() if self.replies else self.default
                if not await self._send(writer, reply):
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, r: Reply) -> bool:
        chunks = r.chunks
        if r.encoding:
            whole = _compress(b"".join(chunks), r.encoding)
            step = max(1, len(whole) // max(1, len(chunks)))
            chunks = [whole[i:i + step] for i in range(0, len(whole), step)]
        hdrs = {"Content-Type": r.content_type, "Transfer-Encoding": "chunked", **r.headers}
        if r.encoding:
            hdrs["Content-Encoding"] = r.encoding
        if r.content_type.startswith("text/event-stream"):
            hdrs["Cache-Control"] = "no-cache"
        head = f"HTTP/1.1 {r.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        writer.write(head.encode())
        await writer.drain()
        for i, chunk in enumerate(chunks):
            if r.cut_after is not None and i >= r.cut_after:
                writer.close()
                return False
            if i and r.delay:
                await asyncio.sleep(r.delay)
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        if r.cut_after is not None and r.cut_after <= len(chunks):
            writer.close()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
