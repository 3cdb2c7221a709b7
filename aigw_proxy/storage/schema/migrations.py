"""Versioned schema migrations.

`schema_migrations` holds one row per applied version. `MIGRATIONS` is the ordered list of steps; a step is a
sync function run on a connection inside the migration transaction (SQLite DDL is transactional), so a step is
applied completely or not at all.

Steps are frozen once released. v1 builds the tables from `schema.metadata`; when a later version changes a
table, add a step (v2, …) doing the ALTERs and give v1 a frozen copy of the v1 definitions, so that an empty
database still goes v1 → v2 → … exactly like an old one. Exception, for a nullable column appended at the end of
a table: v1's create_all already makes it on a new database, so the step that adds it (v3) adds it only where it
is missing; either way the table ends up the same.

The steps are the same on both dialects; where the SQL cannot be (the physical layout of a table, trigger
bodies), a step asks its connection's backend (storage/dialects/). PostgreSQL DDL is transactional too.

Concurrency: the daemon and a CLI process, or several replicas, may start at once. Migrating takes the
backend's migration lock first (SQLite: the write lock, the writer engine starts transactions with BEGIN
IMMEDIATE; PostgreSQL: an advisory lock), re-reads the version under the lock and only then applies pending
steps, so the second process waits and then finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aigw_proxy.storage.audit import upgrade_audit_log
from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.errors import SchemaTooNewError, StorageError
from aigw_proxy.storage.schema import controls, session_slices, spend_days, summaries
from aigw_proxy.storage.schema import tables as schema

log = logging.getLogger("aigw_proxy.storage")

_migrations_metadata = sa.MetaData()
schema_migrations = sa.Table(
    "schema_migrations",
    _migrations_metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", schema.UTCDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    upgrade: Callable[[sa.Connection], None]


def _v1_initial(conn: sa.Connection) -> None:
    backend_of(conn).create_tables(conn, schema.metadata.sorted_tables)


_SESSION_COLUMNS = "session_id, initiator_id, started_at, ended_at, thread_root_id, last_prompt_at"
# v3: one covering index per attribute the sessions list is usually filtered by (model, provider, client; not
# provider_name, which mostly repeats provider: each index costs the writer ~7 µs per interception), over ended
# rows, so a filter over all time groups its sessions from the index alone. The client expression must match the
# sessions query's literally.
# `session_id IS NOT NULL` (always true) keeps them to the sessions query, which says it: SQLite uses a partial
# index only for queries whose WHERE names its terms, and for the interceptions list (newest first, LIMIT) it
# would otherwise pick `model = ?` and sort 100k rows instead of walking the started_at index.
# Dropped again by v4, whose session slices answer those filters without them (~600 MB on 1M interceptions).
V3_INDEX_NAMES = tuple(f"idx_aibridge_interceptions_{name}_sessions" for name in ("model", "provider", "client"))
V3_INDEXES = tuple(
    f"CREATE INDEX IF NOT EXISTS {index} ON aibridge_interceptions "
    f"({lead}, {_SESSION_COLUMNS}) WHERE ended_at IS NOT NULL AND session_id IS NOT NULL"
    for index, lead in zip(V3_INDEX_NAMES, ("model", "provider", "COALESCE(client, 'Unknown')"), strict=True)
)


def backfill_last_prompt_at(conn: sa.Connection) -> None:
    """Set `last_prompt_at` from the prompts (v3 upgrade; bulk loads that insert prompts without the writer)."""
    conn.exec_driver_sql(
        "UPDATE aibridge_interceptions SET last_prompt_at = (SELECT max(p.created_at) FROM aibridge_user_prompts p "
        "WHERE p.interception_id = aibridge_interceptions.id) "
        "WHERE id IN (SELECT interception_id FROM aibridge_user_prompts)"
    )


def _v3_session_filters(conn: sa.Connection) -> None:
    columns = {c["name"] for c in sa.inspect(conn).get_columns(schema.interceptions.name)}
    if "last_prompt_at" not in columns:
        conn.exec_driver_sql("ALTER TABLE aibridge_interceptions ADD COLUMN last_prompt_at DATETIME")
    backfill_last_prompt_at(conn)  # the writer sets it from now on; no trigger watches this column
    for ddl in V3_INDEXES:
        conn.exec_driver_sql(ddl)


def _v4_session_slices(conn: sa.Connection) -> None:
    for index in V3_INDEX_NAMES:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
    session_slices.upgrade_v4(conn)


def _v11_captures(conn: sa.Connection) -> None:
    """The raw-capture table (`--capture-bodies`), laid out like the other child tables (on PostgreSQL:
    partitioned by its interception's start, with the days' partitions the interceptions already have). A
    database made by this release has it already (v1 builds the current tables)."""
    backend_of(conn).create_tables(conn, [schema.captures], checkfirst=True)
    backend_of(conn).drop_triggers(conn, "children")  # its rows follow a moved start too (PostgreSQL)
    backend_of(conn).install_triggers(conn, "children")


def _v5_error_types(conn: sa.Connection) -> None:
    """Allow the v5 error types in `aibridge_interceptions.error_type` (a looser CHECK constraint; no row changes).

    SQLite cannot alter a constraint: the table's stored definition is rewritten in place, the procedure SQLite
    documents for loosening a CHECK constraint (ALTER TABLE, "making other kinds of table schema changes"), which
    leaves the rows, indexes and triggers as they are. A database made by this release already has it (v1 builds
    the current tables), and is left alone."""
    old, new = schema.error_type_check(schema.ERROR_TYPES_V1), schema.error_type_check()
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql("ALTER TABLE aibridge_interceptions DROP CONSTRAINT IF EXISTS ck_interceptions_error_type")
        conn.exec_driver_sql(f"ALTER TABLE aibridge_interceptions ADD CONSTRAINT ck_interceptions_error_type "
                             f"CHECK ({new})")
        return
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'aibridge_interceptions'").scalar_one()
    if new in sql:
        return
    if old not in sql:
        raise StorageError("cannot migrate to schema v5: the error_type constraint of aibridge_interceptions is "
                           "not the one schema v1 made")
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar_one())
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        conn.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' "
                             "AND name = 'aibridge_interceptions'", (sql.replace(old, new),))
        conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")  # other connections reload the schema
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema = OFF")


def _v10_child_interception_start(conn: sa.Connection) -> None:
    """Child rows carry their interception's start. A new database has the column from v1 (on PostgreSQL it is
    the partition key); an older SQLite one gets it NULL for the rows already there (SQLite reads it nowhere).
    On PostgreSQL, the child rows of an interception whose start is changed follow it (a trigger)."""
    inspector = sa.inspect(conn)
    for table in schema.CHILD_TABLES:
        if not inspector.has_table(table.name):
            continue  # a child table added by a later step (v11: captures) is made with the column
        if "interception_started_at" not in {c["name"] for c in inspector.get_columns(table.name)}:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN interception_started_at DATETIME")
    backend_of(conn).drop_triggers(conn, "children")  # safe to apply again
    backend_of(conn).install_triggers(conn, "children")


def _v12_child_row_triggers(conn: sa.Connection) -> None:
    """PostgreSQL: the summary and spend triggers on child rows find each row's interception by a primary key probe
    (postgresql_triggers._INTERCEPTION_OF_ROW) instead of a join the planner could turn into reading whole days.
    The same summaries either way; SQLite's triggers are per row already (nothing to do)."""
    if conn.dialect.name != "postgresql":
        return
    for group in ("summaries", "spend"):
        backend_of(conn).drop_triggers(conn, group)
        backend_of(conn).install_triggers(conn, group)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "users, api tokens and the aibridge interception tables", _v1_initial),
    Migration(2, "session and daily-count summary tables kept by triggers; list indexes", summaries.upgrade_v2),
    Migration(3, "interceptions.last_prompt_at and covering indexes for sessions filtered by model, provider or "
              "client", _v3_session_filters),
    Migration(4, "session slices (per provider, provider_name, model, client) kept by triggers, for filtered and "
              "time-windowed sessions lists, replacing the v3 attribute indexes; session summary triggers that "
              "purge fast", _v4_session_slices),
    Migration(5, "error types client_disconnected and upstream_reset", _v5_error_types),
    Migration(6, "the audit log (web console: users added, tokens issued and revoked, roles changed); a partial "
              "index of failed interceptions (the console's failure rate)",
              upgrade_audit_log),
    Migration(7, "token-usage prices (micro-dollars, source, version, API-equivalent flag; existing rows left "
              "unpriced for `aigw-proxy reprice`) and the daily spend summary kept by triggers", spend_days.upgrade_v7),
    Migration(8, "groups, group members and budgets (spend controls)", controls.upgrade_v8),
    Migration(9, "the fleet-wide daily spend summary and each user's monthly one beside the per-user days, kept "
              "by the same triggers",
              spend_days.upgrade_v9),
    Migration(10, "child rows carry their interception's start time (the partition key on PostgreSQL)",
              _v10_child_interception_start),
    Migration(11, "raw captures of model calls' bodies (--capture-bodies)", _v11_captures),
    Migration(12, "PostgreSQL: the summary triggers on child rows look each row's interception up by its key",
              _v12_child_row_triggers),
)
LATEST_VERSION = MIGRATIONS[-1].version

if [m.version for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):
    raise RuntimeError("migration versions must be 1..N in order")


async def _read_version(conn: AsyncConnection) -> int:
    exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(schema_migrations.name))
    if not exists:
        return 0
    return int((await conn.execute(sa.select(sa.func.max(schema_migrations.c.version)))).scalar() or 0)


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise SchemaTooNewError(
            f"the database schema is at version {version}, newer than this aigw-proxy supports "
            f"(version {LATEST_VERSION}); upgrade aigw-proxy or use the database with a newer release"
        )


async def current_version(engine: AsyncEngine) -> int:
    """The highest applied migration version (0 for an empty database)."""
    async with engine.connect() as conn:
        await conn.execution_options(**backend_of(engine).read_only)  # no write lock just to read the version
        return await _read_version(conn)


async def migrate(engine: AsyncEngine, *, lock_timeout: float = 60.0) -> int:
    """Apply pending migrations; return the schema version. Idempotent and safe to run concurrently.

    `engine` is a Database's writer engine (on SQLite its transactions start with BEGIN IMMEDIATE). Raises
    `SchemaTooNewError` if the database comes from a newer release.
    """
    version = await current_version(engine)  # fast path: no write lock when up to date
    _check_not_newer(version)
    if version == LATEST_VERSION:
        return version

    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            return await _migrate_locked(engine)
        except sa.exc.DBAPIError as exc:
            if not backend_of(engine).is_busy_error(exc) or time.monotonic() >= deadline:
                raise StorageError(f"could not migrate the database: {exc.orig}") from exc
            log.info("database locked while migrating; retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _migrate_locked(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, we hold the write lock from here on
        await backend_of(conn).migration_lock(conn)
        await conn.run_sync(lambda c: _migrations_metadata.create_all(c, checkfirst=True))
        version = await _read_version(conn)
        _check_not_newer(version)
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            log.info("applying schema migration v%d: %s", step.version, step.description)
            began = time.monotonic()
            await conn.run_sync(step.upgrade)
            log.info("schema migration v%d applied in %.1f s", step.version, time.monotonic() - began)
            await conn.execute(sa.insert(schema_migrations).values(version=step.version, applied_at=datetime.now(UTC)))
            version = step.version
        return version
