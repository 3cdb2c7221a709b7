"""Checking and backing up the SQLite database file (`aigw-proxy db check`, `aigw-proxy db backup`).

Both open the file with the plain sqlite3 driver, in their own process, and only read it: they never block the
proxy (in WAL mode a reader neither waits for the writer nor holds it up) and never migrate or repair anything.

* check: `PRAGMA integrity_check` (every page, index and constraint; `quick_check` skips matching indexes to
  their tables: faster on a large file) and `PRAGMA foreign_key_check`;
* backup: `VACUUM INTO` a new file beside the target, one consistent snapshot taken while the proxy keeps
  writing, compacted, made private (0600), fsynced, moved into place only once complete and checked, so a
  backup file at the target name is always a whole, verified database.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from aigw_proxy.fsutil import fsync_dir
from aigw_proxy.storage.errors import StorageError

MAX_REPORTED = 100  # problems listed at most


@dataclass(slots=True)
class CheckResult:
    path: Path
    problems: list[str] = field(default_factory=list)
    schema_version: int | None = None
    pages: int = 0
    page_size: int = 0
    check: str = "integrity_check"

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class BackupResult:
    source: Path
    target: Path
    bytes: int
    seconds: float
    check: CheckResult


def _connect(path: Path, mode: str = "ro") -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode={mode}", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def check_database(path: Path, *, quick: bool = False) -> CheckResult:
    """Check the database file at `path`; its problems are listed in the result (none: it is sound). Raises
    StorageError when there is no file to check."""
    if not path.is_file():
        raise StorageError(f"no database file at {path}")
    result = CheckResult(path, check="quick_check" if quick else "integrity_check")
    try:
        with closing(_connect(path)) as conn:
            rows = conn.execute(f"PRAGMA {result.check}({MAX_REPORTED})").fetchall()
            result.problems += [str(r[0]) for r in rows if r[0] != "ok"]
            for table, rowid, parent, _fk in conn.execute("PRAGMA foreign_key_check").fetchmany(MAX_REPORTED):
                result.problems.append(f"{table} row {rowid}: no {parent} row it refers to")
            result.pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            result.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            try:
                result.schema_version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            except sqlite3.DatabaseError:
                result.problems.append("no schema_migrations table: not an aigw-proxy database")
    except sqlite3.DatabaseError as exc:  # not a database, unreadable header, I/O error…
        result.problems.append(f"{type(exc).__name__}: {exc}")
    return result


def backup_database(source: Path, target: Path) -> BackupResult:
    """Write a consistent, checked copy of the database at `source` to `target` (which must not exist)."""
    if not source.is_file():
        raise StorageError(f"no database file at {source}")
    target = target.expanduser().absolute()
    if target.exists():
        raise StorageError(f"{target} exists: give a new file name (a backup never overwrites)")
    if not target.parent.is_dir():
        raise StorageError(f"no directory {target.parent} to write the backup to")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    began = time.monotonic()
    try:
        # VACUUM INTO takes an empty file: made first, so the copy is private whatever the umask.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        # A read-write connection that only reads: SQLite 3.40's VACUUM INTO from a read-only one miscopies
        # tables with generated columns ("has 22 columns but 23 values were supplied").
        with closing(_connect(source, "rw")) as conn:
            conn.execute("VACUUM INTO ?", (str(partial),))
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        check = check_database(partial)
        if not check.ok:
            raise StorageError(f"the backup failed its integrity check: {'; '.join(check.problems[:5])}")
        os.link(partial, target)  # fails rather than overwrite a file made meanwhile
        fsync_dir(target.parent)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot back up {source}: {exc}") from exc
    except FileExistsError:
        raise StorageError(f"{target} exists: give a new file name (a backup never overwrites)") from None
    except OSError as exc:
        raise StorageError(f"cannot write the backup {target}: {exc.strerror or exc}") from exc
    finally:
        try:
            partial.unlink()
        except FileNotFoundError:
            pass
    check.path = target
    return BackupResult(source, target, target.stat().st_size, time.monotonic() - began, check)
