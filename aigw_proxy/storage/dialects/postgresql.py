"""PostgreSQL, for several proxy processes and hosts sharing one database: asyncpg pools, a statement timeout,
advisory locks (migrations, periodic jobs), PL/pgSQL triggers for the summaries (postgresql_triggers.py), and
the interception tables partitioned by day.

Layout: `aibridge_interceptions` is partitioned by `started_at`, its five child tables by their interception's
start (`interception_started_at`), one partition per UTC day, named `<table>_pYYYYMMDD`, the six tables' days
created together. Primary keys carry the partition key (`(id, started_at)`; `(id, interception_started_at)`),
and the children have no foreign key to their interception (the writer inserts them with it; retention drops a
day of all six at once). Every text column is TEXT (SQLite enforces no VARCHAR length either) with the "C"
collation: the same byte order as SQLite, so lists, cursors and sorted values come out in the same order on both.

Partitions are created ahead of time by the periodic job (today and the next days) and, for a record whose day
has none yet (an old or future clock, a test), by the writer just before the batch that needs it. Retention
drops the days wholly older than the cut-off (a catalog operation, whatever their size) and fixes the summaries
of the sessions that had calls in them; rows of the day the cut-off falls in are deleted one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from aigw_proxy.storage.dialects import BOUNDS, IN_VALUES, PAGE_SPAN, SESSIONS, SPAN, Engines, JsonKind, RowWrite
from aigw_proxy.storage.dialects import postgresql_json as json_text
from aigw_proxy.storage.dialects import postgresql_sessions as session_json
from aigw_proxy.storage.dialects import postgresql_triggers as triggers
from aigw_proxy.storage.jsoncodec import json_loads, jsonb_dumps
from aigw_proxy.storage.schema.spend_days import SUM_COLUMNS as SPEND_SUMS

if TYPE_CHECKING:
    from aigw_proxy.storage.database import Database, DatabaseConfig

log = logging.getLogger("aigw_proxy.storage")

INTERCEPTIONS = "aibridge_interceptions"
# Partitioned table → its partition key column.
PARTITION_KEYS: dict[str, str] = {
    INTERCEPTIONS: "started_at",
    "aibridge_token_usages": "interception_started_at",
    "aibridge_user_prompts": "interception_started_at",
    "aibridge_tool_usages": "interception_started_at",
    "aibridge_model_thoughts": "interception_started_at",
    "aibridge_captures": "interception_started_at",  # schema v11 (--capture-bodies)
}
# Indexes only PostgreSQL needs: retention finds the slices of the sessions that had calls on a dropped day.
EXTRA_INDEXES: dict[str, tuple[str, ...]] = {
    "aigw_session_slices": ("CREATE INDEX idx_aigw_session_slices_started ON aigw_session_slices (started_at)",),
}
DAYS_AHEAD = 3  # partitions the periodic job keeps ready beyond today
WRITER_POOL = 2  # the record writer's connection and one for retention / CLI work in the same process
LOCK_TIMEOUT = "10s"  # DDL (partitions) waits at most this long for running queries, then retries later

_PARTITION_NAME = re.compile(rf"^{INTERCEPTIONS}_p(\d{{8}})$")
_BUSY_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement or lock timeout)
    "57P01", "57P02", "57P03",  # admin / crash shutdown, cannot connect now
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
})


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same in every process and release)."""
    return int.from_bytes(hashlib.sha256(f"aigw-proxy:{name}".encode()).digest()[:8], "big", signed=True)


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+").fullmatch  # pg_export_snapshot()'s form
MIGRATE_LOCK = lock_key("migrate")
PARTITION_LOCK = lock_key("partitions")


def _engine(config: DatabaseConfig, *, pool_size: int) -> AsyncEngine:
    # Generic plans: our statements are prepared once per connection (asyncpg's cache) and run with new values; a
    # custom plan per execution would re-plan every partition each time (~15-30 ms at 90 days of partitions, for
    # a query that then runs in 1 ms). Generic plans skip partitions at executor start-up instead.
    # No parallel workers either: starting them costs more than the index lookups the API's queries are.
    settings = {"application_name": "aigw-proxy", "TimeZone": "UTC", "jit": "off",
                "plan_cache_mode": "force_generic_plan", "max_parallel_workers_per_gather": "0"}
    if config.statement_timeout:
        settings["statement_timeout"] = str(max(1, round(config.statement_timeout * 1000)))
    engine = create_async_engine(
        config.sqlalchemy_url(),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a server restart costs one reconnect, not an error per pooled connection
        pool_recycle=1800,
        json_serializer=jsonb_dumps,
        json_deserializer=json_loads,
        connect_args={"server_settings": settings, "timeout": 10},
    )
    # An executemany INSERT (the writer's batches) as multi-row INSERT statements, up to 1000 rows each, instead of
    # one statement per row: fewer executor start-ups, and the statement-level triggers see the batch at once.
    engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def day_floor(value: datetime) -> date:
    return value.astimezone(UTC).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _collated(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    # Text of any declared length: SQLite never enforces VARCHAR(n) (the writer clips where a limit matters), so
    # neither does PostgreSQL here, and a value one accepts the other does too.
    if isinstance(type_, sa.String):
        return sa.Text(collation="C")
    return type_


def physical_table(table: sa.Table, md: sa.MetaData) -> sa.Table:
    """`table` as PostgreSQL stores it: "C" collation on text, partitioned by day where PARTITION_KEYS says."""
    for fk in table.foreign_keys:  # what its foreign keys name must be in `md` too (only their names are used)
        referred = fk.column.table
        if referred.key not in md.tables and referred is not table:
            referred.to_metadata(md)
    copy = table.to_metadata(md)
    for column in copy.columns:
        column.type = _collated(column.type)
    key = PARTITION_KEYS.get(table.name)
    if key is not None:
        copy.c[key].nullable = False
        copy.c[key].primary_key = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)  # "primary key columns changed": that is the point
            copy.append_constraint(sa.PrimaryKeyConstraint(
                *[c.name for c in table.primary_key.columns], key, name=f"{table.name}_pkey"))
        copy.dialect_kwargs["postgresql_partition_by"] = f"RANGE ({key})"
    return copy


async def _partition_days(conn: AsyncConnection) -> set[date]:
    rows = await conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"WHERE i.inhparent = '{INTERCEPTIONS}'::regclass")
    days = set()
    for (name,) in rows:
        if m := _PARTITION_NAME.match(name):
            days.add(datetime.strptime(m.group(1), "%Y%m%d").date())
    return days


def _partitions_like_interceptions(conn: sa.Connection, table: str) -> None:
    """A child table made after the interceptions had days (a later schema step): its partitions for those days."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"WHERE i.inhparent = '{INTERCEPTIONS}'::regclass")
    for (name,) in rows.all():
        if m := _PARTITION_NAME.match(name):
            day = datetime.strptime(m.group(1), "%Y%m%d").date()
            lo, hi = _midnight(day).isoformat(sep=" "), _midnight(day + timedelta(days=1)).isoformat(sep=" ")
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
                                 f"FOR VALUES FROM ('{lo}') TO ('{hi}')")


def _create_partition_sql(day: date) -> list[str]:
    lo, hi = _midnight(day).isoformat(sep=" "), _midnight(day + timedelta(days=1)).isoformat(sep=" ")
    return [f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
            f"FOR VALUES FROM ('{lo}') TO ('{hi}')" for table in PARTITION_KEYS]


async def ensure_partitions(db: Database, days: Iterable[date]) -> None:
    """Make sure the six tables have partitions for `days` (cached per Database; created under a lock)."""
    known: set[date] | None = db.state.get("partitions")
    wanted = set(days)
    if known is not None and wanted <= known:
        return
    async with db.writer.begin() as conn:
        await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        existing = await _partition_days(conn)
        missing = sorted(wanted - existing)
        if missing:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK})
            existing = await _partition_days(conn)  # again, under the lock: another process may have made them
            for day in sorted(wanted - existing):
                for ddl in _create_partition_sql(day):
                    await conn.exec_driver_sql(ddl)
                log.info("created the partitions for %s", day.isoformat())
                existing.add(day)
    db.state["partitions"] = existing


# -- retention ------------------------------------------------------------------------------------------------

_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
_KEYS = "aigw_retention_keys"

# Rebuild the straddling sessions (calls on both sides of the cut-off) from what is left of them.
_REBUILD_SESSIONS = f"""
INSERT INTO aigw_sessions (session_id, initiator_id, started_at, ended_at, last_prompt_at, interceptions, threads,
                           {", ".join(_TOKENS)})
SELECT i.session_id, i.initiator_id, min(i.started_at), max(i.ended_at), max(pr.last_at), count(*),
       sum(CASE WHEN i.thread_root_id IS NULL THEN 1 ELSE 0 END),
       {", ".join(f"COALESCE(sum(tk.{c}), 0)" for c in _TOKENS)}
FROM {_KEYS} k
JOIN aibridge_interceptions i ON i.session_id = k.session_id AND i.initiator_id = k.initiator_id
LEFT JOIN LATERAL (SELECT {", ".join(f"sum(t.{c}) AS {c}" for c in _TOKENS)} FROM aibridge_token_usages t
                   WHERE t.interception_id = i.id AND t.interception_started_at = i.started_at) tk ON true
LEFT JOIN LATERAL (SELECT max(p.created_at) AS last_at FROM aibridge_user_prompts p
                   WHERE p.interception_id = i.id AND p.interception_started_at = i.started_at) pr ON true
WHERE k.kind = 'all' AND k.straddles AND i.ended_at IS NOT NULL
GROUP BY i.session_id, i.initiator_id"""

_CLIENT = "COALESCE(i.client, 'Unknown')"
_REBUILD_SLICES = f"""
INSERT INTO aigw_session_slices (kind, value, session_id, initiator_id, started_at, last_started_at, ended_at,
                                 last_prompt_at, interceptions, threads, only_provider, only_provider_name,
                                 only_model, only_client)
SELECT k.kind, k.value, i.session_id, i.initiator_id, min(i.started_at), max(i.started_at), max(i.ended_at),
       max(i.last_prompt_at), count(*), sum(CASE WHEN i.thread_root_id IS NULL THEN 1 ELSE 0 END),
       {", ".join(f"CASE WHEN min({e}) = max({e}) THEN min({e}) END"
                  for e in ("i.provider", "i.provider_name", "i.model", _CLIENT))}
FROM {_KEYS} k
JOIN aibridge_interceptions i ON i.session_id = k.session_id AND i.initiator_id = k.initiator_id
    AND i.ended_at IS NOT NULL
    AND k.value = CASE k.kind WHEN 'all' THEN '' WHEN 'provider' THEN i.provider
                  WHEN 'provider_name' THEN i.provider_name WHEN 'model' THEN i.model ELSE {_CLIENT} END
WHERE k.straddles
GROUP BY k.kind, k.value, i.session_id, i.initiator_id"""


_MONTHS_LESS_DAYS = f"""
UPDATE aigw_spend_user_months m SET {", ".join(f"{c} = m.{c} - d.{c}" for c in SPEND_SUMS)}
FROM (SELECT initiator_id, substr(day, 1, 7) AS month, effective_group_id, api_equivalent,
             {", ".join(f"sum({c}) AS {c}" for c in SPEND_SUMS)}
      FROM aigw_spend_days WHERE day < :day AND day >= :month || '-01'
      GROUP BY initiator_id, substr(day, 1, 7), effective_group_id, api_equivalent) d
WHERE m.initiator_id = d.initiator_id AND m.month = d.month AND m.effective_group_id = d.effective_group_id
  AND m.api_equivalent = d.api_equivalent"""


async def drop_days_before(db: Database, before: datetime) -> tuple[int, int, list[date]]:
    """Drop the partitions of the days wholly before `before` and fix the summaries of the sessions that had
    calls on them; (interceptions, child rows, days) dropped."""
    cut_day = day_floor(before)
    cut = _midnight(cut_day)
    async with db.writer.begin() as conn:
        await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK})
        days = sorted(d for d in await _partition_days(conn) if d < cut_day)
        if not days:
            return 0, 0, []
        counts = {table: 0 for table in PARTITION_KEYS}
        for table in PARTITION_KEYS:
            union = " UNION ALL ".join(f"SELECT count(*) FROM {partition_name(table, d)}" for d in days)
            counts[table] = int((await conn.exec_driver_sql(f"SELECT sum(n) FROM ({union}) AS c(n)")).scalar() or 0)
        # The sessions' and slices' rows with calls before the cut-off: gone whole, or straddling it (rebuilt).
        await conn.execute(sa.text(
            f"CREATE TEMP TABLE {_KEYS} ON COMMIT DROP AS "
            "SELECT kind, value, session_id, initiator_id, last_started_at >= :cut AS straddles "
            "FROM aigw_session_slices WHERE started_at < :cut"
        ).bindparams(sa.bindparam("cut", type_=sa.DateTime(timezone=True))),
            {"cut": cut})
        await conn.exec_driver_sql(
            f"DELETE FROM aigw_sessions s USING {_KEYS} k WHERE k.kind = 'all' "
            "AND s.session_id = k.session_id AND s.initiator_id = k.initiator_id")
        await conn.exec_driver_sql(
            f"DELETE FROM aigw_session_slices s USING {_KEYS} k WHERE s.kind = k.kind AND s.value = k.value "
            "AND s.session_id = k.session_id AND s.initiator_id = k.initiator_id")
        # The spend months: the cut's own month loses the dropped days' sums, earlier months go whole.
        await conn.execute(sa.text(_MONTHS_LESS_DAYS), {"day": cut_day.isoformat(), "month": cut_day.isoformat()[:7]})
        await conn.execute(sa.text("DELETE FROM aigw_spend_user_months WHERE month < :month OR records <= 0"),
                           {"month": cut_day.isoformat()[:7]})
        for summary in ("aigw_interception_days", "aigw_spend_days", "aigw_spend_fleet_days"):  # by start day
            await conn.execute(sa.text(f"DELETE FROM {summary} WHERE day < :day"), {"day": cut_day.isoformat()})
        names = [partition_name(table, d) for d in days for table in PARTITION_KEYS]
        await conn.exec_driver_sql(f"DROP TABLE {', '.join(names)}")
        await conn.exec_driver_sql(_REBUILD_SESSIONS)
        await conn.exec_driver_sql(_REBUILD_SLICES)
    known: set[date] | None = db.state.get("partitions")
    if known is not None:
        known.difference_update(days)
    interceptions = counts.pop(INTERCEPTIONS)
    log.info("retention: dropped the partitions of %d day(s) before %s (%d interceptions, %d child rows)",
             len(days), cut_day.isoformat(), interceptions, sum(counts.values()))
    return interceptions, sum(counts.values()), days


# The writer's end-of-call UPDATE (write/rows.END_INTERCEPTION) for a whole batch: its parameters as arrays.
_END_KEYS = ("b_id", "b_started_at", "b_ended_at", "b_status", "b_upstream_status", "b_error_type",
             "b_error_message", "b_metadata", "b_model", "b_last_prompt_at")
_END_SQL = """
UPDATE aibridge_interceptions i SET ended_at = v.ended_at, status = v.status, upstream_status = v.upstream_status,
    error_type = v.error_type, error_message = v.error_message, metadata = v.metadata::jsonb,
    model = COALESCE(v.model, i.model), last_prompt_at = COALESCE(v.last_prompt_at, i.last_prompt_at)
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::int[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::timestamptz[])
     AS v(id, started_at, ended_at, status, upstream_status, error_type, error_message, metadata, model,
          last_prompt_at)
WHERE i.id = v.id AND i.started_at = v.started_at AND COALESCE(i.ended_at, 'infinity') = 'infinity'"""
# Not `i.ended_at IS NULL`: that matches the in-flight partial index, which a day's partition not analyzed yet
# estimates at one row; the generic plan then scanned every open interception once per ended one (a nested loop
# with the unnest inside: open calls x batch). Written this way only the primary key can find the rows: one probe
# per ended call, whatever the statistics. (Only an end at datetime.max, stored as 'infinity', would look open.)


# The writer's INSERTs (write/rows.INSERT_*) for a whole batch: one statement per table and set of columns,
# prepared once per connection, its columns passed as arrays. An executemany would be sent as multi-row VALUES
# statements instead, a new statement text (parsed and planned again by the server, compiled again by SQLAlchemy)
# for every batch size, with every value bound one by one.
def _array_type(column: sa.Column[Any]) -> tuple[str, bool]:
    """(the array type `column`'s values are sent as, whether they are JSON encoded to text first)."""
    from aigw_proxy.storage.schema.tables import UTCDateTime

    kind = column.type
    # The first match wins (a BigInteger is also an Integer).
    for type_class, array_type, as_json in ((UTCDateTime, "timestamptz", False), (sa.JSON, "text", True),
                                            (sa.Boolean, "bool", False), (sa.BigInteger, "int8", False),
                                            (sa.Integer, "int4", False), (sa.LargeBinary, "bytea", False),
                                            (sa.String, "text", False)):
        if isinstance(kind, type_class):
            return array_type, as_json
    raise TypeError(f"{column.table.name}.{column.name}: no array type for {kind!r}")


@functools.cache
def _insert_sql(table: sa.Table, keys: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """`INSERT INTO table (keys) SELECT … FROM unnest($1::type[], …)` and the positions of its JSON columns."""
    types = [_array_type(table.c[key]) for key in keys]
    arrays = ", ".join(f"${n}::{kind}[]" for n, (kind, _json) in enumerate(types, 1))
    select = ", ".join(f"v.{key}::jsonb" if json else f"v.{key}"
                       for key, (_kind, json) in zip(keys, types, strict=True))
    sql = (f"INSERT INTO {table.name} ({', '.join(keys)}) SELECT {select} "
           f"FROM unnest({arrays}) AS v({', '.join(keys)})")
    return sql, tuple(n for n, (_kind, json) in enumerate(types) if json)


# A page's sessions with their spans, joined first: `FROM aibridge_x` becomes `FROM <keys> CROSS JOIN aibridge_x`.
_SESSION_KEYS = "unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(sid, lo, hi)"


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, in `conn`'s transaction: SQLAlchemy's adapter opens its transaction on
    its first statement, so open it first, and the driver's rows come from the same snapshot as the statements
    around them."""
    raw = await conn.get_raw_connection()
    if getattr(raw.dbapi_connection, "_transaction", True) is None:
        await conn.exec_driver_sql("SELECT 1")
    driver = raw.driver_connection
    if driver is None:
        raise sa.exc.ResourceClosedError("the database connection is closed")
    return driver


class PostgresBackend:
    name = "postgresql"
    read_only: ClassVar[dict[str, Any]] = {}

    def engines(self, config: DatabaseConfig, guard: Any = None) -> Engines:
        return Engines(writer=_engine(config, pool_size=WRITER_POOL),
                       reader=_engine(config, pool_size=config.pool_size))

    def is_busy_error(self, exc: BaseException) -> bool:
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, OSError) or isinstance(exc, OSError):
            return True  # connection refused or reset: the server is (re)starting
        sqlstate = getattr(orig, "sqlstate", None) or ""
        if sqlstate in _BUSY_SQLSTATES or sqlstate.startswith("08"):  # 08: connection exceptions
            return True
        return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)

    async def migration_lock(self, conn: AsyncConnection) -> None:
        # Another process migrating holds it until its transaction ends; wait for it however long that takes.
        await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK})

    def create_tables(self, conn: sa.Connection, tables: Sequence[sa.Table], *, checkfirst: bool = False) -> None:
        md = sa.MetaData()
        inspector = sa.inspect(conn) if checkfirst else None
        for table in tables:
            if inspector is not None and inspector.has_table(table.name):
                continue
            copy = physical_table(table, md)
            conn.execute(sa.schema.CreateTable(copy, include_foreign_key_constraints=(
                None if table.name not in PARTITION_KEYS else [])))
            for index in copy.indexes:
                conn.execute(sa.schema.CreateIndex(index))
            for ddl in EXTRA_INDEXES.get(table.name, ()):
                conn.exec_driver_sql(ddl)
            if table.name in PARTITION_KEYS and table.name != INTERCEPTIONS:
                _partitions_like_interceptions(conn, table.name)

    def install_triggers(self, conn: sa.Connection, group: str) -> None:
        for statement in triggers.create_statements(group):
            conn.exec_driver_sql(statement)

    def drop_triggers(self, conn: sa.Connection, group: str) -> None:
        for statement in triggers.drop_statements(group):
            conn.exec_driver_sql(statement)

    @contextlib.contextmanager
    def bulk_load(self, conn: sa.Connection) -> Iterator[None]:
        """The summary triggers stand aside for this transaction until the block ends (rebuild afterwards)."""
        conn.exec_driver_sql("SELECT set_config('aigw.bulk', 'on', true)")
        yield  # on an error the transaction is rolled back, the setting with it
        conn.exec_driver_sql("SELECT set_config('aigw.bulk', 'off', true)")

    def day_of(self, column_sql: str) -> str:
        return f"to_char({column_sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def day_expr(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")

    def pairs_agg(self, first: str, second: str, where: str) -> str:
        return f"json_agg(json_build_array({first}, {second})) FILTER (WHERE {where})"

    def decode_json(self, value: Any) -> Any:
        return json_loads(value) if isinstance(value, str | bytes) else value

    def json_number_items(self, column: sa.ColumnElement[Any]) -> tuple[sa.FromClause, sa.ColumnElement[str],
                                                                         sa.ColumnElement[Any], sa.ColumnElement[bool]]:
        obj = sa.case((sa.func.jsonb_typeof(column) == "object", column), else_=sa.text("'{}'::jsonb"))
        each = sa.func.jsonb_each(obj).table_valued("key", "value")
        return (each, each.c.key, sa.cast(each.c.value, sa.Numeric),
                sa.func.jsonb_typeof(each.c.value) == "number")

    def index_hint(self, index: str) -> str:
        return ""

    def in_list(self, column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(sa.Text)))

    def partition_range(self, column: sa.ColumnElement[Any], lo: datetime | None,
                        hi: datetime | None) -> list[sa.ColumnElement[bool]]:
        conds = []
        if lo is not None:
            conds.append(column >= lo)
        if hi is not None:
            conds.append(column <= hi)
        return conds

    def child_join(self, child: str, interception: str) -> str:
        return (f"{child}.interception_id = {interception}.id "
                f"AND {child}.interception_started_at = {interception}.started_at")

    async def rows_of_sessions(self, conn: AsyncConnection, sql: str, sessions: Sequence[tuple[str, Any, Any]]
                               ) -> list[tuple[Any, ...]]:
        # Each session joined with its own span: its lookup goes to the partitions of its days only, not to
        # every partition for every session of the page.
        sql = SESSIONS.sub(lambda m: f"{m[1]}.session_id = k.sid AND {m[1]}.started_at BETWEEN k.lo AND k.hi", sql)
        return await self._by_session(conn, SPAN.sub(r"AND \1 BETWEEN k.lo AND k.hi", sql), sessions)

    async def _by_session(self, conn: AsyncConnection, sql: str, sessions: Sequence[tuple[str, Any, Any]]
                          ) -> list[tuple[Any, ...]]:
        sql = sql.replace("FROM aibridge_", f"FROM {_SESSION_KEYS} CROSS JOIN aibridge_", 1)
        driver = await _driver(conn)
        args: list[Any] = [[s[0] for s in sessions], [s[1] for s in sessions], [s[2] for s in sessions]]
        if PAGE_SPAN.search(sql):  # bounds the planner prunes partitions by (the sessions' own spans cannot)
            sql = PAGE_SPAN.sub(r"AND \1 BETWEEN $4 AND $5", sql)
            args += [min(args[1]), max(args[2])]
        rows = await driver.fetch(sql, *args)
        return [tuple(r) for r in rows]

    async def driver_rows(self, conn: AsyncConnection, sql: str, values: Sequence[Any],
                          bounds: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]]:
        driver = await _driver(conn)
        sql = sql.replace(IN_VALUES, "= ANY($1)")
        if bounds is None:
            rows = await driver.fetch(BOUNDS.sub("", sql), list(values))
        else:
            rows = await driver.fetch(BOUNDS.sub(r"AND \1 BETWEEN $2 AND $3", sql), list(values), *bounds)
        return [tuple(r) for r in rows]

    def json_objects_agg(self, fields: Sequence[tuple[str, str, JsonKind]], order_by: str | None) -> str | None:
        return json_text.objects_agg(fields, order_by)

    async def session_page_json(self, conn: AsyncConnection, page: Sequence[tuple[Any, ...]],
                                span: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]] | None:
        return await session_json.page_json(await _driver(conn), page, span)

    def json_object(self, fields: Sequence[tuple[str, str, JsonKind]]) -> str | None:
        return json_text.object_text(fields)

    async def export_snapshot(self, conn: AsyncConnection) -> str | None:
        await conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot: the exported one
        return str((await conn.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one())

    async def import_snapshot(self, conn: AsyncConnection, snapshot: str) -> None:
        if not _SNAPSHOT_ID(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        await conn.execution_options(isolation_level="REPEATABLE READ")  # SET TRANSACTION SNAPSHOT needs it
        await conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # first in the transaction

    async def insert_rows(self, conn: AsyncConnection, statement: sa.Insert, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        keys = tuple(rows[0])
        sql, json_columns = _insert_sql(statement.table, keys)
        arrays = [[row[key] for row in rows] for key in keys]
        for n in json_columns:  # SQLAlchemy's JSON type stores None as JSON null, and so do we
            arrays[n] = [jsonb_dumps(value) for value in arrays[n]]
        await conn.exec_driver_sql(sql, tuple(arrays))

    async def end_interceptions(self, conn: AsyncConnection, statement: sa.Update,
                                rows: Sequence[dict[str, Any]]) -> int:
        # One UPDATE joined to the batch's arrays instead of one per row: a statement's start-up once per batch,
        # and the statement-level summary triggers see every call the batch ended at once.
        arrays = [[row[key] for row in rows] for key in _END_KEYS]
        arrays[_END_KEYS.index("b_metadata")] = [None if m is None else jsonb_dumps(m) for m in arrays[7]]
        result = await conn.exec_driver_sql(_END_SQL, tuple(arrays))
        return int(result.rowcount)

    async def write_rows(self, conn: AsyncConnection, writes: Sequence[RowWrite]) -> list[int]:
        counts: list[int] = []
        for write in writes:
            if write.kind == "insert":
                await self.insert_rows(conn, cast(sa.Insert, write.statement), write.rows)
                counts.append(-1)
            elif write.kind == "end":
                counts.append(await self.end_interceptions(conn, cast(sa.Update, write.statement), write.rows))
            else:
                counts.append(int((await conn.execute(write.statement, list(write.rows))).rowcount))
        return counts

    async def prepare_batch(self, db: Database, batch: Sequence[object]) -> None:
        from aigw_proxy.recording.records import InterceptionStarted

        days = {day_floor(ev.started_at if ev.started_at.tzinfo else ev.started_at.replace(tzinfo=UTC))
                for ev in batch if isinstance(ev, InterceptionStarted)}
        if days:
            await ensure_partitions(db, days)

    async def drop_before(self, db: Database, before: datetime) -> tuple[int, int]:
        interceptions, children, _days = await drop_days_before(db, before)
        return interceptions, children

    async def reclaim_space(self, db: Database, *, pause: float = 0.01) -> None:
        pass  # autovacuum reuses the space of deleted rows; dropped partitions gave theirs back at once

    @asynccontextmanager
    async def cluster_job(self, db: Database, job: str) -> AsyncIterator[bool]:
        # Leadership: the process that gets the job's session-level advisory lock keeps it, on a connection of its
        # own, until it stops (Database.close, or its connection lost): it runs every round of the job, the others
        # skip theirs; when it goes away the lock is released and the next process to try takes over.
        locks: dict[str, asyncio.Lock] = db.state.setdefault("job_locks", {})
        async with locks.setdefault(job, asyncio.Lock()):  # one round at a time in this process
            async with self._job(db, job) as mine:
                yield mine

    @asynccontextmanager
    async def _job(self, db: Database, job: str) -> AsyncIterator[bool]:
        held: dict[str, AsyncConnection] = db.state.setdefault("jobs", {})
        conn = held.get(job)
        if conn is not None:
            try:
                await conn.execute(sa.text("SELECT 1"))
                await conn.commit()
            except (sa.exc.SQLAlchemyError, OSError):  # the connection, and the lock with it, is gone
                held.pop(job, None)
                with contextlib.suppress(sa.exc.SQLAlchemyError, OSError):
                    await conn.invalidate()
                conn = None
        if conn is None:
            conn = await db.writer.connect()
            try:
                mine = bool((await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                                {"k": lock_key(f"job:{job}")})).scalar())
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            if not mine:
                await conn.close()
                yield False
                return
            held[job] = conn
        yield True

    async def maintain(self, db: Database) -> None:
        today = datetime.now(UTC).date()
        await ensure_partitions(db, (today + timedelta(days=n) for n in range(-1, DAYS_AHEAD + 1)))


POSTGRESQL = PostgresBackend()
