"""The two database backends, behind one small interface: everything that differs between SQLite and PostgreSQL
lives in `sqlite.py` and `postgresql.py` (with `postgresql_triggers.py`, the summaries' PL/pgSQL), nowhere else.

Queries elsewhere are SQLAlchemy Core or SQL both dialects accept; where they cannot be (a trigger body, a raw
driver fast path, a JSON aggregate, a lock), they ask the backend of their connection: `backend_of(conn)`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from aigw_proxy.storage.database import Database, DatabaseConfig


# How a column becomes a JSON value in `Backend.json_objects_agg` and `json_object` (the API's forms,
# stored_values.py): `value` as it is (text, or any other type), `int` an integer, `bool` a boolean, `time` a
# UTCDateTime as rfc3339 text, `metadata` a JSON column with `{}` for null or any other falsy JSON value
# (`metadata_json`), `json` an expression that already is JSON text (never NULL: a nested object, an aggregate's
# array).
JsonKind = Literal["value", "int", "bool", "time", "metadata", "json"]


@dataclass(frozen=True, slots=True)
class Engines:
    writer: AsyncEngine
    reader: AsyncEngine


@dataclass(frozen=True, slots=True)
class RowWrite:
    """One of the writer's statements for a batch of rows that all have the same keys: `kind` "insert" (an
    `sa.insert(table)`), "end" (the end-of-call UPDATE) or "execute" (another UPDATE or DELETE)."""

    kind: str
    statement: sa.Insert | sa.Update | sa.Delete
    rows: Sequence[dict[str, Any]]


class Backend(Protocol):
    """What differs between the dialects. One instance per dialect (`SQLITE`, `POSTGRESQL`)."""

    name: str  # SQLAlchemy's dialect name: "sqlite" | "postgresql"
    # Execution options for a writer-engine connection that only reads (SQLite: a deferred BEGIN).
    read_only: ClassVar[dict[str, Any]]

    # -- connecting ------------------------------------------------------------------------------------------
    def engines(self, config: DatabaseConfig, guard: Any = None) -> Engines:
        """The writer and reader engines (pool sizes, timeouts, per-connection settings). `guard` (SQLite): the
        database's FileGuard, asked before every new connection."""
        ...

    def is_busy_error(self, exc: BaseException) -> bool:
        """Someone else holds a lock, or the server cannot take us right now: worth retrying later."""
        ...

    # -- schema ----------------------------------------------------------------------------------------------
    async def migration_lock(self, conn: AsyncConnection) -> None:
        """Make the migration transaction `conn` exclusive across processes and hosts."""
        ...

    def create_tables(self, conn: sa.Connection, tables: Sequence[sa.Table], *, checkfirst: bool = False) -> None:
        """CREATE TABLE (and their indexes) for `tables`, in this dialect's physical layout (`checkfirst`: those
        that do not exist yet)."""
        ...

    def install_triggers(self, conn: sa.Connection, group: str) -> None:
        """(Re)create the triggers of `group` ("summaries", "slices" or "spend") that keep the summary tables."""
        ...

    def drop_triggers(self, conn: sa.Connection, group: str) -> None: ...

    def bulk_load(self, conn: sa.Connection) -> AbstractContextManager[None]:
        """While the block runs, the summary triggers stand aside in this transaction (a bulk load or a rebuild
        recomputes the summaries itself afterwards). SQLite: no-op (its triggers are cheap to let run)."""
        ...

    # -- SQL fragments ---------------------------------------------------------------------------------------
    def day_of(self, column_sql: str) -> str:
        """SQL for the UTC day (`YYYY-MM-DD` text) of a UTCDateTime column."""
        ...

    def day_expr(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        """`day_of` as a SQLAlchemy expression."""
        ...

    def pairs_agg(self, first: str, second: str, where: str) -> str:
        """SQL aggregating (first, second) pairs of the rows matching `where` into one JSON array value."""
        ...

    def decode_json(self, value: Any) -> Any:
        """A JSON value as the driver returned it (text on SQLite, decoded on PostgreSQL) → Python."""
        ...

    def json_number_items(self, column: sa.ColumnElement[Any]) -> tuple[sa.FromClause, sa.ColumnElement[str],
                                                                         sa.ColumnElement[Any], sa.ColumnElement[bool]]:
        """(a table-valued function over a JSON object column, its key column, its value as a number, the
        condition keeping only numeric values)."""
        ...

    def index_hint(self, index: str) -> str:
        """` INDEXED BY <index>` where the dialect needs to be told (SQLite), else ''."""
        ...

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
        """`column IN (values)` (text values). PostgreSQL: `column = ANY(<one array parameter>)`, the same
        statement whatever the number of values: a list of N values would be a new statement per N, each planned
        afresh over every partition (~30 ms at 90 days) on each pooled connection."""
        ...

    def partition_range(self, column: sa.ColumnElement[Any], lo: datetime | None,
                        hi: datetime | None) -> list[sa.ColumnElement[bool]]:
        """Conditions `lo <= column <= hi` on a partition key column where they let the database skip partitions
        (PostgreSQL), else none: redundant conditions the caller knows to be true of the rows it wants."""
        ...

    async def rows_of_sessions(self, conn: AsyncConnection, sql: str, sessions: Sequence[tuple[str, Any, Any]]
                               ) -> list[tuple[Any, ...]]:
        """Driver rows of `sql` about a page of `sessions` (session id, first start, last end as the session
        summary stores them). `sql` reads interceptions as `i` where `SESSIONS(i)` stands for "one of the
        sessions", and may say `SPAN(column)` after a condition: `AND column` within the session's span where
        that skips partitions (PostgreSQL: each session is looked up in the partitions of its own days), or
        `PAGE_SPAN(column)`: `AND column` between the first start and the last end of all the sessions (where
        the session is not in scope: rows joined to those `SESSIONS(i)` selected, in a later CTE)."""
        ...

    def child_join(self, child: str, interception: str) -> str:
        """SQL joining child rows (alias `child`) to their interception (alias `interception`); on PostgreSQL with
        the partition key, so each lookup goes to one partition."""
        ...

    # -- reading stored values fast --------------------------------------------------------------------------
    async def driver_rows(self, conn: AsyncConnection, sql: str, values: Sequence[Any],
                          bounds: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]]:
        """Rows as plain tuples straight from the driver, in `conn`'s transaction. `sql` contains `IN_VALUES`
        once (`column IN_VALUES`): it matches the column against `values`; and may contain `BOUNDS[column]`
        after a condition: where `bounds` are given and the dialect prunes partitions by them (PostgreSQL),
        `AND column BETWEEN lo AND hi` (the caller knows every wanted row is in them), else nothing."""
        ...

    def json_objects_agg(self, fields: Sequence[tuple[str, str, JsonKind]], order_by: str | None) -> str | None:
        """An aggregate over a group's rows: the text of one JSON array of objects, one per row in `order_by` order
        (None: in the order the rows come, from a subquery sorted by the groups' key and then that order),
        each with `fields` (key, column or expression, kind) in that key order. None where the dialect's rows are
        made JSON-ready in Python instead (SQLite: its stored text needs Python's reading, stored_values.py)."""
        ...

    async def session_page_json(self, conn: AsyncConnection, page: Sequence[tuple[Any, ...]],
                                span: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]] | None:
        """A sessions page's JSON built by the database (postgresql_sessions.py): for each `page` row (session id,
        initiator id, started_at, ended_at, threads, interceptions, last_active_at), in order, (its JSON text up to
        `"cost":`, its CostSums' six sums, the rest of its text). `span`: the first start and last end of the
        page's whole sessions where the caller knows them. None where the page is built in Python (SQLite)."""
        ...

    def json_object(self, fields: Sequence[tuple[str, str, JsonKind]]) -> str | None:
        """An expression over one row: the text of one JSON object with `fields` (as in `json_objects_agg`), in
        that key order. None where `json_objects_agg` is."""
        ...

    async def export_snapshot(self, conn: AsyncConnection) -> str | None:
        """Make the transaction `conn` is about to begin (no statement run yet) see one snapshot throughout, and
        return an id of it that another connection can join (`import_snapshot`): statements on both see the same
        rows. None where the dialect has no such thing (SQLite: `conn` is left as it was)."""
        ...

    async def import_snapshot(self, conn: AsyncConnection, snapshot: str) -> None:
        """Begin `conn`'s transaction (no statement run yet) in the snapshot `export_snapshot` gave, which another
        connection's open transaction holds."""
        ...

    # -- writing and maintenance ---------------------------------------------------------------------------
    async def insert_rows(self, conn: AsyncConnection, statement: sa.Insert, rows: Sequence[dict[str, Any]]) -> None:
        """Run the writer's INSERT of one table (`statement`: `sa.insert(table)`) for a batch of rows that all have
        the same keys. SQLite: executemany; PostgreSQL: one prepared statement for the batch, its columns as
        arrays (`INSERT … SELECT … FROM unnest(…)`)."""
        ...

    async def end_interceptions(self, conn: AsyncConnection, statement: sa.Update,
                                rows: Sequence[dict[str, Any]]) -> int:
        """Run the writer's end-of-call UPDATE (`statement`, rows from write/rows.end_params) for a batch; how
        many interceptions it ended (-1: unknown). SQLite: executemany; PostgreSQL: one statement for the batch."""
        ...

    async def write_rows(self, conn: AsyncConnection, writes: Sequence[RowWrite]) -> list[int]:
        """Run the writer's statements of one batch, in order (`insert_rows` for "insert", `end_interceptions` for
        "end", an executemany of the statement for "execute"); what each changed (-1: unknown). SQLite: all of
        them in one call on the driver's thread; PostgreSQL: one after the other."""
        ...

    async def prepare_batch(self, db: Database, batch: Sequence[object]) -> None:
        """Before a batch is written (PostgreSQL: the partitions its new rows go to exist)."""
        ...

    async def drop_before(self, db: Database, before: datetime) -> tuple[int, int]:
        """Drop whole stored units older than `before` in constant time (PostgreSQL: day partitions), keeping the
        summaries exact; (interceptions, child rows) dropped. SQLite has none: (0, 0)."""
        ...

    async def reclaim_space(self, db: Database, *, pause: float = 0.01) -> None:
        """After a purge: give freed space back (SQLite: incremental vacuum, a bounded step at a time)."""
        ...

    def cluster_job(self, db: Database, job: str) -> AbstractAsyncContextManager[bool]:
        """`async with backend.cluster_job(db, "retention") as mine:` — `mine` is True in exactly one process of
        all those sharing the database while the block runs (PostgreSQL: an advisory lock)."""
        ...

    async def maintain(self, db: Database) -> None:
        """Periodic upkeep (PostgreSQL: partitions created ahead, statistics of partitioned tables)."""
        ...


def backend_for(name: str) -> Backend:
    if name == "sqlite":
        from aigw_proxy.storage.dialects.sqlite import SQLITE

        return SQLITE
    if name == "postgresql":
        from aigw_proxy.storage.dialects.postgresql import POSTGRESQL

        return POSTGRESQL
    raise ValueError(f"unsupported database dialect {name!r}")


def backend_of(conn: AsyncConnection | sa.Connection | AsyncEngine | sa.Engine) -> Backend:
    """The backend of a connection or engine."""
    return backend_for(conn.dialect.name)


IN_VALUES = "IN_VALUES"

# rows_of_sessions: `SESSIONS(i)` is the condition naming the sessions on interceptions alias `i`, `SPAN(column)`
# an optional extra condition keeping a partition key column within each session's span, `PAGE_SPAN(column)`
# within the span of all the sessions (for rows joined outside the sessions' own scope).
SESSIONS = re.compile(r"SESSIONS\(([a-z_]+)\)")
SPAN = re.compile(r"(?<![A-Z_])SPAN\(([a-z_.]+)\)")
PAGE_SPAN = re.compile(r"PAGE_SPAN\(([a-z_.]+)\)")
BOUNDS = re.compile(r"BOUNDS\[([a-z_.]+)\]")
