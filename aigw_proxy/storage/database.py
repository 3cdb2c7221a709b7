"""Opening the SQLite database: a writer engine (one connection, BEGIN IMMEDIATE) and a reader engine."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aigw_proxy.storage.dialect import READ_ONLY, configure_sqlite_engine, is_busy_error
from aigw_proxy.storage.errors import StorageError
from aigw_proxy.storage.schema.migrations import migrate

DEFAULT_BUSY_TIMEOUT_MS = 5000

# Metadata comes from the proxy: anything that json cannot encode is stored as its str() rather than failing.
_json_dumps = functools.partial(json.dumps, default=str, ensure_ascii=False, separators=(",", ":"))


def json_loads(text: str | bytes) -> Any:
    """JSON columns are read by the thousand on API pages: orjson is several times faster. It rejects the NaN
    and Infinity that `json.dumps` may have written; the standard parser reads those."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class Database:
    """Two engines on one SQLite file.

    `writer`: a single pooled connection, every transaction BEGIN IMMEDIATE, so writes in this process are
    serialized and wait for other processes through busy_timeout. `reader`: a small pool of connections with
    deferred transactions; in WAL mode they read a consistent snapshot and never block or wait for the writer.
    """

    def __init__(self, path: Path, writer: AsyncEngine, reader: AsyncEngine) -> None:
        self.path = path
        self.writer = writer
        self.reader = reader

    async def close(self) -> None:
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


def _engine(path: Path, *, immediate: bool, busy_timeout_ms: int, pool_size: int) -> AsyncEngine:
    url = sa.URL.create("sqlite+aiosqlite", database=str(path))
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0 if immediate else pool_size,
        json_serializer=_json_dumps,
        json_deserializer=json_loads,
    )
    configure_sqlite_engine(engine, busy_timeout_ms=busy_timeout_ms, immediate=immediate)
    return engine


def _prepare_path(path: str | Path) -> Path:
    """The absolute path, its directory made (0700) and the file made or kept private (0600), whatever the umask:
    SQLite gives the -wal and -shm files the database file's mode."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        raise ValueError("aigw-proxy needs a database file (the writer and readers use separate connections)")
    resolved = Path(path).expanduser().absolute()
    try:
        if not resolved.parent.is_dir():
            resolved.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            resolved.parent.chmod(0o700)
        if not resolved.exists():
            os.close(os.open(resolved, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # another process made it first
    except OSError as exc:
        raise StorageError(f"cannot create the database {resolved}: {exc}") from exc
    for file in (resolved, resolved.with_name(resolved.name + "-wal"), resolved.with_name(resolved.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except OSError:  # not there (yet), or not ours to change
            pass
    return resolved


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
    writer = _engine(path, immediate=True, busy_timeout_ms=busy_timeout_ms, pool_size=1)
    reader = _engine(path, immediate=False, busy_timeout_ms=busy_timeout_ms, pool_size=4)
    db = Database(path, writer, reader)
    try:
        await _first_connection(writer)
        if migrate_schema:
            await migrate(writer)
    except StorageError:
        await db.close()
        raise
    except sa.exc.DBAPIError as exc:
        await db.close()
        raise StorageError(f"cannot open the database {path}: {exc.orig}") from exc
    except BaseException:
        await db.close()
        raise
    return db
