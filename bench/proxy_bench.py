"""Proxy benchmark: direct vs bare mitmproxy vs aigw-proxy, side by side, in one run.

    .venv/bin/python bench/proxy_bench.py            # full run (~3 minutes on 2 cores); also `make bench`
    .venv/bin/python bench/proxy_bench.py --quick    # smoke run (small counts, ~20 s)
    .venv/bin/python bench/proxy_bench.py --py-spy /tmp/prof   # + py-spy profiles of aigw and mitm-min per
                                                                #   throughput rep (see bench/pyspy_summary.py)

Everything stays on 127.0.0.1. A throwaway CA signs a certificate for api.anthropic.com; a raw-asyncio HTTPS
stand-in (in this process) answers `POST /v1/messages` with a small Anthropic message (JSON) or an SSE stream
(fast: all events at once; paced: N events M ms apart, asked for with an X-Bench-Pace header). Four paths:
  direct    client -> stand-in (TLS, SNI api.anthropic.com)
  mitmdump  client -> CONNECT api.anthropic.com:443 -> `mitmdump -q` (default addons) + a 6-line addon that
            redirects the CONNECT target to the stand-in (in `http_connect`) and streams responses, as aigw does;
            upstream verified with ssl_verify_upstream_trusted_ca. The goal baseline ("bare mitmproxy").
  mitm-min  the same addon on mitmproxy embedded exactly like aigw_proxy/daemon.py (same options, same five
            built-in addons): aigw minus its own addons and recording, to show what aigw itself costs.
  aigw      client -> CONNECT (Proxy-Authorization: Basic bench:<token>) -> `python -m aigw_proxy run`
            (anthropic upstream = the stand-in, upstream_ca_file = the throwaway CA) recording into SQLite.
The load generator is a raw-asyncio HTTP/1.1 client in a separate process (this script with --worker), driven
over a pipe, so the proxies' CPU is what limits throughput. Proxy CPU per request comes from /proc (all threads
and the event-loop thread alone). After each aigw run the benchmark waits for the recorder queue to drain, so
"relayed AND recorded" and aigw's CPU include the recording work.

Exit status: 0 after printing the report (timings are reported, not asserted); 1 if something broke (a proxy
did not start, a request failed, or the database does not hold exactly one completed interception, token usage
and prompt per call, or the recorder dropped anything).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).resolve())
REPO = Path(SCRIPT).parent.parent
HOST = "api.anthropic.com"
LOOPBACK = "127.0.0.1"

# ---------------------------------------------------------------------------------------------------------------
# Workload: a realistic small Claude Code request and the stand-in's answers
# ---------------------------------------------------------------------------------------------------------------

_SESSION = "5b1f0c0e-8d3a-4c59-9a8e-2f7c6d1e4b10"


def _request_body(stream: bool) -> bytes:
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering "
                                     "tasks. Use the instructions below and the tools available to you."},
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the "
                                     "following context:\n# claudeMd\nRun `make test` before committing.\n"
                                     "</system-reminder>"},
            {"type": "text", "text": "Rename parse_config to load_config across the repo and run the tests.",
             "cache_control": {"type": "ephemeral"}},
        ]}],
        "tools": [
            {"name": "Bash", "description": "Executes a given bash command in a persistent shell session.",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                               "timeout": {"type": "number"}},
                              "required": ["command"]}},
            {"name": "Read", "description": "Reads a file from the local filesystem.",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                               "offset": {"type": "number"}},
                              "required": ["file_path"]}},
        ],
        "metadata": {"user_id": json.dumps({"device_id": "d3c0ffee" * 8, "account_uuid": "",
                                            "session_id": _SESSION})},
        "stream": stream,
    }
    return json.dumps(body).encode()


def _request(stream: bool, pace: tuple[int, int] | None = None) -> bytes:
    body = _request_body(stream)
    headers = [
        "POST /v1/messages?beta=true HTTP/1.1",
        f"Host: {HOST}",
        "Accept: application/json",
        "Content-Type: application/json",
        "User-Agent: claude-cli/2.1.197 (external, sdk-cli)",
        f"X-Claude-Code-Session-Id: {_SESSION}",
        "X-App: cli",
        "Anthropic-Version: 2023-06-01",
        "Anthropic-Beta: claude-code-20250219,interleaved-thinking-2025-05-14",
        "X-Api-Key: sk-ant-api03-benchbenchbenchbenchbenchbenchbenchbench-XXXXXXXX",
        "Accept-Encoding: identity",
        f"Content-Length: {len(body)}",
    ]
    if pace:
        headers.append(f"X-Bench-Pace: {pace[0]},{pace[1]}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


_MSG_ID = b"msg_01BENCH0000000000000000"  # fixed width: replaced by a per-response id of the same length
_USAGE = {"input_tokens": 412, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 11870,
          "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
          "output_tokens": 23, "service_tier": "standard"}
_TEXT = ["I'll", " rename", " parse_config", " to", " load_config", " and", " run", " the", " tests."]


def _message(content: list[dict], stop_reason: str | None, usage: dict) -> dict:
    return {"id": _MSG_ID.decode(), "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def _json_response() -> bytes:
    body = json.dumps(_message([{"type": "text", "text": "".join(_TEXT)}], "end_turn", _USAGE)).encode()
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRequest-Id: req_011CBench\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def _sse_events(n_deltas: int) -> list[bytes]:
    """message_start … n_deltas text deltas … message_stop, each one SSE event."""
    words = [_TEXT[i % len(_TEXT)] for i in range(n_deltas)]
    evs: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": _message([], None, dict(_USAGE, output_tokens=1))}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    evs += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": w}}) for w in words]
    evs += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": _USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in evs]


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
            b"Request-Id: req_011CBench\r\nTransfer-Encoding: chunked\r\n\r\n")
FAST_SSE_DELTAS = 9
FAST_SSE_EVENTS = FAST_SSE_DELTAS + 5


# ---------------------------------------------------------------------------------------------------------------
# The stand-in upstream: raw asyncio, HTTP/1.1 keep-alive, TLS
# ---------------------------------------------------------------------------------------------------------------

class StandInProtocol(asyncio.Protocol):
    json_resp = _json_response()
    fast_sse = SSE_HEAD + b"".join(_chunk(e) for e in _sse_events(FAST_SSE_DELTAS)) + b"0\r\n\r\n"
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
        return b"msg_01BENCH%0*d" % (len(_MSG_ID) - 11, StandInProtocol.counter)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if b'"stream": true' not in body and b'"stream":true' not in body:
            self.transport.write(self.json_resp.replace(_MSG_ID, self._next_id(), 1))
            return
        p = head.find(b"\r\nx-bench-pace:")
        if p < 0:
            self.transport.write(self.fast_sse.replace(_MSG_ID, self._next_id(), 1))
            return
        count, gap_ms = (int(x) for x in head[p + 15:].split(b"\r\n", 1)[0].split(b","))
        events = [_chunk(e) for e in _sse_events(max(1, count - 5))]
        events[0] = events[0].replace(_MSG_ID, self._next_id(), 1)
        events[-1] += b"0\r\n\r\n"
        self.transport.write(SSE_HEAD + events[0])
        t0 = self.loop.time()
        for k in range(1, len(events)):  # scheduled against t0: no drift, only jitter
            self.loop.call_at(t0 + k * gap_ms / 1000, self._write, events[k])

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


# ---------------------------------------------------------------------------------------------------------------
# The load generator (runs in its own process: `proxy_bench.py --worker`)
# ---------------------------------------------------------------------------------------------------------------

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


def _client_ctx(ca: str) -> ssl.SSLContext:
    if ca not in _CTX:
        ctx = ssl.create_default_context(cafile=ca)  # Python 3.13: VERIFY_X509_STRICT, as real clients
        ctx.set_alpn_protocols(["http/1.1"])
        _CTX[ca] = ctx
    return _CTX[ca]


async def open_conn(target: dict) -> ClientConn:
    loop = asyncio.get_running_loop()
    ctx = _client_ctx(target["ca"])
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


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


class Worker:
    def __init__(self) -> None:
        self.sessions: dict[str, list[ClientConn]] = {}

    async def op_open(self, sid: str, target: dict, conns: int) -> dict:
        t0 = time.perf_counter()
        self.sessions[sid] = list(await asyncio.gather(*(open_conn(target) for _ in range(conns))))
        return {"connect_s": time.perf_counter() - t0}

    async def op_close(self, sid: str) -> dict:
        for c in self.sessions.pop(sid, []):
            c.close()
        await asyncio.sleep(0.05)
        return {}

    async def op_run(self, sid: str, n: int, stream: bool, pace: list[int] | None = None,
                     limit_s: float = 120.0) -> dict:
        conns = self.sessions[sid]
        raw = _request(stream, tuple(pace) if pace else None)  # type: ignore[arg-type]
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
                    r, t0 = await c.request(raw, track=pace is not None)
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
        elapsed = time.perf_counter() - t0
        out: dict[str, Any] = {"ok": ok, "errors": errors[:5], "n_errors": len(errors), "elapsed": elapsed,
                               "p50": _pct(lats, 50), "p99": _pct(lats, 99)}
        if pace:
            out.update(ttfb=ttfb, gaps=gaps)
        return out


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


# ---------------------------------------------------------------------------------------------------------------
# The orchestrator
# ---------------------------------------------------------------------------------------------------------------

class BenchError(Exception):
    pass


@dataclass
class Profile:
    reps: int = 3
    conns: int = 20
    tput_warm: int = 300
    tput_n: int = 2000
    lat_warm: int = 100
    lat_n: int = 1000
    sse_conns: int = 2
    sse_calls: int = 12  # per connection
    sse_events: int = 20
    sse_gap_ms: int = 20
    mem_warm: int = 1000
    mem_calls: int = 10_000
    mem_every: int = 1000
    mem_baseline: bool = True  # also run the memory series through mitm-min, for comparison


QUICK = Profile(reps=1, tput_warm=40, tput_n=300, lat_warm=20, lat_n=100, sse_conns=1, sse_calls=3,
                mem_warm=200, mem_calls=1000, mem_every=250, mem_baseline=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_cpu_s(pid: int, stat: str | None = None) -> float:
    fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_main_thread_cpu_s(pid: int) -> float:
    """CPU of the main thread (the event loop) alone; the rest of proc_cpu_s is other threads (aiosqlite, …)."""
    try:
        return proc_cpu_s(pid, f"/proc/{pid}/task/{pid}/stat")
    except OSError:
        return 0.0


def machine_busy_s() -> float:
    """CPU-seconds all cores spent busy since boot (/proc/stat), to tell how much other load ran meanwhile."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
        return f"{head}" + (f" + {len(dirty)} modified file(s)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def http_get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def db_counts(path: Path) -> dict[str, int]:
    sys.path.insert(0, str(REPO))
    from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts

    ix = interceptions.name
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        q = {
            "interceptions": f"SELECT count(*) FROM {ix}",
            "completed": f"SELECT count(*) FROM {ix} WHERE status = 'completed' AND ended_at IS NOT NULL",
            "token_usages": f"SELECT count(*) FROM {token_usages.name}",
            "user_prompts": f"SELECT count(*) FROM {user_prompts.name}",
        }
        return {k: con.execute(sql).fetchone()[0] for k, sql in q.items()}
    finally:
        con.close()


def file_exists(path: Path) -> bool:
    return path.exists()


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@dataclass
class Target:
    name: str
    spec: dict
    pid: int | None = None  # the proxy process, None for direct
    calls: int = 0


@dataclass
class Results:
    tput: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # kind -> target -> reps
    lat: dict[str, dict] = field(default_factory=dict)
    sse: dict[str, dict] = field(default_factory=dict)
    mem: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # target -> [(calls, rss KiB)]
    mem_after_close: dict[str, int] = field(default_factory=dict)
    mem_backlog: dict[str, list[int]] = field(default_factory=dict)
    healthz: dict = field(default_factory=dict)
    db: dict[str, int] = field(default_factory=dict)
    db_after_stop: dict[str, int] = field(default_factory=dict)


class Bench:
    def __init__(self, prof: Profile, tmp: Path) -> None:
        self.p = prof
        self.tmp = tmp
        self.procs: list[asyncio.subprocess.Process] = []
        self.worker: asyncio.subprocess.Process | None = None
        self.server: asyncio.Server | None = None
        self.res = Results()
        self.admin_port = 0
        self.aigw_proc: asyncio.subprocess.Process | None = None
        self.data_dir = tmp / "aigw-data"
        self.problems: list[str] = []
        self.pyspy_dir: Path | None = None
        self.calls = 0  # model calls made through aigw-proxy
        self.elapsed = 0.0
        self.foreign = (0.0, 1.0)  # (CPU-seconds used by processes not ours, wall seconds) during measurement

    # -- processes --
    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aigw_proxy", *args, "--data-dir", str(self.data_dir),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(f"aigw-proxy {' '.join(args)} timed out") from None
        if proc.returncode:
            raise BenchError(f"aigw-proxy {' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
        return out.decode()

    async def spawn(self, name: str, *argv: str) -> asyncio.subprocess.Process:
        log = (self.tmp / f"{name}.log").open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=log,
                                                        stderr=subprocess.STDOUT, cwd=REPO)
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    async def wait_listening(self, name: str, proc: asyncio.subprocess.Process, port: int,
                             ready: Path | None = None, limit_s: float = 30) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            if proc.returncode is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                _r, w = await asyncio.open_connection(LOOPBACK, port)
                w.close()
                if ready is None or file_exists(ready):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not start listening on {port} within {limit_s:.0f}s:\n"
                                 f"{self.log_tail(name)}")
            await asyncio.sleep(0.1)

    async def start_standin(self, ca_dir: Path) -> tuple[int, Path]:
        sys.path.insert(0, str(REPO))
        from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem

        ca_cert, ca_key = make_ca("aigw bench throwaway upstream CA")
        cert, key = make_server_cert(ca_cert, ca_key, [HOST])
        ca_file = write_pem(ca_dir / "upstream-ca.pem", ca_cert)
        ctx = server_ssl_context(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        self.server = await asyncio.get_running_loop().create_server(StandInProtocol, LOOPBACK, 0, ssl=ctx,
                                                                     backlog=256)
        return self.server.sockets[0].getsockname()[1], ca_file

    async def start_mitmdump(self, standin_port: int, upstream_ca: Path) -> Target:
        confdir = self.tmp / "mitm-conf"
        confdir.mkdir()
        script = write_text(self.tmp / "bench_redirect.py", (
            "# bare-mitmproxy baseline: send CONNECTs for the provider host to the stand-in; stream responses\n"
            "class Redirect:\n"
            "    def http_connect(self, flow):\n"
            f"        if flow.request.host == {HOST!r}:\n"
            f"            flow.request.host, flow.request.port = {LOOPBACK!r}, {standin_port}\n\n"
            "    def responseheaders(self, flow):\n"
            "        flow.response.stream = True\n\n\n"
            "addons = [Redirect()]\n"))
        mitmdump = Path(sys.executable).parent / "mitmdump"
        if not mitmdump.exists():
            mitmdump = Path(shutil.which("mitmdump") or "mitmdump")
        port = free_port()
        proc = await self.spawn("mitmdump", str(mitmdump), "-q", "--listen-host", LOOPBACK, "--listen-port",
                                str(port), "--set", f"confdir={confdir}", "--set",
                                f"ssl_verify_upstream_trusted_ca={upstream_ca}", "-s", str(script))
        ca = confdir / "mitmproxy-ca-cert.pem"
        await self.wait_listening("mitmdump", proc, port, ready=ca)
        return Target("mitmdump", {"mode": "proxy", "port": port, "ca": str(ca), "auth": "Basic Zm9vOmJhcg=="},
                      pid=proc.pid)

    async def start_mitm_min(self, standin_port: int, upstream_ca: Path) -> Target:
        """mitmproxy embedded exactly as aigw_proxy/daemon.py embeds it (same options, same five built-in addons),
        plus the redirect addon and nothing else: the difference to aigw is aigw's own addons and recording."""
        confdir = self.tmp / "mitm-min-conf"
        confdir.mkdir()
        port = free_port()
        script = write_text(self.tmp / "bench_mitm_min.py", f"""\
import asyncio, signal
from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master


class Redirect:
    def http_connect(self, flow):
        if flow.request.host == {HOST!r}:
            flow.request.host, flow.request.port = {LOOPBACK!r}, {standin_port}

    def responseheaders(self, flow):
        flow.response.stream = True


async def main():
    opts = options.Options(listen_host={LOOPBACK!r}, listen_port={port}, confdir={str(confdir)!r},
                           mode=["regular"], ssl_insecure=False)
    master = Master(opts)
    master.addons.add(Redirect())
    master.addons.add(core.Core(), disable_h2c.DisableH2C(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                      tlsconfig.TlsConfig())
    opts.update(ssl_verify_upstream_trusted_ca={str(upstream_ca)!r})
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, master.shutdown)
    await master.run()


asyncio.run(main())
""")
        proc = await self.spawn("mitm-min", sys.executable, str(script))
        ca = confdir / "mitmproxy-ca-cert.pem"
        await self.wait_listening("mitm-min", proc, port, ready=ca)
        return Target("mitm-min", {"mode": "proxy", "port": port, "ca": str(ca), "auth": "Basic Zm9vOmJhcg=="},
                      pid=proc.pid)

    async def start_aigw(self, standin_port: int, upstream_ca: Path) -> Target:
        token = (await self.cli("users", "add", "bench")).strip()
        ca = write_text(self.tmp / "aigw-ca.pem", await self.cli("ca", "export"))
        cfg = write_text(self.tmp / "aigw.toml", "\n".join([
            f'upstream_ca_file = "{upstream_ca}"',
            "[[providers]]",
            'name = "anthropic"',
            f'upstream = "https://{LOOPBACK}:{standin_port}"',
            "",
        ]))
        port, self.admin_port = free_port(), free_port()
        self.aigw_proc = await self.spawn(
            "aigw", sys.executable, "-m", "aigw_proxy", "run", "--listen", f"{LOOPBACK}:{port}",
            "--admin-listen", f"{LOOPBACK}:{self.admin_port}", "--data-dir", str(self.data_dir),
            "--config", str(cfg))
        await self.wait_listening("aigw", self.aigw_proc, self.admin_port)
        await self.wait_listening("aigw", self.aigw_proc, port)
        auth = "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()
        return Target("aigw", {"mode": "proxy", "port": port, "ca": str(ca), "auth": auth}, pid=self.aigw_proc.pid)

    async def healthz(self) -> dict:
        return await asyncio.to_thread(http_get_json, f"http://{LOOPBACK}:{self.admin_port}/healthz")

    # -- the worker --
    async def start_worker(self) -> None:
        self.worker = await asyncio.create_subprocess_exec(
            sys.executable, SCRIPT, "--worker", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=REPO, limit=16 << 20)

    async def cmd(self, wait_s: float = 300, **kw: Any) -> dict:
        w = self.worker
        assert w is not None and w.stdin is not None and w.stdout is not None
        w.stdin.write(json.dumps(kw).encode() + b"\n")
        await w.stdin.drain()
        line = await asyncio.wait_for(w.stdout.readline(), wait_s)
        if not line:
            raise BenchError("the load generator exited")
        res = json.loads(line)
        if "fail" in res:
            raise BenchError(f"load generator: {kw.get('op')} failed: {res['fail']}")
        return res

    async def wait_drained(self, limit_s: float = 120) -> tuple[dict, float]:
        """Poll aigw's /healthz until the recorder queue is empty: (last healthz, seconds waited)."""
        t0 = time.monotonic()
        while True:
            h = await self.healthz()
            if h["recorder"]["queue_depth"] == 0:
                return h, time.monotonic() - t0
            if time.monotonic() - t0 > limit_s:
                self.problems.append(f"aigw recorder queue not drained after {limit_s:.0f}s: {h['recorder']}")
                return h, time.monotonic() - t0
            await asyncio.sleep(0.02)

    async def run(self, t: Target, sid: str, n: int, stream: bool, pace: list[int] | None = None,
                  drain: bool = True) -> dict:
        """Run n calls on session sid. For aigw, then wait until the recorder has written them (`drain_s`), so
        `cpu_s` and the sustained rate include the recording work."""
        cpu0 = proc_cpu_s(t.pid) if t.pid else 0.0
        main0 = proc_main_thread_cpu_s(t.pid) if t.pid else 0.0
        limit_s = max(60.0, n / 20)
        res = await self.cmd(limit_s + 30, op="run", sid=sid, n=n, stream=stream, pace=pace, limit_s=limit_s)
        res["drain_s"] = 0.0
        if t.name == "aigw":
            h = await self.healthz()
            res["backlog"] = h["recorder"]["queue_depth"]
            if drain:
                h, res["drain_s"] = await self.wait_drained()
            res["recorder"] = h["recorder"]
        if t.pid:
            res["cpu_s"] = proc_cpu_s(t.pid) - cpu0
            res["main_cpu_s"] = proc_main_thread_cpu_s(t.pid) - main0
        t.calls += res["ok"]
        if res["n_errors"]:
            self.problems.append(f"{t.name}: {res['n_errors']} failed request(s), e.g. {res['errors'][:2]}")
        return res

    async def start_pyspy(self, t: Target, label: str) -> asyncio.subprocess.Process | None:
        """With --py-spy DIR: sample the proxy (all threads, collapsed stacks) during this run."""
        if self.pyspy_dir is None or t.pid is None or t.name == "mitmdump":
            return None
        py_spy = Path(sys.executable).parent / "py-spy"
        out = self.pyspy_dir / f"{label}.txt"
        proc = await asyncio.create_subprocess_exec(
            str(py_spy if file_exists(py_spy) else "py-spy"), "record", "-p", str(t.pid), "-r", "100", "--gil",
            "-f", "raw", "--threads", "-o", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(0.5)  # attach
        return proc

    async def stop_pyspy(self, proc: asyncio.subprocess.Process | None) -> None:
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def session(self, t: Target, sid: str, conns: int) -> None:
        await self.cmd(60, op="open", sid=sid, target=t.spec, conns=conns)

    # -- phases --
    async def phase_tput(self, targets: list[Target], stream: bool) -> None:
        kind = "sse" if stream else "json"
        out = self.res.tput.setdefault(kind, {t.name: [] for t in targets})
        for rep in range(self.p.reps):
            for t in targets:  # interleaved, so drift hits every case alike
                sid = f"tput-{kind}-{rep}-{t.name}"
                await self.session(t, sid, self.p.conns)
                await self.run(t, sid, self.p.tput_warm, stream)
                spy = await self.start_pyspy(t, f"{t.name}-{kind}-rep{rep + 1}")
                r = await self.run(t, sid, self.p.tput_n, stream)
                await self.stop_pyspy(spy)
                await self.cmd(op="close", sid=sid)
                r["rps"] = r["ok"] / r["elapsed"]
                r["srps"] = r["ok"] / (r["elapsed"] + r["drain_s"])  # sustained: relayed and recorded
                out[t.name].append(r)
                cpu = f", proxy CPU {1000 * r['cpu_s'] / max(1, r['ok']):.2f} ms/req" if t.pid else ""
                if "backlog" in r:
                    cpu += (f" (incl. recording); recorder backlog {r['backlog']} events at the end, drained in "
                            f"{r['drain_s']:.2f}s -> {r['srps']:.0f} req/s relayed+recorded")
                print(f"  throughput {kind:4} rep {rep + 1}/{self.p.reps} {t.name:8}: {r['rps']:8.0f} req/s{cpu}",
                      flush=True)

    async def phase_latency(self, targets: list[Target]) -> None:
        for t in targets:
            sid = f"lat-{t.name}"
            await self.session(t, sid, 1)
            await self.run(t, sid, self.p.lat_warm, False)
            r = await self.run(t, sid, self.p.lat_n, False)
            await self.cmd(op="close", sid=sid)
            self.res.lat[t.name] = r
            print(f"  latency c=1 {t.name:8}: p50 {1000 * r['p50']:.2f} ms, p99 {1000 * r['p99']:.2f} ms", flush=True)

    async def phase_sse(self, targets: list[Target]) -> None:
        pace = [self.p.sse_events, self.p.sse_gap_ms]
        for t in targets:
            sid = f"sse-{t.name}"
            await self.session(t, sid, self.p.sse_conns)
            await self.run(t, sid, self.p.sse_conns, True, pace)  # warm-up: one paced call per connection
            r = await self.run(t, sid, self.p.sse_conns * self.p.sse_calls, True, pace)
            await self.cmd(op="close", sid=sid)
            self.res.sse[t.name] = r
            print(f"  SSE paced  {t.name:8}: first byte p50 {1000 * _pct(r['ttfb'], 50):.2f} ms, "
                  f"gap p99 {1000 * _pct(r['gaps'], 99):.2f} ms", flush=True)

    async def phase_memory(self, t: Target) -> None:
        assert t.pid is not None
        sid = f"mem-{t.name}"
        await self.session(t, sid, self.p.conns)
        await self.run(t, sid, self.p.mem_warm, True)
        series = [(0, proc_rss_kib(t.pid))]
        backlog: list[int] = []
        done = 0
        while done < self.p.mem_calls:
            n = min(self.p.mem_every, self.p.mem_calls - done)
            r = await self.run(t, sid, n, True)  # aigw: sampled once the recorder queue is empty again
            backlog.append(r.get("backlog", 0))
            done += n
            series.append((done, proc_rss_kib(t.pid)))
        self.res.mem_backlog[t.name] = backlog
        await self.cmd(op="close", sid=sid)
        await asyncio.sleep(0.5)
        self.res.mem[t.name] = series
        self.res.mem_after_close[t.name] = proc_rss_kib(t.pid)
        print(f"  memory     {t.name:8}: " + " ".join(f"{kib / 1024:.1f}" for _, kib in series) + " MiB", flush=True)

    async def check_records(self, aigw: Target) -> None:
        self.res.healthz, _ = await self.wait_drained()
        self.res.db = await asyncio.to_thread(db_counts, self.data_dir / "aigw-proxy.db")

    async def stop_aigw(self) -> None:
        p = self.aigw_proc
        if p is None or p.returncode is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(p.wait(), 40)
        except TimeoutError:
            p.kill()
            await p.wait()
            self.problems.append("aigw-proxy did not stop within 40 s of SIGTERM")
            return
        if p.returncode:
            self.problems.append(f"aigw-proxy exited with {p.returncode} on SIGTERM:\n{self.log_tail('aigw')}")
        self.res.db_after_stop = await asyncio.to_thread(db_counts, self.data_dir / "aigw-proxy.db")

    async def main(self) -> Results:
        try:
            standin_port, upstream_ca = await self.start_standin(self.tmp)
            mitm, mmin, aigw = await asyncio.gather(self.start_mitmdump(standin_port, upstream_ca),
                                                    self.start_mitm_min(standin_port, upstream_ca),
                                                    self.start_aigw(standin_port, upstream_ca))
            direct = Target("direct", {"mode": "direct", "port": standin_port, "ca": str(upstream_ca)})
            targets = [direct, mitm, mmin, aigw]
            await self.start_worker()
            t0 = time.monotonic()
            print(f"stand-in https://{LOOPBACK}:{standin_port}, mitmdump pid {mitm.pid}, mitm-min pid {mmin.pid}, "
                  f"aigw-proxy pid {aigw.pid}, "
                  f"load generator pid {self.worker.pid if self.worker else '?'}; temp dir {self.tmp}", flush=True)
            ours = [os.getpid(), self.worker.pid if self.worker else 0, *(x.pid for x in targets if x.pid)]

            def our_cpu() -> float:
                return sum(proc_cpu_s(pid) for pid in ours if pid)

            busy0, ours0, wall0 = machine_busy_s(), our_cpu(), time.monotonic()
            await self.phase_tput(targets, stream=False)
            await self.phase_tput(targets, stream=True)
            await self.phase_latency(targets)
            await self.phase_sse(targets)
            await self.phase_memory(aigw)
            if self.p.mem_baseline:
                await self.phase_memory(mmin)
            self.foreign = (machine_busy_s() - busy0 - (our_cpu() - ours0), time.monotonic() - wall0)
            await self.check_records(aigw)
            await self.stop_aigw()
            self.calls = aigw.calls
            self.elapsed = time.monotonic() - t0
            return self.res
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self.worker is not None and self.worker.returncode is None:
            with contextlib.suppress(Exception):
                self.worker.stdin.write(b'{"op": "quit"}\n')  # type: ignore[union-attr]
                await asyncio.wait_for(self.worker.wait(), 5)
            if self.worker.returncode is None:
                self.worker.kill()
                await self.worker.wait()
        for p in self.procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()
        if self.server is not None:
            self.server.close()


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return f"{1000 * x:.2f}"


def report(b: Bench) -> bool:
    r, p = b.res, b.p
    ok = True
    names = ["direct", "mitmdump", "mitm-min", "aigw"]
    w = 11
    print("\n" + "=" * 112)
    print(f"aigw-proxy benchmark - {p.conns} keep-alive connections, {p.tput_n} requests/rep after {p.tput_warm} "
          f"warm-up, median of {p.reps} rep(s); elapsed {b.elapsed:.0f}s; code {git_state()}")
    fcpu, fwall = b.foreign
    print(f"  other processes on this {os.cpu_count()}-core machine used {fcpu:.0f} CPU-s during the {fwall:.0f}s of "
          f"measurement ({100 * fcpu / fwall:.0f}% of one core)"
          + (" - RESULTS ARE NOISY, rerun on an idle machine" if fcpu / fwall > 0.1 else ""))
    print("  mitmdump = `mitmdump -q` (all default addons) + redirect/stream addon: the goal baseline;")
    print("  mitm-min = mitmproxy embedded like aigw_proxy/daemon.py (same 5 built-in addons) + the same addon,"
          " i.e. aigw minus its own addons")
    print("=" * 112)

    def hdr(title: str, extra: str) -> None:
        print(f"\n{title:32}" + "".join(f"{n:>{w}}" for n in names) + extra)

    def med(kind: str, name: str, key: str) -> float:
        return statistics.median(x[key] for x in r.tput[kind][name])

    def cpu_ms(kind: str, name: str, key: str = "cpu_s") -> float:
        return 1000 * statistics.median(x[key] / max(1, x["ok"]) for x in r.tput[kind][name])

    hdr("Throughput (req/s, median)", f"{'aigw/mdump':>12}{'aigw/min':>10}{'aigw/dir':>10}")
    goals = []
    for kind, label in (("json", "non-streamed JSON"), ("sse", f"SSE, {FAST_SSE_EVENTS} events")):
        v = {n: med(kind, n, "rps") for n in names}
        sv = dict(v, aigw=med(kind, "aigw", "srps"))
        print(f"{'  ' + label + ', relayed':32}" + "".join(f"{v[n]:{w}.0f}" for n in names)
              + f"{v['aigw'] / v['mitmdump']:12.2f}{v['aigw'] / v['mitm-min']:10.2f}"
              f"{v['aigw'] / v['direct']:10.3f}")
        rd, rm = sv["aigw"] / sv["mitmdump"], sv["aigw"] / sv["mitm-min"]
        print(f"{'    aigw relayed AND recorded':32}{'':>{3 * w}}{sv['aigw']:{w}.0f}{rd:12.2f}{rm:10.2f}"
              f"{sv['aigw'] / sv['direct']:10.3f}")
        c = {n: cpu_ms(kind, n) for n in names[1:]}
        print(f"{'    proxy CPU ms/request':32}{'-':>{w}}" + "".join(f"{c[n]:{w}.2f}" for n in names[1:])
              + f"{c['aigw'] / c['mitmdump']:12.2f}{c['aigw'] / c['mitm-min']:10.2f}")
        m = {n: cpu_ms(kind, n, "main_cpu_s") for n in names[1:]}
        print(f"{'      of which event-loop thread':32}{'-':>{w}}" + "".join(f"{m[n]:{w}.2f}" for n in names[1:])
              + f"{m['aigw'] / m['mitmdump']:12.2f}{m['aigw'] / m['mitm-min']:10.2f}")
        print(f"{'    p50/p99 ms under load':32}" + "".join(
            f"{f'{1000 * med(kind, n, 'p50'):.1f}/{1000 * med(kind, n, 'p99'):.0f}':>{w}}" for n in names))
        a = r.tput[kind]["aigw"]
        print("    reps (relayed req/s): " + "; ".join(
            f"{n} {'/'.join(f'{x['rps']:.0f}' for x in r.tput[kind][n])}" for n in names))
        print(f"    aigw recorder backlog at the end of each rep: {[x['backlog'] for x in a]} events, drained in "
              f"{'/'.join(f'{x['drain_s']:.2f}' for x in a)} s")
        goals.append((f"throughput {label} (relayed+recorded) >= 0.90 x", rd, rm, rd >= 0.9, rm >= 0.9))

    lat = r.lat
    hdr("Latency, concurrency 1 (ms)", f"{'aigw-mdump':>12}{'aigw-min':>10}")
    for q in ("p50", "p99"):
        print(f"{'  ' + q:32}" + "".join(f"{_ms(lat[n][q]):>{w}}" for n in names)
              + f"{_ms(lat['aigw'][q] - lat['mitmdump'][q]):>12}{_ms(lat['aigw'][q] - lat['mitm-min'][q]):>10}")
    dd, dm = (lat["aigw"]["p50"] - lat[n]["p50"] for n in ("mitmdump", "mitm-min"))
    goals.append(("p50 at c=1 within +1 ms of bare mitmproxy", f"{_ms(dd)} ms", f"{_ms(dm)} ms",
                  dd <= 0.001, dm <= 0.001))

    s = r.sse
    nc = p.sse_conns * p.sse_calls
    hdr(f"SSE {p.sse_events}x{p.sse_gap_ms} ms, {nc} calls (ms)", f"{'aigw-dir':>12}")
    t50 = {n: _pct(s[n]["ttfb"], 50) for n in names}
    print(f"{'  first byte p50':32}" + "".join(f"{_ms(t50[n]):>{w}}" for n in names)
          + f"{_ms(t50['aigw'] - t50['direct']):>12}")
    print(f"{'  first byte max':32}" + "".join(f"{_ms(max(s[n]['ttfb'])):>{w}}" for n in names)
          + f"{_ms(max(s['aigw']['ttfb']) - max(s['direct']['ttfb'])):>12}")
    for q in (50, 99):
        print(f"{f'  inter-event gap p{q}':32}" + "".join(f"{_ms(_pct(s[n]['gaps'], q)):>{w}}" for n in names)
              + f"{_ms(_pct(s['aigw']['gaps'], q) - _pct(s['direct']['gaps'], q)):>12}"
              + (f"   (stand-in sends every {p.sse_gap_ms} ms)" if q == 99 else ""))
    dt = t50["aigw"] - t50["direct"]
    goals.append(("SSE first byte within +5 ms of direct", f"{_ms(dt)} ms", "", dt <= 0.005, None))

    print(f"\nMemory (RSS MiB) after {p.mem_warm} warm-up streamed calls, then every {p.mem_every} "
          f"({p.conns} keep-alive connections)")
    for name, series in r.mem.items():
        base, last = series[0][1], series[-1][1]
        growth = last - base
        print(f"  {name:9}: " + " ".join(f"{kib / 1024:.1f}" for _, kib in series)
              + f"\n  {'':9}  growth {growth / 1024:+.1f} MiB over {series[-1][0]} calls "
              f"({growth * 1024 / max(1, series[-1][0]):+.0f} B/call); after closing the connections "
              f"{r.mem_after_close[name] / 1024:.1f} MiB")
    for name, bl in r.mem_backlog.items():
        if name == "aigw":
            print(f"  aigw recorder backlog at the end of each {p.mem_every}-call batch (drained before sampling): "
                  f"{bl}")
    a = r.mem["aigw"]
    half = a[len(a) // 2]
    second = a[-1][1] - half[1]
    flat = second <= 1024
    print(f"  aigw growth over the second half of the series ({a[-1][0] - half[0]} calls): {second / 1024:+.1f} MiB")
    goals.append(("aigw memory flat after warm-up (2nd half <= +1 MiB)", f"{second / 1024:+.1f} MiB", "", flat,
                  None))

    print("\nGoals" + " " * 52 + f"{'vs mitmdump':>20}{'vs mitm-min':>20}")
    print("  (bare mitmproxy = the goal baseline, mitmdump; mitm-min shows aigw's own cost)")
    for label, v1, v2, g1, g2 in goals:
        f1 = f"{v1:.2f}" if isinstance(v1, float) else v1
        f2 = f"{v2:.2f}" if isinstance(v2, float) else v2
        m1 = f"{f1} {'MET' if g1 else 'MISSED'}"
        m2 = f"{f2} {'MET' if g2 else 'MISSED'}" if g2 is not None else ""
        print(f"  {label:55}{m1:>20}{m2:>20}")

    rec = r.healthz.get("recorder", {})
    print(f"\nRecords: {b.calls} model calls made through aigw-proxy")
    print(f"  /healthz: recorder queue_depth {rec.get('queue_depth')}, written {rec.get('written')}, "
          f"dropped {rec.get('dropped')}; inflight_requests {r.healthz.get('inflight_requests')}")
    print(f"  database while running:  {r.db}")
    print(f"  database after SIGTERM: {r.db_after_stop or 'n/a'}")
    want = {"interceptions": b.calls, "completed": b.calls, "token_usages": b.calls, "user_prompts": b.calls}
    for label, counts in (("running", r.db), ("after stop", r.db_after_stop)):
        bad = {k: (counts.get(k), v) for k, v in want.items() if counts.get(k) != v}
        if bad:
            ok = False
            print(f"  RECORDS MISSING ({label}): (found, expected) {bad}")
    if rec.get("dropped"):
        ok = False
        print(f"  RECORDS DROPPED: {rec.get('dropped')}")
    if ok:
        print("  OK: exactly one completed interception (with its token usage and prompt) per call")
    for prob in b.problems:
        ok = False
        print(f"PROBLEM: {prob}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run with small counts")
    ap.add_argument("--reps", type=int, help="throughput repetitions per case (default 3)")
    ap.add_argument("--requests", type=int, help="timed requests per throughput rep (default 2000)")
    ap.add_argument("--mem-calls", type=int, help="streamed calls in the memory series (default 10000)")
    ap.add_argument("--no-mem-baseline", action="store_true", help="skip the mitm-min memory series")
    ap.add_argument("--py-spy", metavar="DIR", type=Path,
                    help="profile aigw and mitm-min with py-spy (raw collapsed stacks) during the throughput runs")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) for inspection")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        asyncio.run(worker_main())
        return 0
    prof = QUICK if args.quick else Profile()
    if args.reps:
        prof.reps = args.reps
    if args.requests:
        prof.tput_n = args.requests
    if args.mem_calls:
        prof.mem_calls = args.mem_calls
        prof.mem_every = max(1, min(prof.mem_every, args.mem_calls // 10 or 1))
    if args.no_mem_baseline:
        prof.mem_baseline = False
    tmp = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    bench = Bench(prof, tmp)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        bench.pyspy_dir = args.py_spy.resolve()
    try:
        asyncio.run(bench.main())
        return 0 if report(bench) else 1
    except BenchError as exc:
        print(f"\nBENCHMARK BROKE: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("\nBENCHMARK BROKE (see the traceback above)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
