"""`aigw-proxy run`."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import click

from aigw_proxy.aio import EVENT_LOOPS, EventLoopError
from aigw_proxy.aio import run as run_loop
from aigw_proxy.capture.raw import DEFAULT_CAPTURE_MAX_BYTES, MIN_CAPTURE_MAX_BYTES
from aigw_proxy.cli.common import database_settings, fail, storage_options
from aigw_proxy.cli.main import main
from aigw_proxy.cli.ops_options import Duration, ops_options
from aigw_proxy.config.settings import (
    REDACTION_MODES,
    ConfigError,
    Settings,
    load_file_config,
    parse_hostport,
    parse_workers,
)
from aigw_proxy.policy.circuit import BreakerConfig
from aigw_proxy.redaction.records import DEFAULT_MAX_FIELD_BYTES, MIN_MAX_FIELD_BYTES


@main.command()
@click.option("--listen", envvar="AIGW_LISTEN", default="127.0.0.1:8888", show_default=True,
              help="Proxy listen address HOST:PORT.")
@click.option("--admin-listen", envvar="AIGW_ADMIN_LISTEN", default="127.0.0.1:8889", show_default=True,
              help="Admin listener (/healthz, /livez, /readyz, /metrics, /api/) HOST:PORT.")
@click.option("--metrics-listen", envvar="AIGW_METRICS_LISTEN", default=None,
              help="Serve /metrics on this HOST:PORT of its own instead of the admin listener.")
@click.option("--metrics-token", envvar="AIGW_METRICS_TOKEN", default=None,
              help="Scrapes must send `Authorization: Bearer <token>` (prefer the variable or the file: "
                   "a command line is visible to every local user).")
@click.option("--metrics-token-file", envvar="AIGW_METRICS_TOKEN_FILE", default=None,
              type=click.Path(dir_okay=False, path_type=Path), help="Read the metrics token from this file.")
@click.option("--metrics-public", envvar="AIGW_METRICS_PUBLIC", is_flag=True,
              help="Without a token, serve /metrics on a non-loopback listener too (by default: 403 there).")
@storage_options
@click.option("--config", "config_file", envvar="AIGW_CONFIG", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="TOML config file (providers, ports, private CIDRs, upstream CAs).")
@click.option("--shutdown-grace", envvar="AIGW_SHUTDOWN_GRACE", type=click.FloatRange(0, 3600), default=10.0,
              show_default=True, help="Seconds in-flight streams get to finish on SIGTERM/SIGINT.")
@click.option("--log-level", envvar="AIGW_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--log-format", envvar="AIGW_LOG_FORMAT", default="text", show_default=True,
              type=click.Choice(["text", "json"], case_sensitive=False), help="Every log line as text or JSON.")
@click.option("--structured-logging", envvar="AIGW_STRUCTURED_LOGGING", is_flag=True,
              help="Also log every record as one `interception log` line (record_type and its fields).")
@click.option("--trace", envvar="AIGW_TRACE_ENABLE", is_flag=True,
              help="OpenTelemetry spans per interception, exported over OTLP/HTTP (OTEL_EXPORTER_OTLP_*).")
@click.option("--trace-logs", envvar="AIGW_TRACE_LOGS", is_flag=True,
              help="With --trace: attach log records to their interception's span as events.")
@click.option("--retention", envvar="AIGW_RETENTION", default="60d", show_default=True,
              help="Delete interceptions (and their prompts, tokens, tools, thoughts) older than this; 0 keeps all.")
@click.option("--redaction", "redaction_mode", envvar="AIGW_REDACTION", default=None,
              type=click.Choice(REDACTION_MODES, case_sensitive=False),
              help="Secrets in recorded prompts, tool inputs, thoughts and errors: replaced by a placeholder "
                   "(redact, the default), left (off), or the call refused with a 400 (block).")
@click.option("--max-field-bytes", envvar="AIGW_MAX_FIELD_BYTES", default=None,
              type=click.IntRange(MIN_MAX_FIELD_BYTES), help="Bytes kept of each recorded prompt, tool input, "
              f"thought and error text; the rest is cut with a marker (default {DEFAULT_MAX_FIELD_BYTES}).")
@click.option("--upstream-idle-timeout", envvar="AIGW_UPSTREAM_IDLE_TIMEOUT", type=Duration(), default="300s",
              show_default=True,
              help="Cut a model call whose upstream sends nothing for this long (recorded as `timeout`); 0: off.")
@click.option("--upstream-connect-timeout", envvar="AIGW_UPSTREAM_CONNECT_TIMEOUT", type=Duration(),
              default="10s", show_default=True,
              help="Give up connecting to an upstream (a tunnel's host, a provider) after this long: the client "
                   "gets a 502 saying so. 0: the operating system's limit (about 2 minutes).")
@click.option("--spool-max-mb", envvar="AIGW_SPOOL_MAX_MB", type=click.IntRange(0), default=256, show_default=True,
              help="Bound of the record spool beside the database, which keeps records while the database "
                   "cannot take them; 0: no spool (memory only).")
@click.option("--max-concurrency", envvar="AIGW_MAX_CONCURRENCY", type=click.IntRange(0), default=0,
              show_default=True, help="Requests in flight on provider hosts (model calls and passthrough); one more "
              "gets 503 at capacity. 0: no cap. [[limits]] in the config caps single users.")
@click.option("--rate-limit", envvar="AIGW_RATE_LIMIT", type=click.FloatRange(0), default=0, show_default=True,
              help="Requests per second per proxy token on provider hosts; beyond it 429 with Retry-After. 0: no "
              "limit. [[limits]] in the config sets it per user.")
@click.option("--workers", envvar="AIGW_WORKERS", default=None, metavar="N|auto",
              help="Proxy processes serving the listen address, under a supervisor that restarts them; auto: one "
                   "per CPU. Default: the config file's `workers`, else 1 (a single process).")
@click.option("--supervisor/--no-supervisor", "supervisor", envvar="AIGW_SUPERVISOR", default=None,
              help="With one worker too, run the proxy in a worker process under a supervisor that serves the admin "
                   "listener (metrics, health, REST API, console) and restarts the worker if it dies: API load then "
                   "never slows proxied traffic in the same process. Default: the config file's `supervisor` "
                   "(off); more than one worker always has a supervisor.")
@click.option("--capture-bodies/--no-capture-bodies", "capture_bodies", envvar="AIGW_CAPTURE_BODIES", default=None,
              help="Also store each model call's request and response bodies (credential headers removed, secrets "
                   "redacted, compressed), for `aigw-proxy interceptions capture ID` and the console. Off by default "
                   "(the config file's `capture_bodies`).")
@click.option("--capture-max-bytes", envvar="AIGW_CAPTURE_MAX_BYTES", default=None,
              type=click.IntRange(MIN_CAPTURE_MAX_BYTES), help="Bytes kept of each captured body; a longer one is "
              f"cut and marked truncated (default {DEFAULT_CAPTURE_MAX_BYTES}).")
@click.option("--console-idle-timeout", envvar="AIGW_CONSOLE_IDLE_TIMEOUT", type=Duration(), default="30m",
              show_default=True, callback=lambda ctx, param, value: _positive(value, param),
              help="A web console session unused for this long must sign in again.")
@click.option("--console-secure-cookie", envvar="AIGW_CONSOLE_SECURE_COOKIE", is_flag=True,
              help="Mark the web console's cookies Secure (sent over https only) although the admin listener speaks "
                   "plain http: for a TLS terminator (a load balancer, an Ingress) in front of it. Over https they "
                   "are Secure anyway.")
@click.option("--event-loop", envvar="AIGW_EVENT_LOOP", type=click.Choice(EVENT_LOOPS, case_sensitive=False),
              default="auto", show_default=True,
              help="The proxy's event loop: uvloop (libuv; more events relayed per CPU-second under load), asyncio "
                   "(Python's own), or auto: uvloop where it is installed.")
@ops_options
def run(listen: str, admin_listen: str, metrics_listen: str | None, metrics_token: str | None,
        metrics_token_file: Path | None, metrics_public: bool, data_dir: Path, config_file: Path | None,
        shutdown_grace: float, log_level: str, log_format: str, structured_logging: bool, trace: bool,
        trace_logs: bool, retention: str, redaction_mode: str | None, max_field_bytes: int | None,
        upstream_idle_timeout: float, upstream_connect_timeout: float, spool_max_mb: int, max_concurrency: int,
        rate_limit: float, capture_bodies: bool | None, capture_max_bytes: int | None, metrics_initiator_label: bool,
        circuit_breaker: BreakerConfig, workers: str | None, supervisor: bool | None, console_idle_timeout: float,
        console_secure_cookie: bool, event_loop: str) -> None:
    """Run the proxy."""
    from aigw_proxy.proxy.daemon import DaemonError, serve
    from aigw_proxy.proxy.workers import supervise
    from aigw_proxy.telemetry.log_setup import configure_logging

    os.umask(0o077)  # whatever the daemon writes (database, CA, spool) is private to its user
    configure_logging(log_level, log_format.lower())
    try:
        settings = Settings(
            listen=parse_hostport(listen, "--listen"),
            admin_listen=parse_hostport(admin_listen, "--admin-listen"),
            metrics_listen=parse_hostport(metrics_listen, "--metrics-listen") if metrics_listen else None,
            metrics_token=_metrics_token(metrics_token, metrics_token_file, metrics_public),
            metrics_public=metrics_public,
            data_dir=data_dir,
            config_file=config_file,
            shutdown_grace=shutdown_grace,
            file=load_file_config(config_file),
            structured_logging=structured_logging,
            trace=trace,
            trace_logs=trace_logs,
            metrics_initiator_label=metrics_initiator_label,
            circuit_breaker=circuit_breaker,
            retention=retention_window(retention),
            redaction_mode=redaction_mode.lower() if redaction_mode else None,
            max_field_bytes=max_field_bytes,
            upstream_idle_timeout=upstream_idle_timeout,
            upstream_connect_timeout=upstream_connect_timeout,
            spool_max_bytes=spool_max_mb * 1024 * 1024,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            workers=parse_workers(workers) if workers is not None else None,
            supervisor=supervisor,
            console_idle_timeout=console_idle_timeout,
            console_secure_cookie=console_secure_cookie,
            event_loop=event_loop.lower(),
            **database_settings(),
            capture_bodies=capture_bodies,
            capture_max_bytes=capture_max_bytes,
        )
        settings.database  # noqa: B018 - an invalid --database-url fails here, before anything starts
        if not settings.supervised:
            run_loop(serve(settings), settings.event_loop)
        else:
            sys.exit(run_loop(supervise(settings, settings.worker_count, log_level=log_level,
                                        log_format=log_format.lower()), settings.event_loop))
    except (ConfigError, DaemonError, EventLoopError) as exc:
        fail(str(exc))


def _positive(seconds: float, param: click.Parameter) -> float:
    if seconds <= 0:
        raise click.BadParameter("must be longer than 0", param=param)
    return seconds


def _metrics_token(token: str | None, path: Path | None, public: bool) -> str | None:
    if token is not None and path is not None:
        raise click.UsageError("--metrics-token and --metrics-token-file: give one")
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--metrics-token-file") from None
        if not token:
            raise click.BadParameter(f"{path} is empty", param_hint="--metrics-token-file")
    elif token is not None:
        token = token.strip()
        if not token:
            raise click.BadParameter("the token is empty", param_hint="--metrics-token")
    if token is not None and public:
        raise click.UsageError("--metrics-public serves /metrics without a token: give it or a token, not both")
    return token


def retention_window(value: str) -> timedelta | None:
    from aigw_proxy.storage import parse_retention

    try:
        return parse_retention(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
