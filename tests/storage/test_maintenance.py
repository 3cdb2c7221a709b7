"""`db check` and `db backup` underneath: the integrity check finds real damage, a backup taken while records are
being written is a whole, sound, private database."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, StorageError, list_interceptions, open_database
from aigw_proxy.storage.maintenance import backup_database, check_database
from tests.support.records import ended, started


async def test_a_sound_database_checks_ok(db: Database, db_path: Path, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("a", alice))
    writer.submit(ended("a", response_id="r"))
    await writer.flush()
    for quick in (False, True):
        result = await asyncio.to_thread(check_database, db_path, quick=quick)
        assert result.ok and result.problems == [] and result.schema_version is not None and result.pages > 0


def _damage(path: Path) -> None:
    """Overwrite the middle of the file (index and table pages), as a bad disk or a stray write would."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


async def test_damage_is_found_and_listed(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    for n in range(400):
        writer.submit(started(f"i{n}", alice, t=n))
        writer.submit(ended(f"i{n}", t=n + 1, response_id=f"r{n}", prompt="x" * 300))
    await writer.close()
    await db.close()
    await asyncio.to_thread(_damage, db_path)
    result = await asyncio.to_thread(check_database, db_path)
    assert not result.ok and result.problems


async def test_a_file_that_is_no_database_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    await asyncio.to_thread(junk.write_bytes, b"\x00garbage" * 1000)
    result = await asyncio.to_thread(check_database, junk)
    assert result.problems == ["DatabaseError: file is not a database"]
    with pytest.raises(StorageError, match="no database file"):
        await asyncio.to_thread(check_database, tmp_path / "missing.db")


async def test_a_backup_while_records_are_written_is_whole_and_sound(
    tmp_path: Path, db: Database, db_path: Path, alice: Initiator, writer: RecordWriter
) -> None:
    stop = asyncio.Event()

    async def traffic() -> int:
        n = 0
        while not stop.is_set():
            writer.submit(started(f"i{n}", alice, t=n))
            writer.submit(ended(f"i{n}", t=n + 1, response_id=f"r{n}"))
            n += 1
            await asyncio.sleep(0.001)
        return n

    task = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    target = tmp_path / "backup.db"
    result = await asyncio.to_thread(backup_database, db_path, target)
    stop.set()
    written = await task
    await writer.flush()
    assert result.check.ok and result.bytes == (await asyncio.to_thread(target.stat)).st_size
    assert (await asyncio.to_thread(target.stat)).st_mode & 0o777 == 0o600
    copy = await open_database(target)
    try:
        backed_up = await list_interceptions(copy, limit=100_000)
    finally:
        await copy.close()
    assert 0 < len(backed_up) <= written  # a snapshot: what was committed when it was taken
    assert all(r["status"] == "completed" for r in backed_up)
    with pytest.raises(StorageError, match="exists"):
        await asyncio.to_thread(backup_database, db_path, target)  # never overwrites
    assert [n for n in await asyncio.to_thread(os.listdir, tmp_path) if n.startswith(".backup")] == []
