"""SQLite contention between worker processes: the same burst through `--workers 1` and `--workers 2`.

    .venv/bin/python bench/workers_sqlite_bench.py [--calls 400] [--clients 16] [--repeats 3] [--workers 1,2]

Every worker has its own record writer on the one SQLite database (WAL): one writer at a time across processes, a
second waits for the write lock (busy_timeout). Per repeat and worker count, a fresh `aigw-proxy run` in front of
a stand-in Anthropic upstream (loopback only) takes `--calls` streamed calls from `--clients` SDK threads, each
with a unique prompt; a poller process reads the database every 2 ms (as bench/durability_bench.py does) and notes
when each call's completed record is first visible. Reported, never asserted, median [min-max] over repeats:
* calls/s: calls over the burst's wall time (at the client);
* commit latency: from the proxy's end of the call (its `ended_at`) to the record committed, p50 and p95 per
  repeat: the writer's flush interval, plus waiting for the write lock, plus the transaction itself.
The machine's cores are shared with the load and the stand-in (and on the 2-core VM with other work): noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.durability_bench import ended_at, pct, wait_until_seen, watching_commits  # noqa: E402
from tests.support.bursts import burst, default_reply, stream_reply  # noqa: E402
from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem  # noqa: E402
from tests.support.daemon import PROVIDER_HOSTS, provider_config, start_daemon, stop_daemon  # noqa: E402
from tests.support.standin import StandIn  # noqa: E402


def run_once(upstream: StandIn, ca_file: Path, workers: int, calls: int, clients: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="aigw-wsqlite-") as tmp_s:
        tmp = Path(tmp_s)
        daemon = start_daemon(tmp, provider_config(upstream, ca_file), extra_args=("--workers", str(workers)))
        db = daemon.data_dir / "aigw-proxy.db"
        try:
            daemon.token("alice")
            with watching_commits(db, tmp / "seen.tsv"), default_reply(upstream, stream_reply()):
                burst(daemon, [f"warm {n}" for n in range(4 * clients)], workers=clients)
                began = time.monotonic()
                done = burst(daemon, [f"contention {n}" for n in range(calls)], workers=clients)
                elapsed = time.monotonic() - began
                seen = wait_until_seen(tmp / "seen.tsv", [c.prompt for c in done], timeout=20)
            ended = ended_at(db)
        finally:
            code = stop_daemon(daemon)
    failed = sum(c.done is None for c in done)
    commit = [(seen[c.prompt] - ended[c.prompt]) * 1000 for c in done if c.prompt in seen and c.prompt in ended]
    missing = sum(c.done is not None and c.prompt not in seen for c in done)
    if failed or missing or code:
        print(f"    PROBLEM: {failed} failed at the client, {missing} completed but not recorded, exit status {code}")
    return {"rate": calls / elapsed, "p50": statistics.median(commit), "p95": pct(commit, 0.95),
            "max": max(commit), "problems": failed + missing + (code != 0)}


def spread(xs: list[float], fmt: str = ".0f") -> str:
    if len(xs) == 1:
        return f"{xs[0]:{fmt}}"
    return f"{statistics.median(xs):{fmt}} [{min(xs):{fmt}}-{max(xs):{fmt}}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="aigw-wsqlite-ca-") as tmp_s:
        tmp = Path(tmp_s)
        ca_cert, ca_key = make_ca("Bench Upstream CA")
        cert, key = make_server_cert(ca_cert, ca_key, PROVIDER_HOSTS)
        ca_file = write_pem(tmp / "upstream-ca.pem", ca_cert)
        upstream = StandIn(server_ssl_context(cert, key)).start()
        results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
        try:
            for rep in range(args.repeats):
                for n in counts:  # interleaved: drift hits every count alike
                    r = run_once(upstream, ca_file, n, args.calls, args.clients)
                    results[n].append(r)
                    print(f"  rep {rep + 1}/{args.repeats} --workers {n}: {r['rate']:.0f} calls/s, commit latency "
                          f"p50 {r['p50']:.0f} ms p95 {r['p95']:.0f} ms max {r['max']:.0f} ms", flush=True)
        finally:
            upstream.stop()
    print(f"\nSQLite, {args.calls} streamed calls from {args.clients} SDK threads, {args.repeats} repeat(s); "
          "median [min-max] over repeats")
    print(f"  {'':12}{'calls/s':>18}{'commit p50 ms':>20}{'commit p95 ms':>20}")
    for n in counts:
        rs = results[n]
        print(f"  --workers {n:<2}{spread([r['rate'] for r in rs]):>18}{spread([r['p50'] for r in rs]):>20}"
              f"{spread([r['p95'] for r in rs]):>20}")
    return 1 if any(r["problems"] for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
