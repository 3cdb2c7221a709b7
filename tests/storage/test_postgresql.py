"""What only PostgreSQL has: the day partitions and what retention does with them, the advisory locks that let
several processes share one database (migrations, the periodic jobs), and a URL whose password never shows.

The behaviour both backends share (lists, sessions, summaries, retention's results) is tested on both by the
other storage tests; these check the PostgreSQL mechanics behind it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import (
    Database,
    DatabaseConfig,
    RecordWriter,
    RetentionLoop,
    StorageError,
    UserStore,
    list_interceptions,
    open_database,
)
from aigw_proxy.storage.dialects.postgresql import PARTITION_KEYS, lock_key
from aigw_proxy.storage.retention import purge_old_records
from aigw_proxy.storage.schema import session_slices, spend_days, summaries, tables
from aigw_proxy.storage.schema.migrations import LATEST_VERSION
from tests.support.backends import fresh_database
from tests.support.daemon import run_cli
from tests.support.postgres import PostgresCluster
from tests.support.records import at, ended, started

DAY = 86400
PG = pytest.mark.parametrize("backend", ["postgresql"])


async def _rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with db.reader.connect() as conn:
        return [tuple(r) for r in await conn.execute(sa.text(sql), params)]


async def _partitions(db: Database, table: str) -> list[str]:
    return [r[0] for r in await _rows(db, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                          "WHERE i.inhparent = CAST(:t AS regclass) ORDER BY 1", t=table)]


async def _days_of_traffic(writer: RecordWriter, who: Initiator, days: int, per_day: int,
                           prefix: str = "d", start: float = 0) -> list[str]:
    """`per_day` calls a day from T0 (2025-03-01 12:00; `start` seconds later), in sessions of three calls that
    cross midnight."""
    ids = []
    for n in range(days * per_day):
        iid = f"{prefix}{n:04d}"
        t = start + n * DAY / per_day
        writer.submit(started(iid, who, t=t, client_session_id=f"{prefix}s{n // 3}", model=("gpt-5", "o4-mini")[n % 2],
                              provider="openai"))
        writer.submit(ended(iid, t=t + 2, response_id=f"r{n}", prompt=f"p{n}", tool_call_ids=(f"c{n}",)))
        ids.append(iid)
    await writer.flush(timeout=20)
    return ids


@PG
async def test_interceptions_and_children_are_partitioned_by_day(
    db: Database, alice: Initiator, writer: RecordWriter
) -> None:
    await _days_of_traffic(writer, alice, days=2, per_day=4)  # from noon on 1 March: calls on three days
    for table, key in PARTITION_KEYS.items():
        assert await _partitions(db, table) == [f"{table}_p2025030{d}" for d in (1, 2, 3)], table
        pk = await _rows(db, "SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid "
                             "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = CAST(:t AS regclass) AND x.indisprimary "
                             "ORDER BY 1", t=table)
        own = [c.name for c in tables.metadata.tables[table].primary_key]  # id; a capture's interception_id
        assert [r[0] for r in pk] == sorted([*own, key])
    # Each child row sits in its interception's day, whatever its own time.
    rows = await _rows(db, "SELECT tableoid::regclass::text, count(*) FROM aibridge_user_prompts GROUP BY 1 ORDER BY 1")
    assert rows == [("aibridge_user_prompts_p20250301", 2), ("aibridge_user_prompts_p20250302", 4),
                    ("aibridge_user_prompts_p20250303", 2)]
    # Text compares byte-wise, as on SQLite, whatever the database's own collation.
    collations = await _rows(db, "SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_name = "
                                 "'aibridge_interceptions' AND data_type IN ('text', 'character varying')")
    assert collations == [("C",)]


@PG
async def test_a_record_from_a_day_without_a_partition_gets_one(
    db: Database, alice: Initiator, writer: RecordWriter
) -> None:
    writer.submit(started("old", alice, t=-400 * DAY))
    writer.submit(ended("old", t=-400 * DAY + 1, prompt="from last year"))
    writer.submit(started("new", alice, t=30 * DAY))
    writer.submit(ended("new", t=30 * DAY + 1))
    await writer.flush(timeout=10)
    assert writer.dropped == {}
    assert [r["id"] for r in await list_interceptions(db)] == ["new", "old"]
    assert await _partitions(db, "aibridge_interceptions") == [
        f"aibridge_interceptions_p{at(-400 * DAY):%Y%m%d}", f"aibridge_interceptions_p{at(30 * DAY):%Y%m%d}"]


@PG
async def test_upkeep_makes_the_next_days_partitions(db: Database) -> None:
    await db.backend.maintain(db)
    today = datetime.now(UTC).date()
    have = await _partitions(db, "aibridge_model_thoughts")
    for n in range(-1, 4):
        assert f"aibridge_model_thoughts_p{today + timedelta(days=n):%Y%m%d}" in have


async def _kept_summaries(db: Database) -> list[list[tuple[Any, ...]]]:
    async with db.reader.connect() as conn:
        return [sorted(tuple(r) for r in await conn.execute(q)) for q in (
            sa.select(summaries.sessions),
            sa.select(summaries.interception_days).where(summaries.interception_days.c.interceptions > 0),
            sa.select(session_slices.session_slices),
            sa.select(session_slices.slice_counts).where(session_slices.slice_counts.c.sessions > 0),
            *(sa.select(t) for t in spend_days.TABLES))]


async def _assert_summaries_equal_a_rebuild(db: Database) -> None:
    left = await _kept_summaries(db)
    async with db.writer.begin() as conn:
        await conn.run_sync(summaries.rebuild)
        await conn.run_sync(session_slices.rebuild)
        await conn.run_sync(spend_days.rebuild)
    assert await _kept_summaries(db) == left


@PG
async def test_retention_drops_whole_days_and_deletes_only_in_the_boundary_day(
    db: Database, alice: Initiator, bob: Initiator, writer: RecordWriter
) -> None:
    ids = await _days_of_traffic(writer, alice, days=5, per_day=8)
    await _days_of_traffic(writer, bob, days=1, per_day=3, prefix="b")
    writer.submit(started("in-flight", alice, t=DAY / 2))  # never ended: dropped with its day all the same
    await writer.flush(timeout=10)
    cut = at(2 * DAY + DAY / 4)  # 2025-03-03 18:00: days 1 and 2 go whole, day 3 up to 18:00 row by row
    total = await _rows(db, "SELECT count(*) FROM aibridge_interceptions WHERE started_at < :c", c=cut)

    result = await purge_old_records(db, cut, batch_size=2, pause=0)

    # alice's 4 + 8 on days 1-2, bob's 3 and the call in flight there, then 6 calls of day 3 before 18:00
    assert result.deleted_interceptions == total[0][0] == 4 + 8 + 3 + 1 + 6
    assert result.deleted_child_rows == 3 * (result.deleted_interceptions - 1)  # token usage, prompt, tool call
    assert result.batches == 3  # only day 3's six early calls went row by row, two at a time
    for table in PARTITION_KEYS:
        assert await _partitions(db, table) == [f"{table}_p2025030{d}" for d in (3, 4, 5, 6)], table
    kept = {r["id"] for r in await list_interceptions(db, limit=1000)}
    assert kept == {iid for iid in ids if at(int(iid[1:]) * DAY / 8) >= cut}
    # The summaries the partition drop and the row deletes left equal a rebuild from what is left.
    await _assert_summaries_equal_a_rebuild(db)
    assert await purge_old_records(db, cut) == type(result)(0, 0, 0)


@PG
async def test_retention_across_a_months_end_keeps_the_spend_months_exact(
    db: Database, alice: Initiator, bob: Initiator, writer: RecordWriter
) -> None:
    await _days_of_traffic(writer, alice, days=6, per_day=4, start=-3 * DAY)  # from Feb 26 12:00 to Mar 4
    await _days_of_traffic(writer, bob, days=2, per_day=3, prefix="b", start=-DAY)
    before = await _rows(db, "SELECT month, sum(records) FROM aigw_spend_user_months GROUP BY 1 ORDER BY 1")
    assert [m for m, _ in before] == ["2025-02", "2025-03"]
    # Mar 2 18:00: February's days and March 1 are dropped whole (March's sums lose March 1's), Mar 2 row by row.
    result = await purge_old_records(db, at(DAY + DAY / 4), batch_size=3, pause=0)
    assert result.deleted_interceptions > 0 and result.batches > 0
    after = await _rows(db, "SELECT month, sum(records) FROM aigw_spend_user_months GROUP BY 1 ORDER BY 1")
    left = await _rows(db, "SELECT count(*) FROM aibridge_token_usages")
    assert after == [("2025-03", left[0][0])]
    await _assert_summaries_equal_a_rebuild(db)


@PG
async def test_a_day_is_dropped_in_one_statement_whatever_its_size(
    db: Database, alice: Initiator, writer: RecordWriter
) -> None:
    await _days_of_traffic(writer, alice, days=2, per_day=300)  # from noon: 150 calls on day 1
    # Midnight exactly: day 1 is dropped, no row of day 2 is looked at.
    result = await purge_old_records(db, datetime(2025, 3, 2, tzinfo=UTC), pause=0)
    assert (result.deleted_interceptions, result.deleted_child_rows, result.batches) == (150, 450, 0)
    assert await _rows(db, "SELECT count(*) FROM aibridge_interceptions") == [(450,)]


async def test_concurrent_opens_migrate_once(postgres_cluster: PostgresCluster) -> None:
    with fresh_database(postgres_cluster, migrated=False) as url:
        script = ("import asyncio, sys\nfrom aigw_proxy.storage import open_database\n"
                  "async def main():\n    await (await open_database(sys.argv[1])).close()\nasyncio.run(main())\n")
        procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", script, url, stderr=subprocess.PIPE)
                 for _ in range(3)]
        dbs = await asyncio.gather(*(open_database(url) for _ in range(3)))  # and three more in this process
        for db in dbs:
            await db.close()
        for p in procs:
            _, err = await asyncio.wait_for(p.communicate(), 120)
            assert p.returncode == 0, err.decode()
        db = await open_database(url)
        try:
            rows = await _rows(db, "SELECT version, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
            assert rows == [(v, 1) for v in range(1, LATEST_VERSION + 1)]
        finally:
            await db.close()


async def _triggers(db: Database) -> list[tuple[Any, ...]]:
    return await _rows(db, "SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger "
                           "WHERE NOT tgisinternal ORDER BY 1, 2")


@PG
async def test_a_v11_database_upgrades_to_v12_and_keeps_its_summaries(
    db: Database, db_target: str, alice: Initiator, writer: RecordWriter
) -> None:
    """A database written by a v11 release gets v12's child-row triggers in place of its own: each trigger once,
    the records untouched, and the summaries that writes after the upgrade keep equal to a rebuild."""
    await _days_of_traffic(writer, alice, days=2, per_day=4)
    before = await list_interceptions(db)
    fresh = await _triggers(db)
    def drop_child_row_triggers(conn: sa.Connection) -> None:
        for group in ("summaries", "spend"):
            db.backend.drop_triggers(conn, group)

    async with db.writer.begin() as conn:  # back to v11: no v12 row, and its triggers on child rows gone, so
        await conn.run_sync(drop_child_row_triggers)  # only the v12 step can bring working ones back
        await conn.execute(sa.text("DELETE FROM schema_migrations WHERE version >= 12"))
    assert len(await _triggers(db)) < len(fresh)
    await writer.close(timeout=10)
    await db.close()

    again = await open_database(db_target)  # migrates v11 -> v12
    try:
        assert await _rows(again, "SELECT max(version) FROM schema_migrations") == [(LATEST_VERSION,)]
        assert await _triggers(again) == fresh
        assert await list_interceptions(again) == before
        w = RecordWriter(again, flush_interval=0.005)
        w.start()
        try:
            await _days_of_traffic(w, alice, days=2, per_day=3, prefix="u", start=DAY / 2)  # new sessions and days
        finally:
            await w.close(timeout=10)
        assert len(await list_interceptions(again)) == len(before) + 6
        await _assert_summaries_equal_a_rebuild(again)
    finally:
        await again.close()


@PG
async def test_retention_runs_in_one_process_at_a_time(
    db: Database, db_target: str, alice: Initiator, writer: RecordWriter
) -> None:
    await _days_of_traffic(writer, alice, days=3, per_day=4)
    other = await open_database(db_target)  # another replica
    try:
        here, there = RetentionLoop(db, timedelta(days=1)), RetentionLoop(other, timedelta(days=1))
        async with db.backend.cluster_job(db, "retention") as mine:  # this replica is purging
            assert mine
            assert await there.run_once() is None  # so the other one skips its round
        assert there.purges == 0 and there.skipped == 1
        # Both loops at once, round after round: the one that has the job keeps it, every row purged once.
        results = await asyncio.gather(*(loop.run_once() for _ in range(3) for loop in (here, there)))
        assert sum(r.deleted_interceptions for r in results if r is not None) == 12
        assert here.deleted == 12 and here.purges == 3 and there.purges == 0 and there.skipped == 4
        assert await list_interceptions(db) == []
        # When it stops, the next replica to try takes the job over.
        await db.close()
        assert await there.run_once() is not None and there.purges == 1
    finally:
        await other.close()


def test_the_job_lock_keys_are_stable() -> None:
    assert lock_key("job:retention") == lock_key("job:retention") != lock_key("migrate")
    assert -(2**63) <= lock_key("migrate") < 2**63


async def test_the_password_is_never_shown(postgres_cluster: PostgresCluster, tmp_path: Any) -> None:
    secret = postgres_cluster.password
    odd = "Wr0ng:p@ss/wörd"
    unquoted = DatabaseConfig.of(postgres_cluster.url.replace(secret, odd))  # malformed: still hidden whole
    assert unquoted.display == "postgresql://aigw:***@" + postgres_cluster.url.split("@", 1)[1]
    wrong = postgres_cluster.url.replace(secret, quote(odd, safe=""))
    config = DatabaseConfig.of(wrong)
    assert "Wr0ng" not in config.display + repr(config) and config.display.startswith("postgresql://aigw:***@")
    with pytest.raises(StorageError) as raised:
        await open_database(wrong)
    assert "password authentication failed" in str(raised.value) and "Wr0ng" not in str(raised.value)
    unreachable = f"postgresql://aigw:{secret}@127.0.0.1:1/aigw"
    for url in (unreachable, postgres_cluster.url + "_missing"):
        proc = run_cli(tmp_path, "users", "list", check=False, database_url=url)
        assert proc.returncode == 1 and "cannot open the database postgresql://aigw:***@" in proc.stderr, proc.stderr
        assert secret not in proc.stderr + proc.stdout
    db = await open_database(postgres_cluster.url)
    try:
        assert secret not in repr(db) and db.config.display == db.config.mask(postgres_cluster.url)
    finally:
        await db.close()


def test_a_url_names_postgresql_or_a_sqlite_file() -> None:
    assert DatabaseConfig.of("postgres://u:p@h/db").backend_name == "postgresql"
    assert str(DatabaseConfig.of("postgresql://u:p@h/db").sqlalchemy_url()).startswith("postgresql+asyncpg://u:")
    assert DatabaseConfig.of("sqlite:////tmp/x.db").path is not None
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'"):
        DatabaseConfig.of("mysql://u:p@h/db")


@PG
async def test_users_added_on_one_replica_authenticate_on_another(db: Database, db_target: str) -> None:
    other = await open_database(db_target)
    try:
        _, token = await UserStore(db).create_user("carol")
        assert await UserStore(other).authenticate(token) is not None
    finally:
        await other.close()
