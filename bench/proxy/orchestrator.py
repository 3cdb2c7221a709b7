"""The orchestrator: starts the stand-in and the three proxies, drives the load generator through the phases
(throughput, latency, paced SSE, memory), checks aigw's records, and stops everything. Its Results feed the
report."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proxy.measure import (
    REPO,
    db_counts,
    http_get_json,
    machine_busy_s,
    pct,
    proc_cpu_s,
    proc_main_thread_cpu_s,
    proc_rss_kib,
)
from bench.proxy.standin import start_standin
from bench.proxy.workload import LOOPBACK
from tests.support.ports import free_port

ENTRY = str(REPO / "bench" / "proxy_bench.py")  # `ENTRY --worker` is the load generator
REDIRECT_ADDON = str(REPO / "bench" / "addons" / "redirect.py")


class BenchError(Exception):
    pass


# Runs another checkout's aigw-proxy with this interpreter (argv[1] = the checkout): its aigw_proxy package, and
# its addons/ folder as aigw_proxy.addons, as its editable install would map it.
_RUN_CHECKOUT = """
import importlib.util, runpy, sys
root = sys.argv.pop(1)
sys.path.insert(0, root)
import aigw_proxy
spec = importlib.util.spec_from_file_location("aigw_proxy.addons", root + "/addons/__init__.py",
                                              submodule_search_locations=[root + "/addons"])
mod = importlib.util.module_from_spec(spec)
sys.modules["aigw_proxy.addons"] = mod
spec.loader.exec_module(mod)
sys.argv[0] = "aigw-proxy"
runpy.run_module("aigw_proxy", run_name="__main__")
"""


def aigw_command(checkout: Path | None) -> list[str]:
    """How to run `aigw-proxy`: this checkout's, or another one's (its own .venv if it has one, else this
    interpreter on that tree)."""
    if checkout is None:
        return [sys.executable, "-m", "aigw_proxy"]
    venv = checkout / ".venv" / "bin" / "python"
    if venv.exists():
        return [str(venv), "-m", "aigw_proxy"]
    return [sys.executable, "-c", _RUN_CHECKOUT, str(checkout)]


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
    stream_conns: int = 2  # the streamed-call cost: far below saturation, one event per TLS record
    stream_calls: int = 6  # per connection and rep
    stream_events: int = 200
    stream_events_short: int = 20  # the same calls with fewer events: the difference is the cost per event
    stream_gap_ms: int = 2  # without lock-step
    stream_lockstep: bool = True  # each event sent once the client has the one before: never two in one read
    fleet_sizes: tuple[int, ...] = (100, 200)  # concurrent agent connections
    fleet_calls: int = 1  # streamed calls per connection and rep
    fleet_events: int = 200
    # 20 ms (50 events/s per call, a fast model's pace): 100 connections offer 5,000 events/s, about what one proxy
    # core relays, and 200 offer twice that. At 5 ms the Python stand-in and load generator, on the same 2 cores,
    # saturate before the proxy does (`--fleet-gap-ms 5` shows it: the harness is then what is measured).
    fleet_gap_ms: int = 20
    fleet_reps: int = 2
    newconn_warm: int = 5
    newconn_n: int = 100  # new connections per rep
    workers_n: int = 2  # the workers case: aigw with `--workers 1` against `--workers workers_n`


QUICK = Profile(reps=1, tput_warm=40, tput_n=300, lat_warm=20, lat_n=100, sse_conns=1, sse_calls=3,
                mem_warm=200, mem_calls=1000, mem_every=250, mem_baseline=False, stream_calls=2,
                fleet_sizes=(20,), fleet_events=60, fleet_reps=1, newconn_n=30)

# Every case, in the order they run; `--only` picks some.
PHASES = ("tput", "latency", "sse", "stream", "fleet", "newconn", "workers", "memory")


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
    admin_port: int = 0  # an aigw-proxy's admin listener (its /healthz tells when the recorder has drained)
    data_dir: Path | None = None  # an aigw-proxy's data dir (its database)
    proc: asyncio.subprocess.Process | None = None

    @property
    def is_aigw(self) -> bool:
        return self.admin_port != 0


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
    stream: dict[str, list[dict]] = field(default_factory=dict)  # target -> reps
    stream_short: dict[str, list[dict]] = field(default_factory=dict)  # target -> reps
    fleet: dict[int, dict[str, list[dict]]] = field(default_factory=dict)  # connections -> target -> reps
    newconn: dict[str, list[dict]] = field(default_factory=dict)  # target -> reps
    extra_db: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)  # other aigw: (calls, counts)
    workers: dict[str, list[dict]] = field(default_factory=dict)  # aigw-w1, aigw-wN -> reps


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
        self.pyspy_rate = 100  # samples per second
        self.perf_dir: Path | None = None
        self.perf_rate = 999  # samples per second (odd, so as not to beat with the event loop's timers)
        self.perf_files: dict[str, dict[str, list[Path]]] = {}  # case -> proxy -> one perf.data per rep
        self.calls = 0  # model calls made through aigw-proxy
        self.elapsed = 0.0
        self.foreign = (0.0, 1.0)  # (CPU-seconds used by processes not ours, wall seconds) during measurement
        self.phases: tuple[str, ...] = PHASES
        self.baseline: Path | None = None  # another checkout whose aigw-proxy runs beside ours as "aigw-base"
        self.targets: dict[str, Target] = {}
        self.lockstep_port = 0  # the stand-in's UDP port for lock-step streams
        self.optimize: set[str] = set()  # targets whose Python runs with PYTHONOPTIMIZE=1 (--optimize)

    # -- processes --
    async def cli(self, *args: str, data_dir: Path | None = None, checkout: Path | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *aigw_command(checkout), *args, "--data-dir", str(data_dir or self.data_dir),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=checkout or REPO)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(f"aigw-proxy {' '.join(args)} timed out") from None
        if proc.returncode:
            raise BenchError(f"aigw-proxy {' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
        return out.decode()

    async def spawn(self, name: str, *argv: str, cwd: Path = REPO) -> asyncio.subprocess.Process:
        log = (self.tmp / f"{name}.log").open("wb")
        # --optimize: this proxy's Python runs with -O (no `assert`s, no mitmproxy `__debug__` self-checks), as
        # the deploy kit runs aigw-proxy.
        env = {**os.environ, "PYTHONOPTIMIZE": "1"} if name in self.optimize else None
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=log,
                                                        stderr=subprocess.STDOUT, cwd=cwd, env=env)
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
        self.server, port, ca_file, self.lockstep_port = await start_standin(ca_dir)
        return port, ca_file

    async def start_mitmdump(self, standin_port: int, upstream_ca: Path) -> Target:
        """`mitmdump -q` (all default addons) with the redirect addon (bench/addons/redirect.py): the goal baseline."""
        confdir = self.tmp / "mitm-conf"
        confdir.mkdir()
        mitmdump = Path(sys.executable).parent / "mitmdump"
        if not mitmdump.exists():
            mitmdump = Path(shutil.which("mitmdump") or "mitmdump")
        port = free_port()
        proc = await self.spawn("mitmdump", str(mitmdump), "-q", "--listen-host", LOOPBACK, "--listen-port",
                                str(port), "--set", f"confdir={confdir}", "--set",
                                f"ssl_verify_upstream_trusted_ca={upstream_ca}", "-s", REDIRECT_ADDON,
                                "--set", f"bench_redirect={LOOPBACK}:{standin_port}")
        ca = confdir / "mitmproxy-ca-cert.pem"
        await self.wait_listening("mitmdump", proc, port, ready=ca)
        return Target("mitmdump", {"mode": "proxy", "port": port, "ca": str(ca), "auth": "Basic Zm9vOmJhcg=="},
                      pid=proc.pid)

    async def start_mitm_min(self, standin_port: int, upstream_ca: Path) -> Target:
        """mitmproxy embedded as the daemon embeds it (bench/proxy/mitm_min.py: same options, the daemon's
        built-in addons), plus the redirect addon and nothing else: the difference to aigw is aigw's own addons
        and recording."""
        confdir = self.tmp / "mitm-min-conf"
        confdir.mkdir()
        port = free_port()
        proc = await self.spawn("mitm-min", sys.executable, "-m", "bench.proxy.mitm_min", "--listen-port", str(port),
                                "--confdir", str(confdir), "--upstream-ca", str(upstream_ca),
                                "--redirect", f"{LOOPBACK}:{standin_port}")
        ca = confdir / "mitmproxy-ca-cert.pem"
        await self.wait_listening("mitm-min", proc, port, ready=ca)
        return Target("mitm-min", {"mode": "proxy", "port": port, "ca": str(ca), "auth": "Basic Zm9vOmJhcg=="},
                      pid=proc.pid)

    async def start_aigw(self, standin_port: int, upstream_ca: Path, name: str = "aigw",
                         checkout: Path | None = None, rsa_ca: bool = False,
                         extra_args: tuple[str, ...] = ()) -> Target:
        """`aigw-proxy run` with its own data dir. `checkout`: another checkout's aigw-proxy (the --baseline
        build); `rsa_ca`: import an RSA-2048 CA first (`ca init`), as an older data dir holds;
        `extra_args`: more `run` options (the hook for a workers case: `("--workers", "2")`)."""
        data_dir = self.data_dir if name == "aigw" else self.tmp / f"{name}-data"
        if rsa_ca:
            from tests.support.certs import make_ca, new_key, write_pem

            cert, key = make_ca("aigw bench RSA CA", key=new_key("rsa"))
            pem = write_pem(self.tmp / f"{name}-ca-import.pem", key, cert)
            await self.cli("ca", "init", "--cert", str(pem), "--key", str(pem), data_dir=data_dir,
                           checkout=checkout)
        token = (await self.cli("users", "add", "bench", data_dir=data_dir, checkout=checkout)).strip()
        ca = write_text(self.tmp / f"{name}-ca.pem", await self.cli("ca", "export", data_dir=data_dir,
                                                                     checkout=checkout))
        cfg = write_text(self.tmp / f"{name}.toml", "\n".join([
            f'upstream_ca_file = "{upstream_ca}"',
            "[[providers]]",
            'name = "anthropic"',
            f'upstream = "https://{LOOPBACK}:{standin_port}"',
            "",
        ]))
        port, admin_port = free_port(), free_port()
        proc = await self.spawn(
            name, *aigw_command(checkout), "run", "--listen", f"{LOOPBACK}:{port}",
            "--admin-listen", f"{LOOPBACK}:{admin_port}", "--data-dir", str(data_dir),
            "--config", str(cfg), *extra_args, cwd=checkout or REPO)
        await self.wait_listening(name, proc, admin_port)
        await self.wait_listening(name, proc, port)
        if name == "aigw":
            self.aigw_proc, self.admin_port = proc, admin_port
        auth = "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()
        return Target(name, {"mode": "proxy", "port": port, "ca": str(ca), "auth": auth}, pid=proc.pid,
                      admin_port=admin_port, data_dir=data_dir, proc=proc)

    async def healthz(self, t: Target | None = None) -> dict:
        port = t.admin_port if t is not None else self.admin_port
        return await asyncio.to_thread(http_get_json, f"http://{LOOPBACK}:{port}/healthz")

    # -- the worker --
    async def start_worker(self) -> None:
        self.worker = await asyncio.create_subprocess_exec(
            sys.executable, ENTRY, "--worker", stdin=subprocess.PIPE,
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

    async def wait_drained(self, t: Target | None = None, limit_s: float = 120) -> tuple[dict, float]:
        """Poll aigw's /healthz until the recorder queue is empty: (last healthz, seconds waited)."""
        t0 = time.monotonic()
        while True:
            h = await self.healthz(t)
            if h["recorder"]["queue_depth"] == 0:
                return h, time.monotonic() - t0
            if time.monotonic() - t0 > limit_s:
                name = t.name if t is not None else "aigw"
                self.problems.append(f"{name} recorder queue not drained after {limit_s:.0f}s: {h['recorder']}")
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
        if t.is_aigw:
            h = await self.healthz(t)
            res["backlog"] = h["recorder"]["queue_depth"]
            if drain:
                h, res["drain_s"] = await self.wait_drained(t)
            res["recorder"] = h["recorder"]
        if t.pid:
            res["cpu_s"] = proc_cpu_s(t.pid) - cpu0
            res["main_cpu_s"] = proc_main_thread_cpu_s(t.pid) - main0
        t.calls += res["ok"]
        if res["n_errors"]:
            self.problems.append(f"{t.name}: {res['n_errors']} failed request(s), e.g. {res['errors'][:2]}")
        return res

    async def measured(self, t: Target, wait_s: float, **cmd: Any) -> dict:
        """One load-generator command against t, with t's CPU over it (all threads, and the event-loop thread)
        and, for an aigw, the time its recorder then needs to drain (included in the CPU)."""
        cpu0 = proc_cpu_s(t.pid) if t.pid else 0.0
        main0 = proc_main_thread_cpu_s(t.pid) if t.pid else 0.0
        res = await self.cmd(wait_s, **cmd)
        res["drain_s"] = 0.0
        if t.is_aigw:
            _h, res["drain_s"] = await self.wait_drained(t)
        res["cpu_s"] = proc_cpu_s(t.pid) - cpu0 if t.pid else 0.0
        res["main_cpu_s"] = proc_main_thread_cpu_s(t.pid) - main0 if t.pid else 0.0
        t.calls += res["ok"]
        if res["n_errors"]:
            self.problems.append(f"{t.name}: {res['n_errors']} failed {cmd.get('op')} call(s), e.g. "
                                 f"{res['errors'][:2]}")
        return res

    async def start_profiling(self, t: Target, label: str) -> list[asyncio.subprocess.Process]:
        """With --py-spy DIR: sample the proxy's Python (all threads, collapsed stacks) during this run; with --perf
        DIR: record its native CPU (every thread, kernel included) with Linux perf. Both name files after label."""
        procs = []
        if self.pyspy_dir is not None and t.pid is not None and t.name != "mitmdump":
            py_spy = Path(sys.executable).parent / "py-spy"
            out = self.pyspy_dir / f"{label}.txt"
            procs.append(await asyncio.create_subprocess_exec(
                str(py_spy if file_exists(py_spy) else "py-spy"), "record", "-p", str(t.pid), "-r",
                str(self.pyspy_rate), "--gil", "-f", "raw", "--threads", "-o", str(out),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if self.perf_dir is not None and t.pid is not None:
            out = self.perf_dir / f"{label}.data"
            # No call graphs (-g): the summary charges self time only, and unwinding would cost the proxy more.
            procs.append(await asyncio.create_subprocess_exec(
                "perf", "record", "-q", "-F", str(self.perf_rate), "-p", str(t.pid), "-o", str(out),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            case = label.removeprefix(f"{t.name}-").rsplit("-rep", 1)[0]
            self.perf_files.setdefault(case, {}).setdefault(t.name, []).append(out)
        if procs:
            await asyncio.sleep(0.5)  # attach
        return procs

    async def stop_profiling(self, procs: list[asyncio.subprocess.Process]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
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
                profilers = await self.start_profiling(t, f"{t.name}-{kind}-rep{rep + 1}")
                r = await self.run(t, sid, self.p.tput_n, stream)
                await self.stop_profiling(profilers)
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
            print(f"  SSE paced  {t.name:8}: first byte p50 {1000 * pct(r['ttfb'], 50):.2f} ms, "
                  f"gap p99 {1000 * pct(r['gaps'], 99):.2f} ms", flush=True)

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

    def harness_cpu(self) -> float:
        """CPU-seconds used so far by the benchmark's own processes: this one (the stand-in) and the load
        generator."""
        return sum(proc_cpu_s(pid) for pid in (os.getpid(), self.worker.pid if self.worker else 0) if pid)

    async def start_targets(self) -> list[Target]:
        standin_port, upstream_ca = await self.start_standin(self.tmp)
        starts = [self.start_mitmdump(standin_port, upstream_ca), self.start_mitm_min(standin_port, upstream_ca),
                  self.start_aigw(standin_port, upstream_ca)]
        if "newconn" in self.phases:
            starts.append(self.start_aigw(standin_port, upstream_ca, name="aigw-rsa", rsa_ca=True))
        if self.baseline is not None:
            starts.append(self.start_aigw(standin_port, upstream_ca, name="aigw-base", checkout=self.baseline))
        if "workers" in self.phases:
            for n in (1, self.p.workers_n):
                starts.append(self.start_aigw(standin_port, upstream_ca, name=f"aigw-w{n}",
                                              extra_args=("--workers", str(n))))
        direct = Target("direct", {"mode": "direct", "port": standin_port, "ca": str(upstream_ca)})
        targets = [direct, *await asyncio.gather(*starts)]
        self.targets = {t.name: t for t in targets}
        return targets

    def pick(self, *names: str) -> list[Target]:
        return [self.targets[n] for n in names if n in self.targets]

    async def main(self) -> Results:
        from bench.proxy.phases import phase_fleet, phase_newconn, phase_stream, phase_workers

        try:
            targets = await self.start_targets()
            await self.start_worker()
            t0 = time.monotonic()
            print(", ".join(f"{t.name} pid {t.pid}" for t in targets if t.pid)
                  + f", load generator pid {self.worker.pid if self.worker else '?'}; temp dir {self.tmp}", flush=True)
            ours = [os.getpid(), self.worker.pid if self.worker else 0, *(x.pid for x in targets if x.pid)]

            def our_cpu() -> float:
                return sum(proc_cpu_s(pid) for pid in ours if pid)

            base = ("direct", "mitmdump", "mitm-min", "aigw")
            aigw, mmin = self.targets["aigw"], self.targets["mitm-min"]
            busy0, ours0, wall0 = machine_busy_s(), our_cpu(), time.monotonic()
            if "tput" in self.phases:
                await self.phase_tput(self.pick(*base), stream=False)
                await self.phase_tput(self.pick(*base), stream=True)
            if "latency" in self.phases:
                await self.phase_latency(self.pick(*base))
            if "sse" in self.phases:
                await self.phase_sse(self.pick(*base))
            if "stream" in self.phases:
                await phase_stream(self, self.pick("mitmdump", "mitm-min", "aigw", "aigw-base"))
            if "fleet" in self.phases:
                await phase_fleet(self, self.pick("direct", "mitmdump", "aigw", "aigw-base"))
            if "newconn" in self.phases:
                await phase_newconn(self, self.pick("direct", "mitmdump", "mitm-min", "aigw-rsa", "aigw",
                                                    "aigw-base"))
            if "workers" in self.phases:
                await phase_workers(self, self.pick("aigw-w1", f"aigw-w{self.p.workers_n}"))
            if "memory" in self.phases:
                await self.phase_memory(aigw)
                if self.p.mem_baseline:
                    await self.phase_memory(mmin)
            self.foreign = (machine_busy_s() - busy0 - (our_cpu() - ours0), time.monotonic() - wall0)
            await self.check_records(aigw)
            for t in targets:
                if t.is_aigw and t is not aigw and t.data_dir is not None:
                    await self.wait_drained(t)
                    counts = await asyncio.to_thread(db_counts, t.data_dir / "aigw-proxy.db")
                    self.res.extra_db[t.name] = (t.calls, counts)
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
