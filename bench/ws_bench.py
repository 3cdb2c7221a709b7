"""Responses-over-WebSocket latency: direct vs bare mitmproxy (mitmdump) vs aigw-proxy (recording every turn).

    .venv/bin/python bench/ws_bench.py            # 40 turns x 60 events per path
    .venv/bin/python bench/ws_bench.py --quick    # smoke run

Everything stays on 127.0.0.1. A throwaway CA signs api.openai.com for a `websockets` stand-in (in this process)
that answers each `response.create` with a Responses event stream, one event every --gap ms, each stamped with
the time it was sent. A Codex-like client (permessage-deflate, one socket, sequential turns) measures, per event,
the time from the stand-in's send to its own receive (same process, same clock), and per turn the time from
`response.create` to the first event. The paths differ only in what sits between client and stand-in, so the
aigw-proxy vs mitmdump difference is what recording costs. Figures are printed, never asserted; exit 1 only if
something broke (a proxy did not start, or the database does not hold one completed interception per turn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem  # noqa: E402
from tests.support.payloads import responses_object, responses_usage  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.ws_standin import responses_events  # noqa: E402

HOST = "api.openai.com"
MODEL = "gpt-5.1-codex"
CODEX_HEADERS = {"User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)",
                 "originator": "codex_exec", "session-id": "bench-session",
                 "openai-beta": "responses_websockets=2026-02-06", "Authorization": "Bearer sk-proj-" + "b" * 60}


def turn_events(n_deltas: int, turn: int) -> list[dict]:
    text = " ".join(f"word{i}" for i in range(n_deltas))
    resp = responses_object(f"resp_bench_{turn}", MODEL, [
        {"type": "message", "id": f"msg_{turn}", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": text, "annotations": []}]}], responses_usage(5000, n_deltas))
    events = responses_events(resp)
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    i = events.index(delta)
    deltas = [dict(delta, delta=f" word{k}") for k in range(n_deltas)]
    return events[:i] + deltas + events[i + 1:]


class StandIn:
    """Answers each response.create with `turn_events`, paced, each event stamped with its send time."""

    def __init__(self, ssl_context: object, n_deltas: int, gap: float) -> None:
        self.n_deltas, self.gap, self.ssl_context = n_deltas, gap, ssl_context
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        server = await serve(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return next(iter(server.sockets)).getsockname()[1]

    async def _serve(self, ws: ServerConnection) -> None:
        turn = 0
        async for raw in ws:
            if json.loads(raw).get("type") != "response.create":
                continue
            turn += 1
            for i, event in enumerate(turn_events(self.n_deltas, turn)):
                if i:
                    await asyncio.sleep(self.gap)
                await ws.send(json.dumps({**event, "t": time.perf_counter()}))


def run_client(url: str, proxy: str | None, ca: Path, turns: int) -> tuple[list[float], list[float]]:
    """(per-event latencies, per-turn first-event latencies), in ms."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    lat: list[float] = []
    first: list[float] = []
    kw: dict = {"proxy": proxy} if proxy else {"proxy": None, "server_hostname": HOST}
    with connect(url, ssl=ctx, additional_headers=CODEX_HEADERS, compression="deflate", max_size=None,
                 open_timeout=20, **kw) as ws:
        for turn in range(turns):
            sent = time.perf_counter()
            ws.send(json.dumps({"type": "response.create", "model": MODEL, "store": False,
                                "input": [{"type": "message", "role": "user",
                                           "content": [{"type": "input_text", "text": f"bench turn {turn}"}]}]}))
            for k in range(100_000):
                event = json.loads(ws.recv(timeout=30))
                now = time.perf_counter()
                if k == 0:
                    first.append((now - sent) * 1000)
                lat.append((now - event["t"]) * 1000)
                if event["type"] == "response.completed":
                    break
    return lat, first


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wait_port(port: int, proc: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{name} did not start:\n{log.read_text(errors='replace')}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gap", type=float, default=2.0, help="ms between events")
    args = ap.parse_args()
    turns, n_deltas = (5, 20) if args.quick else (40, 60)
    tmp = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    ca_cert, ca_key = make_ca("Bench Upstream CA")
    cert, key = make_server_cert(ca_cert, ca_key, [HOST])
    upstream_ca = write_pem(tmp / "upstream-ca.pem", ca_cert)
    standin = StandIn(server_ssl_context(cert, key), n_deltas, args.gap / 1000)
    py = Path(sys.executable)
    procs: list[subprocess.Popen] = []
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        results["direct"] = run_client(f"wss://127.0.0.1:{standin.port}/v1/responses", None, upstream_ca, turns)

        conf = tmp / "mitm-conf"
        script = tmp / "redirect.py"
        script.write_text("class Redirect:\n    def http_connect(self, flow):\n"
                          f"        if flow.request.host == {HOST!r}:\n"
                          f"            flow.request.host, flow.request.port = '127.0.0.1', {standin.port}\n\n"
                          "addons = [Redirect()]\n")
        port, log = free_port(), tmp / "mitmdump.log"
        procs.append(subprocess.Popen(
            [str(py.parent / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--set", f"confdir={conf}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}", "-s", str(script)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT))
        wait_port(port, procs[-1], "mitmdump", log)
        results["mitmdump"] = run_client(f"wss://{HOST}/v1/responses", f"http://u:p@127.0.0.1:{port}",
                                         conf / "mitmproxy-ca-cert.pem", turns)

        data, cfg = tmp / "aigw-data", tmp / "aigw.toml"
        cfg.write_text(f'upstream_ca_file = "{upstream_ca}"\nallowed_private_cidrs = ["127.0.0.1/32"]\n'
                       f'[[providers]]\nname = "openai"\nupstream = "https://127.0.0.1:{standin.port}"\n')
        env = {**os.environ, "AIGW_DATA_DIR": str(data)}
        aigw = [str(py), "-m", "aigw_proxy"]
        token = subprocess.run([*aigw, "users", "add", "bench"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
        port, log = free_port(), tmp / "aigw.log"
        procs.append(subprocess.Popen(
            [*aigw, "run", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{free_port()}",
             "--config", str(cfg)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO))
        wait_port(port, procs[-1], "aigw-proxy", log)
        ca = tmp / "aigw-ca.pem"
        ca.write_text(subprocess.run([*aigw, "ca", "export"], env=env, capture_output=True, text=True,
                                     check=True).stdout)
        results["aigw"] = run_client(f"wss://{HOST}/v1/responses", f"http://bench:{token}@127.0.0.1:{port}", ca,
                                     turns)
        procs[-1].terminate()
        procs[-1].wait(30)
        with sqlite3.connect(data / "aigw-proxy.db") as db:
            recorded = db.execute("SELECT count(*) FROM aibridge_interceptions WHERE ended_at IS NOT NULL "
                                  "AND json_extract(metadata, '$.transport') = 'websocket'").fetchone()[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)

    print(f"{turns} turns x {n_deltas + 5} events per path, one event every {args.gap:g} ms, permessage-deflate")
    print(f"{'path':<10}{'event p50':>11}{'p95':>9}{'p99':>9}{'max':>9}{'first p50':>12}{'first max':>11}  (ms)")
    for name, (lat, first) in results.items():
        print(f"{name:<10}{statistics.median(lat):>11.2f}{pct(lat, .95):>9.2f}{pct(lat, .99):>9.2f}{max(lat):>9.2f}"
              f"{statistics.median(first):>12.2f}{max(first):>11.2f}")
    print(f"aigw recorded {recorded} completed websocket interception(s) for {turns} turns")
    return 0 if recorded == turns else 1


if __name__ == "__main__":
    sys.exit(main())
