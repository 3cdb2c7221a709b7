"""Raw captures in the database: written by the record writer after their interception's end, read back with the
interception's access rules, kept through the spool without an unredacted byte on disk, removed by retention."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from aigw_proxy.capture.build import CaptureBuilder
from aigw_proxy.capture.raw import CaptureRecord, RawCapture
from aigw_proxy.recording.records import Initiator
from aigw_proxy.redaction.engine import Redactor
from aigw_proxy.storage import LATEST_VERSION, Database, RecordWriter, get_capture, migrate, open_database
from aigw_proxy.storage.retention import purge_old_records
from aigw_proxy.storage.write.core import default_spool_path
from aigw_proxy.storage.write.spool import decode, encode
from tests.support.records import at, ended, started

KEY = "sk-ant-api03-" + "Zq8wXe3rTy6uIo9pAs2dFg5hJk1lZx4c" * 3
SSE = b'event: message_start\ndata: {"type":"message_start"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'


def capture(iid: str, *, t: float = 0, prompt: str = "hello") -> CaptureRecord:
    raw = RawCapture(1024 * 1024, route="/v1/messages",
                     request_headers={"x-api-key": KEY, "content-type": "application/json"})
    raw.request.set(f'{{"messages":[{{"role":"user","content":"{prompt}"}}]}}'.encode())
    raw.response_status = 200
    raw.response_headers = {"content-type": "text/event-stream", "set-cookie": "a=b"}
    raw.response.add(SSE)
    raw.streamed = True
    return CaptureRecord(iid, at(t), raw=raw, builder=CaptureBuilder(Redactor()))


def _count(db_path: Path, table: str = "aibridge_captures") -> int:
    with closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_the_writer_stores_a_capture_after_its_end(db: Database, alice: Initiator, bob: Initiator,
                                                         writer: RecordWriter) -> None:
    writer.submit(started("i-1", alice))
    writer.submit(ended("i-1"))
    writer.submit(capture("i-1", prompt=f"my key is {KEY}"))
    await writer.flush(10)
    found = await get_capture(db, "i-1")
    assert found is not None
    assert found["request"]["headers"] == {"x-api-key": "[REDACTED:credential-header]",
                                           "content-type": "application/json"}
    assert KEY not in found["request"]["body"] and "[REDACTED:anthropic-api-key]" in found["request"]["body"]
    assert found["response"]["body"] == SSE.decode() and found["response"]["streamed"]
    assert found["response"]["headers"]["set-cookie"] == "[REDACTED:credential-header]"
    assert found["response"]["size"] == len(SSE) and not found["response"]["truncated"]
    assert found["redactions"] == {"anthropic-api-key": 1, "credential-header": 2}
    # The interception's access rules: its owner and admins see it; another member gets nothing.
    assert await get_capture(db, "i-1", visible_to=alice.user_id) == found
    assert await get_capture(db, "i-1", visible_to=bob.user_id) is None
    assert await get_capture(db, "nope") is None


async def test_a_capture_of_an_unknown_interception_is_skipped(db: Database, writer: RecordWriter) -> None:
    writer.submit(capture("never-started"))
    await writer.flush(10)
    assert writer.dropped == {"unknown_interception": 1}
    assert await get_capture(db, "never-started") is None


async def _stored(db: Database) -> int:
    async with db.reader.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM aibridge_captures"))).scalar_one())


async def test_retention_removes_captures_with_their_interceptions(db: Database, alice: Initiator,
                                                                   writer: RecordWriter) -> None:
    for n in range(10):
        writer.submit(started(f"i-{n}", alice, t=n * 60))
        writer.submit(ended(f"i-{n}", t=n * 60 + 1))
        writer.submit(capture(f"i-{n}", t=n * 60))
    await writer.flush(10)
    assert await _stored(db) == 10
    result = await purge_old_records(db, at(5 * 60), pause=0)  # within a day: row by row
    assert result.deleted_interceptions == 5
    assert await _stored(db) == 5
    assert await get_capture(db, "i-4") is None and await get_capture(db, "i-5") is not None
    await purge_old_records(db, at(3 * 86400), pause=0)  # whole days (PostgreSQL: their partitions dropped)
    assert await _stored(db) == 0 and await get_capture(db, "i-9") is None


async def test_a_database_from_before_captures_gets_the_table(db: Database, alice: Initiator,
                                                              writer: RecordWriter) -> None:
    """The capture step applied to a database that already holds calls (on PostgreSQL: the capture table gets
    the partitions of the days the interceptions have, so a capture of an earlier call is stored too)."""
    writer.submit(started("old", alice))
    writer.submit(ended("old"))
    await writer.flush(10)
    async with db.writer.begin() as conn:  # what the database looked like before the step
        await conn.execute(sa.text("DROP TABLE aibridge_captures"))
        await conn.execute(sa.text("DELETE FROM schema_migrations WHERE version >= 11"))  # v11 made it
    assert await migrate(db.writer) == LATEST_VERSION
    writer.submit(capture("old"))
    await writer.flush(10)
    found = await get_capture(db, "old")
    assert found is not None and found["response"]["body"] == SSE.decode()


def test_a_spooled_capture_is_sealed_first() -> None:
    record = capture("i-1", prompt=f"key {KEY}")
    line = encode(record)
    assert KEY.encode() not in line and b"hello" not in line  # compressed and redacted: no prompt text in clear
    back = decode(line)
    assert isinstance(back, CaptureRecord) and back.sealed == record.sealed and back.started_at == at(0)


async def test_captures_wait_in_the_spool_while_the_database_is_locked(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05)
    writer.start()
    await writer.flush()
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer.submit(started("i-1", alice))
    writer.submit(ended("i-1"))
    writer.submit(capture("i-1", prompt=f"key {KEY}"))
    await asyncio.sleep(0.5)
    await writer.close(timeout=5)
    await db.close()
    spooled = default_spool_path(db_path).read_bytes()
    assert len(spooled.splitlines()) == 3 and KEY.encode() not in spooled
    locker.execute("ROLLBACK")
    locker.close()
    for _ in range(2):  # replayed twice (a crash during the first replay): stored once
        saved = default_spool_path(db_path).read_bytes()
        db = await open_database(db_path)
        writer = RecordWriter(db)
        writer.start()
        await writer.flush(timeout=10)
        await writer.close()
        found = await get_capture(db, "i-1")
        await db.close()
        default_spool_path(db_path).write_bytes(saved)
    default_spool_path(db_path).unlink()
    assert found is not None and "[REDACTED:anthropic-api-key]" in found["request"]["body"]
    assert _count(db_path) == 1


async def test_an_id_no_interception_can_have_is_simply_not_found(db: Database) -> None:
    """A NUL character (which PostgreSQL refuses in a query) in an id or a cursor: not found, never an error."""
    from aigw_proxy.storage import InvalidCursor, list_interceptions

    assert await get_capture(db, "a\x00b") is None
    with pytest.raises(InvalidCursor):
        await list_interceptions(db, after_id="v\x00")
