"""The cost cases: what one streamed call, a fleet of agents and one new connection cost each proxy.

* stream  calls of `stream_events` SSE events on a few connections, in lock-step (the stand-in sends each event
          once the client has the one before), so every event crosses the proxy as its own TLS record and chunk
          whatever the machine's load: proxy CPU per call and per event.
* fleet   `fleet_sizes` concurrent keep-alive connections (e.g. 100 and 200 agents), each making streamed calls
          of `fleet_events` events `fleet_gap_ms` apart, first calls spread over one call's duration: TTFB
          p50/p99, inter-event gap p99 against the upstream's cadence, proxy CPU per call and per event.
* newconn one agent opening connection after connection: TCP connect, CONNECT, TLS with the proxy, the proxy's
          TLS with the upstream, one non-streamed call, close. CPU per new connection and latency p50/p95.

Each case runs its targets interleaved, rep after rep, so drift and other load hit every target alike; the
report shows medians and ranges.

* workers aigw with `--workers 1` and with `--workers N` (`Profile.workers_n`), each with a database of its own,
          the throughput case's load (`conns` keep-alive connections, `tput_n` non-streamed calls per rep, the
          recorder drained before the rep ends): calls per second relayed and recorded, and calls per CPU-second
          of the supervisor and all its workers (goal: N workers >= 0.85 x one worker's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.proxy.measure import tree_cpu_s

if TYPE_CHECKING:
    from bench.proxy.orchestrator import Bench, Target


async def phase_stream(b: Bench, targets: list[Target]) -> None:
    """Long calls (`stream_events`) and short ones (`stream_events_short`) on the same connections: the difference
    is the cost of the extra events alone, the rest the cost of a call."""
    p = b.p
    n = p.stream_conns * p.stream_calls
    lockstep = b.lockstep_port if p.stream_lockstep else 0
    for t in targets:
        b.res.stream[t.name] = []
        b.res.stream_short[t.name] = []
    for rep in range(p.reps):
        for t in targets:
            sid = f"stream-{rep}-{t.name}"
            await b.session(t, sid, p.stream_conns)
            for events, out in ((p.stream_events, b.res.stream), (p.stream_events_short, b.res.stream_short)):
                pace = [events, p.stream_gap_ms]
                await b.run(t, sid, p.stream_conns, True, pace)  # warm-up: one call per connection
                profilers = await b.start_profiling(t, f"{t.name}-stream{events}-rep{rep + 1}")
                r = await b.measured(t, 300, op="run", sid=sid, n=n, stream=True, pace=pace, limit_s=240,
                                     lockstep=lockstep)
                await b.stop_profiling(profilers)
                r.pop("gaps", None)
                r.pop("ttfb", None)
                out[t.name].append(r)
            await b.cmd(op="close", sid=sid)
            if t.pid:
                long, short = (1000 * x[t.name][-1]["cpu_s"] / max(1, x[t.name][-1]["ok"])
                               for x in (b.res.stream, b.res.stream_short))
                per_event = (long - short) / (p.stream_events - p.stream_events_short)
                print(f"  stream rep {rep + 1}/{p.reps} {t.name:9}: proxy CPU {long:6.1f} ms per "
                      f"{p.stream_events}-event call, {short:5.1f} ms per {p.stream_events_short}-event call: "
                      f"{1000 * per_event:4.0f} us per extra event", flush=True)


async def phase_fleet(b: Bench, targets: list[Target]) -> None:
    p = b.p
    call_s = p.fleet_events * p.fleet_gap_ms / 1000
    for size in p.fleet_sizes:
        out = b.res.fleet.setdefault(size, {t.name: [] for t in targets})
        for rep in range(p.fleet_reps):
            for t in targets:
                sid = f"fleet-{size}-{rep}-{t.name}"
                await b.session(t, sid, size)
                others0 = b.harness_cpu()
                profilers = await b.start_profiling(t, f"{t.name}-fleet{size}-rep{rep + 1}")
                r = await b.measured(t, 600, op="fleet", sid=sid, calls=p.fleet_calls, events=p.fleet_events,
                                     gap_ms=p.fleet_gap_ms, stagger_s=call_s, limit_s=540)
                await b.stop_profiling(profilers)
                r["harness_cpu_s"] = b.harness_cpu() - others0
                await b.cmd(op="close", sid=sid)
                out[t.name].append(r)
                cpu = ""
                if t.pid:
                    cpu = (f", proxy CPU {1000 * r['cpu_s'] / max(1, r['ok']):.1f} ms/call "
                           f"({100 * r['cpu_s'] / r['elapsed']:.0f}% of a core)")
                print(f"  fleet {size:3} conns rep {rep + 1}/{p.fleet_reps} {t.name:9}: {r['ok']} calls in "
                      f"{r['elapsed']:.1f}s, TTFB p50/p99 {1000 * r['ttfb']['50']:.1f}/"
                      f"{1000 * r['ttfb']['99']:.0f} ms, "
                      f"gap p99 {1000 * r['gaps']['99']:.1f} ms{cpu}", flush=True)


async def phase_newconn(b: Bench, targets: list[Target]) -> None:
    p = b.p
    for t in targets:
        b.res.newconn[t.name] = []
        warm = await b.cmd(60, op="newconn", target=t.spec, n=p.newconn_warm)  # the leaf certificate, caches
        t.calls += warm["ok"]
    for rep in range(p.reps):
        for t in targets:
            profilers = await b.start_profiling(t, f"{t.name}-newconn-rep{rep + 1}")
            r = await b.measured(t, 300, op="newconn", target=t.spec, n=p.newconn_n)
            await b.stop_profiling(profilers)
            b.res.newconn[t.name].append(r)
            cpu = f", proxy CPU {1000 * r['cpu_s'] / max(1, r['ok']):.2f} ms/conn" if t.pid else ""
            tot = sorted(r["total"])
            print(f"  new conn rep {rep + 1}/{p.reps} {t.name:9}: p50 {1000 * tot[len(tot) // 2]:.1f} ms, "
                  f"p95 {1000 * tot[int(0.95 * (len(tot) - 1))]:.1f} ms{cpu}", flush=True)



async def phase_workers(b: Bench, targets: list[Target]) -> None:
    p = b.p
    for t in targets:
        b.res.workers[t.name] = []
    for rep in range(p.reps):
        for t in targets:  # interleaved, so drift hits both alike
            assert t.pid is not None
            sid = f"workers-{rep}-{t.name}"
            await b.session(t, sid, p.conns)
            await b.run(t, sid, p.tput_warm, False)
            cpu0 = tree_cpu_s(t.pid)
            r = await b.measured(t, max(60.0, p.tput_n / 20) + 30, op="run", sid=sid, n=p.tput_n, stream=False,
                                 limit_s=max(60.0, p.tput_n / 20))
            r["tree_cpu_s"] = tree_cpu_s(t.pid) - cpu0  # the supervisor and every worker
            await b.cmd(op="close", sid=sid)
            r.pop("lat", None)
            r["srps"] = r["ok"] / (r["elapsed"] + r["drain_s"])
            r["per_cpu_s"] = r["ok"] / max(1e-9, r["tree_cpu_s"])
            b.res.workers[t.name].append(r)
            print(f"  workers rep {rep + 1}/{p.reps} {t.name:9}: {r['srps']:6.0f} calls/s relayed+recorded, "
                  f"{r['per_cpu_s']:6.0f} calls per CPU-second ({r['tree_cpu_s']:.1f} CPU-s over "
                  f"{r['elapsed'] + r['drain_s']:.1f} s)", flush=True)
