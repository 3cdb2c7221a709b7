"""`aigw-proxy run`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, fail, run_async
from aigw_proxy.cli.main import main
from aigw_proxy.cli.ops_options import ops_options
from aigw_proxy.config.settings import ConfigError, Settings, load_file_config, parse_hostport
from aigw_proxy.policy.circuit import BreakerConfig


@main.command()
@click.option("--listen", envvar="AIGW_LISTEN", default="127.0.0.1:8888", show_default=True,
              help="Proxy listen address HOST:PORT.")
@click.option("--admin-listen", envvar="AIGW_ADMIN_LISTEN", default="127.0.0.1:8889", show_default=True,
              help="Admin listener (/healthz, /metrics) HOST:PORT.")
@data_dir_option
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
@ops_options
def run(listen: str, admin_listen: str, data_dir: Path, config_file: Path | None, shutdown_grace: float,
        log_level: str, log_format: str, structured_logging: bool, trace: bool, trace_logs: bool,
        retention: str, metrics_initiator_label: bool, circuit_breaker: BreakerConfig) -> None:
    """Run the proxy."""
    from aigw_proxy.proxy.daemon import DaemonError, serve
    from aigw_proxy.telemetry.log_setup import configure_logging

    configure_logging(log_level, log_format.lower())
    try:
        settings = Settings(
            listen=parse_hostport(listen, "--listen"),
            admin_listen=parse_hostport(admin_listen, "--admin-listen"),
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
        )
        run_async(serve(settings))
    except (ConfigError, DaemonError) as exc:
        fail(str(exc))


def retention_window(value: str) -> timedelta | None:
    from aigw_proxy.storage import parse_retention

    try:
        return parse_retention(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retention") from None
