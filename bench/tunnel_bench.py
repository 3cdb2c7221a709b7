"""New tunnel + call latency through the daemon, idle and during heavy API load, repeated on fresh daemons.

    .venv/bin/python bench/tunnel_bench.py [--repeat N] [--seconds S] [--interceptions N]
    .venv/bin/python bench/tunnel_bench.py --data-dir DIR      # a database (and tokens.json) made by gen_api_db.py
    .venv/bin/python bench/tunnel_bench.py --baseline /tmp/base  # + that checkout's daemon, in turns: before/after
    .venv/bin/python bench/tunnel_bench.py --samples FILE      # + every new tunnel's timings, one JSON line each

The "proxied requests through a tunnel" part of bench/api_bench.py on its own (its Origin, tunnel(), round_trip()
and --hammer load, the same cadence: a new tunnel + one request after every 10 requests over an open tunnel, 10 ms
apart), without the API and console timings before it, so that p95/p50 can be compared over several daemons in
a few minutes. Each repeat starts `aigw-proxy run` on the database, measures idle for --seconds, then again while
another process hammers the heaviest API queries, and stops the daemon. A new tunnel's time is split into its
CONNECT (until the 200) and the request after it. Everything stays on 127.0.0.1; figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_bench import Origin, proxied_latency, start_daemon
from bench.gen_api_db import default_dir, ensure_db
from bench.proxy.orchestrator import aigw_command

API_BENCH = Path(__file__).resolve().parent / "api_bench.py"


def one_run(data_dir: Path, origin_port: int, token: str, seconds: float, samples: TextIO | None,
            command: list[str] | None = None, api_elsewhere: bool = False,
            api_nice: int = 0, run_args: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    proc, url, proxy = start_daemon(data_dir, origin_port, command=command, run_args=run_args)
    other = start_daemon(data_dir, origin_port, name="api-daemon", nice=api_nice) if api_elsewhere else None
    if other is not None:
        url = other[1]
    try:
        time.sleep(1)
        idle = proxied_latency(proxy, origin_port, token, seconds, "idle", samples)
        hammer = subprocess.Popen([sys.executable, str(API_BENCH), "--hammer", url, token, str(seconds + 2)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        loaded = proxied_latency(proxy, origin_port, token, seconds, "load", samples)
        api_requests = int(hammer.communicate(timeout=120)[0].strip() or 0)
        loaded["API requests"] = api_requests
    finally:
        for p in (proc, other[0] if other is not None else None):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    return {"idle": idle, "under API load": loaded}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="the database's directory (default: gen_api_db.py's for --interceptions, made if missing)")
    ap.add_argument("--interceptions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="per phase (idle, under load)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (e.g. main's): its daemon runs beside ours in every repeat, in turns, "
                         "for a before/after in one run")
    ap.add_argument("--entry", type=Path, default=None,
                    help="run the daemon as `python ENTRY run ...` instead of `python -m aigw_proxy run ...` (an "
                         "instrumented entry point, for experiments)")
    ap.add_argument("--api-elsewhere", action="store_true",
                    help="the API load goes to a second daemon on the same database (the API in another process)")
    ap.add_argument("--api-nice", type=int, default=0, help="with --api-elsewhere: that daemon's niceness")
    ap.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                    help="one more `aigw-proxy run` argument (repeatable), e.g. --run-arg=--workers --run-arg=2")
    ap.add_argument("--samples", type=Path, default=None, help="write every new tunnel's timings here (JSON lines)")
    args = ap.parse_args()
    if args.data_dir is not None:
        data_dir = args.data_dir
        info: dict[str, Any] = json.loads((data_dir / "tokens.json").read_text())
    else:
        data_dir = default_dir(args.interceptions)
        info = ensure_db(data_dir, interceptions=args.interceptions, n_users=args.users)
    token = info["tokens"]["admin"]
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    samples = args.samples.open("w") if args.samples else None
    builds: dict[str, list[str] | None] = {"aigw": [sys.executable, str(args.entry)] if args.entry else None}
    if args.baseline is not None:
        builds["aigw-base"] = aigw_command(args.baseline)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in builds}
    try:
        for n in range(args.repeat):
            order = list(builds) if n % 2 == 0 else list(reversed(builds))  # in turns: drift hits both alike
            for name in order:
                r = one_run(data_dir, origin.server_address[1], token, args.seconds, samples, builds[name],
                            args.api_elsewhere, args.api_nice, tuple(args.run_arg))
                runs[name].append(r)
                for phase, f in r.items():
                    print(f"{name:9s} run {n + 1} {phase:15s} new tunnel p50 {f['new p50']:5.1f} p95 "
                          f"{f['new p95']:5.1f} (x{f['p95/p50']:.2f}) max {f['new max']:5.1f} | CONNECT p50 "
                          f"{f['CONNECT p50']:5.1f} p95 {f['CONNECT p95']:5.1f} | open tunnel p50 {f['open p50']:.2f} "
                          f"p95 {f['open p95']:.2f} | {f['n new']:.0f} new"
                          + (f", {f['API requests']:.0f} API requests" if "API requests" in f else ""), flush=True)
    finally:
        origin.shutdown()
        if samples is not None:
            samples.close()
    print(f"\nnew tunnel + call over {args.repeat} daemons each, {args.seconds:.0f}s per phase ({os.cpu_count()} "
          "CPUs; median [min-max], ms):")
    for name, done in runs.items():
        for phase in done[0]:
            cells = []
            for key in ("new p50", "new p95", "p95/p50", "CONNECT p50", "CONNECT p95", "open p50", "open p95"):
                v = [r[phase][key] for r in done]
                cells.append(f"{key} {statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]")
            print(f"  {name:9s} {phase:15s} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
