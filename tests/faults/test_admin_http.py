"""The admin listener under hostile or broken HTTP, against a real daemon: oversized and smuggled requests, slow
clients, methods it does not serve; health that says what is wrong; who may read /metrics.

Requests are written byte for byte on raw sockets: an HTTP client library would refuse to send most of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigw_proxy.addons.inflight import InFlight
from aigw_proxy.admin.app import MetricsAccess, is_loopback
from aigw_proxy.admin.health import HealthMonitor
from aigw_proxy.admin.http import AdminLimits, RequestLimits, protocol_class
from aigw_proxy.storage import RecordWriter, open_database
from tests.support.daemon import Daemon, UpstreamPKI, free_port, provider_config, start_daemon, stop_daemon
from tests.support.metrics import scrape
from tests.support.polling import poll
from tests.support.standin import StandIn
from tests.support.traffic import claude_code_turn

MiB = 1 << 20
HIDDEN = b"GET /api/v2/aibridge/interceptions HTTP/1.1\r\nHost: admin\r\n\r\n"  # answered 401 if ever executed


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("admin-http"), "")
    yield d
    stop_daemon(d)


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed the connection (False: the read timed out)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
        return out, True
    except TimeoutError:
        return out, False
    except ConnectionResetError:
        return out, True


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, bool]:
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response head: (status, headers, whatever arrived after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, rest


def statuses(raw: bytes) -> list[int]:
    """The status of every response in `raw` (a response may follow the previous body on the same line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- bodies -----------------------------------------------------------------------------------------------------


def test_a_huge_declared_body_is_refused_without_being_read(admin: Daemon) -> None:
    """2 GB announced, 600 MB sent: 413 at once, the connection closed, and the daemon's memory does not grow."""
    assert admin.proc is not None
    before = rss_kib(admin.proc.pid)
    sent = 0
    send_error: list[BaseException] = []
    with connect(admin.admin_port, timeout=30) as sock:
        sock.sendall(b"POST /api/v2/aibridge/interceptions HTTP/1.1\r\nHost: admin\r\n"
                     b"Content-Length: 2147483648\r\n\r\n")

        def upload() -> None:
            nonlocal sent
            block = b"\0" * MiB
            try:
                while sent < 600 * MiB:
                    sock.sendall(block)
                    sent += len(block)
            except OSError as exc:
                send_error.append(exc)

        sender = threading.Thread(target=upload)
        sender.start()
        status, headers, _ = read_head(sock)
        sender.join(60)
    assert status == 413
    assert headers["connection"] == "close"
    assert send_error, "the server read all 600 MB instead of closing"
    assert sent < 600 * MiB
    grown = rss_kib(admin.proc.pid) - before
    assert grown < 50 * 1024, f"RSS grew by {grown} KiB"


def test_a_request_hidden_in_a_chunked_body_is_not_executed(admin: Daemon) -> None:
    body = f"{len(HIDDEN):x}\r\n".encode() + HIDDEN + b"\r\n0\r\n\r\n"
    raw, closed = exchange(admin.admin_port, b"GET /healthz HTTP/1.1\r\nHost: admin\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert statuses(raw) == [200]  # one request, one answer
    assert b"authenticated" not in raw
    assert closed


def test_content_length_with_transfer_encoding_is_refused(admin: Daemon) -> None:
    """The classic smuggling set-up: a server that believed Content-Length would run the hidden request."""
    size_line = f"{len(HIDDEN):x}\r\n".encode()
    raw, closed = exchange(admin.admin_port,
                           b"GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: " + str(len(size_line)).encode()
                           + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + HIDDEN + b"\r\n0\r\n\r\n")
    assert statuses(raw) == [400]
    assert b"authenticated" not in raw
    assert closed


def test_a_negative_content_length_is_a_bad_request(admin: Daemon) -> None:
    raw, closed = exchange(admin.admin_port, b"GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: -5\r\n\r\n")
    assert statuses(raw) == [400]
    assert closed


# -- heads, methods, connections ------------------------------------------------------------------------------


def test_head_has_no_body_and_the_connection_stays_usable(admin: Daemon) -> None:
    with connect(admin.admin_port) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        status, headers, rest = read_head(sock)
        assert status == 200
        assert int(headers["content-length"]) > 0  # the length GET's body would have
        assert headers["content-type"] == "application/json"
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        raw, closed = read_until_closed(sock)
    raw = rest + raw
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:80]  # no body bytes of the HEAD answer in between
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1]) == {"status": "ok", "reasons": {}}
    assert closed


def test_http_1_0_connections_are_closed_after_the_response(admin: Daemon) -> None:
    raw, closed = exchange(admin.admin_port, b"GET /healthz HTTP/1.0\r\n\r\n", timeout=10)
    assert statuses(raw) == [200]
    assert closed


def test_a_slow_request_head_times_out(admin: Daemon) -> None:
    """Slowloris: a header line every second never completes the head; the server answers 408 and closes after
    its head timeout (10 s), although bytes keep coming."""
    limits = AdminLimits()
    with connect(admin.admin_port, timeout=2) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < limits.head_timeout * 3:
            try:
                sock.sendall(b"X-Slow: yes\r\n")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        else:
            pytest.fail("the server kept the slow connection open")
    assert statuses(answer) == [408]


def test_idle_connections_are_closed(admin: Daemon) -> None:
    with connect(admin.admin_port, timeout=AdminLimits().head_timeout * 2) as sock:
        raw, closed = read_until_closed(sock)
    assert closed and raw == b""


@pytest.mark.parametrize("shape", ["one long header", "many headers"])
def test_an_oversized_head_is_431(admin: Daemon, shape: str) -> None:
    if shape == "one long header":
        extra = b"X-Big: " + b"a" * (64 * 1024) + b"\r\n"
    else:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(300))
    raw, closed = exchange(admin.admin_port, b"GET /healthz HTTP/1.1\r\nHost: admin\r\n" + extra + b"\r\n")
    assert statuses(raw) == [431]
    assert closed


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/livez", "/metrics", "/api/v2/aibridge/interceptions"])
@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_other_methods_are_405_with_allow(admin: Daemon, path: str, method: str) -> None:
    with connect(admin.admin_port) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n".encode())
        status, headers, _ = read_head(sock)
    assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")


@pytest.mark.parametrize("target", ["/healthz", "/api/v2/aibridge/sessions", "*"])
def test_options_lists_the_allowed_methods(admin: Daemon, target: str) -> None:
    with connect(admin.admin_port) as sock:
        sock.sendall(f"OPTIONS {target} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        status, headers, rest = read_head(sock)
        assert (status, headers["allow"], rest) == (204, "GET, HEAD, OPTIONS", b"")
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")  # still in step
        raw, _ = read_until_closed(sock)
    assert statuses(raw) == [200]


# -- health -----------------------------------------------------------------------------------------------------


def test_health_endpoints_report_ok(admin: Daemon) -> None:
    base = f"http://127.0.0.1:{admin.admin_port}"
    status, _, body = get(base + "/livez")
    assert (status, json.loads(body)) == (200, {"status": "ok", "reasons": {}})
    for path in ("/readyz", "/healthz"):
        status, headers, body = get(base + path)
        doc = json.loads(body)
        assert status == 200 and headers["cache-control"] == "no-store"
        assert doc["status"] == "ok" and doc["reasons"] == {}
        assert doc["inflight_requests"] == 0
        assert {"queue_depth", "written", "dropped", "last_error"} <= set(doc["recorder"])


def health_of(d: Daemon, path: str) -> tuple[int, dict]:
    status, _, body = get(f"http://127.0.0.1:{d.admin_port}{path}")
    return status, json.loads(body)




def test_a_replaced_database_file_makes_the_proxy_degraded(tmp_path: Path) -> None:
    """The database file replaced by one the proxy cannot use: records cannot reach it, the proxy must say so.
    (A replacement it can open is reopened: tests/faults/test_database_faults.py.)"""
    d = start_daemon(tmp_path, "")
    try:
        db = d.data_dir / "aigw-proxy.db"
        (tmp_path / "copy.db").write_bytes(b"not a database " * 1000)
        os.replace(tmp_path / "copy.db", db)
        status, doc = health_of(d, "/healthz")
        assert status == 200 and doc["status"] == "degraded"  # relaying goes on: not a restart
        assert set(doc["reasons"]) == {"database_unreachable"}
        assert "was replaced" in doc["reasons"]["database_unreachable"]
        status, doc = health_of(d, "/readyz")
        assert status == 503 and doc["status"] == "degraded"
        assert health_of(d, "/livez") == (200, {"status": "ok", "reasons": {}})
        s = scrape(d.admin_port)
        assert s.samples("aigw_proxy_health_degraded", reason="database_unreachable")[0][1] == 1
        assert s.samples("aigw_proxy_health_degraded", reason="records_dropped")[0][1] == 0
    finally:
        stop_daemon(d)


def test_a_locked_database_makes_the_proxy_degraded_until_it_is_released(
        tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    locker = sqlite3.connect(d.data_dir / "aigw-proxy.db", isolation_level=None)
    try:
        claude_code_turn(d, standin_server, "alice", "msg_before")  # alice was active before the lock
        d.one(response_id="msg_before")
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        claude_code_turn(d, standin_server, "alice", "msg_locked")  # relayed although it cannot be recorded
        status, doc = poll(lambda: health_of(d, "/healthz"), lambda r: "writer_failing" in r[1].get("reasons", {}),
                           "healthz to report the failing writer")
        assert status == 200 and doc["status"] == "degraded"
        assert "database is locked" in doc["reasons"]["writer_failing"]
        assert doc["recorder"]["spooled"] > 0  # kept in the spool file until the database takes writes again
        assert health_of(d, "/readyz")[0] == 503
        locker.execute("ROLLBACK")
        poll(lambda: health_of(d, "/readyz"), lambda r: r[0] == 200, "readyz to recover")
        assert health_of(d, "/healthz")[1]["status"] == "ok"
        assert d.one(response_id="msg_locked")["provider"] == "anthropic"  # kept, written once the lock went
    finally:
        locker.close()
        standin_server.reset()
        stop_daemon(d)


def test_a_stalled_proxy_loop_fails_liveness(tmp_path: Path) -> None:
    """The health checks run on the admin thread but ask the proxy's loop: blocked, it cannot answer, and the
    checks say so within their timeout instead of hanging or reporting ok."""
    proxy_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=proxy_loop.run_forever, daemon=True)
    thread.start()

    async def build() -> tuple[HealthMonitor, RecordWriter]:
        db = await open_database(tmp_path / "aigw-proxy.db")
        writer = RecordWriter(db)
        writer.start()
        await writer.flush(10)
        return HealthMonitor(writer, InFlight(), db.path), writer

    monitor, writer = asyncio.run_coroutine_threadsafe(build(), proxy_loop).result(30)
    try:
        assert asyncio.run(monitor.live()).status == "ok"
        proxy_loop.call_soon_threadsafe(time.sleep, monitor.policy.loop_timeout * 3)  # both checks below
        stalled = asyncio.run(monitor.live())
        assert stalled.status == "unresponsive"
        assert "did not answer" in stalled.reasons["proxy_loop_unresponsive"]
        assert asyncio.run(monitor.check(None)).status == "unresponsive"
    finally:
        asyncio.run_coroutine_threadsafe(writer.close(5), proxy_loop).result(30)
        proxy_loop.call_soon_threadsafe(proxy_loop.stop)
        thread.join(10)


# -- metrics exposure -------------------------------------------------------------------------------------------


def test_metrics_on_the_loopback_admin_listener_need_no_token(admin: Daemon) -> None:
    s = scrape(admin.admin_port)
    assert s.content_type.startswith("text/plain; version=0.0.4")
    degraded = {labels["reason"]: v for labels, v in s.samples("aigw_proxy_health_degraded")}
    assert set(degraded) >= {"records_dropped", "writer_failing", "database_unreachable", "queue_high_water"}
    assert set(degraded.values()) == {0}


def test_a_metrics_token_is_required_when_set(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, "", env={"AIGW_METRICS_TOKEN": "s3cret-scrape-token"})
    try:
        url = f"http://127.0.0.1:{d.admin_port}/metrics"
        status, headers, _ = get(url)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert get(url, {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = get(url, {"Authorization": "Bearer s3cret-scrape-token"})
        assert status == 200 and b"aigw_proxy_records_written_total" in body
        assert get(f"http://127.0.0.1:{d.admin_port}/healthz")[0] == 200  # health stays open to probes
    finally:
        stop_daemon(d)


def test_a_token_file_works_like_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("from-a-file\n")
    d = start_daemon(tmp_path, "", extra_args=("--metrics-token-file", str(token_file)))
    try:
        url = f"http://127.0.0.1:{d.admin_port}/metrics"
        assert get(url)[0] == 401
        assert get(url, {"Authorization": "Bearer from-a-file"})[0] == 200
    finally:
        stop_daemon(d)


def test_metrics_listen_moves_metrics_to_a_listener_of_their_own(tmp_path: Path) -> None:
    port = free_port()
    d = start_daemon(tmp_path, "", extra_args=("--metrics-listen", f"127.0.0.1:{port}"))
    try:
        status, _, body = get(f"http://127.0.0.1:{d.admin_port}/metrics")
        assert status == 404 and f"127.0.0.1:{port}" in json.loads(body)["message"]
        status, _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"coder_ai_gateway_interceptions_total" in body
        assert get(f"http://127.0.0.1:{port}/api/v2/aibridge/interceptions")[0] == 404  # metrics only
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 404
    finally:
        stop_daemon(d)


def test_metrics_listen_on_a_taken_port_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = start_daemon(tmp_path, "", extra_args=("--metrics-listen", f"127.0.0.1:{port}"), wait=False)
        assert d.proc is not None
        code = d.proc.wait(30)
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port} for the metrics listener" in d.log()


def _request(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": raw})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "aigw.example"])
def test_without_a_token_metrics_are_refused_on_a_non_loopback_listener(host: str) -> None:
    """The tests may only bind loopback, so the policy is checked on its own here."""
    assert not is_loopback(host)
    refused = MetricsAccess().refusal(_request(), loopback_listener=is_loopback(host))
    assert refused is not None and refused.status_code == 403
    assert b"--metrics-token" in refused.body
    assert MetricsAccess(public=True).refusal(_request(), loopback_listener=False) is None
    with_token = MetricsAccess(token="t0k")
    assert with_token.refusal(_request({"Authorization": "Bearer t0k"}), loopback_listener=False) is None
    assert with_token.refusal(_request(), loopback_listener=True) is not None  # a token binds loopback too


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_listeners_are_recognised(host: str) -> None:
    assert is_loopback(host)


# -- limits that only bite an endpoint reading a body (none does yet; the web console will) ---------------------


@pytest.fixture
def body_reader() -> Iterator[int]:
    """The admin listener's server pieces (protocol, limits) around an endpoint that reads its body, served by
    uvicorn on a thread, with small limits."""
    import uvicorn
    from starlette.applications import Starlette

    async def echo(request: Request) -> Response:
        return Response(str(len(await request.body())).encode())

    limits = AdminLimits(max_body=1000, body_timeout=2.0)
    app = RequestLimits(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), limits, "POST")
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol_class(limits), ws="none",
                            lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    poll(lambda: server.started, bool, "the test server to start", timeout=10)
    yield port
    server.should_exit = True
    thread.join(10)


def test_a_chunked_body_over_the_cap_is_413(body_reader: int) -> None:
    chunk = b"x" * 600
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    raw, closed = exchange(body_reader, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        + body)
    assert statuses(raw) == [413] and closed
    raw, _ = exchange(body_reader, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                   b"Connection: close\r\n\r\n" + b"258\r\n" + chunk + b"\r\n0\r\n\r\n")
    assert statuses(raw) == [200] and raw.endswith(b"600")


def test_a_slow_body_times_out(body_reader: int) -> None:
    with connect(body_reader, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        raw, closed = read_until_closed(sock)
    assert statuses(raw) == [408] and closed
    assert b"request body not received within 2 s" in raw
