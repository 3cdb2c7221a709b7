"""The stand-in upstream: raw asyncio, HTTP/1.1 keep-alive, TLS for api.anthropic.com under a throwaway CA.

It answers `POST /v1/messages` with a small Anthropic message (JSON) or an SSE stream: fast (all events at once)
or paced (N events M ms apart, asked for with an X-Bench-Pace header). It runs in the orchestrator's process.
With an X-Bench-Lockstep: ID header a paced stream is not timed: each event after the first is sent when a UDP
datagram holding ID arrives on the stand-in's lockstep port (the client sends one per event it received).
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from bench.proxy.workload import FAST_SSE_DELTAS, HOST, LOOPBACK, MSG_ID, SSE_HEAD, chunk, json_response, sse_events
from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem

LOCKSTEP: dict[bytes, tuple[StandInProtocol, deque[bytes]]] = {}  # lockstep id -> (connection, events to send)


class LockstepProtocol(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        entry = LOCKSTEP.get(data)
        if entry is None:
            return
        conn, left = entry
        conn._write(left.popleft())
        if not left:
            del LOCKSTEP[data]


class StandInProtocol(asyncio.Protocol):
    json_resp = json_response()
    fast_sse = SSE_HEAD + b"".join(chunk(e) for e in sse_events(FAST_SSE_DELTAS)) + b"0\r\n\r\n"
    counter = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"\r\ncontent-length:")
            n = int(head[i + 17:].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(buf) < end + 4 + n:
                return
            body = bytes(buf[end + 4:end + 4 + n])
            del buf[:end + 4 + n]
            self._answer(head, body)

    def _next_id(self) -> bytes:
        StandInProtocol.counter += 1
        return b"msg_01BENCH%0*d" % (len(MSG_ID) - 11, StandInProtocol.counter)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if b'"stream": true' not in body and b'"stream":true' not in body:
            self.transport.write(self.json_resp.replace(MSG_ID, self._next_id(), 1))
            return
        p = head.find(b"\r\nx-bench-pace:")
        if p < 0:
            self.transport.write(self.fast_sse.replace(MSG_ID, self._next_id(), 1))
            return
        count, gap_ms = (int(x) for x in head[p + 15:].split(b"\r\n", 1)[0].split(b","))
        events = [chunk(e) for e in sse_events(max(1, count - 5))]
        events[0] = events[0].replace(MSG_ID, self._next_id(), 1)
        events[-1] += b"0\r\n\r\n"
        self.transport.write(SSE_HEAD + events[0])
        q = head.find(b"\r\nx-bench-lockstep:")
        if q >= 0:
            LOCKSTEP[head[q + 19:].split(b"\r\n", 1)[0].strip()] = (self, deque(events[1:]))
            return
        t0 = self.loop.time()
        for k in range(1, len(events)):  # scheduled against t0: no drift, only jitter
            self.loop.call_at(t0 + k * gap_ms / 1000, self._write, events[k])

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def start_standin(ca_dir: Path) -> tuple[asyncio.Server, int, Path, int]:
    """Serve the stand-in on a free loopback port: (server, port, the throwaway CA's PEM file in ca_dir, the UDP
    lockstep port)."""
    ca_cert, ca_key = make_ca("aigw bench throwaway upstream CA")
    cert, key = make_server_cert(ca_cert, ca_key, [HOST])
    ca_file = write_pem(ca_dir / "upstream-ca.pem", ca_cert)
    ctx = server_ssl_context(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StandInProtocol, LOOPBACK, 0, ssl=ctx, backlog=256)
    udp, _ = await loop.create_datagram_endpoint(LockstepProtocol, local_addr=(LOOPBACK, 0))
    return server, server.sockets[0].getsockname()[1], ca_file, udp.get_extra_info("sockname")[1]
