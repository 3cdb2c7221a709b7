"""`aigw-proxy ca …`."""

from __future__ import annotations

from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, fail
from aigw_proxy.cli.main import main
from aigw_proxy.config.settings import Settings


@main.group()
def ca() -> None:
    """Manage the CA that signs the certificates clients see for provider hosts."""


@ca.command("init")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate (an intermediate may be followed by its chain).")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of that certificate.")
@data_dir_option
def ca_init(cert_file: Path, key_file: Path, data_dir: Path) -> None:
    """Import an operator's CA (replaces the current one; restart the proxy to use it)."""
    from aigw_proxy.proxy.ca import CAError, import_ca

    try:
        info = import_ca(Settings(data_dir=data_dir).confdir, cert_file, key_file)
    except CAError as exc:
        fail(str(exc))
    click.echo(f"imported CA {info.subject} (sha256 {info.fingerprint_sha256}); restart the proxy to use it",
               err=True)


@ca.command("export")
@data_dir_option
def ca_export(data_dir: Path) -> None:
    """Print the CA certificate (PEM) for clients to trust; creates the CA if there is none."""
    from aigw_proxy.proxy.ca import CAError, export_ca_pem

    try:
        click.echo(export_ca_pem(Settings(data_dir=data_dir).confdir), nl=False)
    except CAError as exc:
        fail(str(exc))


