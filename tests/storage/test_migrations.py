from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import (
    LATEST_VERSION,
    Database,
    RecordWriter,
    SchemaTooNewError,
    StorageError,
    current_version,
    list_interceptions,
    migrate,
    open_database,
)
from aigw_proxy.storage.dialects.sqlite import pragma
from aigw_proxy.storage.schema.tables import CHILD_TABLES
from tests.support.records import ended, started


def _versions(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


async def test_migrate_creates_schema_and_version_table(db_path: Path) -> None:
    db = await open_database(db_path)
    try:
        assert await asyncio.to_thread(db_path.exists)
        assert await current_version(db.writer) == LATEST_VERSION == 12
        async with db.reader.connect() as conn:
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        assert {
            "schema_migrations",
            "users",
            "api_tokens",
            "aibridge_interceptions",
            "aibridge_token_usages",
            "aibridge_user_prompts",
            "aibridge_tool_usages",
            "aibridge_model_thoughts",
            "aibridge_captures",
            "aigw_sessions",
            "aigw_interception_days",
            "aigw_session_slices",
            "aigw_session_slice_counts",
            "aigw_audit_log",
        } <= tables
    finally:
        await db.close()
    assert _versions(db_path) == list(range(1, LATEST_VERSION + 1))


async def test_migrate_is_idempotent(db_path: Path) -> None:
    for _ in range(3):
        db = await open_database(db_path)
        assert await migrate(db.writer) == LATEST_VERSION
        await db.close()
    assert _versions(db_path) == list(range(1, LATEST_VERSION + 1))


async def test_concurrent_open_in_one_process(db_path: Path) -> None:
    dbs = await asyncio.gather(*(open_database(db_path) for _ in range(4)))
    for db in dbs:
        await db.close()
    assert _versions(db_path) == list(range(1, LATEST_VERSION + 1))


def test_concurrent_processes_migrate_once(db_path: Path) -> None:
    """The daemon and a CLI starting at once on a fresh file: both succeed, v1 applied once."""
    script = (
        "import asyncio, sys\n"
        "from aigw_proxy.storage import open_database\n"
        "async def main():\n"
        "    db = await open_database(sys.argv[1])\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db_path)], stderr=subprocess.PIPE) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    assert _versions(db_path) == list(range(1, LATEST_VERSION + 1))


async def test_newer_schema_is_refused(db_path: Path) -> None:
    db = await open_database(db_path)
    await db.close()
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, '2030-01-01 00:00:00.000000')")
    with pytest.raises(SchemaTooNewError, match=r"version 99.*newer than this aigw-proxy supports"):
        await open_database(db_path)


def _write_garbage(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)


async def test_not_a_database_is_a_storage_error(db_path: Path) -> None:
    await asyncio.to_thread(_write_garbage, db_path)
    with pytest.raises(StorageError, match="cannot open the database"):
        await open_database(db_path)


async def test_pragmas_on_every_connection(db_path: Path) -> None:
    db = await open_database(db_path)
    try:
        for engine in (db.writer, db.reader):
            async with engine.connect() as conn:
                assert await pragma(conn, "journal_mode") == "wal"
                assert await pragma(conn, "synchronous") == 1  # NORMAL
                assert await pragma(conn, "busy_timeout") == 5000
                assert await pragma(conn, "foreign_keys") == 1
                assert await pragma(conn, "auto_vacuum") == 2  # INCREMENTAL, set before the first table
    finally:
        await db.close()


async def test_session_id_is_a_stored_generated_column(db_path: Path) -> None:
    db = await open_database(db_path)
    await db.close()
    with closing(sqlite3.connect(db_path)) as conn, conn:
        cols = {r[1]: r[6] for r in conn.execute("PRAGMA table_xinfo(aibridge_interceptions)")}
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(aibridge_interceptions)")}
    assert cols["session_id"] == 3  # 3 = STORED generated column
    assert {
        "idx_aibridge_interceptions_started_at_id",
        "idx_aibridge_interceptions_session_id",
        "idx_aibridge_interceptions_session_latest",
    } <= indexes


async def test_v9_gives_child_rows_their_interception_start(
    db_path: Path, db: Database, writer: RecordWriter, alice: Initiator
) -> None:
    writer.submit(started("a", alice, t=0))
    writer.submit(ended("a", t=1, response_id="r-a", prompt="hi", tool_call_ids=("c1",)))
    await writer.flush(timeout=10)
    before = await list_interceptions(db)
    await writer.close(timeout=10)
    await db.close()
    children = [t.name for t in CHILD_TABLES if t.name != "aibridge_captures"]
    with closing(sqlite3.connect(db_path)) as conn, conn:  # what a v8 database looked like
        conn.execute("DROP TABLE aibridge_captures")  # v11's
        for table in children:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN interception_started_at")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 9")
    again = await open_database(db_path)  # migrates v8 -> v9
    try:
        assert await list_interceptions(again) == before
        w = RecordWriter(again, flush_interval=0.005)
        w.start()
        w.submit(started("b", alice, t=5))
        w.submit(ended("b", t=6, response_id="r-b"))
        await w.close(timeout=10)
    finally:
        await again.close()
    with closing(sqlite3.connect(db_path)) as conn:
        starts = conn.execute("SELECT interception_id, interception_started_at FROM aibridge_token_usages "
                              "ORDER BY interception_id").fetchall()
    assert starts == [("a", None), ("b", "2025-03-01 12:00:05.000000")]  # old rows stay NULL: SQLite never reads it


async def test_a_v10_database_gets_the_capture_table(db_path: Path) -> None:
    """v10 adds the raw-capture table to a database from before it (v1 makes it on a new one)."""
    db = await open_database(db_path)
    await db.close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("DROP TABLE aibridge_captures")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 11")  # a v10 database
        conn.commit()
    db = await open_database(db_path)
    try:
        async with db.reader.connect() as conn:
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        assert "aibridge_captures" in tables
    finally:
        await db.close()
    assert _versions(db_path) == list(range(1, LATEST_VERSION + 1))
