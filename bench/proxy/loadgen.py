"""The load generator: a raw-asyncio HTTP/1.1 client in its own process (`proxy_bench.py --worker`), driven by the
orchestrator over a pipe (one JSON command per line in, one JSON result per line out), so the proxies' CPU is what
limits throughput. Each session is a set of keep-alive connections, direct TLS or CONNECT through a proxy then TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import sys
import time
from typing import Any

from bench.proxy.measure import pct
from bench.proxy.workload import FAST_SSE_EVENTS, HOST, LOOPBACK, request

HEAD, BODY, CSIZE, CDATA, CCRLF, TRAILER = range(6)


class Response:
    __slots__ = ("events", "last_nl", "nbytes", "remaining", "sse", "status", "t_first", "times", "track")

    def __init__(self, track: bool) -> None:
        self.status = 0
        self.remaining = 0
        self.nbytes = 0
        self.t_first = 0.0
        self.sse = False
        self.events = 0
        self.last_nl = False
        self.track = track
        self.times: list[float] = []


class ClientConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection (direct TLS, or CONNECT through a proxy and then TLS)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.BaseTransport | None = None
        self.buf = bytearray()
        self.state = HEAD
        self.resp: Response | None = None
        self.waiter: asyncio.Future[Any] | None = None
        self.connect_waiter: asyncio.Future[bytes] | None = None
        self.closed = False
        self.lockstep: tuple[socket.socket, bytes, tuple[str, int]] | None = None  # (UDP socket, id, stand-in)

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for w in (self.waiter, self.connect_waiter):
            if w is not None and not w.done():
                w.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if self.connect_waiter is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[:end + 4]
                w, self.connect_waiter = self.connect_waiter, None
                w.set_result(head)
            return
        if self.resp is not None:
            self._parse(now)

    # -- HTTP/1.1 response parser --
    def _payload(self, r: Response, data: bytes | bytearray, now: float) -> None:
        if not r.nbytes:
            r.t_first = now
        r.nbytes += len(data)
        if r.sse:
            s = b"\n" + data if r.last_nl else data
            k = s.count(b"\n\n")
            r.last_nl = s.endswith(b"\n") and not s.endswith(b"\n\n")
            if k:
                r.events += k
                if r.track:
                    r.times.extend([now] * k)
                if self.lockstep is not None:
                    sock, ident, addr = self.lockstep
                    for _ in range(k):
                        sock.sendto(ident, addr)

    def _parse(self, now: float) -> None:
        buf, r, pos, st = self.buf, self.resp, 0, self.state
        assert r is not None
        done = False
        while not done:
            avail = len(buf) - pos
            if st == HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                head = bytes(buf[pos:end]).lower()
                pos = end + 4
                r.status = int(head[9:12])
                r.sse = b"text/event-stream" in head
                if b"transfer-encoding: chunked" in head:
                    st = CSIZE
                else:
                    i = head.find(b"content-length:")
                    r.remaining = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
                    st = BODY
                    done = r.remaining == 0
            elif st == BODY:
                take = min(avail, r.remaining)
                if not take:
                    break
                self._payload(r, buf[pos:pos + take], now)
                pos += take
                r.remaining -= take
                done = r.remaining == 0
            elif st == CSIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size = int(bytes(buf[pos:end]).split(b";", 1)[0], 16)
                pos = end + 2
                r.remaining = size
                st = CDATA if size else TRAILER
            elif st == CDATA:
                take = min(avail, r.remaining)
                if not take:
                    break
                self._payload(r, buf[pos:pos + take], now)
                pos += take
                r.remaining -= take
                if not r.remaining:
                    st = CCRLF
            elif st == CCRLF:
                if avail < 2:
                    break
                pos += 2
                st = CSIZE
            else:  # TRAILER
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                done = end == pos
                pos = end + 2
        del buf[:pos]
        if done:
            self.state, self.resp = HEAD, None
            w, self.waiter = self.waiter, None
            if w is not None and not w.done():
                w.set_result(r)
        else:
            self.state = st

    # -- API --
    async def request(self, raw: bytes, track: bool = False) -> tuple[Response, float]:
        if self.closed:
            raise ConnectionError("connection closed")
        self.resp = Response(track)
        self.state = HEAD
        self.waiter = self.loop.create_future()
        t0 = time.perf_counter()
        self.transport.write(raw)  # type: ignore[union-attr]
        r = await self.waiter
        return r, t0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_CTX: dict[str, ssl.SSLContext] = {}


def client_ctx(ca: str) -> ssl.SSLContext:
    if ca not in _CTX:
        ctx = ssl.create_default_context(cafile=ca)  # Python 3.13: VERIFY_X509_STRICT, as real clients
        ctx.set_alpn_protocols(["http/1.1"])
        _CTX[ca] = ctx
    return _CTX[ca]


async def open_conn(target: dict) -> ClientConn:
    loop = asyncio.get_running_loop()
    ctx = client_ctx(target["ca"])
    if target["mode"] == "direct":
        _t, proto = await loop.create_connection(ClientConn, LOOPBACK, target["port"], ssl=ctx, server_hostname=HOST)
        return proto
    transport, proto = await loop.create_connection(ClientConn, LOOPBACK, target["port"])
    proto.connect_waiter = loop.create_future()
    transport.write(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n"
                    f"Proxy-Authorization: {target['auth']}\r\nUser-Agent: claude-cli/2.1.197\r\n\r\n".encode())
    head = await proto.connect_waiter
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        transport.close()
        raise ConnectionError(f"CONNECT refused: {head.splitlines()[0]!r}")
    proto.transport = await loop.start_tls(transport, proto, ctx, server_hostname=HOST)
    return proto


class Worker:
    def __init__(self) -> None:
        self.sessions: dict[str, list[ClientConn]] = {}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # lock-step datagrams to the stand-in
        self.udp.setblocking(False)

    async def op_open(self, sid: str, target: dict, conns: int) -> dict:
        t0 = time.perf_counter()
        gate = asyncio.Semaphore(32)  # a fleet of 200 must not overflow the proxy's listen backlog

        async def one() -> ClientConn:
            async with gate:
                return await open_conn(target)

        self.sessions[sid] = list(await asyncio.gather(*(one() for _ in range(conns))))
        return {"connect_s": time.perf_counter() - t0}

    async def op_close(self, sid: str) -> dict:
        for c in self.sessions.pop(sid, []):
            c.close()
        await asyncio.sleep(0.05)
        return {}

    async def op_run(self, sid: str, n: int, stream: bool, pace: list[int] | None = None,
                     limit_s: float = 120.0, lockstep: int = 0) -> dict:
        """n calls over session sid's connections. `lockstep`: the stand-in's UDP port, for lock-step streams
        (each event sent once the one before has arrived)."""
        conns = self.sessions[sid]
        raw = request(stream, tuple(pace) if pace else None)  # type: ignore[arg-type]
        raws = {c: raw for c in conns}
        if lockstep:
            for i, c in enumerate(conns):
                ident = f"{sid}-{i}"
                raws[c] = request(stream, tuple(pace) if pace else None, lockstep=ident)  # type: ignore[arg-type]
                c.lockstep = (self.udp, ident.encode(), (LOOPBACK, lockstep))
        expect_events = (pace[0] if pace else FAST_SSE_EVENTS) if stream else 0
        left = n
        lats: list[float] = []
        ttfb: list[float] = []
        gaps: list[float] = []
        errors: list[str] = []
        ok = 0

        async def drive(c: ClientConn) -> None:
            nonlocal left, ok
            while left > 0:
                left -= 1
                try:
                    r, t0 = await c.request(raws[c], track=pace is not None)
                except ConnectionError as exc:
                    errors.append(str(exc))
                    return
                end = time.perf_counter()
                if r.status != 200 or (stream and r.events != expect_events) or not r.nbytes:
                    errors.append(f"status {r.status}, {r.events} events, {r.nbytes} bytes")
                    continue
                ok += 1
                lats.append(end - t0)
                if pace:
                    ttfb.append(r.t_first - t0)
                    gaps.extend(b - a for a, b in zip(r.times, r.times[1:], strict=False))

        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(drive(c) for c in conns)), limit_s)
        except TimeoutError:
            errors.append(f"run timed out after {limit_s:.0f}s")
        finally:
            for c in conns:
                c.lockstep = None
        elapsed = time.perf_counter() - t0
        out: dict[str, Any] = {"ok": ok, "errors": errors[:5], "n_errors": len(errors), "elapsed": elapsed,
                               "p50": pct(lats, 50), "p99": pct(lats, 99)}
        if pace:
            out.update(ttfb=ttfb, gaps=gaps)
        return out


    async def op_fleet(self, sid: str, calls: int, events: int, gap_ms: int, stagger_s: float,
                       limit_s: float = 300.0) -> dict:
        """An agent fleet: every connection of session sid makes `calls` streamed calls of `events` paced events
        back to back, the connections' first calls spread evenly over `stagger_s` (a steady load, not a
        thundering herd). Percentiles are computed here: the gap list is too long for the pipe."""
        conns = self.sessions[sid]
        raw = request(True, (events, gap_ms))
        ttfb: list[float] = []
        gaps: list[float] = []
        errors: list[str] = []
        ok = 0

        async def drive(i: int, c: ClientConn) -> None:
            nonlocal ok
            await asyncio.sleep(stagger_s * i / len(conns))
            for _ in range(calls):
                try:
                    r, t0 = await c.request(raw, track=True)
                except ConnectionError as exc:
                    errors.append(str(exc))
                    return
                if r.status != 200 or r.events != events:
                    errors.append(f"status {r.status}, {r.events} events, {r.nbytes} bytes")
                    continue
                ok += 1
                ttfb.append(r.t_first - t0)
                gaps.extend(b - a for a, b in zip(r.times, r.times[1:], strict=False))

        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(drive(i, c) for i, c in enumerate(conns))), limit_s)
        except TimeoutError:
            errors.append(f"fleet timed out after {limit_s:.0f}s")
        elapsed = time.perf_counter() - t0
        return {"ok": ok, "errors": errors[:5], "n_errors": len(errors), "elapsed": elapsed, "events": ok * events,
                "ttfb": {str(q): pct(ttfb, q) for q in (50, 90, 99)} | {"max": max(ttfb, default=float("nan"))},
                "gaps": {str(q): pct(gaps, q) for q in (50, 90, 99, 99.9)} | {"max": max(gaps, default=float("nan"))}}

    async def op_newconn(self, target: dict, n: int) -> dict:
        """n new connections one after another, as an agent opens them: TCP connect, CONNECT, TLS, one
        non-streamed call, close. Times the whole and the part before the call."""
        raw = request(False)
        total: list[float] = []
        handshake: list[float] = []
        errors: list[str] = []
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                c = await open_conn(target)
                t1 = time.perf_counter()
                r, _t = await c.request(raw)
            except (ConnectionError, OSError, ssl.SSLError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            t2 = time.perf_counter()
            c.close()
            if r.status != 200 or not r.nbytes:
                errors.append(f"status {r.status}, {r.nbytes} bytes")
                continue
            total.append(t2 - t0)
            handshake.append(t1 - t0)
        await asyncio.sleep(0.2)  # let the proxy tear the last connection down before its CPU is read
        return {"ok": len(total), "errors": errors[:5], "n_errors": len(errors), "total": total,
                "handshake": handshake}


async def worker_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    w = Worker()
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            res = await getattr(w, f"op_{op}")(**cmd)
        except Exception as exc:
            res = {"fail": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    for sid in list(w.sessions):
        await w.op_close(sid)
