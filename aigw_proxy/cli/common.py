"""Helpers shared by the command modules."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import click

from aigw_proxy.config.settings import Settings, default_data_dir


def run_async[T](coro: Coroutine[Any, Any, T]) -> T:
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


_DB_KEY = "aigw.database"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_DB_KEY, {})[param.name] = value
    return value


def storage_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--data-dir` plus where the records are: `--database-url` (PostgreSQL; without it, the SQLite file in the
    data directory), its pool size and statement timeout. The command receives `data_dir`; `storage_call` and
    `database_settings()` read the rest."""
    f = click.option("--database-statement-timeout", envvar="AIGW_DATABASE_STATEMENT_TIMEOUT",
                     type=click.FloatRange(min=0), default=60.0, show_default=True, expose_value=False,
                     callback=_remember, help="Seconds a PostgreSQL statement may run; 0: no limit.")(f)
    f = click.option("--database-pool-size", envvar="AIGW_DATABASE_POOL_SIZE", type=click.IntRange(min=1),
                     default=5, show_default=True, expose_value=False, callback=_remember,
                     help="PostgreSQL connections kept per reader pool (plus as many on demand).")(f)
    f = click.option("--database-url", envvar="AIGW_DATABASE_URL", default=None, expose_value=False,
                     callback=_remember, show_envvar=True,
                     help="Keep the records in PostgreSQL: postgresql://user:password@host:5432/db (prefer the "
                          "variable: a command line is visible to every local user). Default: a SQLite file in "
                          "the data directory.")(f)
    return data_dir_option(f)


def database_settings() -> dict[str, Any]:
    """The Settings fields `storage_options` collected for the current command."""
    ctx = click.get_current_context()
    opts = ctx.meta.get(_DB_KEY, {})
    return {"database_url": opts.get("database_url") or None,
            "database_pool_size": opts.get("database_pool_size", 5),
            "database_statement_timeout": opts.get("database_statement_timeout", 60.0)}


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def fail(message: str) -> NoReturn:
    click.echo(f"aigw-proxy: error: {message}", err=True)
    sys.exit(1)


async def _with_db[T](settings: Settings, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from aigw_proxy.storage import open_database

    db = await open_database(settings.database)
    try:
        return await fn(db)
    finally:
        await db.close()


def storage_call[T](data_dir: Path, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Open the command's database (`storage_options`), run `fn(db)`, close it; storage errors become a clear
    exit, with the database password masked."""
    from aigw_proxy.config.settings import ConfigError
    from aigw_proxy.storage import StorageError

    try:
        settings = Settings(data_dir=data_dir, **database_settings())
        database = settings.database
        try:
            return run_async(_with_db(settings, fn))
        except StorageError as exc:
            fail(database.mask(str(exc)))
    except ConfigError as exc:
        fail(str(exc))
