"""`aigw-proxy budgets …`: daily and monthly spend limits per user, per group and by default (docs/spend.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aigw_proxy.cli.common import fail, print_json, storage_call, storage_options
from aigw_proxy.cli.main import main

SCOPE_HELP = "SCOPE is default, user:NAME or group:NAME."


def _scope(value: str) -> Any:
    from aigw_proxy.spend.budgets import BudgetError, Scope

    try:
        return Scope.parse(value)
    except BudgetError as exc:
        raise click.BadParameter(str(exc), param_hint="SCOPE") from None


@main.group()
def budgets() -> None:
    """Manage spend budgets. Budgets set here are stored in the database (every replica enforces them within
    seconds) and replace a config file [[budgets]] entry of the same scope."""


@budgets.command("set")
@click.argument("scope")
@click.option("--daily", help="Daily limit in USD (UTC day).")
@click.option("--monthly", help="Monthly limit in USD (UTC calendar month).")
@click.option("--soft-fraction", type=float, default=None,
              help="Soft limit (alert only) as a fraction of the hard limit.  [default: 0.8]")
@storage_options
def budgets_set(scope: str, daily: str | None, monthly: str | None, soft_fraction: float | None,
                data_dir: Path) -> None:
    """Set the budget of SCOPE (replacing its earlier one); prints it as JSON. """ + SCOPE_HELP
    from aigw_proxy.spend.budgets import Budget, BudgetError
    from aigw_proxy.storage import ControlsStore

    try:
        budget = Budget.build(_scope(scope), daily=daily, monthly=monthly, soft_fraction=soft_fraction,
                              source="database")
    except BudgetError as exc:
        fail(str(exc))
    print_json(storage_call(data_dir, lambda db: ControlsStore(db).set_budget(budget)).to_json())


@budgets.command("list")
@click.option("--config", "config_file", envvar="AIGW_CONFIG", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also show the config file's [[budgets]] (those the database does not replace).")
@storage_options
def budgets_list(config_file: Path | None, data_dir: Path) -> None:
    """List budgets as JSON (source: database or config)."""
    from aigw_proxy.config.settings import ConfigError, load_file_config
    from aigw_proxy.storage import ControlsStore

    try:
        from_file = load_file_config(config_file).budgets if config_file is not None else ()
    except ConfigError as exc:
        fail(str(exc))
    stored = storage_call(data_dir, lambda db: ControlsStore(db).list_budgets())
    replaced = {b.scope for b in stored}
    print_json([b.to_json() for b in (*(b for b in from_file if b.scope not in replaced), *stored)])


@budgets.command("clear")
@click.argument("scope")
@storage_options
def budgets_clear(scope: str, data_dir: Path) -> None:
    """Delete the database budget of SCOPE (a config file budget of that scope applies again). """ + SCOPE_HELP
    from aigw_proxy.storage import ControlsStore

    sc = _scope(scope)
    cleared = storage_call(data_dir, lambda db: ControlsStore(db).clear_budget(sc))
    click.echo(f"cleared the budget of {sc}" if cleared else f"{sc} has no budget in the database", err=True)
