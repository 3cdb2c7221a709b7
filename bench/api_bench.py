"""REST API and web console benchmark on a realistic database (bench/gen_api_db.py: 1M interceptions, 2,000 users,
~5M child rows).

    .venv/bin/python bench/api_bench.py [--interceptions N] [--runs N] [--console-only [--repeat N]]
    .venv/bin/python bench/api_bench.py --api-only [PREFIX] [--repeat N]   # REST API queries only (those named
                                                                            # PREFIX…, or any of "A|B"), median
                                                                            # and range of repeats
                                                                            # or: make bench-api
    .venv/bin/python bench/api_bench.py --database-url postgresql://…      # the same on PostgreSQL
    .venv/bin/python bench/api_bench.py --postgresql                       # … on a throwaway local cluster

On PostgreSQL the generated SQLite database is copied into the target with `aigw-proxy db migrate-to`'s code
(COPY, resumable: a database that already holds the rows is reused) and the daemon records and answers from it.

Starts `aigw-proxy run` on the (cached) database, times each API query (p50/p95 over --runs requests after a
warm-up) and then measures what a heavy API load costs proxy traffic: the latency of requests through a proxy
tunnel to a local HTTP server, idle and while another process hammers the heaviest API queries. Everything stays
on 127.0.0.1. Figures are printed, not asserted; exit status 1 only if something broke.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.cookiejar
import http.server
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen_api_db import default_dir, ensure_db
from tests.support.ports import free_port

PREFIX = "/api/v2/ai-gateway"


# A scenario's query parameters, or a callable giving fresh ones per request.
Params = dict[str, Any] | Callable[[], dict[str, Any]]


def get(url: str, token: str, path: str, params: dict[str, object] | None = None) -> tuple[int, bytes]:
    query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
    req = urllib.request.Request(f"{url}{PREFIX}{path}" + (f"?{query}" if query else ""),
                                 headers={"Coder-Session-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Origin(http.server.BaseHTTPRequestHandler):
    """The tunnelled destination: a tiny local HTTP server."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok":true}'
        # One write: headers and body in separate segments would meet Nagle + delayed ACK (40 ms stalls).
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def log_message(self, *args: object) -> None:
        pass


def tunnel(proxy: tuple[str, int], origin_port: int, token: str) -> socket.socket:
    s = socket.create_connection(proxy, timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cred = base64.b64encode(f"bench:{token}".encode()).decode()
    s.sendall(f"CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n"
              f"Proxy-Authorization: Basic {cred}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("proxy closed the CONNECT")
        head += chunk
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT refused: {head[:60]!r}")
    return s


def round_trip(s: socket.socket) -> float:
    t = time.perf_counter()
    s.sendall(b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n")
    data = b""
    while not data.endswith(b'{"ok":true}'):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("tunnel closed")
        data += chunk
    return (time.perf_counter() - t) * 1000


def proxied_latency(proxy: tuple[str, int], origin_port: int, token: str, seconds: float, phase: str = "",
                    samples: TextIO | None = None) -> dict[str, float]:
    """Requests over an open tunnel, and after every 10 of them a new tunnel + request (its CONNECT timed apart),
    for `seconds`; with `samples`, each new tunnel's timings as a JSON line tagged `phase`."""
    open_rt: list[float] = []
    new: list[float] = []
    connect: list[float] = []
    s = tunnel(proxy, origin_port, token)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        open_rt.append(round_trip(s))
        if len(open_rt) % 10 == 0:
            t = time.monotonic()
            fresh = tunnel(proxy, origin_port, token)
            t_200 = time.monotonic()
            round_trip(fresh)
            t_done = time.monotonic()
            port = fresh.getsockname()[1]
            fresh.close()
            new.append((t_done - t) * 1000)
            connect.append((t_200 - t) * 1000)
            if samples is not None:
                samples.write(json.dumps({"phase": phase, "port": port, "t0": t, "t_200": t_200,
                                          "t_done": t_done}) + "\n")
        time.sleep(0.01)
    s.close()
    return {"new p50": pct(new, 50), "new p95": pct(new, 95), "p95/p50": pct(new, 95) / pct(new, 50),
            "new max": max(new), "CONNECT p50": pct(connect, 50), "CONNECT p95": pct(connect, 95),
            "open p50": pct(open_rt, 50), "open p95": pct(open_rt, 95), "open max": max(open_rt),
            "n new": len(new)}


def hammer(url: str, token: str, seconds: float) -> None:
    """(--hammer) The heaviest API queries back to back, in a separate process."""
    heavy: list[tuple[str, dict[str, object]]] = [
        ("/sessions", {"q": "model:gpt-5", "limit": 1000}), ("/interceptions", {"limit": 1000}),
        ("/sessions", {"limit": 1000}), ("/interceptions", {"q": "model:o4-mini", "limit": 1000})]
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        path, params = heavy[n % len(heavy)]
        get(url, token, path, params)
        n += 1
    print(n)


def scenarios(db: Path, info: dict[str, Any]) -> list[tuple[str, str, str, Params]]:
    """(name, role, path, params or a callable giving fresh params per request)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    half = int(info["interceptions"]) // 2  # 500k of the default million
    deep_id = conn.execute("SELECT id FROM aibridge_interceptions WHERE ended_at IS NOT NULL "
                           "ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?", (half,)).fetchone()[0]
    deep_session = conn.execute("SELECT session_id FROM aigw_sessions ORDER BY last_active_at DESC, session_id DESC "
                                "LIMIT 1 OFFSET ?", (half // 10,)).fetchone()[0]
    busy_user = conn.execute("SELECT username FROM users ORDER BY created_at, id LIMIT 1 OFFSET 3").fetchone()[0]
    conn.close()
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    week = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    month = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rng = random.Random(1)
    sample = info["sessions_sample"]
    return [
        ("interceptions: first page", "admin", "/interceptions", {}),
        ("interceptions: provider:anthropic", "admin", "/interceptions", {"q": "provider:anthropic"}),
        ("interceptions: model:o4-mini", "admin", "/interceptions", {"q": "model:o4-mini"}),
        ("interceptions: client + last 7 days", "admin", "/interceptions",
         {"q": f'client:"Gemini CLI" started_after:{week}'}),
        ("interceptions: last 24 hours", "admin", "/interceptions", {"q": f"started_after:{day}"}),
        (f"interceptions: initiator:{busy_user}", "admin", "/interceptions", {"q": f"initiator:{busy_user}"}),
        ("interceptions: member (own)", "member", "/interceptions", {}),
        (f"interceptions: deep page (after_id {half // 1000}k)", "admin", "/interceptions", {"after_id": deep_id}),
        ("interceptions: offset 10000", "admin", "/interceptions", {"offset": 10000}),
        ("interceptions: limit 1000", "admin", "/interceptions", {"limit": 1000}),
        ("sessions: first page", "admin", "/sessions", {}),
        ("sessions: member (own)", "member", "/sessions", {}),
        (f"sessions: initiator:{busy_user}", "admin", "/sessions", {"q": f"initiator:{busy_user}"}),
        (f"sessions: deep page (after {half // 10000}k sessions)", "admin", "/sessions",
         {"after_session_id": deep_session}),
        ("sessions: last 24 hours", "admin", "/sessions", {"q": f"started_after:{day}"}),
        ("sessions: client:Codex last 7 days", "admin", "/sessions", {"q": f"client:Codex started_after:{week}"}),
        ("sessions: model:gpt-5 (all time)", "admin", "/sessions", {"q": "model:gpt-5"}),
        ("sessions: provider:anthropic (all time, half the rows)", "admin", "/sessions", {"q": "provider:anthropic"}),
        ("sessions: provider_name:openai (all time)", "admin", "/sessions", {"q": "provider_name:openai"}),
        ("sessions: client:Unknown (all time)", "admin", "/sessions", {"q": "client:Unknown"}),
        ("sessions: provider:openai last 30 days", "admin", "/sessions",
         {"q": f"provider:openai started_after:{month}"}),
        ("sessions: provider:anthropic model:claude-haiku-4-5", "admin", "/sessions",
         {"q": "provider:anthropic model:claude-haiku-4-5"}),
        ("sessions: client:Unknown provider:anthropic (no implication)", "admin", "/sessions",
         {"q": "client:Unknown provider:anthropic"}),
        ("sessions: limit 1000", "admin", "/sessions", {"limit": 1000}),
        ("session detail", "admin", "/sessions/{sid}", lambda: {"sid": rng.choice(sample)}),
        ("spend: by user (all time)", "admin", "/spend", {"by": "user"}),
        ("spend: by model, last 30 days", "admin", "/spend", {"by": "model", "q": f"started_after:{month}"}),
        ("spend: by day, last 7 days", "admin", "/spend", {"by": "day", "q": f"started_after:{week}"}),
        ("spend: provider:anthropic by client", "admin", "/spend", {"by": "client", "q": "provider:anthropic"}),
        (f"spend: initiator:{busy_user} by day", "admin", "/spend", {"by": "day", "q": f"initiator:{busy_user}"}),
        ("spend: member (own) by model", "member", "/spend", {"by": "model"}),
        ("spend: one session", "admin", "/spend", lambda: {"by": "model", "q": f"session_id:{rng.choice(sample)}"}),
        ("models", "admin", "/models", {}),
        ("clients", "member", "/clients", {}),
    ]


def console_scenarios(db: Path, info: dict) -> list[tuple[str, str, str]]:
    """(name, role, path with query) for the console's pages."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sessions = conn.execute("SELECT count(*) FROM aigw_sessions").fetchone()[0]
    deep_session = conn.execute("SELECT session_id FROM aigw_sessions ORDER BY last_active_at DESC, session_id DESC "
                                "LIMIT 1 OFFSET ?", (min(50000, sessions // 2),)).fetchone()[0]
    deep_id = conn.execute("SELECT id FROM aibridge_interceptions WHERE ended_at IS NOT NULL "
                           "ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?",
                           (info["interceptions"] // 2,)).fetchone()[0]
    busy_user = conn.execute("SELECT username FROM users ORDER BY created_at, id LIMIT 1 OFFSET 3").fetchone()[0]
    sid = info["sessions_sample"][0]
    conn.close()
    week = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    c = "/console"
    return [
        ("console overview 24h", "admin", f"{c}/?window=24h"),
        ("console overview 7d", "admin", f"{c}/?window=7d"),
        ("console overview 30d", "admin", f"{c}/?window=30d"),
        ("console overview 30d by client", "admin", f"{c}/?window=30d&by=client"),
        ("console overview 30d (member)", "member", f"{c}/?window=30d"),
        ("console sessions", "admin", f"{c}/sessions"),
        ("console sessions q=client:Codex last 7d", "admin",
         f"{c}/sessions?" + urlencode({"q": f"client:Codex started_after:{week}"})),
        (f"console sessions q=initiator:{busy_user}", "admin", f"{c}/sessions?" + urlencode({"q": busy_user})),
        ("console sessions deep page", "admin", f"{c}/sessions?" + urlencode({"after": deep_session})),
        ("console sessions (member)", "member", f"{c}/sessions"),
        ("console session detail", "admin", f"{c}/sessions/{sid}"),
        ("console request log", "admin", f"{c}/requests"),
        ("console request log q=model:o4-mini", "admin", f"{c}/requests?q=model:o4-mini"),
        ("console request log deep page", "admin", f"{c}/requests?" + urlencode({"after": deep_id})),
        ("console request log (member)", "member", f"{c}/requests"),
        ("console interception detail", "admin", f"{c}/requests/{deep_id}"),
        ("console people (2,000 users)", "admin", f"{c}/people"),
        ("console groups and budgets", "admin", f"{c}/groups"),
        ("console audit log", "admin", f"{c}/audit"),
        ("console set-up", "member", f"{c}/setup"),
    ]


def console_opener(url: str, token: str) -> urllib.request.OpenerDirector:
    """A cookie-keeping client signed in to the console with `token`."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(url + "/console/signin", timeout=30).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    data = urlencode({"csrf": csrf.group(1), "token": token}).encode()
    opener.open(urllib.request.Request(url + "/console/signin", data=data), timeout=30).read()
    assert any(c.name == "aigw_console" for c in jar), "console sign-in failed"
    return opener


def bench_console(url: str, out: Path, info: dict, runs: int) -> tuple[bool, dict[str, dict[str, float]]]:
    """Times every console page: wall clock and the server's own time (its Server-Timing header). The first
    request of each page is timed apart: the overview's figures are cached for a minute, the first load is not."""
    openers = {role: console_opener(url, info["tokens"][role]) for role in ("admin", "member")}
    print(f"\nconsole pages over {runs} requests each (ms; srv = Server-Timing app time; 1st = the first "
          "request, before any cache):")
    print(f"  {'page':52s} {'1st':>7s} {'1st srv':>8s} {'p50':>7s} {'p95':>7s} {'srv p50':>8s} {'srv p95':>8s} "
          f"{'KiB':>6s}")
    failed = False
    stats: dict[str, dict[str, float]] = {}
    for name, role, path in console_scenarios(out / "aigw-proxy.db", info):
        wall: list[float] = []
        server: list[float] = []
        body = b""
        first = first_srv = 0.0
        for n in range(runs + 3):
            t = time.perf_counter()
            try:
                with openers[role].open(url + path, timeout=60) as r:
                    body = r.read()
                    timing = r.headers.get("Server-Timing", "")
            except urllib.error.HTTPError as exc:
                print(f"  {name}: HTTP {exc.code}: {exc.read()[:200]!r}")
                failed = True
                break
            elapsed = (time.perf_counter() - t) * 1000
            m = re.search(r"dur=([0-9.]+)", timing)
            srv = float(m.group(1)) if m else elapsed
            if n == 0:
                first, first_srv = elapsed, srv
            if n >= 3:
                wall.append(elapsed)
                server.append(srv)
        if wall:
            stats[name] = {"1st srv": first_srv, "srv p50": pct(server, 50), "srv p95": pct(server, 95)}
            print(f"  {name:52s} {first:7.1f} {first_srv:8.1f} {pct(wall, 50):7.1f} {pct(wall, 95):7.1f} "
                  f"{pct(server, 50):8.1f} {pct(server, 95):8.1f} {len(body) / 1024:6.0f}")
    return failed, stats


def bench_api(url: str, out: Path, info: dict, runs: int, only: str = "",
              backend: str = "SQLite") -> tuple[bool, dict[str, dict[str, float]]]:
    """Times the REST API's queries (those whose name starts with `only`, or with one of its `|`-separated
    prefixes): p50/p95 of the wall clock."""
    tokens = info["tokens"]
    print(f"\nAPI latency on {backend} over {runs} requests each (ms; {os.cpu_count()} CPUs; "
          f"{info['interceptions']:,} interceptions, {info['child_rows']:,} child rows):")
    print(f"  {'query':52s} {'p50':>8s} {'p95':>8s} {'rows':>6s} {'KiB':>7s}")
    failed = False
    stats: dict[str, dict[str, float]] = {}
    for name, role, path, params in scenarios(out / "aigw-proxy.db", info):
        if not name.startswith(tuple(only.split("|"))):
            continue
        times: list[float] = []
        for n in range(runs + 3):
            p = params() if callable(params) else dict(params)
            real_path = path.format(**p) if "{" in path else path
            query = {k: v for k, v in p.items() if k != "sid"}
            t = time.perf_counter()
            status, body = get(url, tokens[role], real_path, query)
            elapsed = (time.perf_counter() - t) * 1000
            if status != 200:
                print(f"  {name}: HTTP {status}: {body[:200]!r}")
                failed = True
                break
            if n >= 3:  # the first requests warm the page cache
                times.append(elapsed)
        if times:
            doc = json.loads(body)
            rows = len(doc) if isinstance(doc, list) else len(
                doc.get("results", doc.get("sessions", doc.get("threads", doc.get("groups", [])))))
            stats[name] = {"p50": pct(times, 50), "p95": pct(times, 95)}
            print(f"  {name:52s} {pct(times, 50):8.1f} {pct(times, 95):8.1f} {rows:6d} {len(body) / 1024:7.0f}")
    return failed, stats


def summarise(runs: list[dict[str, dict[str, float]]], title: str) -> None:
    """Each figure's median and range over the repeats."""
    import statistics

    print(f"\n{title} over {len(runs)} repeats (a fresh daemon each; median [min-max], ms):")
    names = list(runs[0])
    keys = list(runs[0][names[0]]) if names else []
    print(f"  {'':52s} " + " ".join(f"{k:>20s}" for k in keys))
    for name in names:
        cells = []
        for k in keys:
            values = [r[name][k] for r in runs if name in r]
            cells.append(f"{statistics.median(values):6.1f} [{min(values):.0f}-{max(values):.0f}]".rjust(20))
        print(f"  {name:52s} " + " ".join(cells))


def start_daemon(data_dir: Path, origin_port: int, database_url: str | None = None, *,
                 command: list[str] | None = None, name: str = "daemon", nice: int = 0,
                 run_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str, tuple[str, int]]:
    """`aigw-proxy run` on `data_dir` (`command`: how to run it, this checkout's by default), its log in
    `<name>.log`, at niceness `nice`; returns once /healthz answers: (process, admin URL, proxy address)."""
    cfg = data_dir / f"{name}.toml"
    cfg.write_text(f'allowed_private_cidrs = ["127.0.0.1/32"]\nallowed_ports = [443, {origin_port}]\n')
    port, admin = free_port(), free_port()
    log = open(data_dir / f"{name}.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "AIGW_DATABASE_URL"}
    if database_url:
        env["AIGW_DATABASE_URL"] = database_url
    proc = subprocess.Popen([*(command or [sys.executable, "-m", "aigw_proxy"]), "run", "--listen",
                             f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--data-dir", str(data_dir),
                             "--config", str(cfg), "--retention", "0", "--log-level", "warning", *run_args],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    url = f"http://127.0.0.1:{admin}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return proc, url, ("127.0.0.1", port)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((data_dir / f"{name}.log").read_text()) from None
            time.sleep(0.1)
    raise RuntimeError("daemon did not start")


def ensure_postgres(url: str, sqlite_db: Path, interceptions: int) -> None:
    """The benchmark rows in the PostgreSQL database at `url`: copied from `sqlite_db` unless already there."""
    import asyncio

    from aigw_proxy.storage import open_database
    from aigw_proxy.storage.transfer import transfer

    async def go() -> None:
        db = await open_database(url, statement_timeout=0)
        try:
            async with db.reader.connect() as conn:
                have = int((await conn.exec_driver_sql("SELECT count(*) FROM aibridge_interceptions")).scalar_one())
            if have >= interceptions:
                print(f"reusing the {have:,} interceptions in {db.config.display}")
                return
            print(f"copying {sqlite_db} into {db.config.display} (COPY, resumable)", flush=True)
            began = time.monotonic()
            last = [0.0]

            def progress(line: str) -> None:
                if time.monotonic() - last[0] > 10:
                    last[0] = time.monotonic()
                    print(f"  {line} ({time.monotonic() - began:.0f}s)", flush=True)

            report = await transfer(sqlite_db, db, progress=progress)
            print(f"  copied in {report.seconds:.0f}s: " + ", ".join(
                f"{t} {n:,}" for t, (_s, n) in report.counts.items()), flush=True)
        finally:
            await db.close()

    asyncio.run(go())


def throwaway_postgres(stack: contextlib.ExitStack) -> str:
    """A local cluster for the run (tests/support/postgres.py), with the memory a database server would get."""
    from tests.support.postgres import run_sync, start_cluster

    cluster = start_cluster()
    stack.callback(cluster.stop)
    for setting in ("shared_buffers = '2GB'", "effective_cache_size = '8GB'", "work_mem = '32MB'",
                    "maintenance_work_mem = '512MB'", "max_wal_size = '8GB'"):
        cluster.execute(f"ALTER SYSTEM SET {setting}", superuser=True)
    cluster.run_as.run([str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-w", "-m", "fast", "restart",
                        "-l", str(cluster.log_file)], cwd=cluster.root, timeout=120)
    run_sync(cluster.execute_async("SELECT 1"))
    print(f"throwaway PostgreSQL cluster: {cluster.version} on 127.0.0.1:{cluster.port} (fsync off)")
    return cluster.url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=None, help="run on this PostgreSQL database (rows copied in once)")
    ap.add_argument("--postgresql", action="store_true", help="run on a throwaway local PostgreSQL cluster")
    ap.add_argument("--interceptions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--load-seconds", type=float, default=15.0)
    ap.add_argument("--console-only", action="store_true",
                    help="time the web console's pages and the spend report only")
    ap.add_argument("--api-only", nargs="?", const="", default=None, metavar="PREFIX",
                    help="time the REST API queries only (those whose name starts with PREFIX, or with one of "
                         "PREFIX|PREFIX…), no console pages "
                         "and no proxied traffic")
    ap.add_argument("--repeat", type=int, default=1,
                    help="--console-only, --api-only: repeat on a fresh daemon N times, then print each figure's "
                         "median and range")
    ap.add_argument("--hammer", nargs=3, metavar=("URL", "TOKEN", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hammer:
        hammer(args.hammer[0], args.hammer[1], float(args.hammer[2]))
        return 0
    out = default_dir(args.interceptions)
    info = ensure_db(out, interceptions=args.interceptions, n_users=args.users)
    tokens = info["tokens"]
    stack = contextlib.ExitStack()
    database_url = args.database_url or (throwaway_postgres(stack) if args.postgresql else None)
    if database_url:
        ensure_postgres(database_url, out / "aigw-proxy.db", int(info["interceptions"]))
    backend = "PostgreSQL" if database_url else "SQLite"
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    if args.api_only is not None:  # the REST API's queries, on a fresh daemon per repeat
        api_runs: list[dict[str, dict[str, float]]] = []
        failed = False
        try:
            for _ in range(args.repeat):
                proc, url, _proxy = start_daemon(out, origin.server_address[1], database_url)
                try:
                    bad, stats = bench_api(url, out, info, args.runs, only=args.api_only, backend=backend)
                    failed = failed or bad
                    api_runs.append(stats)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
            if args.repeat > 1 and api_runs[0]:
                summarise(api_runs, f"API latency on {backend}")
        finally:
            origin.shutdown()
            stack.close()
        return 1 if failed else 0
    if args.console_only:  # the console's pages and the spend report, on a fresh daemon per repeat
        console_runs: list[dict[str, dict[str, float]]] = []
        spend_runs: list[dict[str, dict[str, float]]] = []
        failed = False
        try:
            for _ in range(args.repeat):
                proc, url, _proxy = start_daemon(out, origin.server_address[1], database_url)
                try:
                    bad, stats = bench_console(url, out, info, args.runs)
                    bad_api, spend = bench_api(url, out, info, args.runs, only="spend", backend=backend)
                    failed = failed or bad or bad_api
                    console_runs.append(stats)
                    spend_runs.append(spend)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
            if args.repeat > 1 and console_runs[0]:
                summarise(console_runs, "console pages")
                summarise(spend_runs, "spend report")
        finally:
            origin.shutdown()
            stack.close()
        return 1 if failed else 0
    proc, url, proxy = start_daemon(out, origin.server_address[1], database_url)
    failed = False
    try:
        failed = bench_console(url, out, info, args.runs)[0]
        failed = bench_api(url, out, info, args.runs, backend=backend)[0] or failed

        print(f"\nproxied requests through a tunnel, {args.load_seconds:.0f}s each (ms):")
        idle = proxied_latency(proxy, origin.server_address[1], tokens["admin"], args.load_seconds)
        hammer_proc = subprocess.Popen([sys.executable, __file__, "--hammer", url, tokens["admin"],
                                        str(args.load_seconds + 2)], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        loaded = proxied_latency(proxy, origin.server_address[1], tokens["admin"], args.load_seconds)
        api_requests = hammer_proc.communicate(timeout=120)[0].strip()
        for label, r in (("idle", idle), (f"during heavy API load ({api_requests} API requests)", loaded)):
            print(f"  {label:52s} open tunnel p50 {r['open p50']:.2f} p95 {r['open p95']:.2f} max "
                  f"{r['open max']:.1f} | new tunnel p50 {r['new p50']:.1f} p95 {r['new p95']:.1f}")
        print(f"  added latency (open tunnel): p50 {loaded['open p50'] - idle['open p50']:+.2f}, "
              f"p95 {loaded['open p95'] - idle['open p95']:+.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        origin.shutdown()
        stack.close()
    return 1 if failed else 0


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
