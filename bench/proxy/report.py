"""The report: the figures of one run side by side (direct, mitmdump, mitm-min, aigw), the goals met or missed,
and the record check (exactly one completed interception, token usage and prompt per call)."""

from __future__ import annotations

import os
import statistics
import subprocess

from aigw_proxy.aio import EventLoopError, loop_factory, loop_name
from bench import perf_summary
from bench.proxy.measure import git_state, pct
from bench.proxy.orchestrator import Bench
from bench.proxy.report_costs import report_costs
from bench.proxy.workload import FAST_SSE_EVENTS


def ms(x: float) -> str:
    return f"{1000 * x:.2f}"


def event_loop_here() -> str:
    """The event loop aigw-proxy and mitm-min run on in this benchmark (they take AIGW_EVENT_LOOP from it)."""
    try:
        loop = loop_factory(os.environ.get("AIGW_EVENT_LOOP", "auto").lower())()
    except EventLoopError as exc:
        return str(exc)
    try:
        return loop_name(loop)
    finally:
        loop.close()


def report_perf(b: Bench) -> None:
    """--perf: each proxy's CPU by native component per case, the median share over its reps."""
    print(f"\nNative CPU profile (perf, self time, {b.perf_rate} Hz; median share over reps; files in {b.perf_dir})")
    for case, by_proxy in b.perf_files.items():
        merged: dict[str, perf_summary.Shares] = {}
        try:
            for name, files in by_proxy.items():
                shares = [perf_summary.summarise(f) for f in files if f.exists()]
                merged[name] = {c: statistics.median(s.get(c, 0.0) for s in shares)
                                for c in perf_summary.COMPONENTS} if shares else {}
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"  {case}: could not read the profiles: {exc}")
            continue
        print(f"  case {case}")
        print("\n".join(perf_summary.table(merged)))


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
    print("  mitmdump = `mitmdump -q` (all default addons, Python's asyncio loop) + redirect/stream addon: the goal "
          "baseline;")
    print("  mitm-min = mitmproxy embedded like aigw_proxy/proxy/daemon.py (its mitmproxy_builtins(), its event loop) "
          "+ the same addon, i.e. aigw minus its own addons")
    print(f"  event loop of aigw and mitm-min: {event_loop_here()} (--event-loop auto; AIGW_EVENT_LOOP=asyncio for "
          "Python's)")
    if b.optimize:
        running = sorted(n for n in b.optimize if n in b.targets)
        print(f"  under python -O (PYTHONOPTIMIZE=1, --optimize): {', '.join(running) or 'none'}; the rest without")
    print("=" * 112)

    def hdr(title: str, extra: str) -> None:
        print(f"\n{title:32}" + "".join(f"{n:>{w}}" for n in names) + extra)

    def med(kind: str, name: str, key: str) -> float:
        return statistics.median(x[key] for x in r.tput[kind][name])

    def cpu_ms(kind: str, name: str, key: str = "cpu_s") -> float:
        return 1000 * statistics.median(x[key] / max(1, x["ok"]) for x in r.tput[kind][name])

    goals: list[tuple[str, float | str, float | str, bool, bool | None]] = []  # label, vs mitmdump, vs min
    if r.tput:
        hdr("Throughput (req/s, median)", f"{'aigw/mdump':>12}{'aigw/min':>10}{'aigw/dir':>10}")
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

    if r.lat:
        lat = r.lat
        hdr("Latency, concurrency 1 (ms)", f"{'aigw-mdump':>12}{'aigw-min':>10}")
        for q in ("p50", "p99"):
            print(f"{'  ' + q:32}" + "".join(f"{ms(lat[n][q]):>{w}}" for n in names)
                  + f"{ms(lat['aigw'][q] - lat['mitmdump'][q]):>12}{ms(lat['aigw'][q] - lat['mitm-min'][q]):>10}")
        dd, dm = (lat["aigw"]["p50"] - lat[n]["p50"] for n in ("mitmdump", "mitm-min"))
        goals.append(("p50 at c=1 within +1 ms of bare mitmproxy", f"{ms(dd)} ms", f"{ms(dm)} ms",
                      dd <= 0.001, dm <= 0.001))

    if r.sse:
        s = r.sse
        nc = p.sse_conns * p.sse_calls
        hdr(f"SSE {p.sse_events}x{p.sse_gap_ms} ms, {nc} calls (ms)", f"{'aigw-dir':>12}")
        t50 = {n: pct(s[n]["ttfb"], 50) for n in names}
        print(f"{'  first byte p50':32}" + "".join(f"{ms(t50[n]):>{w}}" for n in names)
              + f"{ms(t50['aigw'] - t50['direct']):>12}")
        print(f"{'  first byte max':32}" + "".join(f"{ms(max(s[n]['ttfb'])):>{w}}" for n in names)
              + f"{ms(max(s['aigw']['ttfb']) - max(s['direct']['ttfb'])):>12}")
        for pq in (50, 99):
            print(f"{f'  inter-event gap p{pq}':32}" + "".join(f"{ms(pct(s[n]['gaps'], pq)):>{w}}" for n in names)
                  + f"{ms(pct(s['aigw']['gaps'], pq) - pct(s['direct']['gaps'], pq)):>12}"
                  + (f"   (stand-in sends every {p.sse_gap_ms} ms)" if pq == 99 else ""))
        dt = t50["aigw"] - t50["direct"]
        goals.append(("SSE first byte within +5 ms of direct", f"{ms(dt)} ms", "", dt <= 0.005, None))

    if r.mem:
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
        am = r.mem["aigw"]
        half = am[len(am) // 2]
        second = am[-1][1] - half[1]
        flat = second <= 1024
        print(f"  aigw growth over the second half of the series ({am[-1][0] - half[0]} calls): "
              f"{second / 1024:+.1f} MiB")
        goals.append(("aigw memory flat after warm-up (2nd half <= +1 MiB)", f"{second / 1024:+.1f} MiB", "", flat,
                      None))

    report_costs(b, goals)
    if b.perf_files:
        report_perf(b)

    print("\nGoals" + " " * 52 + f"{'vs mitmdump':>28}{'vs mitm-min':>28}")
    print("  (bare mitmproxy = the goal baseline, mitmdump; mitm-min shows aigw's own cost; a cost ratio is the median")
    print("  [min-max] of the per-rep ratios, the targets of a rep having run interleaved under the same load)")
    for label, v1, v2, g1, g2 in goals:
        f1 = f"{v1:.2f}" if isinstance(v1, float) else v1
        f2 = f"{v2:.2f}" if isinstance(v2, float) else v2
        m1 = f"{f1} {'MET' if g1 else 'MISSED'}"
        m2 = f"{f2} {'MET' if g2 else 'MISSED'}" if g2 is not None else f2  # no goal of its own: the figure
        print(f"  {label:55}{m1:>28}{m2:>28}")

    rec = r.healthz.get("recorder", {})
    print(f"\nRecords: {b.calls} model calls made through aigw-proxy")
    print(f"  /healthz: recorder queue_depth {rec.get('queue_depth')}, written {rec.get('written')}, "
          f"dropped {rec.get('dropped')}; inflight_requests {r.healthz.get('inflight_requests')}")
    print(f"  database while running:  {r.db}")
    print(f"  database after SIGTERM: {r.db_after_stop or 'n/a'}")
    for name, (calls, counts) in r.extra_db.items():
        print(f"  {name} database: {counts} for {calls} calls")
        if any(counts.get(k) != calls for k in ("interceptions", "completed", "token_usages", "user_prompts")):
            ok = False
            print(f"  RECORDS MISSING ({name})")
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
