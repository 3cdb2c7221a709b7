"""`aigw-proxy groups …`: groups of users, the unit group budgets apply to."""

from __future__ import annotations

from pathlib import Path

import click

from aigw_proxy.cli.common import print_json, storage_call, storage_options
from aigw_proxy.cli.main import main


@main.group()
def groups() -> None:
    """Manage groups of users (group budgets apply to them)."""


@groups.command("add")
@click.argument("name")
@storage_options
def groups_add(name: str, data_dir: Path) -> None:
    """Create group NAME; prints it as JSON."""
    from aigw_proxy.storage import ControlsStore

    print_json(storage_call(data_dir, lambda db: ControlsStore(db).create_group(name)))


@groups.command("list")
@storage_options
def groups_list(data_dir: Path) -> None:
    """List groups and their members as JSON."""
    from aigw_proxy.storage import ControlsStore

    print_json(storage_call(data_dir, lambda db: ControlsStore(db).list_groups()))


@groups.command("rename")
@click.argument("name")
@click.argument("new_name")
@storage_options
def groups_rename(name: str, new_name: str, data_dir: Path) -> None:
    """Rename group NAME (name or id) to NEW_NAME; its members, budget and charged calls stay."""
    from aigw_proxy.storage import ControlsStore

    print_json(storage_call(data_dir, lambda db: ControlsStore(db).rename_group(name, new_name)))


@groups.command("delete")
@click.argument("name")
@storage_options
def groups_delete(name: str, data_dir: Path) -> None:
    """Delete group NAME (name or id), its memberships and its budget. Calls already charged to it keep its id."""
    from aigw_proxy.storage import ControlsStore

    storage_call(data_dir, lambda db: ControlsStore(db).delete_group(name))
    click.echo(f"deleted group {name}", err=True)


@groups.command("add-user")
@click.argument("group")
@click.argument("user")
@storage_options
def groups_add_user(group: str, user: str, data_dir: Path) -> None:
    """Put USER (name or id) in GROUP."""
    from aigw_proxy.storage import ControlsStore

    added = storage_call(data_dir, lambda db: ControlsStore(db).add_member(group, user))
    click.echo(f"added {user} to {group}" if added else f"{user} is already in {group}", err=True)


@groups.command("remove-user")
@click.argument("group")
@click.argument("user")
@storage_options
def groups_remove_user(group: str, user: str, data_dir: Path) -> None:
    """Take USER (name or id) out of GROUP."""
    from aigw_proxy.storage import ControlsStore

    removed = storage_call(data_dir, lambda db: ControlsStore(db).remove_member(group, user))
    click.echo(f"removed {user} from {group}" if removed else f"{user} is not in {group}", err=True)
