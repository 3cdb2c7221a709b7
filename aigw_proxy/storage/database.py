"""Opening the database: the embedded SQLite file in the data directory, or a PostgreSQL server
(`--database-url postgresql://…`). Either way a writer and a reader engine; what differs between the dialects is
in storage/dialects/.

PostgreSQL: two small asyncpg pools through SQLAlchemy's async engine, with a statement timeout; several
processes and hosts may share the database (migrations and periodic jobs take advisory locks). The password of a
database URL is never shown: `DatabaseConfig.display` and `DatabaseConfig.mask()` replace it, and every error
raised here goes through them.

SQLite: a writer engine (one connection, BEGIN IMMEDIATE) and a reader engine. Every connection opens the file
with `mode=rw`: only `open_database` creates it. A connection made after the file was deleted fails instead of
silently starting an empty database at the path.

The file under a running proxy: `Database.file_problem()` tells whether the path still names the file that was
opened (device and inode); the record writer checks it and, when the file was deleted or replaced, calls
`reopen()`: a deleted file is first restored from the still-open handle (nothing is lost), then every engine this
process has on the path lets go of the old file and the new one is opened and migrated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aigw_proxy.storage.dialects import Backend, backend_for, backend_of
from aigw_proxy.storage.dialects.sqlite import READ_ONLY, driver_connection
from aigw_proxy.storage.errors import StorageError
from aigw_proxy.storage.jsoncodec import json_dumps, json_loads
from aigw_proxy.storage.schema.migrations import migrate

__all__ = ["Database", "DatabaseConfig", "json_dumps", "json_loads", "open_database"]

log = logging.getLogger("aigw_proxy.storage")

DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_POOL_SIZE = 5
DEFAULT_STATEMENT_TIMEOUT = 60.0  # seconds (PostgreSQL); 0 = none
FileIdentity = tuple[int, int]  # (st_dev, st_ino)
_json_dumps = json_dumps

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where the records live and how to connect: a SQLite `path`, or a PostgreSQL `url`."""

    path: Path | None = None
    url: str | None = field(default=None, repr=False)  # never printed: see `display`
    pool_size: int = DEFAULT_POOL_SIZE  # connections the reader engine keeps (PostgreSQL; SQLite uses 4)
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT  # seconds a statement may run (PostgreSQL); 0 = no limit
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS  # how long SQLite waits for another process's write lock

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("a database is either a SQLite path or a PostgreSQL URL")
        if self.pool_size < 1:
            raise ValueError("the database pool size must be at least 1")
        if self.statement_timeout < 0:
            raise ValueError("the statement timeout must not be negative")

    @classmethod
    def of(cls, target: str | Path | DatabaseConfig, **options: Any) -> DatabaseConfig:
        """A config from a path, a `postgresql://` (or `sqlite:///path`) URL, or a config (options override)."""
        if isinstance(target, DatabaseConfig):
            return replace(target, **options) if options else target
        text = str(target)
        if isinstance(target, str) and "://" in text:
            scheme = text.split("://", 1)[0].lower()
            if scheme in _POSTGRES_SCHEMES:
                return cls(url=text, **options)
            if scheme in ("sqlite", "sqlite+aiosqlite"):
                path = text.split("://", 1)[1]
                if not path.startswith("/") or path == "/":
                    raise ValueError("a sqlite URL names a file: sqlite:////absolute/path.db or sqlite:///rel.db")
                return cls(path=Path(path[1:]), **options)
            raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql://user:password@host/db")
        return cls(path=Path(target), **options)

    @property
    def backend_name(self) -> str:
        return "sqlite" if self.url is None else "postgresql"

    @property
    def backend(self) -> Backend:
        return backend_for(self.backend_name)

    @property
    def is_postgresql(self) -> bool:
        return self.url is not None

    def sqlalchemy_url(self) -> sa.URL:
        """The URL for SQLAlchemy's async engine (`postgresql+asyncpg://…` or `sqlite+aiosqlite:///…`)."""
        if self.url is None:
            assert self.path is not None
            # mode=rw: never create the file (open_database does, once); uri=true: SQLAlchemy passes the URI on.
            return sa.URL.create("sqlite+aiosqlite", database=_uri(self.path), query={"mode": "rw", "uri": "true"})
        try:
            url = sa.make_url(self.url)
        except sa.exc.ArgumentError:
            raise StorageError(f"invalid database URL {self.display}") from None
        return url.set(drivername="postgresql+asyncpg")

    def _passwords(self) -> list[str]:
        """The password as SQLAlchemy reads the URL, and as written (all between `user:` and the last `@` of the
        URL's authority: a password with an unquoted `@` or `/` is still hidden whole), longest first."""
        if self.url is None:
            return []
        found: set[str] = set()
        authority = self.url.split("://", 1)[-1].split("?", 1)[0]
        if "@" in authority:
            creds = authority.rsplit("@", 1)[0]
            if ":" in creds:
                found.add(creds.split(":", 1)[1])
        try:
            parsed = sa.make_url(self.url).password
        except (sa.exc.ArgumentError, ValueError):
            parsed = None
        if parsed:
            found |= {str(parsed), quote(str(parsed), safe=""), quote_plus(str(parsed))}
        return sorted((p for p in found if p), key=len, reverse=True)

    @property
    def display(self) -> str:
        """The database as shown in logs and errors: the file's path, or the URL with its password masked."""
        if self.url is None:
            return str(self.path)
        return self.mask(self.url)

    def mask(self, text: str) -> str:
        """`text` with this database's password (as given, as parsed, URL-quoted) replaced by `***`."""
        for password in self._passwords():
            text = text.replace(password, "***")
        return text


@dataclass(frozen=True, slots=True)
class Reopened:
    what: str  # what was done, for a log line
    same_contents: bool  # the file at the path now holds what the one let go of did (restored from its handle)


class Database:
    """A writer and a reader engine on one database.

    SQLite: `writer` is a single pooled connection, every transaction BEGIN IMMEDIATE, so writes in this process
    are serialized and wait for other processes through busy_timeout; `reader` a small pool of connections with
    deferred transactions; in WAL mode they read a consistent snapshot and never block or wait for the writer.
    PostgreSQL: two small pools (storage/dialects/postgresql.py). `path` is the SQLite file (None on PostgreSQL).
    """

    def __init__(self, config: DatabaseConfig, writer: AsyncEngine, reader: AsyncEngine,
                 guard: FileGuard | None = None) -> None:
        self.config = config
        self.backend: Backend = config.backend
        self.state: dict[str, Any] = {}  # the backend's per-database caches (e.g. the partitions known to exist)
        self.path: Path | None = config.path
        self.writer = writer
        self.reader = reader
        self.busy_timeout_ms = config.busy_timeout_ms
        self.guard = guard or (FileGuard(config.path) if config.path is not None else None)
        self._loop = asyncio.get_running_loop()  # the engines' connections belong to this loop
        _OPEN.add(self)

    async def close(self) -> None:
        _OPEN.discard(self)
        for conn in self.state.pop("jobs", {}).values():  # a periodic job this process leads (PostgreSQL)
            with contextlib.suppress(Exception):
                await conn.close()
        await self.writer.dispose()
        await self.reader.dispose()

    @property
    def dialect(self) -> str:
        return self.backend.name

    @property
    def file_identity(self) -> FileIdentity | None:
        """The file opened (set by open_database and reopen); new connections are refused if the path names
        another one. None on PostgreSQL."""
        return self.guard.identity if self.guard is not None else None

    @file_identity.setter
    def file_identity(self, value: FileIdentity | None) -> None:
        if self.guard is not None:
            self.guard.identity = value

    def file_problem(self) -> str | None:
        """None while the path names the file that was opened; else "deleted" or "replaced" (SQLite)."""
        if self.file_identity is None or self.path is None:
            return None
        now = file_identity(self.path)
        if now is None:
            return "deleted"
        return None if now == self.file_identity else "replaced"

    async def reopen(self) -> Reopened:
        """Let go of a file that was deleted or replaced under this process and open what the path names now:
        a deleted file is restored first from the handle still open on it. Raises StorageError when the path
        cannot be opened (retry later)."""
        problem = self.file_problem()
        assert self.path is not None, "only a SQLite file is reopened"
        restored: Path | None = None
        if problem == "deleted":
            restored = await self._copy_open_handle()
        held = _sidecars_held(self.path)
        await _release_everywhere(self.path)
        _remove_stale_sidecars(self.path, held)
        done = Reopened("opened the file now at that path", same_contents=False)
        if restored is not None:
            done = await asyncio.to_thread(_put_back, restored, self.path)
        elif problem == "deleted":  # nothing could be copied: start an empty database rather than stop
            await asyncio.to_thread(_prepare_path, self.path)
            done = Reopened("started an empty database in its place", same_contents=False)
        # From here on new connections to the path are allowed again (the old file's are all closed), in every
        # engine of this process on it.
        identity = file_identity(self.path)
        for other in list(_OPEN):
            if other.path == self.path:
                other.file_identity = identity
        self.file_identity = identity
        try:
            await _first_connection(self.writer)
            await migrate(self.writer)
        except sa.exc.DBAPIError as exc:
            raise StorageError(open_error(self.path, exc)) from exc
        return done

    async def _copy_open_handle(self) -> Path | None:
        """Copy the database through the writer's open connection (the deleted file) to a file beside the path;
        None if that connection is gone."""
        if not self.writer_connected() or self.path is None:  # a new connection would not reach the deleted file
            return None
        tmp = self.path.with_name(f".{self.path.name}.restore-{os.getpid()}")
        await asyncio.to_thread(_unlink, tmp)
        await asyncio.to_thread(_prepare_path, tmp)  # made private (0600) before SQLite writes to it
        try:
            async with self.writer.connect() as conn:
                await conn.execution_options(**READ_ONLY)
                driver = await driver_connection(conn)
                target = await asyncio.to_thread(sqlite3.connect, tmp, check_same_thread=False)
                try:
                    await driver.backup(target)
                finally:
                    await asyncio.to_thread(target.close)
        except Exception as exc:
            log.error("could not copy the deleted database %s from its open handle: %s", self.path, exc)
            await asyncio.to_thread(_unlink, tmp)
            return None
        return tmp

    def writer_connected(self) -> bool:
        """The writer engine holds an idle connection (opened before any change to the file at the path)."""
        pool = self.writer.sync_engine.pool
        return isinstance(pool, sa.pool.QueuePool) and pool.checkedin() > 0

    async def release(self) -> None:
        """Close every pooled connection (the engines stay usable and reconnect to the path when next used)."""
        await self.writer.dispose()
        await self.reader.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Database({self.config.display!r})"


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()  # every open Database of this process, whatever its loop


def file_identity(path: Path) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


async def _release_everywhere(path: Path, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Close the pooled connections of every Database of this process on `path`, each on its own loop, so no
    connection to the old file outlives the switch: SQLite names the -wal and -shm files after the path, and a
    connection to the old file closing later would delete the new file's."""
    here = asyncio.get_running_loop()
    for db in list(_OPEN):
        if db.path != path:
            continue
        if db._loop is here:
            await db.release()
        elif db._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(db.release(), db._loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), timeout)
            except Exception as exc:
                log.warning("could not close %r's connections to the old file: %s", db, exc)


def _sidecar_paths(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def _sidecars_held(path: Path) -> set[FileIdentity]:
    """Identities of the -wal/-shm files at `path` that this process has open (Linux: /proc/self/fd)."""
    names = {str(p) for p in _sidecar_paths(path)}
    held: set[FileIdentity] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return held
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)") in names:
                st = os.stat(f"/proc/self/fd/{fd}")
                held.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    return held


def _remove_stale_sidecars(path: Path, held: set[FileIdentity]) -> None:
    """Remove the -wal/-shm files this process had open on the old file, should closing them have left them:
    the new file must not be opened with the old one's write-ahead log."""
    for sidecar in _sidecar_paths(path):
        if file_identity(sidecar) in held:
            log.warning("removing %s, left by the database file that was replaced", sidecar)
            _unlink(sidecar)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _put_back(restored: Path, path: Path) -> Reopened:
    """Move the copy of a deleted database to its path, unless something has taken the path meanwhile."""
    try:
        os.link(restored, path)
    except FileExistsError:
        if os.stat(path).st_size == 0:  # an empty file some connection made: nothing in it to keep
            os.replace(restored, path)
            return Reopened("restored it from the handle still open on it", same_contents=True)
        kept = path.with_name(f"{path.name}.recovered-{int(time.time())}")
        os.replace(restored, kept)
        return Reopened(f"found a new file in its place; the deleted database's contents are kept in {kept}",
                        same_contents=False)
    os.unlink(restored)
    return Reopened("restored it from the handle still open on it", same_contents=True)


def _uri(path: Path) -> str:
    return "file:" + quote(str(path))


class FileGuard:
    """Refuses new connections to a database path once it names another file than the one opened (deleted or
    replaced): a connection to the new file opened while the old one's -wal and -shm files are still there would
    read the old file's write-ahead log as the new file's, and a checkpoint would write it into it. The record
    writer reopens the path (closing every connection to the old file first) and the guard lets them through."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: FileIdentity | None = None  # None: not opened yet, nothing to compare with

    def check(self) -> None:
        if self.identity is None:
            return
        now = file_identity(self.path)
        if now != self.identity:
            what = "deleted" if now is None else "replaced"
            raise sqlite3.OperationalError(f"unable to open database file: {self.path} was {what} since it was "
                                           "opened (the record writer reopens it)")


def _prepare_path(path: str | Path, *, create: bool = True) -> Path:
    """The absolute path, its directory made (0700) and (with `create`) the file made or kept private (0600),
    whatever the umask: SQLite gives the -wal and -shm files the database file's mode."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        raise ValueError("aigw-proxy needs a database file (the writer and readers use separate connections)")
    resolved = Path(path).expanduser().absolute()
    try:
        if not resolved.parent.is_dir():
            resolved.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            resolved.parent.chmod(0o700)
    except OSError as exc:
        raise StorageError(f"cannot create the database directory {resolved.parent}: {exc.strerror}") from exc
    if create:
        try:
            os.close(os.open(resolved, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # another process made it first
        except OSError as exc:
            raise StorageError(f"cannot create the database {resolved}: {exc.strerror}") from exc
    for file in (resolved, resolved.with_name(resolved.name + "-wal"), resolved.with_name(resolved.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except OSError:  # not there (yet), or not ours to change
            pass
    return resolved


def open_error(path: Path, exc: sa.exc.DBAPIError) -> str:
    """One line saying why the database at `path` cannot be used, for a person."""
    orig = exc.orig
    text = str(orig)
    if isinstance(orig, sqlite3.DatabaseError) and "file is not a database" in text:
        return (f"cannot open the database {path}: the file is not a SQLite database (damaged, or another file "
                f"at that path); move it away to start a new one, or restore a backup")
    if "malformed" in text or "corrupt" in text:
        return (f"cannot open the database {path}: it is damaged ({text}); `aigw-proxy db check` lists the "
                "damage; restore a backup or move it away to start a new one")
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        for target, need in ((path, os.R_OK | os.W_OK), (path.parent, os.W_OK | os.X_OK)):
            if target.exists() and not os.access(target, need):
                st = target.stat()
                return (f"cannot open the database {path}: permission denied on {target} (owner uid {st.st_uid}, "
                        f"mode {st.st_mode & 0o777:o}; aigw-proxy runs as uid {os.geteuid()}): it needs to read "
                        "and write the file and to create files beside it")
        if not path.exists():
            return f"cannot open the database {path}: the file does not exist"
    return f"cannot open the database {path}: {text}"


async def _first_connection(engine: AsyncEngine, *, give_up_after: float | None = None) -> None:
    """Connect once, retrying while another process is creating the file or switching it to WAL (SQLite, up to
    30 s), or while the server is starting, restarting or full (PostgreSQL, up to 10 s)."""
    if give_up_after is None:
        give_up_after = 30.0 if engine.dialect.name == "sqlite" else 10.0
    deadline = time.monotonic() + give_up_after
    delay = 0.01
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execution_options(**backend_of(engine).read_only)
                await conn.exec_driver_sql("SELECT 1")
            return
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
            if not backend_of(engine).is_busy_error(exc) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc) or type(exc).__name__


async def open_database(
    target: str | Path | DatabaseConfig,
    *,
    busy_timeout_ms: int | None = None,
    migrate_schema: bool = True,
    pool_size: int | None = None,
    statement_timeout: float | None = None,
) -> Database:
    """Open and migrate the database `target`: a SQLite file (created with its directory if needed), a
    `postgresql://` URL, or a `DatabaseConfig`."""
    options: dict[str, Any] = {}
    if busy_timeout_ms is not None:
        options["busy_timeout_ms"] = busy_timeout_ms
    if pool_size is not None:
        options["pool_size"] = pool_size
    if statement_timeout is not None:
        options["statement_timeout"] = statement_timeout
    try:
        config = DatabaseConfig.of(target, **options)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    guard = None
    if config.path is not None:
        path = await asyncio.to_thread(_prepare_path, config.path)
        config = replace(config, path=path)
        guard = FileGuard(path)
    engines = config.backend.engines(config, guard=guard)
    db = Database(config, engines.writer, engines.reader, guard)
    try:
        await _first_connection(db.writer)
        if config.path is not None:
            db.file_identity = file_identity(config.path)
        if migrate_schema:
            await migrate(db.writer)
    except StorageError as exc:
        await db.close()
        raise type(exc)(config.mask(str(exc))) from None
    except sa.exc.DBAPIError as exc:
        await db.close()
        if config.path is not None:
            raise StorageError(open_error(config.path, exc)) from exc
        raise StorageError(f"cannot open the database {config.display}: {config.mask(_reason(exc))}") from None
    except (sa.exc.InterfaceError, OSError) as exc:
        await db.close()
        raise StorageError(f"cannot open the database {config.display}: {config.mask(_reason(exc))}") from None
    except BaseException:
        await db.close()
        raise
    return db


async def open_like(db: Database) -> Database:
    """Another Database on what `db` opened, with its engines on the running loop (the record writer's thread)."""
    return await open_database(db.config, migrate_schema=False)
