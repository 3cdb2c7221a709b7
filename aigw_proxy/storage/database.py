"""Opening the SQLite database: a writer engine (one connection, BEGIN IMMEDIATE) and a reader engine.

Every connection opens the file with `mode=rw`: only `open_database` creates it. A connection made after the file
was deleted fails instead of silently starting an empty database at the path.

The file under a running proxy: `Database.file_problem()` tells whether the path still names the file that was
opened (device and inode); the record writer checks it and, when the file was deleted or replaced, calls
`reopen()`: a deleted file is first restored from the still-open handle (nothing is lost), then every engine this
process has on the path lets go of the old file and the new one is opened and migrated.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aigw_proxy.storage.dialect import READ_ONLY, configure_sqlite_engine, driver_connection, is_busy_error
from aigw_proxy.storage.errors import StorageError
from aigw_proxy.storage.schema.migrations import migrate

log = logging.getLogger("aigw_proxy.storage")

DEFAULT_BUSY_TIMEOUT_MS = 5000
FileIdentity = tuple[int, int]  # (st_dev, st_ino)

# Metadata comes from the proxy: anything that json cannot encode is stored as its str() rather than failing.
_json_dumps = functools.partial(json.dumps, default=str, ensure_ascii=False, separators=(",", ":"))


def json_loads(text: str | bytes) -> Any:
    """JSON columns are read by the thousand on API pages: orjson is several times faster. It rejects the NaN
    and Infinity that `json.dumps` may have written; the standard parser reads those."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@dataclass(frozen=True, slots=True)
class Reopened:
    what: str  # what was done, for a log line
    same_contents: bool  # the file at the path now holds what the one let go of did (restored from its handle)


class Database:
    """Two engines on one SQLite file.

    `writer`: a single pooled connection, every transaction BEGIN IMMEDIATE, so writes in this process are
    serialized and wait for other processes through busy_timeout. `reader`: a small pool of connections with
    deferred transactions; in WAL mode they read a consistent snapshot and never block or wait for the writer.
    """

    def __init__(self, path: Path, writer: AsyncEngine, reader: AsyncEngine,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, guard: FileGuard | None = None) -> None:
        self.path = path
        self.writer = writer
        self.reader = reader
        self.busy_timeout_ms = busy_timeout_ms
        self.guard = guard or FileGuard(path)
        self._loop = asyncio.get_running_loop()  # the engines' connections belong to this loop
        _OPEN.add(self)

    async def close(self) -> None:
        _OPEN.discard(self)
        await self.writer.dispose()
        await self.reader.dispose()

    @property
    def file_identity(self) -> FileIdentity | None:
        """The file opened (set by open_database and reopen); new connections are refused if the path names
        another one."""
        return self.guard.identity

    @file_identity.setter
    def file_identity(self, value: FileIdentity | None) -> None:
        self.guard.identity = value

    def file_problem(self) -> str | None:
        """None while the path names the file that was opened; else "deleted" or "replaced"."""
        if self.file_identity is None:
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
        if not self.writer_connected():  # a new connection would not reach the deleted file
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
        return f"Database({str(self.path)!r})"


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
    return "file:" + urllib.parse.quote(str(path))


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


def _engine(path: Path, *, immediate: bool, busy_timeout_ms: int, pool_size: int,
            guard: FileGuard | None = None) -> AsyncEngine:
    # mode=rw: never create the file (open_database does, once); uri=true: SQLAlchemy passes the URI to sqlite3.
    url = sa.URL.create("sqlite+aiosqlite", database=_uri(path), query={"mode": "rw", "uri": "true"})
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0 if immediate else pool_size,
        json_serializer=_json_dumps,
        json_deserializer=json_loads,
    )
    configure_sqlite_engine(engine, busy_timeout_ms=busy_timeout_ms, immediate=immediate,
                            before_connect=guard.check if guard is not None else None)
    return engine


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


async def _first_connection(engine: AsyncEngine, *, give_up_after: float = 30.0) -> None:
    """Connect once, retrying while another process is creating the file or switching it to WAL."""
    deadline = time.monotonic() + give_up_after
    delay = 0.01
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execution_options(**READ_ONLY)
                await conn.exec_driver_sql("SELECT 1")
            return
        except sa.exc.OperationalError as exc:
            if not is_busy_error(exc) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def open_database(
    path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, migrate_schema: bool = True
) -> Database:
    """Open (creating the parent directory and the file if needed) and migrate the database at `path`."""
    path = await asyncio.to_thread(_prepare_path, path)
    guard = FileGuard(path)
    writer = _engine(path, immediate=True, busy_timeout_ms=busy_timeout_ms, pool_size=1, guard=guard)
    reader = _engine(path, immediate=False, busy_timeout_ms=busy_timeout_ms, pool_size=4, guard=guard)
    db = Database(path, writer, reader, busy_timeout_ms, guard)
    try:
        await _first_connection(writer)
        db.file_identity = file_identity(path)
        if migrate_schema:
            await migrate(writer)
    except StorageError:
        await db.close()
        raise
    except sa.exc.DBAPIError as exc:
        await db.close()
        raise StorageError(open_error(path, exc)) from exc
    except BaseException:
        await db.close()
        raise
    return db


async def open_like(db: Database) -> Database:
    """Another Database on what `db` opened, with its engines on the running loop (the record writer's thread)."""
    return await open_database(db.path, busy_timeout_ms=db.busy_timeout_ms, migrate_schema=False)
