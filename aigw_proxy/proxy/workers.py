"""Worker processes (`aigw-proxy run --workers N`): N proxies behind one listen address, one supervisor.

Why an inherited socket rather than SO_REUSEPORT: mitmproxy 12's regular mode binds with a plain
`asyncio.start_server(host, port)` (no `reuse_port`), so either way its `listen` is replaced in the workers
(`serve_on_socket`). With one socket bound by the supervisor and inherited by every worker, all of them accept
from one kernel queue: a port already taken fails once, at start; `--listen :0` resolves to one port; and a
worker that dies loses only the connections it had accepted — with SO_REUSEPORT each socket has its own queue,
and connections waiting in a dead worker's queue are reset. No other process can bind the port beside us either.

The supervisor (`Supervisor`): binds the proxy socket and the admin listener, migrates the database once, spawns
the workers (multiprocessing "spawn": nothing of its threads is forked), restarts a worker that exits with a
backoff (a structured `worker exited` log record, `aigw_proxy_worker_restarts_total`), forwards SIGHUP (every
worker reloads its config as one daemon does) and SIGTERM/SIGINT (every worker drains within the grace; the
supervisor exits 0 when every worker did).

Each worker is today's daemon (`daemon.start(settings, worker=...)`) with its own mitmproxy master and record
writer (its own spool file), but no admin listener: it answers the supervisor's reads on a private Unix socket
(`WorkerControl` in worker_control.py: its health report and its metrics). The supervisor's one admin listener serves:
* `/metrics`: every worker's scrape merged (`merge_scrapes`): counters and histograms summed, the in-flight and
  queue gauges summed, every other gauge (info series, reload times, budget states, breaker states, health
  reasons) the largest of the workers' values, so de-duplicated. A worker's counters at its last scrape are
  kept when it dies, so the sums never go backwards.
* `/healthz`, `/readyz`, `/livez`: each worker (pid, up, ready, restarts, status); unhealthy when none serves.
* the REST API and the console, on the shared database as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from aigw_proxy import aio
from aigw_proxy.admin.health import HealthReport, probe_database
from aigw_proxy.proxy.control_dir import create_control_dir
from aigw_proxy.proxy.worker_control import WorkerRole, read_state
from aigw_proxy.proxy.worker_metrics import Family, MergedCollector, counters_only, merge_scrapes, parse_scrape
from aigw_proxy.sockets import listening_socket
from aigw_proxy.telemetry.metrics import OWN

# The supervisor's admin thread (REST API, console, health, metrics) runs this much nicer than the workers: when
# API queries and proxied traffic want the same cores, the traffic goes first. Only here, where the API shares no
# GIL with a proxy (in one process, a nicer thread holding the GIL would hold the proxy up for longer). Workers are
# started from the main thread, so they keep its priority. bench/tunnel_bench.py, one worker under API load, new
# tunnel p95: ~10-14 ms at 0, ~8-9 ms at 5 or 10.
ADMIN_NICENESS = 5

if TYPE_CHECKING:
    from aigw_proxy.admin.health import HealthMonitor
    from aigw_proxy.config.settings import Settings
    from aigw_proxy.spend.budgets import Budget
    from aigw_proxy.storage import Database
    from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.workers")

BACKOFF_FIRST = 0.25  # seconds before the first restart of a worker that died
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a worker that ran this long before dying restarts after BACKOFF_FIRST again
EXIT_STATUS_WAIT = 1.0  # seconds to wait for an exited worker's status (microseconds in practice: _on_exit)
START_TIMEOUT = 90.0  # a worker must answer its supervisor this soon after it was spawned
STOP_MARGIN = 45.0  # beyond the grace: a worker's writer gets 30 s to flush, then the rest of its shutdown


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if its supervisor dies (say, killed -9), so no orphan keeps the port."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def worker_main(settings: Settings, index: int, sock: socket.socket, control_path: Path, log_level: str,
                log_format: str, supervisor_pid: int) -> None:
    """The entry point of a worker process (spawned: a fresh interpreter)."""
    from aigw_proxy.telemetry.log_setup import configure_logging

    _die_with_parent()
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        return
    os.umask(0o077)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the whole group: the supervisor decides
    # Until the daemon's own handlers are in place: a SIGTERM is kept for then, a SIGHUP is moot (the config file
    # is read below, at start).
    signal.signal(signal.SIGTERM, _stop_early)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(log_level, log_format)
    if settings.config_file is not None:
        # The file as it is now, not as the supervisor read it at its start: a worker restarted after a reload
        # must not go back to the first configuration (its file watch would see no change to reload).
        from aigw_proxy.config.settings import ConfigError, load_file_config

        try:
            settings.file = load_file_config(settings.config_file)
        except ConfigError as exc:
            log.error("worker %d: the config file cannot be used now (%s); starting with the one read at the "
                      "supervisor's start", index, exc)
    role = WorkerRole(index, sock, control_path)
    try:
        aio.run(_worker_serve(settings, role), settings.event_loop)
    except Exception as exc:
        log.error("worker %d could not start: %s", index, exc)
        logging.shutdown()
        sys.exit(3)
    logging.shutdown()


_stop_requested_early = False


def _stop_early(signum: int, frame: object) -> None:
    global _stop_requested_early
    _stop_requested_early = True


async def _worker_serve(settings: Settings, role: WorkerRole) -> None:
    from aigw_proxy.proxy.daemon import start, stop

    running = await start(settings, worker=role)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop_requested.set)
    if running.monitoring is not None:
        loop.add_signal_handler(signal.SIGHUP, running.monitoring.reloader.trigger, "SIGHUP")
    if _stop_requested_early:
        stop_requested.set()
    await stop_requested.wait()
    log.info("worker %d shutting down (grace %.0fs)", role.index, settings.shutdown_grace)
    await stop(running, settings.shutdown_grace)


# -- the supervisor ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class WorkerSlot:
    index: int
    control_path: Path
    process: BaseProcess | None = None
    pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST
    ready: bool = False  # answered the supervisor's latest read (its health report is then the latest one)
    last_state: dict[str, Any] | None = None
    last_families: dict[str, Family] = field(default_factory=dict)
    last_exit: int | None = None
    restart_handle: asyncio.TimerHandle | None = None

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.is_alive()


@dataclass(slots=True)
class WorkersReport(HealthReport):
    workers: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        out = HealthReport.body(self)
        out["workers"] = self.workers
        return out


class SupervisorHealth:
    """The admin listener's health source and metrics for the whole daemon (what `HealthMonitor` and `Metrics` are
    for one process). Its methods run on the admin thread; the slots are the supervisor's, read across threads."""

    def __init__(self, supervisor: Supervisor, db_timeout: float = 2.0) -> None:
        self.sup = supervisor
        self.stopping = False
        self.db_timeout = db_timeout
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MergedCollector(self._families))

    async def _refresh(self) -> None:
        slots = list(self.sup.slots)
        states = await asyncio.gather(*(read_state(s.control_path) if s.up else _none() for s in slots))
        for slot, state in zip(slots, states, strict=True):
            pid = slot.pid
            if state is None or state.get("pid") != pid:
                with self._lock:
                    if slot.pid == pid:
                        slot.ready = False  # a worker that does not answer is not serving (its metrics stay)
                continue
            families = parse_scrape(state.pop("metrics", ""))
            with self._lock:
                if slot.pid == pid and slot.up:  # not retired meanwhile (its counters would count twice)
                    slot.last_state = state
                    slot.last_families = families
                    slot.ready = True

    def _report(self, states: list[tuple[WorkerSlot, dict[str, Any] | None]], db_problem: str | None) -> WorkersReport:
        workers: list[dict[str, Any]] = []
        serving = 0
        inflight = 0
        reasons: dict[str, str] = {}
        # The recorders of the serving workers, added up (what one daemon's /healthz shows as `recorder`).
        recorder: dict[str, Any] = {"queue_depth": 0, "written": 0, "dropped": {}, "spooled": 0, "spool_bytes": 0}
        for slot, state in states:
            health = (state or {}).get("health") or {}
            rec = health.get("recorder") or {}
            for key in ("queue_depth", "written", "spooled", "spool_bytes"):
                recorder[key] += int(rec.get(key) or 0)
            for reason, n in (rec.get("dropped") or {}).items():
                recorder["dropped"][reason] = recorder["dropped"].get(reason, 0) + n
            status = health.get("status") if state is not None else None
            ready = status in ("ok", "degraded")
            serving += ready
            inflight += int(health.get("inflight_requests") or 0)
            for reason, text in (health.get("reasons") or {}).items():
                reasons.setdefault(reason, f"worker {slot.index}: {text}")
            workers.append({"index": slot.index, "pid": slot.pid, "up": slot.up, "ready": ready,
                            "status": status or ("starting" if slot.up else "down"), "restarts": slot.restarts,
                            "inflight_requests": health.get("inflight_requests"),
                            "written": (health.get("recorder") or {}).get("written"),
                            "queue_depth": (health.get("recorder") or {}).get("queue_depth"),
                            "config_reloaded_at": (state or {}).get("config_reloaded_at")})
        down = [w["index"] for w in workers if not w["ready"]]
        if down and not self.stopping:
            reasons["workers_not_serving"] = (f"{len(down)} of {len(workers)} worker(s) not serving "
                                              f"({', '.join(map(str, down))}): the supervisor restarts them")
        if db_problem is not None:
            reasons.setdefault("database_unreachable", db_problem)
        if self.stopping:
            reasons = {"shutting_down": "the proxy is shutting down", **reasons}
            status = "shutting_down"
        elif serving == 0:
            status = "unresponsive"
            reasons.setdefault("proxy_loop_unresponsive", "no worker is serving: requests are not being relayed")
        else:
            status = "degraded" if reasons else "ok"
        return WorkersReport(status, reasons, inflight, recorder, workers)

    def _current(self) -> list[tuple[WorkerSlot, dict[str, Any] | None]]:
        with self._lock:
            return [(s, s.last_state if s.up and s.ready else None) for s in self.sup.slots]

    async def live(self) -> HealthReport:
        await self._refresh()
        report = self._report(self._current(), None)
        return HealthReport("unresponsive" if report.status == "unresponsive" else "ok", {
            k: v for k, v in report.reasons.items() if k == "proxy_loop_unresponsive"})

    async def check(self, db: Database | None) -> HealthReport:
        await self._refresh()
        return self._report(self._current(), await self._probe(db))

    async def _probe(self, db: Database | None) -> str | None:
        return None if db is None else await probe_database(db, self.db_timeout)

    def _families(self) -> Iterator[Metric]:
        with self._lock:
            # Each worker's as last read, even one slow to answer, or dead and not yet retired (never both).
            live = [s.last_families for s in self.sup.slots]
            scrapes = [*live, self.sup.retired]
            restarts = [(s.index, s.restarts) for s in self.sup.slots]
            up = sum(s.up for s in self.sup.slots)
            ready = sum(s.up and s.ready for s in self.sup.slots)
        for fam in merge_scrapes(scrapes).values():
            yield fam.metric()
        counter = CounterMetricFamily(OWN + "worker_restarts", "Worker processes restarted by the supervisor after "
                                      "they exited.", labels=["worker"])
        for index, n in restarts:
            counter.add_metric([str(index)], n)
        yield counter
        gauge = GaugeMetricFamily(OWN + "workers", "Worker processes: configured, up (running), ready (serving).",
                                  labels=["state"])
        gauge.add_metric(["configured"], len(restarts))
        gauge.add_metric(["up"], up)
        gauge.add_metric(["ready"], ready)
        yield gauge

    def retire(self, slot: WorkerSlot) -> None:
        """A worker exited: keep its counters as last read, forget the rest."""
        with self._lock:
            self.sup.retired = merge_scrapes([self.sup.retired, counters_only(slot.last_families)])
            slot.last_families = {}
            slot.last_state = None
            slot.ready = False

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def _none() -> None:
    return None


class Supervisor:
    def __init__(self, settings: Settings, workers: int, *, log_level: str = "info", log_format: str = "text") -> None:
        self.settings = settings
        self.n = workers
        self.log_level = log_level
        self.log_format = log_format
        self.slots: list[WorkerSlot] = []
        self.retired: dict[str, Family] = {}
        self.health = SupervisorHealth(self)
        self.stopping = False
        self._mp = multiprocessing.get_context("spawn")
        self._sock: socket.socket | None = None
        self._control_dir: Path | None = None
        self._budgets: Sequence[Budget] = settings.file.budgets

    # -- start-up

    def _bind_proxy(self) -> socket.socket:
        from aigw_proxy.proxy.daemon import DaemonError

        host, port = self.settings.listen
        try:
            # A deep backlog: connections queued while a worker restarts wait for the others instead of failing.
            return listening_socket(host, port, backlog=1024)
        except OSError as exc:
            raise DaemonError(f"cannot listen on {host}:{port} for the proxy: {exc.strerror or exc}") from None

    async def _prepare(self) -> None:
        """What one daemon does first, done once for all workers: data directory, CA, schema migration (the
        workers then find the schema current)."""
        from aigw_proxy.proxy.daemon import open_data

        db = await open_data(self.settings)
        await db.close()

    def _spawn(self, slot: WorkerSlot) -> None:
        assert self._sock is not None
        slot.restart_handle = None
        p = self._mp.Process(target=worker_main, name=f"aigw-worker-{slot.index}",
                             args=(self.settings, slot.index, self._sock, slot.control_path, self.log_level,
                                   self.log_format, os.getpid()))
        p.start()
        with self.health._lock:
            slot.process, slot.pid, slot.started_at, slot.ready = p, p.pid, time.monotonic(), False
            slot.last_families, slot.last_state = {}, None
        asyncio.get_running_loop().add_reader(p.sentinel, self._on_exit, slot, p)

    def _on_exit(self, slot: WorkerSlot, p: BaseProcess) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(p.sentinel)
        p.join(0)
        if p.exitcode is None:
            # The sentinel is a pipe the worker holds: it closes as the process exits, a moment before the kernel
            # has its exit status to report. Wait that moment, or a kill -9 reads as "an unknown status".
            p.join(EXIT_STATUS_WAIT)
        slot.last_exit = p.exitcode
        self.health.retire(slot)
        if self.stopping:
            return
        ran = time.monotonic() - slot.started_at
        slot.backoff = BACKOFF_FIRST if ran >= STABLE_AFTER else slot.backoff
        delay = slot.backoff
        slot.backoff = min(BACKOFF_MAX, slot.backoff * 2)
        slot.restarts += 1
        log.warning("worker %d (pid %s) exited with %s after %.1f s; restarting it in %.2f s", slot.index, p.pid,
                    _exit_text(p.exitcode), ran, delay,
                    extra={"event": "worker_exited", "worker": slot.index, "pid": p.pid, "exitcode": p.exitcode,
                           "ran_seconds": round(ran, 3), "restart_in_seconds": delay, "restarts": slot.restarts})
        slot.restart_handle = loop.call_later(delay, self._respawn, slot)

    def _respawn(self, slot: WorkerSlot) -> None:
        if self.stopping:
            return
        self._spawn(slot)
        log.info("worker %d restarted as pid %s", slot.index, slot.pid,
                 extra={"event": "worker_restarted", "worker": slot.index, "pid": slot.pid, "restarts": slot.restarts})

    async def _wait_ready(self, slots: list[WorkerSlot]) -> None:
        from aigw_proxy.proxy.daemon import DaemonError

        deadline = time.monotonic() + START_TIMEOUT
        pending = list(slots)
        while pending:
            for slot in list(pending):
                if not slot.up:
                    raise DaemonError(f"worker {slot.index} exited while starting ({_exit_text(slot.last_exit)}); "
                                      "see its log above")
                state = await read_state(slot.control_path, 1.0)
                if state is not None and state.get("pid") == slot.pid:
                    slot.ready = True
                    pending.remove(slot)
            if pending and time.monotonic() > deadline:
                raise DaemonError(f"worker(s) {', '.join(str(s.index) for s in pending)} did not start within "
                                  f"{START_TIMEOUT:.0f} s")
            if pending:
                await asyncio.sleep(0.05)

    # -- running

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status: 0 when every worker stopped cleanly."""
        from aigw_proxy.admin.app import AdminContext, MetricsAccess
        from aigw_proxy.admin.console.app import ConsoleSettings
        from aigw_proxy.admin.server import AdminBindError, AdminServer
        from aigw_proxy.proxy.daemon import DaemonError

        s = self.settings
        await self._prepare()
        self._sock = self._bind_proxy()
        admin = AdminServer(s.admin_listen, s.metrics_listen, niceness=ADMIN_NICENESS)
        try:
            admin.bind()
        except AdminBindError as exc:
            self._sock.close()
            raise DaemonError(str(exc)) from None
        self._control_dir = create_control_dir()
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_hup)
        try:
            self.slots = [WorkerSlot(i, self._control_dir / f"w{i}.sock") for i in range(self.n)]
            for slot in self.slots:
                self._spawn(slot)
            try:
                await self._wait_ready(self.slots)
            except BaseException:
                self.stopping = True
                await self._stop_workers(5)
                await admin.close()
                raise
            host, port = self._sock.getsockname()[:2]
            access = MetricsAccess(s.metrics_token, s.metrics_public)
            if access.token is None and not access.public and not admin.metrics_loopback():
                log.warning("/metrics is not served on a non-loopback listener without --metrics-token (scrapes get "
                            "403); set a token, or --metrics-public to serve it to anyone who can reach it")
            # The admin apps take one process's health monitor and metrics; these two answer the same calls.
            ctx = AdminContext(cast("HealthMonitor", self.health), cast("Metrics", self.health), access,
                               admin.limits, console=ConsoleSettings.of(s, f"{host}:{port}"),
                               config_budgets=lambda: self._budgets)
            await admin.start(ctx, s.database, s.confdir)
            log.info("proxy listening on %s:%d with %d workers (pids %s), admin on %s:%d", host, port, self.n,
                     ", ".join(str(sl.pid) for sl in self.slots), *admin.address)
            print(f"aigw-proxy listening on {host}:{port} (admin {admin.address[0]}:{admin.address[1]}, "
                  f"data {s.data_dir}, {self.n} workers)", flush=True)
            await stop_requested.wait()
            log.info("shutting down %d workers (grace %.0fs)", self.n, s.shutdown_grace)
            self.stopping = self.health.stopping = True
            clean = await self._stop_workers(s.shutdown_grace + STOP_MARGIN)
            await admin.close()
            return 0 if clean else 1
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self._sock.close()
            shutil.rmtree(self._control_dir, ignore_errors=True)

    def _forward_hup(self) -> None:
        from aigw_proxy.config.settings import ConfigError, load_file_config

        log.info("SIGHUP: every worker reloads its config")
        for slot in self.slots:
            if slot.up and slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGHUP)
        if self.settings.config_file is not None:
            try:
                self._budgets = load_file_config(self.settings.config_file).budgets  # what the REST API lists
            except ConfigError:
                pass  # the workers log why; they keep their configuration, the API its list

    async def _stop_workers(self, within: float) -> bool:
        """SIGTERM every worker, wait for all; True if every one exited with 0."""
        for slot in self.slots:
            if slot.restart_handle is not None:
                slot.restart_handle.cancel()
                slot.restart_handle = None
        live = [slot for slot in self.slots if slot.up]
        for slot in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(cast(int, slot.pid), signal.SIGTERM)
        deadline = time.monotonic() + within
        # Polled: only on shutdown, and the exits are also watched by the loop's readers.
        while any(slot.up for slot in live) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        clean = True
        for slot in live:
            p = slot.process
            assert p is not None
            if p.is_alive():
                log.error("worker %d (pid %s) did not stop within %.0f s: killed", slot.index, p.pid, within)
                p.kill()
                clean = False
            p.join(5)
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(p.sentinel)
            if p.exitcode != 0:
                log.error("worker %d (pid %s) exited with %s", slot.index, p.pid, _exit_text(p.exitcode))
                clean = False
        return clean


def _exit_text(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


async def supervise(settings: Settings, workers: int, *, log_level: str, log_format: str) -> int:
    return await Supervisor(settings, workers, log_level=log_level, log_format=log_format).run()
