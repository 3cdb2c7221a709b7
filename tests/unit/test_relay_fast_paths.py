"""The relay fast paths (aigw_proxy/proxy/relay_fast_paths.py) answer exactly as mitmproxy's own code does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from mitmproxy import http, options
from mitmproxy.connection import Client, Server
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
)
from mitmproxy.proxy.server import ConnectionHandler
from mitmproxy.test import tutils

from aigw_proxy.aio import loop_factory
from aigw_proxy.proxy import relay_fast_paths as fast


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    was = fast.installed()
    assert fast.install()
    yield
    if not was:
        fast.uninstall()


def test_install_patches_mitmproxy_and_uninstall_restores_it() -> None:
    assert _http1.Http1Server.send is fast.http1_server_send
    assert Client.__eq__ is fast.connection_eq
    assert ConnectionHandler.drain_writers is fast.drain_writers
    originals = dict(fast.ORIGINALS)
    assert fast.install()  # idempotent: the originals stay mitmproxy's
    assert fast.ORIGINALS == originals
    fast.uninstall()
    assert _http1.Http1Server.send is originals["Http1Server.send"]
    assert ConnectionHandler.drain_writers is originals["ConnectionHandler.drain_writers"]
    assert not fast.installed()
    fast.install()


# --- Http1Server.send ---------------------------------------------------------------------------------------------

def _client() -> Client:
    return Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8888), timestamp_start=0)


def _response(*, chunked: bool, http_version: str = "HTTP/1.1") -> http.Response:
    headers = http.Headers(transfer_encoding="chunked") if chunked else http.Headers(content_length="6")
    resp = tutils.tresp(headers=headers, content=None)
    resp.http_version = http_version
    return resp


def _relay(send: Callable[..., Any], exchanges: list[tuple[bytes, list[Any]]]) -> list[tuple[str, bytes | None]]:
    """Requests read by a fresh Http1Server and each one's response events sent through `send`: what goes out."""
    client = _client()
    server = _http1.Http1Server(Context(client, options.Options()))
    out: list[tuple[str, bytes | None]] = []
    list(server.handle_event(events.Start()))
    for request, response_events in exchanges:
        list(server.handle_event(events.DataReceived(client, request)))
        for make in response_events:
            for cmd in send(server, make(server.stream_id)):
                out.append((type(cmd).__name__, cmd.data if isinstance(cmd, commands.SendData) else None))
    return out


GET = b"GET /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
HEAD = b"HEAD /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"


def _answer(resp: http.Response, *chunks: bytes) -> list[Any]:
    return [lambda sid: ResponseHeaders(sid, resp, False), *(lambda sid, c=c: ResponseData(sid, c) for c in chunks),
            lambda sid: ResponseEndOfMessage(sid)]


SCENARIOS = {
    "chunked stream": [(GET, _answer(_response(chunked=True), b"event: a\n\n", b"data: {}\n\n", b"x"))],
    "content-length": [(GET, _answer(_response(chunked=False), b"abc", b"def"))],
    "HTTP/2 upstream answer": [(GET, _answer(_response(chunked=False, http_version="HTTP/2.0"), b"abcdef"))],
    "keep-alive: chunked, then not": [(GET, _answer(_response(chunked=True), b"one")),
                                      (GET, _answer(_response(chunked=False), b"two456"))],
    "keep-alive: not, then chunked": [(GET, _answer(_response(chunked=False), b"one456")),
                                      (GET, _answer(_response(chunked=True), b"two"))],
    "HEAD, chunked": [(HEAD, [lambda sid: ResponseHeaders(sid, _response(chunked=True), True),
                              lambda sid: ResponseEndOfMessage(sid)])],
    "broken upstream mid-stream": [(GET, [lambda sid: ResponseHeaders(sid, _response(chunked=True), False),
                                          lambda sid: ResponseData(sid, b"part"),
                                          lambda sid: ResponseProtocolError(sid, "upstream reset",
                                                                            ErrorCode.GENERIC_SERVER_ERROR)])],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_http1_server_sends_the_same_bytes_as_mitmproxys(name: str) -> None:
    ours = _relay(fast.http1_server_send, SCENARIOS[name])
    theirs = _relay(fast.ORIGINALS["Http1Server.send"], SCENARIOS[name])
    assert ours == theirs
    assert any(kind == "SendData" for kind, _ in ours)


def test_a_chunked_stream_is_framed_per_chunk_and_terminated() -> None:
    sent = [data for kind, data in _relay(fast.http1_server_send, SCENARIOS["chunked stream"]) if kind == "SendData"]
    assert sent[1:] == [b"a\r\nevent: a\n\n\r\n", b"a\r\ndata: {}\n\n\r\n", b"1\r\nx\r\n", b"0\r\n\r\n"]


def test_a_response_whose_headers_change_before_the_head_is_sent_is_framed_by_the_sent_head() -> None:
    resp = _response(chunked=False)
    resp.headers = http.Headers(transfer_encoding="chunked")  # an addon's change, before the head goes out
    sent = _relay(fast.http1_server_send, [(GET, _answer(resp, b"abc"))])
    assert (("SendData", b"3\r\nabc\r\n")) in sent


# --- Connection.__eq__ --------------------------------------------------------------------------------------------

class _OwnClient(Client):
    pass


def test_connections_compare_by_id_as_in_mitmproxy() -> None:
    a, b = _client(), _client()
    srv = Server(address=("api.anthropic.com", 443))
    same_id = _client()
    same_id.id = a.id
    own = _OwnClient(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
    own.id = a.id
    original = fast.ORIGINALS["Connection.__eq__"]
    pairs: list[tuple[Any, Any]] = [(a, a), (a, b), (a, srv), (srv, a), (a, same_id), (a, own), (own, a),
                                    (a, object()), (a, None), (a, a.id)]
    for x, y in pairs:
        assert (x == y) is bool(original(x, y)), (x, y)
    assert a == same_id and a != b and a != srv and a == own
    assert {a: 1}[same_id] == 1  # still hashable by id


# --- ConnectionHandler.drain_writers ------------------------------------------------------------------------------

async def _stream_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    ours, peer = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer.setblocking(False)
    return reader, writer, peer


def _handler(*writers: asyncio.StreamWriter) -> Any:
    ios = [SimpleNamespace(writer=w, handler=SimpleNamespace(cancelled=None)) for w in writers]
    for io in ios:
        io.handler.cancel = lambda msg, io=io: setattr(io.handler, "cancelled", msg)
    return SimpleNamespace(transports={i: io for i, io in enumerate(ios)}, _drain_lock=asyncio.Lock(), ios=ios)


def _each_loop(main: Callable[[], Any]) -> None:
    for kind in ("asyncio", "uvloop"):
        with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
            runner.run(main())


def test_drain_writers_skips_only_writers_that_could_not_wait() -> None:
    async def main() -> None:
        _r, idle, p1 = await _stream_pair()
        _r2, busy, p2 = await _stream_pair()
        assert fast._drain_is_noop(idle)
        busy.transport.set_write_buffer_limits(high=1024)
        busy.write(b"x" * 8 * 1024 * 1024)  # more than the socket takes while the peer reads nothing
        assert not fast._drain_is_noop(busy)
        h = _handler(idle, busy)
        drained = asyncio.ensure_future(fast.drain_writers(h))
        await asyncio.sleep(0.05)
        assert not drained.done()  # backpressure as in mitmproxy: waits for the slow peer
        got = 0
        while not drained.done():
            try:
                got += len(p2.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await drained
        assert got > 0
        await fast.drain_writers(_handler(idle))  # nothing to wait for: returns at once
        for w in (idle, busy):
            w.close()
        p1.close()
        p2.close()

    _each_loop(main)


def test_drain_writers_still_reports_a_dead_connection() -> None:
    async def main() -> None:
        reader, writer, peer = await _stream_pair()
        reader.set_exception(ConnectionResetError("peer reset"))
        assert not fast._drain_is_noop(writer)
        h = _handler(writer)
        await fast.drain_writers(h)
        assert h.ios[0].handler.cancelled == "Error sending data: peer reset"  # mitmproxy's own handling
        writer.close()
        assert not fast._drain_is_noop(writer)  # closing: drain yields to let connection_lost run
        peer.close()

    _each_loop(main)
