"""The daemon: one embedded mitmproxy Master with our addon stack, the record writer and the admin listener.

Start-up fails fast with a clear message (DaemonError) where mitmproxy would only log: port taken, unusable CA.
Stop: stop accepting, give in-flight streams a bounded grace period, flush every queued record, exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import certifi
from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from aigw_proxy.addons.auth import TokenAuth
from aigw_proxy.addons.connect_timeout import UpstreamConnectTimeout
from aigw_proxy.addons.inflight import InFlight
from aigw_proxy.addons.intercept import Interceptor
from aigw_proxy.addons.readiness import Readiness
from aigw_proxy.addons.routing import ProviderRouter
from aigw_proxy.addons.secrets_gate import SecretsGate
from aigw_proxy.addons.stack import AigwAddons, use_hook_cache
from aigw_proxy.addons.tls_reuse import LeafContexts, UpstreamSessions
from aigw_proxy.addons.websocket import ResponsesSocket
from aigw_proxy.admin.app import AdminContext, MetricsAccess
from aigw_proxy.admin.console.app import ConsoleSettings
from aigw_proxy.admin.health import HealthMonitor
from aigw_proxy.admin.server import AdminBindError, AdminServer
from aigw_proxy.aio import loop_name
from aigw_proxy.capture.build import CaptureBuilder
from aigw_proxy.capture.raw import Capturing
from aigw_proxy.config.settings import Settings
from aigw_proxy.policy.identity import SQLiteTokenLookup, TokenAuthenticator
from aigw_proxy.proxy.ca import CAError, ensure_ca
from aigw_proxy.proxy.monitoring import Monitoring, setup_monitoring
from aigw_proxy.proxy.record_exports import Observability
from aigw_proxy.proxy.record_exports import setup as setup_observability
from aigw_proxy.proxy.relay_fast_paths import install as install_relay_fast_paths
from aigw_proxy.proxy.worker_control import WorkerControl, WorkerRole, serve_on_socket, worker_spool_path
from aigw_proxy.recording.recorder import Recorder
from aigw_proxy.redaction.engine import Redactor
from aigw_proxy.redaction.records import RecordPolicy
from aigw_proxy.spend import Pricer, library_version
from aigw_proxy.storage import (
    Database,
    RecordWriter,
    RetentionLoop,
    StorageError,
    UserStore,
    open_database,
)
from aigw_proxy.telemetry.log_setup import set_redactor

log = logging.getLogger("aigw_proxy.daemon")


class DaemonError(Exception):
    pass


def _upstream_trust(settings: Settings) -> str | None:
    """A bundle of the default trust (certifi) plus the operator's extra upstream CAs, or None for the default.
    mitmproxy's `ssl_verify_upstream_trusted_ca` replaces the default trust, so both go in one file."""
    extra = settings.file.upstream_ca_file
    if extra is None:
        return None
    bundle = settings.data_dir / "upstream-trust.pem"
    # Written whole then renamed: with worker processes, another worker may be reading the file meanwhile.
    part = bundle.with_name(f"{bundle.name}.{os.getpid()}.part")
    part.write_text(Path(certifi.where()).read_text() + "\n" + extra.read_text())
    part.replace(bundle)
    return str(bundle)


def mitmproxy_builtins() -> list[object]:
    """The few mitmproxy built-in addons a forward proxy needs (not `default_addons()`: no dumper, no replay, no
    script loader, no ErrorCheck that exits the process). Registered after ours; the benchmark reuses this list."""
    return [core.Core(), disable_h2c.DisableH2C(), proxyserver.Proxyserver(), next_layer.NextLayer(),
            tlsconfig.TlsConfig()]


@dataclass(slots=True)
class Running:
    """Handles to a started daemon (used by `serve` and by tests that embed it)."""

    master: Master
    master_task: asyncio.Task[None]
    db: Database
    writer: RecordWriter
    recorder: Recorder
    admin: AdminServer | WorkerControl  # a worker process serves its supervisor instead (workers.py)
    inflight: InFlight
    router: ProviderRouter
    proxy_addr: tuple[str, int]
    admin_addr: tuple[str, int]
    observability: Observability | None = None
    monitoring: Monitoring | None = None
    health: HealthMonitor | None = None
    interceptor: Interceptor | None = None
    retention: RetentionLoop | None = None
    sockets: ResponsesSocket | None = None


async def open_data(settings: Settings) -> Database:
    """What a daemon needs before anything else, done by the supervisor once for all workers too: the private data
    directory, the CA (generated on first start), the database (migrated). Failures are DaemonErrors."""
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.data_dir.chmod(0o700)  # private whatever the umask, or however it was made
    except OSError as exc:
        raise DaemonError(f"cannot create the data directory {settings.data_dir}: {exc.strerror}") from None
    try:
        ensure_ca(settings.confdir)
    except CAError as exc:
        raise DaemonError(f"cannot load the CA: {exc}") from None
    try:
        return await open_database(settings.database)
    except StorageError as exc:
        raise DaemonError(str(exc)) from None  # the password is masked in storage errors


async def start(settings: Settings, *, worker: WorkerRole | None = None) -> Running:
    """Start the daemon; with `worker`, as one of the supervisor's worker processes (proxy/workers.py): on the
    listening socket it inherited, with no admin listener (the supervisor's serves the whole daemon), answering the
    supervisor's health and metrics reads on `worker.control_path`."""
    db = await open_data(settings)
    log.info("records in %s; event loop %s", db.config.display, loop_name(asyncio.get_running_loop()))
    # The price data loads in ~0.5 s: off the loop, before the writer prices its first row.
    log.info("pricing token usage with genai-prices %s and %d [[prices]] table(s)",
             await asyncio.to_thread(library_version), len(settings.file.prices))
    # The spool of a failing database's backlog lives beside the SQLite file, or in the data directory; each
    # worker process has its own.
    writer = RecordWriter(db, spool_max_bytes=settings.spool_max_bytes, pricer=Pricer(settings.file.prices),
                          spool_path=worker_spool_path(db.path, settings.data_dir, worker.index if worker else 0))
    writer.start()
    recorder = Recorder(writer)
    obs = setup_observability(settings, writer)  # structured record logs, traces: only what settings ask for
    admin: AdminServer | WorkerControl
    if worker is None:
        admin = AdminServer(settings.admin_listen, settings.metrics_listen)
        listen = settings.listen
    else:
        admin = WorkerControl(worker)
        serve_on_socket(worker.sock)  # mitmproxy's regular mode accepts on the supervisor's socket
        listen = worker.sock.getsockname()[:2]
    try:
        admin.bind()  # served once the proxy runs (admin/server.py); bound now so a taken port fails at once
    except AdminBindError as exc:
        await writer.close(5)
        await db.close()
        raise DaemonError(str(exc)) from None

    opts = options.Options(
        listen_host=listen[0],
        listen_port=listen[1],
        confdir=str(settings.confdir),
        mode=["regular"],
        ssl_insecure=False,
    )
    # mitmproxy closes a connection with no traffic either way for `tcp_timeout` (600 s): keep it above the
    # upstream idle timeout, so that a silent upstream is cut by ours, which records the true cause.
    opts.update(tcp_timeout=max(600, int(settings.upstream_idle_timeout) + 60))
    install_relay_fast_paths()  # three per-event costs of mitmproxy's relay, cut (proxy/relay_fast_paths.py)
    master = Master(opts)
    use_hook_cache(master)  # each hook's handlers looked up once, not walked on every event (addons/stack.py)
    inflight = InFlight()
    router = ProviderRouter(settings.file)
    # metrics, provider reload, circuit breaking, spend controls (rate limits, model policy, budgets)
    mon = setup_monitoring(settings, recorder, writer, router, db)
    try:
        await mon.open()  # the budgets and groups in force, read before the first request
    except Exception as exc:
        await admin.close()
        await writer.close(5)
        await db.close()
        raise DaemonError(f"cannot read the budgets: {exc}") from None
    if mon.controls is not None:
        writer.group_of = mon.controls.group_for_write  # effective_group_id on the token rows it writes
        writer.add_listener(mon.controls.on_commit)  # a committed call's cost counts at once in this process
    authenticator = TokenAuthenticator(UserStore(db).authenticate,
                                       quick_lookup=(SQLiteTokenLookup(db.path, db.guard)
                                                     if db.path is not None else None))
    # Every record is capped and redacted once, before the recorder hands it to the database, logs and metrics.
    redaction = settings.redaction
    policy = RecordPolicy.from_config(redaction, on_redactions=mon.metrics.count_redactions)
    set_redactor(policy.redactor or Redactor(redaction.patterns, redaction.allow))  # log lines: always masked
    submit = policy.wrap(recorder.submit)
    gates = [SecretsGate(policy.redactor)] if redaction.mode == "block" and policy.redactor else []
    # --capture-bodies: each call's bodies go straight to the writer (not to logs, spans or metrics), sealed there.
    capturing = Capturing(CaptureBuilder(policy.redactor, settings.capture_limit), writer.submit) \
        if settings.capture_enabled else None
    if capturing is not None:
        log.info("capturing model calls' bodies (up to %d bytes each, %s)", settings.capture_limit,
                 "secrets redacted" if policy.redactor is not None else "--redaction off: secrets kept")
    # Ours first: routing must decide tunnel-vs-decrypt before mitmproxy's NextLayer does.
    sockets = ResponsesSocket(submit, obs.tracer, capturing)
    interceptor = Interceptor(submit, obs.tracer, upstream_idle_timeout=settings.upstream_idle_timeout,
                              capturing=capturing)
    connect_timeout = UpstreamConnectTimeout(settings.upstream_connect_timeout, router, mon.metrics)
    master.addons.add(AigwAddons(TokenAuth(authenticator), router, connect_timeout, inflight, *gates, *mon.gates,
                                 interceptor, sockets, mon.proxy_metrics, LeafContexts()))
    master.addons.add(*mitmproxy_builtins())
    master.addons.add(UpstreamSessions())  # after TlsConfig: it offers a session on the connection TlsConfig made
    trust = _upstream_trust(settings)
    if trust:
        opts.update(ssl_verify_upstream_trusted_ca=trust)
    readiness = Readiness()
    master.addons.add(readiness)  # last: TlsConfig loads the CA in its own `running` hook
    master_task = asyncio.create_task(master.run(), name="mitmproxy master")
    try:
        addrs = await asyncio.wait_for(asyncio.shield(readiness.result), 30)
    except (RuntimeError, TimeoutError) as exc:
        master.shutdown()
        await master_task
        await admin.close()
        await writer.close(5)
        await db.close()
        raise DaemonError(str(exc) or "the proxy did not start") from None
    master.addons.remove(readiness)  # its one check is done: no need to visit it on every event

    running = Running(master, master_task, db, writer, recorder, admin, inflight, router, addrs[0], admin.address,
                      obs)
    running.monitoring = mon
    running.sockets = sockets
    running.interceptor = interceptor
    mon.start(settings)
    running.health = HealthMonitor(writer, inflight, db.path)  # reads them on this loop (db.path: SQLite's file)
    mon.metrics.registry.register(running.health.collector)
    access = MetricsAccess(settings.metrics_token, settings.metrics_public)
    if access.token is None and not access.public and not admin.metrics_loopback():
        log.warning("/metrics is not served on a non-loopback listener without --metrics-token (scrapes get 403); "
                    "set a token, or --metrics-public to serve it to anyone who can reach it")
    try:
        if isinstance(admin, WorkerControl):
            await admin.start(running.health, mon.metrics, running.monitoring)
        else:
            ctx = AdminContext(running.health, mon.metrics, access, admin.limits,
                               console=ConsoleSettings.of(settings, f"{addrs[0][0]}:{addrs[0][1]}"))
            if mon.controls is not None:
                ctx.config_budgets = mon.controls.config_budgets  # the REST API lists them beside the database's
            await admin.start(ctx, settings.database, settings.confdir)  # its own thread, off the proxy loop
    except BaseException:
        await stop(running, 0)
        raise
    # Retention (with a window) and the database's upkeep (PostgreSQL: partitions ahead), once per cluster; with
    # worker processes, the first one does it for all.
    if worker is None or worker.index == 0:
        running.retention = RetentionLoop(db, settings.retention)
        running.retention.start()
    # Start-up leaves ~150k long-lived objects (mitmproxy, SQLAlchemy, OpenTelemetry…); without this every full
    # collection walks them all, pausing relaying for ~150 ms under load. Freeze them out of future collections.
    gc.collect()
    gc.freeze()
    if worker is not None:
        log.info("worker %d (pid %d) serving %s:%d", worker.index, os.getpid(), *addrs[0],
                 extra={"event": "worker_started", "worker": worker.index, "pid": os.getpid()})
        return running
    assert isinstance(admin, AdminServer)
    metrics_addr = admin.metrics_address
    log.info("proxy listening on %s:%d, admin on %s:%d%s", *addrs[0], *admin.address,
             f", metrics on {metrics_addr[0]}:{metrics_addr[1]}" if metrics_addr else "")
    return running


async def stop(r: Running, grace: float) -> None:
    if r.health is not None:
        r.health.stopping = True  # /readyz answers 503 from now on
    if r.retention is not None:
        await r.retention.close()
    if r.monitoring is not None:
        await r.monitoring.close()  # no provider reload while stopping
    ps = r.master.addons.get("proxyserver")
    await ps.servers.update([])  # stop accepting: master.shutdown() alone leaves the port listening
    deadline = time.monotonic() + grace
    if not await r.inflight.wait_idle(grace):
        log.warning("%d request(s) still in flight after %.0fs; closing them", r.inflight.count, grace)
    # WebSocket turns are not HTTP requests in flight: a Codex turn streaming on an open socket gets the same grace.
    # Polled: only on shutdown, bounded by the grace period, and it saves threading an event through every turn.
    while r.sockets is not None and r.sockets.turns_in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if r.interceptor is not None:
        r.interceptor.stopping = True  # what is cut now is recorded as cut by the shutdown
    for handler in list(ps.connections.values()):
        for io in handler.transports.values():
            if io.handler:
                io.handler.cancel()
    r.master.shutdown()
    await r.master_task
    await r.admin.close()
    await r.writer.close(30)
    if r.observability is not None:
        await r.observability.close()  # after the writer: its last commits end their spans
    await r.db.close()
    log.info("stopped; %d record event(s) written, dropped: %s", r.writer.written, dict(r.writer.dropped) or "none")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    running = await start(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    if running.monitoring is not None:
        loop.add_signal_handler(signal.SIGHUP, running.monitoring.reloader.trigger, "SIGHUP")
    print(f"aigw-proxy listening on {running.proxy_addr[0]}:{running.proxy_addr[1]} "
          f"(admin {running.admin_addr[0]}:{running.admin_addr[1]}, data {settings.data_dir})", flush=True)
    await stop_requested.wait()
    log.info("shutting down (grace %.0fs)", settings.shutdown_grace)
    await stop(running, settings.shutdown_grace)
