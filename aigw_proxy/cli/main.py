"""The `aigw-proxy` command group."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigw-proxy")
def main() -> None:
    """MITM forward proxy that records AI coding-agent traffic: who sent what to which model, at what cost."""
