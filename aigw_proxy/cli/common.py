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


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def fail(message: str) -> NoReturn:
    click.echo(f"aigw-proxy: error: {message}", err=True)
    sys.exit(1)


async def _with_db[T](data_dir: Path, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from aigw_proxy.storage import open_database

    db = await open_database(Settings(data_dir=data_dir).database_path)
    try:
        return await fn(db)
    finally:
        await db.close()


def storage_call[T](data_dir: Path, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Open the data dir's database, run `fn(db)`, close it; storage errors become a clear exit."""
    from aigw_proxy.storage import StorageError

    try:
        return run_async(_with_db(data_dir, fn))
    except StorageError as exc:
        fail(str(exc))
