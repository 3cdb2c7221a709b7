"""Everything SQLite-specific lives here: connection pragmas, transaction start, error classification,
incremental vacuum, creating the triggers that keep the summary tables. Queries elsewhere are plain SQLAlchemy
Core, so a PostgreSQL backend only needs a sibling of this module.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Lock contention, I/O and "cannot open" errors: worth retrying the whole batch later.
_BUSY_MARKERS = ("database is locked", "database table is locked", "database is busy")

_READ_ONLY_KEY = "aigw_read_only"
READ_ONLY: dict[str, Any] = {_READ_ONLY_KEY: True}


def configure_sqlite_engine(engine: AsyncEngine, *, busy_timeout_ms: int, immediate: bool,
                            before_connect: Callable[[], None] | None = None) -> None:
    """Set the pragmas on every new connection and take over BEGIN from the sqlite3 driver.

    `immediate=True` (the writer engine) starts every transaction with BEGIN IMMEDIATE: the write lock is
    taken up front (waiting up to busy_timeout), so a transaction never fails half-way upgrading a read lock.
    Readers use a deferred BEGIN: in WAL mode they read one consistent snapshot and never block the writer.
    `before_connect` may refuse a new connection (raise) before anything is read through it.
    """
    begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    # A writer-engine connection that only reads can ask for a deferred BEGIN:
    # `await conn.execution_options(**READ_ONLY)` before its first statement.

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if before_connect is not None:
            try:
                before_connect()
            except Exception:
                dbapi_connection.close()
                raise
        # The driver must not issue its own BEGIN/COMMIT around DML: we emit BEGIN in the "begin" hook.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # Only takes effect before the first table exists; a no-op afterwards, but one that waits for the write
            # lock: read it first, or every new connection (a token lookup) would wait while another holds it.
            cursor.execute("PRAGMA auto_vacuum")
            if cursor.fetchone()[0] != 2:  # 2: INCREMENTAL
                cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
            # WAL is persistent. Switching to it takes a lock SQLite does not wait for (no busy handler), so only
            # switch when needed: open_database retries a first connection that lost that race.
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY_KEY) else begin_sql)


def create_triggers(conn: sa.Connection, triggers: dict[str, str]) -> None:
    """CREATE TRIGGER `name body` for each of `triggers`."""
    for name, body in triggers.items():
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}")


def drop_triggers(conn: sa.Connection, triggers: dict[str, str]) -> None:
    for name in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def is_busy_error(exc: BaseException) -> bool:
    """The database is locked by someone else (retry later)."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and any(m in str(orig).lower() for m in _BUSY_MARKERS)


async def driver_connection(conn: AsyncConnection) -> aiosqlite.Connection:
    """The driver's own connection under `conn`: the same connection, in the same transaction."""
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # the pool invalidated it
        raise sa.exc.ResourceClosedError("the database connection is closed")
    return driver


async def pragma(conn: AsyncConnection, name: str) -> Any:
    """Read one pragma value (tests and diagnostics)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad pragma name {name!r}")
    return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()


async def reclaim_free_pages(conn: AsyncConnection, pages: int | None = None) -> int:
    """Give pages freed by a purge back to the file system (auto_vacuum = INCREMENTAL): all of them, or at most
    `pages` (a bounded step, so a large purge does not hold the write lock for long). Returns the free pages
    still left."""
    # The pragma frees one page per step and returns no columns, so SQLAlchemy would step it only once: step it
    # to the end on the driver's own cursor (same connection, same transaction).
    limit = "" if pages is None else f"({int(pages)})"
    cursor = await (await driver_connection(conn)).execute(f"PRAGMA incremental_vacuum{limit}")
    try:
        await cursor.fetchall()
    finally:
        await cursor.close()
    return int((await conn.exec_driver_sql("PRAGMA freelist_count")).scalar() or 0)
