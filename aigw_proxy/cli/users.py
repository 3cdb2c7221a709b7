"""`aigw-proxy users …`."""

from __future__ import annotations

from pathlib import Path

import click

from aigw_proxy.cli.common import print_json, storage_call, storage_options
from aigw_proxy.cli.main import main


@main.group()
def users() -> None:
    """Manage proxy users and their tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True)
@storage_options
def users_add(name: str, role: str, data_dir: Path) -> None:
    """Create a user; prints only the new token (shown once)."""
    from aigw_proxy.storage import UserStore

    _user, token = storage_call(data_dir, lambda db: UserStore(db).create_user(name, role))
    click.echo(token)


@users.command("token")
@click.argument("user")
@storage_options
def users_token(user: str, data_dir: Path) -> None:
    """Issue another token for USER (name or id); prints only the token."""
    from aigw_proxy.storage import UserStore

    _token_id, token = storage_call(data_dir, lambda db: UserStore(db).create_token(user))
    click.echo(token)


@users.command("list")
@storage_options
def users_list(data_dir: Path) -> None:
    """List users and their tokens (ids and hints only) as JSON."""
    from aigw_proxy.storage import UserStore

    print_json(storage_call(data_dir, lambda db: UserStore(db).list_users()))


@users.command("revoke")
@click.argument("user", required=False)
@click.option("--token-id", help="Revoke only this token.")
@storage_options
def users_revoke(user: str | None, token_id: str | None, data_dir: Path) -> None:
    """Revoke all tokens of USER, or one token with --token-id. Takes effect for new tunnels at once."""
    from aigw_proxy.storage import UserStore

    if bool(user) == bool(token_id):
        raise click.UsageError("give either USER or --token-id")
    if token_id:
        storage_call(data_dir, lambda db: UserStore(db).revoke_token(token_id))
        click.echo(f"revoked token {token_id}", err=True)
    else:
        name = str(user)
        n = storage_call(data_dir, lambda db: UserStore(db).revoke_user_tokens(name))
        click.echo(f"revoked {n} token(s) of {user}", err=True)


