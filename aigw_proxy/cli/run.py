"""`aigw-proxy run`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, fail, run_async
from aigw_proxy.cli.main import main
from aigw_proxy.config import ConfigError, Settings, load_file_config, parse_hostport


@main.command()
@click.option("--listen", envvar="AIGW_LISTEN", default="127.0.0.1:8888", show_default=True,
              help="Proxy listen address HOST:PORT.")
@click.option("--admin-listen", envvar="AIGW_ADMIN_LISTEN", default="127.0.0.1:8889", show_default=True,
              help="Admin listener (/healthz) HOST:PORT.")
@data_dir_option
@click.option("--config", "config_file", envvar="AIGW_CONFIG", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="TOML config file (providers, ports, private CIDRs, upstream CAs).")
@click.option("--shutdown-grace", envvar="AIGW_SHUTDOWN_GRACE", type=click.FloatRange(0, 3600), default=10.0,
              show_default=True, help="Seconds in-flight streams get to finish on SIGTERM/SIGINT.")
@click.option("--log-level", envvar="AIGW_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def run(listen: str, admin_listen: str, data_dir: Path, config_file: Path | None, shutdown_grace: float,
        log_level: str) -> None:
    """Run the proxy."""
    from aigw_proxy.daemon import DaemonError, serve

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mitmproxy").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        settings = Settings(
            listen=parse_hostport(listen, "--listen"),
            admin_listen=parse_hostport(admin_listen, "--admin-listen"),
            data_dir=data_dir,
            config_file=config_file,
            shutdown_grace=shutdown_grace,
            file=load_file_config(config_file),
        )
        run_async(serve(settings))
    except (ConfigError, DaemonError) as exc:
        fail(str(exc))


