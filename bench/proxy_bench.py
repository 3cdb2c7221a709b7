"""Proxy benchmark: direct vs bare mitmproxy vs aigw-proxy, side by side, in one run.

    .venv/bin/python bench/proxy_bench.py            # full run (~3 minutes on 2 cores); also `make bench`
    .venv/bin/python bench/proxy_bench.py --quick    # smoke run (small counts, ~20 s)
    .venv/bin/python bench/proxy_bench.py --py-spy /tmp/prof   # + py-spy profiles of aigw and mitm-min per
                                                                #   throughput rep (see bench/pyspy_summary.py)
    .venv/bin/python bench/proxy_bench.py --perf /tmp/perf         # + Linux perf: every proxy's native CPU by
                                                                #   component (interpreter, GC, TLS, kernel, ...)
    .venv/bin/python bench/proxy_bench.py --only stream,newconn     # some cases only (tput latency sse stream
                                                                    #   fleet newconn memory)
    .venv/bin/python bench/proxy_bench.py --baseline /tmp/base      # + "aigw-base": that checkout's aigw-proxy,
                                                                    #   side by side in the cost cases: before/after
    .venv/bin/python bench/proxy_bench.py --optimize aigw,aigw-base # those proxies under python -O, as deployed
                                                                    #   (deploy/); `--optimize all`: every proxy

Everything stays on 127.0.0.1. A throwaway CA signs a certificate for api.anthropic.com; a raw-asyncio HTTPS
stand-in (in this process) answers `POST /v1/messages` with a small Anthropic message (JSON) or an SSE stream
(fast: all events at once; paced: N events M ms apart, asked for with an X-Bench-Pace header). Four paths:
  direct    client -> stand-in (TLS, SNI api.anthropic.com)
  mitmdump  client -> CONNECT api.anthropic.com:443 -> `mitmdump -q` (default addons) + a 6-line addon that
            redirects the CONNECT target to the stand-in (in `http_connect`) and streams responses, as aigw does;
            upstream verified with ssl_verify_upstream_trusted_ca. The goal baseline ("bare mitmproxy").
  mitm-min  the same addon on mitmproxy embedded exactly like aigw_proxy/proxy/daemon.py (same options, the
            daemon's `mitmproxy_builtins()`): aigw minus its own addons and recording, to show what aigw costs.
  aigw      client -> CONNECT (Proxy-Authorization: Basic bench:<token>) -> `python -m aigw_proxy run`
            (anthropic upstream = the stand-in, upstream_ca_file = the throwaway CA) recording into SQLite.
Cost cases (bench/proxy/phases.py): a streamed call of 200 events far below saturation (CPU per call and per
event); an agent fleet of 100 and 200 concurrent connections streaming 200-event calls 20 ms apart (TTFB, gaps
against the cadence, CPU per call and event); new connections one after another (CPU per connection, latency
p50/p95), also through "aigw-rsa", aigw with an RSA-2048 CA imported, to show what the CA key type costs.

The load generator is a raw-asyncio HTTP/1.1 client in a separate process (this script with --worker), driven
over a pipe, so the proxies' CPU is what limits throughput. Proxy CPU per request comes from /proc (all threads
and the event-loop thread alone). After each aigw run the benchmark waits for the recorder queue to drain, so
"relayed AND recorded" and aigw's CPU include the recording work.

Exit status: 0 after printing the report (timings are reported, not asserted); 1 if something broke (a proxy
did not start, a request failed, or the database does not hold exactly one completed interception, token usage
and prompt per call, or the recorder dropped anything).

This file is the entry point; the benchmark lives in bench/proxy/: workload.py (the request and the answers),
standin.py (the upstream), loadgen.py (the --worker process), orchestrator.py (processes and phases), report.py,
measure.py (/proc, git, the database), mitm_min.py; the redirect addon is bench/addons/redirect.py.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `bench`, `tests` import as packages

from bench import perf_summary
from bench.proxy.loadgen import worker_main
from bench.proxy.orchestrator import PHASES, QUICK, Bench, BenchError, Profile
from bench.proxy.report import report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run with small counts")
    ap.add_argument("--reps", type=int, help="throughput repetitions per case (default 3)")
    ap.add_argument("--requests", type=int, help="timed requests per throughput rep (default 2000)")
    ap.add_argument("--mem-calls", type=int, help="streamed calls in the memory series (default 10000)")
    ap.add_argument("--no-mem-baseline", action="store_true", help="skip the mitm-min memory series")
    ap.add_argument("--py-spy", metavar="DIR", type=Path,
                    help="profile aigw and mitm-min with py-spy (raw collapsed stacks) during the throughput runs")
    ap.add_argument("--perf", metavar="DIR", type=Path,
                    help="record every proxy's native CPU with Linux perf during the measured runs and print it by "
                         "component (interpreter, garbage collector, TLS, kernel, ...; see bench/perf_summary.py)")
    ap.add_argument("--perf-rate", type=int, default=999, help="perf samples per second (default 999)")
    ap.add_argument("--only", metavar="CASES", help=f"comma-separated cases to run (of {','.join(PHASES)})")
    ap.add_argument("--baseline", metavar="DIR", type=Path,
                    help="also run DIR's aigw-proxy as aigw-base in the cost cases (with DIR/.venv if there is one, "
                         "else this interpreter on DIR's tree; e.g. a `git worktree add --detach DIR main`)")
    ap.add_argument("--fleet-sizes", metavar="N,N", help="fleet case: concurrent connections (default 100,200)")
    ap.add_argument("--fleet-gap-ms", type=int, help="fleet case: upstream cadence in ms (default 20)")
    ap.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--stream-calls", type=int, help="stream case: calls per connection and rep (default 6)")
    ap.add_argument("--newconn-n", type=int, help="newconn case: new connections per rep (default 100)")
    ap.add_argument("--optimize", metavar="NAMES",
                    help="run these targets' Python with PYTHONOPTIMIZE=1 (-O), as the deploy kit runs aigw-proxy: "
                         "e.g. aigw,aigw-base (or all: every proxy, mitmdump and mitm-min too)")
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
    if args.stream_calls:
        prof.stream_calls = args.stream_calls
    if args.fleet_sizes:
        prof.fleet_sizes = tuple(int(x) for x in args.fleet_sizes.split(","))
    if args.newconn_n:
        prof.newconn_n = args.newconn_n
    if args.fleet_gap_ms:
        prof.fleet_gap_ms = args.fleet_gap_ms
    tmp = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    bench = Bench(prof, tmp)
    if args.only:
        chosen = tuple(x.strip() for x in args.only.split(",") if x.strip())
        unknown = set(chosen) - set(PHASES)
        if unknown:
            ap.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
        bench.phases = tuple(x for x in PHASES if x in chosen)
    if args.baseline:
        if not (args.baseline / "aigw_proxy" / "__main__.py").exists():
            ap.error(f"--baseline {args.baseline}: not an aigw-proxy checkout")
        bench.baseline = args.baseline.resolve()
    if args.optimize:
        names = {x.strip() for x in args.optimize.split(",") if x.strip()}
        every = {"mitmdump", "mitm-min", "aigw", "aigw-rsa", "aigw-base", "aigw-w1", f"aigw-w{prof.workers_n}"}
        bench.optimize = every if "all" in names else names
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        bench.pyspy_dir = args.py_spy.resolve()
        bench.pyspy_rate = args.py_spy_rate
    if args.perf:
        problem = perf_summary.perf_problem(args.perf)
        if problem:
            ap.error(f"--perf: {problem}")
        bench.perf_dir = args.perf.resolve()
        bench.perf_rate = args.perf_rate
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
