"""SQLite, the embedded default: connection pragmas, transaction start, error classification, incremental vacuum,
the summary triggers' DDL, the aiosqlite fast path.

One file on one host: the writer engine is a single connection whose transactions start with BEGIN IMMEDIATE
(the write lock up front, waiting up to busy_timeout for other processes), readers use deferred transactions on
WAL snapshots. Migrations need no lock of their own (BEGIN IMMEDIATE is one) and a periodic job run by two
processes at once only finds nothing left to do the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, cast

import aiosqlite
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from aigw_proxy.storage.dialects import BOUNDS, IN_VALUES, PAGE_SPAN, SESSIONS, SPAN, Engines, JsonKind, RowWrite
from aigw_proxy.storage.jsoncodec import json_dumps, json_loads

if TYPE_CHECKING:
    from aigw_proxy.storage.database import Database, DatabaseConfig

# Lock contention, I/O and "cannot open" errors: worth retrying the whole batch later.
_BUSY_MARKERS = ("database is locked", "database table is locked", "database is busy")

_READ_ONLY_KEY = "aigw_read_only"
READ_ONLY: dict[str, Any] = {_READ_ONLY_KEY: True}

VACUUM_PAGES = 2000  # pages (4 KiB) given back per transaction after a purge
_MAX_VACUUM_STEPS = 100_000  # bound: 800 GB worth of pages


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
        sql = "BEGIN" if conn.get_execution_options().get(_READ_ONLY_KEY) else begin_sql
        # One call on aiosqlite's thread (`exec_driver_sql` makes three: cursor, execute, close): a sqlite3 error
        # raised here is wrapped by SQLAlchemy's begin like any other.
        driver = cast(aiosqlite.Connection, conn.connection.driver_connection)
        sa.util.await_only(driver._execute(_execute_closing, driver._conn, sql))


def _engine(config: DatabaseConfig, *, immediate: bool, pool_size: int, guard: Any = None) -> AsyncEngine:
    engine = create_async_engine(
        config.sqlalchemy_url(),
        pool_size=pool_size,
        max_overflow=0 if immediate else pool_size,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
    )
    configure_sqlite_engine(engine, busy_timeout_ms=config.busy_timeout_ms, immediate=immediate,
                            before_connect=guard.check if guard is not None else None)
    return engine


def create_triggers(conn: sa.Connection, triggers: dict[str, str]) -> None:
    """CREATE TRIGGER `name body` for each of `triggers`."""
    for name, body in triggers.items():
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}")


def drop_triggers(conn: sa.Connection, triggers: dict[str, str]) -> None:
    for name in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def _trigger_group(group: str) -> dict[str, str]:
    from aigw_proxy.storage.schema import session_slices, spend_days, summaries

    groups = {"summaries": summaries.TRIGGERS, "slices": session_slices.TRIGGERS, "spend": spend_days.TRIGGERS,
              "spend_v7": spend_days.V7_TRIGGERS,
              "children": {}}  # PostgreSQL's child rows following a moved start: SQLite's name the id alone
    return groups[group]


async def driver_connection(conn: AsyncConnection) -> aiosqlite.Connection:
    """The driver's own connection under `conn`: the same connection, in the same transaction."""
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # the pool invalidated it
        raise sa.exc.ResourceClosedError("the database connection is closed")
    return cast(aiosqlite.Connection, driver)


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


class SQLiteBackend:
    name = "sqlite"
    read_only: ClassVar[dict[str, Any]] = READ_ONLY

    def engines(self, config: DatabaseConfig, guard: Any = None) -> Engines:
        return Engines(writer=_engine(config, immediate=True, pool_size=1, guard=guard),
                       reader=_engine(config, immediate=False, pool_size=4, guard=guard))

    def is_busy_error(self, exc: BaseException) -> bool:
        orig = getattr(exc, "orig", exc)
        return isinstance(orig, sqlite3.OperationalError) and any(m in str(orig).lower() for m in _BUSY_MARKERS)

    async def migration_lock(self, conn: AsyncConnection) -> None:
        """Nothing to add: the writer engine's BEGIN IMMEDIATE already holds the database's write lock."""

    def create_tables(self, conn: sa.Connection, tables: Sequence[sa.Table], *, checkfirst: bool = False) -> None:
        for table in tables:
            table.create(conn, checkfirst=checkfirst)  # with its indexes

    def install_triggers(self, conn: sa.Connection, group: str) -> None:
        create_triggers(conn, _trigger_group(group))

    def drop_triggers(self, conn: sa.Connection, group: str) -> None:
        drop_triggers(conn, _trigger_group(group))

    @contextlib.contextmanager
    def bulk_load(self, conn: sa.Connection) -> Iterator[None]:
        yield

    def day_of(self, column_sql: str) -> str:
        return f"substr({column_sql}, 1, 10)"  # the stored text starts with YYYY-MM-DD (UTC)

    def day_expr(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.func.substr(sa.type_coerce(column, sa.String), 1, 10)

    def pairs_agg(self, first: str, second: str, where: str) -> str:
        return f"json_group_array(json_array({first}, {second})) FILTER (WHERE {where})"

    def decode_json(self, value: Any) -> Any:
        return json_loads(value) if isinstance(value, str | bytes) else value

    def json_number_items(self, column: sa.ColumnElement[Any]) -> tuple[sa.FromClause, sa.ColumnElement[str],
                                                                         sa.ColumnElement[Any], sa.ColumnElement[bool]]:
        each = sa.func.json_each(column).table_valued("key", "value", "type")
        return each, each.c.key, each.c.value, each.c.type.in_(("integer", "real"))

    def index_hint(self, index: str) -> str:
        # Without statistics for the table SQLite may pick another index and sort: name the one to use.
        return f" INDEXED BY {index}"

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
        return column.in_(list(values))

    def partition_range(self, column: sa.ColumnElement[Any], lo: datetime | None,
                        hi: datetime | None) -> list[sa.ColumnElement[bool]]:
        return []  # one table; and rows written before schema v10 have no interception_started_at

    def child_join(self, child: str, interception: str) -> str:
        return f"{child}.interception_id = {interception}.id"

    async def rows_of_sessions(self, conn: AsyncConnection, sql: str, sessions: Sequence[tuple[str, Any, Any]]
                               ) -> list[tuple[Any, ...]]:
        sql = PAGE_SPAN.sub("", SPAN.sub("", SESSIONS.sub(lambda m: f"{m.group(1)}.session_id IN_VALUES", sql)))
        return await self.driver_rows(conn, sql, [s[0] for s in sessions])

    async def driver_rows(self, conn: AsyncConnection, sql: str, values: Sequence[Any],
                          bounds: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]]:
        if not conn.in_transaction():
            await conn.begin()  # as SQLAlchemy's autobegin would: the reader engine's BEGIN hook runs
        sql = BOUNDS.sub("", sql.replace(IN_VALUES, f"IN ({', '.join('?' * len(values))})"))
        rows = await (await driver_connection(conn)).execute_fetchall(sql, list(values))
        # No row factory is set on these connections, so the rows are plain tuples (aiosqlite annotates
        # sqlite3.Row).
        return cast(list[tuple[Any, ...]], list(rows))

    def json_objects_agg(self, fields: Sequence[tuple[str, str, JsonKind]], order_by: str | None) -> str | None:
        return None

    async def session_page_json(self, conn: AsyncConnection, page: Sequence[tuple[Any, ...]],
                                span: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]] | None:
        return None

    def json_object(self, fields: Sequence[tuple[str, str, JsonKind]]) -> str | None:
        return None

    async def export_snapshot(self, conn: AsyncConnection) -> str | None:
        return None

    async def import_snapshot(self, conn: AsyncConnection, snapshot: str) -> None:
        raise NotImplementedError("SQLite exports no snapshots")

    async def insert_rows(self, conn: AsyncConnection, statement: sa.Insert, rows: Sequence[dict[str, Any]]) -> None:
        await conn.execute(statement, list(rows))

    async def end_interceptions(self, conn: AsyncConnection, statement: sa.Update,
                                rows: Sequence[dict[str, Any]]) -> int:
        return int((await conn.execute(statement, list(rows))).rowcount)

    async def write_rows(self, conn: AsyncConnection, writes: Sequence[RowWrite]) -> list[int]:
        # Through SQLAlchemy's async adaptation every statement is ~3 round trips to aiosqlite's thread (cursor,
        # executemany, close), each a wake-up of the database thread's loop and a hand-over of the interpreter
        # lock: most of what a small batch cost. Here the statements are compiled once (`_Prepared`), the rows
        # bound as SQLAlchemy would bind them, and the whole list runs in one call on the driver's thread, in the
        # transaction SQLAlchemy began on that connection.
        dialect = conn.dialect
        batch = [(prepared.sql, [prepared.params(row) for row in write.rows])
                 for write in writes if write.rows
                 for prepared in (_prepared(write.statement, tuple(write.rows[0]), dialect),)]
        if not batch:
            return [0 for _ in writes]
        driver = await driver_connection(conn)
        try:
            counts = iter(await driver._execute(_executemany_all, driver._conn, batch))
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it (sa.exc.IntegrityError, OperationalError, …)
            raise sa.exc.DBAPIError.instance(None, None, exc, sqlite3.Error, dialect=dialect) from exc
        return [next(counts) if write.rows else 0 for write in writes]

    async def prepare_batch(self, db: Database, batch: Sequence[object]) -> None:
        pass

    async def drop_before(self, db: Database, before: datetime) -> tuple[int, int]:
        return 0, 0

    async def reclaim_space(self, db: Database, *, pause: float = 0.01) -> None:
        for _ in range(_MAX_VACUUM_STEPS):
            async with db.writer.begin() as conn:
                left = await reclaim_free_pages(conn, VACUUM_PAGES)
            if not left:
                break
            await asyncio.sleep(pause)  # let the record writer have the connection between steps

    @asynccontextmanager
    async def cluster_job(self, db: Database, job: str) -> AsyncIterator[bool]:
        yield True  # one host: a job run twice finds nothing left the second time

    async def maintain(self, db: Database) -> None:
        pass


def _execute_closing(db: sqlite3.Connection, sql: str) -> None:
    db.execute(sql).close()


def _executemany_all(db: sqlite3.Connection, batch: list[tuple[str, list[tuple[Any, ...]]]]) -> list[int]:
    """On aiosqlite's thread: each statement for its rows; the rows each changed."""
    counts = []
    for sql, params in batch:
        cursor = db.executemany(sql, params)
        try:
            counts.append(cursor.rowcount)
        finally:
            cursor.close()
    return counts


class _Prepared:
    """A writer statement compiled for SQLite for rows with these keys: its SQL and, per positional parameter,
    where its value comes from (the row's key, or a constant of the statement) and SQLAlchemy's bind processor for
    its type (UTC datetimes to text, JSON through the engine's serializer, booleans to integers)."""

    __slots__ = ("_sources", "sql")

    def __init__(self, statement: sa.Insert | sa.Update | sa.Delete, keys: tuple[str, ...], dialect: sa.Dialect
                 ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
        if compiled.positiontup is None:
            raise TypeError(f"dialect {dialect.name} does not use positional parameters")
        self.sql = compiled.string
        sources: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key in keys:
                sources.append((bind.key, None, process))
            elif bind.callable is None and bind.value is not None:  # a literal of the statement (`= ''`)
                sources.append((None, process(bind.value) if process else bind.value, None))
            else:
                raise KeyError(f"no value for the parameter {bind.key!r} of {self.sql!r}")
        self._sources = tuple(sources)

    def params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (process(row[key]) if process is not None else row[key]) if key is not None else constant
            for key, constant, process in self._sources
        )


_PREPARED: dict[tuple[object, tuple[str, ...], sa.Dialect], _Prepared] = {}
_PREPARED_CAP = 256  # statements x key sets x engines: a handful in practice


def _prepared(statement: sa.Insert | sa.Update | sa.Delete, keys: tuple[str, ...], dialect: sa.Dialect
              ) -> _Prepared:
    key = (statement, keys, dialect)
    prepared = _PREPARED.get(key)
    if prepared is None:
        if len(_PREPARED) >= _PREPARED_CAP:
            _PREPARED.clear()
        prepared = _PREPARED[key] = _Prepared(statement, keys, dialect)
    return prepared


SQLITE = SQLiteBackend()
