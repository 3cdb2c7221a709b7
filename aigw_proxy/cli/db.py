"""`aigw-proxy db`: the database itself (check, backup: the SQLite file; migrate-to: copy it into PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aigw_proxy.cli.common import data_dir_option, fail, run_async
from aigw_proxy.cli.main import main
from aigw_proxy.config.settings import Settings


@main.group()
def db() -> None:
    """Check, back up or copy the database (safe while the proxy runs). check and backup work on the SQLite file;
    on PostgreSQL use the server's own tools (amcheck, pg_dump)."""


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


@db.command("migrate-to")
@data_dir_option
@click.argument("url", envvar="AIGW_DATABASE_URL", metavar="POSTGRESQL_URL")
@click.option("--from", "source", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The SQLite file to copy (default: the data directory's).")
@click.option("--chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Interceptions (with their child rows) copied per transaction.")
def migrate_to(data_dir: Path, url: str, source: Path | None, chunk: int) -> None:
    """Copy the SQLite database (users, tokens, every record) into PostgreSQL at POSTGRESQL_URL (or
    $AIGW_DATABASE_URL, which keeps the password off the command line), then rebuild the summaries there and
    print each table's rows on both sides.

    Resumable: run it again after an interruption and it continues (what is there already is skipped). Safe
    while the proxy records into the SQLite file; what it records after a copy is copied by the next run. Exit
    status 1 if the target lacks rows the source has."""
    from aigw_proxy.storage import DatabaseConfig, StorageError, open_database
    from aigw_proxy.storage.transfer import transfer

    path = source or Settings(data_dir=data_dir).database_path
    if not path.is_file():
        fail(f"no SQLite database at {path}")
    try:
        config = DatabaseConfig.of(url)
    except ValueError as exc:
        fail(str(exc))
    if not config.is_postgresql:
        fail("migrate-to copies into PostgreSQL: give a postgresql://user:password@host/db URL")

    async def go() -> object:
        src = await open_database(path)  # brought to this release's schema first
        await src.close()
        target = await open_database(config, statement_timeout=0)
        try:
            return await transfer(path, target, chunk=chunk, progress=lambda line: click.echo(line, err=True))
        finally:
            await target.close()

    click.echo(f"copying {path} into {config.display}", err=True)
    try:
        report = run_async(go())
    except StorageError as exc:
        fail(config.mask(str(exc)))
    from aigw_proxy.storage.transfer import TransferReport

    assert isinstance(report, TransferReport)
    click.echo(f"{'table':<28} {'sqlite':>10} {'postgresql':>11} {'copied now':>11}")
    for table, (src_n, dst_n) in report.counts.items():
        mark = "" if dst_n >= src_n else "  MISSING ROWS"
        click.echo(f"{table:<28} {src_n:>10} {dst_n:>11} {report.copied.get(table, 0):>11}{mark}")
    for table, (src_n, dst_n) in report.summaries.items():
        click.echo(f"{table + ' (rebuilt)':<28} {src_n:>10} {dst_n:>11}")
    if report.skipped_users:
        click.echo(f"users not copied (their username belongs to another user there): "
                   f"{', '.join(report.skipped_users)}", err=True)
    click.echo(f"done in {report.seconds:.1f} s: {'complete' if report.complete else 'INCOMPLETE'}")
    if not report.complete:
        sys.exit(1)
