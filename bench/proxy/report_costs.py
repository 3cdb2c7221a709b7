"""The report of the cost cases (bench/proxy/phases.py): streamed-call cost, agent fleet, new connections.
Figures are medians over reps with their range [min-max]. The goals' ratios are paired: each case runs its
targets interleaved, rep after rep, so a ratio taken within one rep sees the same machine load on both sides;
the goal reads the median of those per-rep ratios, shown with their range (a range that straddles the goal says
the run could not tell the two apart)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.proxy.measure import pct

if TYPE_CHECKING:
    from bench.proxy.orchestrator import Bench

Goal = tuple[str, float | str, float | str, bool, bool | None]


def spread(values: list[float], fmt: str = ".1f") -> str:
    """median [min-max]"""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def _median(reps: list[dict], f: Callable[[dict], float]) -> float:
    return statistics.median(f(x) for x in reps)


def paired(ours: list[float], theirs: list[float]) -> list[float]:
    """`ours / theirs` rep by rep (the same rep of each target ran interleaved, under the same load)."""
    return [a / b for a, b in zip(ours, theirs, strict=True) if b > 0]


def ratio_figure(ratios: list[float], fmt: str = ".2f") -> str:
    """"median [min-max]x" of the per-rep ratios."""
    return f"{spread(ratios, fmt)}x" if ratios else "-"


def ratio_goal(ratios: list[float], limit: float, fmt: str = ".2f") -> tuple[str, bool]:
    """The goal's figure (`ratio_figure`) and whether the median of the per-rep ratios is within `limit`."""
    return ratio_figure(ratios, fmt), bool(ratios) and statistics.median(ratios) <= limit


def report_costs(b: Bench, goals: list[Goal]) -> None:
    if b.res.stream:
        _stream(b, goals)
    if b.res.fleet:
        _fleet(b)
    if b.res.newconn:
        _newconn(b, goals)
    if b.res.workers:
        _workers(b, goals)


def _stream(b: Bench, goals: list[Goal]) -> None:
    p, res, short = b.p, b.res.stream, b.res.stream_short
    n = p.stream_conns * p.stream_calls
    how = ("in lock-step (each sent once the client has the one before: one TLS record and chunk per event, "
           "however busy the machine)" if p.stream_lockstep else f"{p.stream_gap_ms} ms apart")
    extra = p.stream_events - p.stream_events_short
    print(f"\nStreamed call cost: calls of {p.stream_events} and of {p.stream_events_short} SSE events {how}, {n} "
          f"calls each on {p.stream_conns} connections per rep, {p.reps} rep(s); proxy CPU, median [min-max]")
    has_base = "aigw-base" in res
    print(f"  {'':10}{f'ms/{p.stream_events}-ev call':>22}{'loop ms':>8}{f'ms/{p.stream_events_short}-ev call':>20}"
          f"{'us/extra event':>22}{'call ms':>8}{'vs mitmdump':>13}" + (f"{'vs aigw-base':>14}" if has_base else ""))

    def per_call(reps: list[dict], key: str = "cpu_s") -> list[float]:
        return [1000 * x[key] / max(1, x["ok"]) for x in reps]

    def per_event(name: str) -> list[float]:  # us per extra event, rep by rep
        return [1000 * (lg - sh) / extra for lg, sh in zip(per_call(res[name]), per_call(short[name]), strict=True)]

    med = {name: statistics.median(per_call(res[name])) for name in res}
    ev = {name: statistics.median(per_event(name)) for name in res}
    for name in res:
        fixed = statistics.median(per_call(short[name])) - p.stream_events_short * ev[name] / 1000
        print(f"  {name:10}{spread(per_call(res[name])):>22}{statistics.median(per_call(res[name], 'main_cpu_s')):8.1f}"
              f"{spread(per_call(short[name])):>20}{spread(per_event(name), '.0f'):>22}{fixed:8.1f}"
              f"{med[name] / med['mitmdump']:13.2f}" + (f"{med[name] / med['aigw-base']:14.2f}" if has_base else ""))
    print(f"  (us/extra event: the {extra} more events' CPU divided by {extra}; call ms: the rest, what a call costs "
          f"besides its events: request, hooks, recording)")
    call, call_met = ratio_goal(paired(per_call(res["aigw"]), per_call(res["mitmdump"])), 1.0)
    call_min = ratio_figure(paired(per_call(res["aigw"]), per_call(res["mitm-min"])))
    goals.append((f"CPU per {p.stream_events}-event streamed call <= bare mitmproxy's", call, call_min, call_met,
                  None))
    event, event_met = ratio_goal(paired(per_event("aigw"), per_event("mitmdump")), 1.0)
    event_min = ratio_figure(paired(per_event("aigw"), per_event("mitm-min")))
    goals.append(("CPU per extra relayed SSE event <= bare mitmproxy's", event, event_min, event_met, None))


def _fleet(b: Bench) -> None:
    p = b.p
    call_s = p.fleet_events * p.fleet_gap_ms / 1000
    print(f"\nAgent fleet: each connection makes {p.fleet_calls} streamed call(s) of {p.fleet_events} events "
          f"{p.fleet_gap_ms} ms apart (upstream cadence), first calls spread over {call_s:.1f}s; {p.fleet_reps} rep(s)")
    print(f"  {'':16}{'TTFB p50':>10}{'TTFB p99':>10}{'gap p50':>9}{'gap p99':>9}{'gap max':>9}{'CPU ms/call':>20}"
          f"{'us/event':>10}{'proxy %core':>12}{'harness':>9}{'events/s':>10}{'offered':>9}")
    for size, by_target in b.res.fleet.items():
        for name, reps in by_target.items():
            def m(f: Callable[[dict], float], reps: list[dict] = reps) -> float:
                return _median(reps, f)

            cpu = [1000 * x["cpu_s"] / max(1, x["ok"]) for x in reps]
            has_cpu = any(x["cpu_s"] for x in reps)
            print(f"  {f'{size} {name}':16}{1000 * m(lambda x: x['ttfb']['50']):10.1f}"
                  f"{1000 * m(lambda x: x['ttfb']['99']):10.1f}{1000 * m(lambda x: x['gaps']['50']):9.1f}"
                  f"{1000 * m(lambda x: x['gaps']['99']):9.1f}{1000 * m(lambda x: x['gaps']['max']):9.0f}"
                  + (f"{spread(cpu):>20}{1000 * statistics.median(cpu) / p.fleet_events:10.0f}"
                     f"{100 * m(lambda x: x['cpu_s'] / x['elapsed']):11.0f}%"
                     if has_cpu else f"{'-':>20}{'-':>10}{'-':>12}")
                  + f"{100 * m(lambda x: x['harness_cpu_s'] / x['elapsed']):8.0f}%"
                  f"{m(lambda x: x['events'] / x['elapsed']):10.0f}{size * 1000 / p.fleet_gap_ms:9.0f}")
    print("  (ms; gap = time between consecutive events of one call at the client; harness = stand-in + load "
          "generator CPU, % of a core: when the proxy and the harness together reach ~200%, the 2 cores are the limit;"
          "\n   offered = events/s the upstream sends while all connections stream; events/s = relayed, over the whole "
          "run including the ramp; a saturated proxy reads several events at once, so its CPU per event drops)")


def _newconn(b: Bench, goals: list[Goal]) -> None:
    p, res = b.p, b.res.newconn
    print(f"\nNew connection: TCP connect + CONNECT + TLS to the proxy + the proxy's TLS to the upstream + one "
          f"non-streamed call + close, {p.newconn_n} one after another per rep, {p.reps} rep(s)")
    print(f"  {'':10}{'CPU ms/conn':>22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p95/p50':>9}"
          f"{'handshake p50':>15}{'p95 per rep':>20}")
    cpu_reps: dict[str, list[float]] = {}
    tails: dict[str, tuple[float, float]] = {}
    for name, reps in res.items():
        total = [v for x in reps for v in x["total"]]
        hs = [v for x in reps for v in x["handshake"]]
        cpu = [1000 * x["cpu_s"] / max(1, x["ok"]) for x in reps] if any(x["cpu_s"] for x in reps) else []
        if cpu:
            cpu_reps[name] = cpu
        p50, p95 = pct(total, 50), pct(total, 95)
        tails[name] = (p50, p95)
        per_rep = "/".join(f"{1000 * pct(x['total'], 95):.1f}" for x in reps)
        print(f"  {name:10}{spread(cpu, '.2f') if cpu else '-':>22}{1000 * p50:9.1f}{1000 * p95:9.1f}"
              f"{1000 * pct(total, 99):9.1f}{1000 * max(total, default=0):9.1f}{p95 / p50:9.1f}"
              f"{1000 * pct(hs, 50):15.1f}{per_rep:>20}")
    cpu_med = {name: statistics.median(cpu) for name, cpu in cpu_reps.items()}
    if "aigw" in cpu_med and "mitmdump" in cpu_med:
        print(f"  aigw CPU per new connection: {cpu_med['aigw'] / cpu_med['mitmdump']:.2f}x mitmdump's"
              + (f", {cpu_med['aigw'] / cpu_med['aigw-rsa']:.2f}x aigw with an RSA-2048 CA"
                 if "aigw-rsa" in cpu_med else "")
              + (f", {cpu_med['aigw'] / cpu_med['aigw-base']:.2f}x aigw-base's" if "aigw-base" in cpu_med else ""))
    if "aigw" in tails:
        p50, p95 = tails["aigw"]
        goals.append(("new connection p95 within 2x its p50 (aigw)", f"{p95 / p50:.1f}x", "", p95 <= 2 * p50, None))
    ref = "aigw-base" if "aigw-base" in cpu_med else "aigw-rsa"
    if "aigw" in cpu_reps and ref in cpu_reps:
        figure, met = ratio_goal(paired(cpu_reps["aigw"], cpu_reps[ref]), 0.5)
        goals.append((f"CPU per new connection <= 0.5x {ref}'s", figure, "", met, None))


def _workers(b: Bench, goals: list[Goal]) -> None:
    p, res = b.p, b.res.workers
    one, many = "aigw-w1", f"aigw-w{p.workers_n}"
    print(f"\nWorker processes: --workers 1 vs --workers {p.workers_n}, {p.conns} keep-alive connections, "
          f"{p.tput_n} non-streamed calls per rep, {p.reps} rep(s), recorder drained; median [min-max]")
    print("  (the load generator, the stand-in and the proxies share this machine's cores: how far throughput scales "
          "depends on the cores left free, and the figures are noisy on a shared machine)")
    print(f"  {'':10}{'calls/s relayed+recorded':>28}{'calls per CPU-second':>26}{'CPU-s per rep':>18}")
    for name in (one, many):
        reps = res.get(name, [])
        print(f"  {name:10}{spread([x['srps'] for x in reps], '.0f'):>28}"
              f"{spread([x['per_cpu_s'] for x in reps], '.0f'):>26}"
              f"{spread([x['tree_cpu_s'] for x in reps], '.2f'):>18}")
    if res.get(one) and res.get(many):
        eff = _median(res[many], lambda x: x["per_cpu_s"]) / _median(res[one], lambda x: x["per_cpu_s"])
        tput = _median(res[many], lambda x: x["srps"]) / _median(res[one], lambda x: x["srps"])
        print(f"  {many} / {one}: calls per CPU-second {eff:.2f} x, throughput {tput:.2f} x")
        goals.append((f"calls per CPU-second, {p.workers_n} workers >= 0.85 x one", f"{eff:.2f}", "", eff >= 0.85,
                      None))
