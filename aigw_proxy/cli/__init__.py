"""`aigw-proxy` command line. Every flag also reads `AIGW_<FLAG>` from the environment."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from aigw_proxy.config import ConfigError, Settings, default_data_dir, load_file_config, parse_hostport


def _run_async[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def data_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        envvar="AIGW_DATA_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=default_data_dir,
        show_default="$XDG_DATA_HOME/aigw-proxy",
        help="Where the database and the CA live.",
    )(f)


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _fail(message: str) -> None:
    click.echo(f"aigw-proxy: error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigw-proxy")
def main() -> None:
    """MITM forward proxy that records AI coding-agent traffic: who sent what to which model, at what cost."""


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
        _run_async(serve(settings))
    except (ConfigError, DaemonError) as exc:
        _fail(str(exc))


# -- CA --------------------------------------------------------------------------------------------------------
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
    from aigw_proxy.ca import CAError, import_ca

    try:
        info = import_ca(Settings(data_dir=data_dir).confdir, cert_file, key_file)
    except CAError as exc:
        _fail(str(exc))
    click.echo(f"imported CA {info.subject} (sha256 {info.fingerprint_sha256}); restart the proxy to use it",
               err=True)


@ca.command("export")
@data_dir_option
def ca_export(data_dir: Path) -> None:
    """Print the CA certificate (PEM) for clients to trust; creates the CA if there is none."""
    from aigw_proxy.ca import CAError, export_ca_pem

    try:
        click.echo(export_ca_pem(Settings(data_dir=data_dir).confdir), nl=False)
    except CAError as exc:
        _fail(str(exc))


# -- users -----------------------------------------------------------------------------------------------------
async def _with_db[T](data_dir: Path, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from aigw_proxy.storage import open_database

    db = await open_database(Settings(data_dir=data_dir).database_path)
    try:
        return await fn(db)
    finally:
        await db.close()


def _storage_call[T](data_dir: Path, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from aigw_proxy.storage import StorageError

    try:
        return _run_async(_with_db(data_dir, fn))
    except StorageError as exc:
        _fail(str(exc))
        raise AssertionError from None  # unreachable: _fail exits


@main.group()
def users() -> None:
    """Manage proxy users and their tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True)
@data_dir_option
def users_add(name: str, role: str, data_dir: Path) -> None:
    """Create a user; prints only the new token (shown once)."""
    from aigw_proxy.storage import UserStore

    _user, token = _storage_call(data_dir, lambda db: UserStore(db).create_user(name, role))
    click.echo(token)


@users.command("token")
@click.argument("user")
@data_dir_option
def users_token(user: str, data_dir: Path) -> None:
    """Issue another token for USER (name or id); prints only the token."""
    from aigw_proxy.storage import UserStore

    _token_id, token = _storage_call(data_dir, lambda db: UserStore(db).create_token(user))
    click.echo(token)


@users.command("list")
@data_dir_option
def users_list(data_dir: Path) -> None:
    """List users and their tokens (ids and hints only) as JSON."""
    from aigw_proxy.storage import UserStore

    _print_json(_storage_call(data_dir, lambda db: UserStore(db).list_users()))


@users.command("revoke")
@click.argument("user", required=False)
@click.option("--token-id", help="Revoke only this token.")
@data_dir_option
def users_revoke(user: str | None, token_id: str | None, data_dir: Path) -> None:
    """Revoke all tokens of USER, or one token with --token-id. Takes effect for new tunnels at once."""
    from aigw_proxy.storage import UserStore

    if bool(user) == bool(token_id):
        raise click.UsageError("give either USER or --token-id")
    if token_id:
        _storage_call(data_dir, lambda db: UserStore(db).revoke_token(token_id))
        click.echo(f"revoked token {token_id}", err=True)
    else:
        n = _storage_call(data_dir, lambda db: UserStore(db).revoke_user_tokens(user))
        click.echo(f"revoked {n} token(s) of {user}", err=True)


# -- interceptions ---------------------------------------------------------------------------------------------
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
    _print_json(_storage_call(data_dir, lambda db: list_interceptions(db, flt, limit=limit, after_id=after_id)))


if __name__ == "__main__":
    main()
