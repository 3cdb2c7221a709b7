"""`aigw-proxy db`: the database file itself (check, backup)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, fail
from aigw_proxy.cli.main import main
from aigw_proxy.config.settings import Settings


@main.group()
def db() -> None:
    """Check or back up the database (safe while the proxy runs)."""


def _database(data_dir: Path, file: Path | None) -> Path:
    return file if file is not None else Settings(data_dir=data_dir).database_path


@db.command()
@data_dir_option
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quick", is_flag=True, help="PRAGMA quick_check instead of the full integrity_check (faster on a "
              "large database: indexes are not matched against their tables).")
def check(data_dir: Path, file: Path | None, quick: bool) -> None:
    """Check the database (or FILE, e.g. a backup) for damage: exit 1 and list the problems if it has any."""
    from aigw_proxy.storage import StorageError
    from aigw_proxy.storage.maintenance import check_database

    path = _database(data_dir, file)
    try:
        result = check_database(path, quick=quick)
    except StorageError as exc:
        fail(str(exc))
    if not result.ok:
        click.echo(f"{path}: {len(result.problems)} problem(s) found by {result.check}:", err=True)
        for problem in result.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    size = result.pages * result.page_size
    click.echo(f"{path}: ok ({result.check}, {size / 1e6:.1f} MB, schema v{result.schema_version})")


@db.command()
@data_dir_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup(data_dir: Path, file: Path) -> None:
    """Write a consistent copy of the database to FILE (a new file), while the proxy keeps running.

    A snapshot taken with VACUUM INTO (compacted), private (0600), checked with integrity_check before it is put
    at FILE: a file at FILE is always a whole, sound database. Restore by stopping the proxy and moving it into
    place as `aigw-proxy.db` in the data directory."""
    from aigw_proxy.storage import StorageError
    from aigw_proxy.storage.maintenance import backup_database

    try:
        result = backup_database(_database(data_dir, None), file)
    except StorageError as exc:
        fail(str(exc))
    click.echo(f"backed up {result.source} to {result.target} ({result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s, "
               f"schema v{result.check.schema_version}, integrity_check ok)")
