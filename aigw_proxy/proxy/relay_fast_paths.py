"""Three per-event costs of mitmproxy's relay, cut without changing what it does (installed by the daemon).

Every streamed SSE event crosses mitmproxy as its own read: the connection handler's read loop, a dozen protocol
layers, a write, a drain. Profiled in lock-step (`bench/proxy_bench.py --only stream --py-spy DIR`, embedded
mitmproxy, one read per event), three spots spent ~10% of the event loop's busy time on work whose answer does not
change from one event to the next:

* `Http1Server.send` looks the response's `transfer-encoding` up in its header multidict for every body chunk it
  writes to the agent (a case-insensitive scan through `Headers.get_all`: ~5% of the per-event time). Here the
  answer is taken once, when the response head is sent, for that response; chunks and the end of the message use
  it. An addon that edits a response's headers after they are on the wire changes nothing either way: the head
  is sent.
* `Connection.__eq__` runs several times per event (each layer asks whether a command's connection is the client
  or the server) and starts with an `isinstance` against an ABCMeta class (~3%). Here the same answer comes from
  an identity check and an exact type check first (both connection kinds mitmproxy makes), falling back to
  mitmproxy's own comparison for anything else.
* `ConnectionHandler.drain_writers` takes an `asyncio.Lock` and awaits `StreamWriter.drain()` on every transport
  after every read (~3%), though drain waits only while a transport's write buffer is over its high-water mark
  (or raises for a dead one). Here the lock and the drains are skipped when no writer could wait or raise — its
  reader has no error, its transport is not closing, its protocol is neither paused nor lost — exactly the case
  in which `drain()` returns at once; otherwise mitmproxy's own drain runs, backpressure and errors as before.

`install()` patches the classes in this process, once; only mitmproxy 12 (the version pyproject admits, whose code
these mirror) is patched. tests/unit/test_relay_fast_paths.py checks each against mitmproxy's original.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, version
from mitmproxy.proxy import commands, layer
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import HttpEvent, ResponseData, ResponseEndOfMessage, ResponseHeaders
from mitmproxy.proxy.server import ConnectionHandler

ORIGINALS: dict[str, Callable[..., Any]] = {}  # name → mitmproxy's own function, kept for the tests and uninstall()
_CHUNKED = "_aigw_chunked"  # per Http1Server: (the response, whether its body is sent chunked)
_KINDS = (connection.Client, connection.Server)


def _is_chunked(response: Any) -> bool:
    return "chunked" in response.headers.get("transfer-encoding", "").lower()


def http1_server_send(self: _http1.Http1Server, event: HttpEvent) -> layer.CommandGenerator[None]:
    """`Http1Server.send` with each response's chunked-or-not decided once, when its head goes out."""
    if type(event) is ResponseData:
        cached = getattr(self, _CHUNKED, None)
        if cached is not None and cached[0] is self.response:
            assert event.stream_id == self.stream_id
            data = event.data
            raw = b"%x\r\n%s\r\n" % (len(data), data) if cached[1] else data
            if raw:
                yield commands.SendData(self.conn, raw)
            return
    elif isinstance(event, ResponseHeaders):
        setattr(self, _CHUNKED, (event.response, _is_chunked(event.response)))
    elif isinstance(event, ResponseEndOfMessage):
        setattr(self, _CHUNKED, None)  # let go of the finished response (the identity check alone keeps it right)
    yield from ORIGINALS["Http1Server.send"](self, event)


def connection_eq(self: connection.Connection, other: object) -> bool:
    """`Connection.__eq__` (same id), answered without the ABC `isinstance` for mitmproxy's two connection kinds."""
    if self is other:
        return True
    if type(other) in _KINDS:
        return self.id == other.id  # type: ignore[attr-defined]
    return bool(ORIGINALS["Connection.__eq__"](self, other))


def _drain_is_noop(writer: Any) -> bool:
    """Whether `writer.drain()` would return at once without raising (asyncio/streams.py, Python 3.12 and 3.13)."""
    if type(writer) is not asyncio.StreamWriter:  # e.g. mitmproxy_rs's UDP and QUIC streams: always drain
        return False
    try:
        reader = writer._reader  # type: ignore[attr-defined]
        protocol = writer._protocol  # type: ignore[attr-defined]
        return ((reader is None or reader._exception is None) and not writer.transport.is_closing()
                and not protocol._paused and not protocol._connection_lost)
    except AttributeError:  # an asyncio laid out otherwise: always drain
        return False


async def drain_writers(self: ConnectionHandler) -> None:
    """`ConnectionHandler.drain_writers`, skipped when no writer's drain could wait or raise."""
    for io in self.transports.values():
        writer = io.writer
        if writer is not None and not _drain_is_noop(writer):
            await ORIGINALS["ConnectionHandler.drain_writers"](self)
            return


_PATCHES: tuple[tuple[str, type, str, Callable[..., Any]], ...] = (
    ("Http1Server.send", _http1.Http1Server, "send", http1_server_send),
    ("Connection.__eq__", connection.Connection, "__eq__", connection_eq),
    ("ConnectionHandler.drain_writers", ConnectionHandler, "drain_writers", drain_writers),
)


def supported() -> bool:
    """Whether this mitmproxy is the one these fast paths mirror."""
    return version.VERSION.split(".", 1)[0] == "12"


def install() -> bool:
    """Patch mitmproxy's classes in this process (idempotent). False, and nothing changed, on another mitmproxy."""
    if not supported():
        return False
    for name, cls, attr, func in _PATCHES:
        if name not in ORIGINALS:
            ORIGINALS[name] = getattr(cls, attr)
            setattr(cls, attr, func)
    return True


def uninstall() -> None:
    """Put mitmproxy's own functions back (for tests)."""
    for name, cls, attr, _func in _PATCHES:
        original = ORIGINALS.pop(name, None)
        if original is not None:
            setattr(cls, attr, original)


def installed() -> bool:
    return bool(ORIGINALS)


__all__ = ["ORIGINALS", "connection_eq", "drain_writers", "http1_server_send", "install", "installed", "supported",
           "uninstall"]
