"""`aigw-proxy interceptions …`: read the records."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, print_json, storage_call
from aigw_proxy.cli.main import main


def _rfc3339(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time", param_hint=flag) from None
    if dt.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a UTC offset (e.g. Z)", param_hint=flag)
    return dt


@main.group()
def interceptions() -> None:
    """Read recorded interceptions."""


@interceptions.command("list")
@click.option("--initiator", help="User name or id.")
@click.option("--provider", help="Provider type (anthropic, openai, copilot).")
@click.option("--provider-name", help="Provider name (e.g. chatgpt).")
@click.option("--model")
@click.option("--client", help="Client name, e.g. 'Claude Code'.")
@click.option("--started-after", help="RFC 3339 time.")
@click.option("--started-before", help="RFC 3339 time.")
@click.option("--after-id", help="Cursor: the id of the last result of the previous page.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@data_dir_option
def interceptions_list(initiator: str | None, provider: str | None, provider_name: str | None,
                       model: str | None, client: str | None, started_after: str | None,
                       started_before: str | None, after_id: str | None, limit: int, data_dir: Path) -> None:
    """Print ended interceptions as a JSON array, newest first."""
    from aigw_proxy.storage import InterceptionFilter, list_interceptions

    flt = InterceptionFilter(
        initiator=initiator, provider=provider, provider_name=provider_name, model=model, client=client,
        started_after=_rfc3339(started_after, "--started-after"),
        started_before=_rfc3339(started_before, "--started-before"),
    )
    print_json(storage_call(data_dir, lambda db: list_interceptions(db, flt, limit=limit, after_id=after_id)))


