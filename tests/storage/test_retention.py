"""Retention: what is older than the cut-off goes, with every child row; nothing newer is touched; the summaries
stay exact; the space is given back."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator, ModelThought
from aigw_proxy.storage import Database, RecordWriter, list_interceptions
from aigw_proxy.storage.retention import RetentionLoop, parse_retention, purge_old_records
from aigw_proxy.storage.schema.summaries import rebuild
from tests.support.daemon import run_cli
from tests.support.records import at, ended, started

CHILDREN = ("aibridge_token_usages", "aibridge_user_prompts", "aibridge_tool_usages", "aibridge_model_thoughts")


async def _seed(writer: RecordWriter, who: Initiator, n: int, *, step: float = 60) -> None:
    for k in range(n):
        # Sessions of 5 calls, threads of 2: a purge cuts through sessions and threads.
        writer.submit(started(f"i-{k:03d}", who, t=k * step, client_session_id=f"s-{k // 5}",
                              correlating_tool_call_id=f"c-{k - 1}" if k % 2 else None))
        writer.submit(ended(f"i-{k:03d}", t=k * step + 1, response_id=f"r{k}", prompt="x" * 3000,
                            tool_call_ids=(f"c-{k}",), thoughts=(ModelThought("hm", "thinking"),)))
    await writer.flush(10)


async def _table(db: Database, sql: str) -> list[tuple]:
    async with db.reader.connect() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


async def _summaries(db: Database) -> tuple[list[tuple], list[tuple]]:
    return (await _table(db, "SELECT * FROM aigw_sessions ORDER BY 1, 2"),
            await _table(db, "SELECT * FROM aigw_interception_days WHERE interceptions > 0 ORDER BY 1, 2, 3, 4, 5"))


async def test_purge_deletes_exactly_what_is_older(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    await _seed(writer, alice, 60)
    writer.submit(started("in-flight-old", alice, t=5))  # never ended, still older: purged too
    await writer.flush(10)
    cutoff = at(37 * 60)  # i-037 starts exactly at the cut-off: kept (strictly older goes)
    result = await purge_old_records(db, cutoff, batch_size=7, pause=0)
    assert result.deleted_interceptions == 38  # i-000 … i-036 and the in-flight one
    assert result.batches == 6
    kept = [r["id"] for r in await list_interceptions(db, limit=1000)]
    assert kept == [f"i-{k:03d}" for k in range(59, 36, -1)]
    for table in CHILDREN:
        rows = await _table(db, f"SELECT DISTINCT interception_id FROM {table} ORDER BY 1")
        assert [r[0] for r in rows] == sorted(kept), table
    assert result.deleted_child_rows == 37 * 4
    # The summaries the triggers kept equal a rebuild from what is left.
    kept_summaries = await _summaries(db)
    async with db.writer.begin() as conn:
        await conn.run_sync(rebuild)
    assert await _summaries(db) == kept_summaries
    assert await purge_old_records(db, cutoff) == type(result)(0, 0, 0)


@pytest.mark.sqlite_only("SQLite's file size; PostgreSQL drops partitions and autovacuums")
async def test_purge_gives_space_back(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    await _seed(writer, alice, 300, step=1)
    pages_before = (await _table(db, "PRAGMA page_count"))[0][0]
    assert (await purge_old_records(db, at(10_000), pause=0)).deleted_interceptions == 300
    assert (await _table(db, "PRAGMA freelist_count"))[0][0] == 0
    assert (await _table(db, "PRAGMA page_count"))[0][0] < pages_before / 2  # the file itself shrank


async def test_the_writer_keeps_writing_during_a_purge(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    await _seed(writer, alice, 200, step=1)
    purge = asyncio.create_task(purge_old_records(db, at(150), batch_size=10, pause=0.001))
    for k in range(20):
        writer.submit(started(f"new-{k}", alice, t=10_000 + k))
        writer.submit(ended(f"new-{k}", t=10_001 + k))
    await writer.flush(10)
    assert (await purge).deleted_interceptions == 150
    assert len(await list_interceptions(db, limit=1000)) == 70


@pytest.mark.parametrize(("text", "window"), [
    ("60d", timedelta(days=60)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30)),
    ("1d12h", timedelta(hours=36)), ("0", None), ("0s", None),
])
def test_retention_periods(text: str, window: timedelta | None) -> None:
    assert parse_retention(text) == window


@pytest.mark.parametrize("text", ["", "60", "1w", "-1d", "d", "1.5d", "60 d"])
def test_bad_retention_periods(text: str) -> None:
    with pytest.raises(ValueError, match="not a retention period"):
        parse_retention(text)


async def test_the_loop_purges_on_schedule(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    await _seed(writer, alice, 10)  # all in March 2025: far older than a day
    loop = RetentionLoop(db, timedelta(days=1), every=0.05, first_after=0)
    loop.start()
    try:
        for _ in range(200):
            if loop.runs >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await loop.close()
    assert loop.deleted == 10 and loop.runs >= 2
    assert await list_interceptions(db) == []


def test_purge_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert json.loads(run_cli(data, "purge", "--retention", "0").stdout) == {
        "deleted_interceptions": 0, "deleted_child_rows": 0, "before": None}
    token = run_cli(data, "users", "add", "alice").stdout.strip()
    assert token

    async def seed() -> None:
        from aigw_proxy.storage import UserStore, open_database

        db = await open_database(data / "aigw-proxy.db")
        who = await UserStore(db).authenticate(token)
        assert who is not None
        w = RecordWriter(db, flush_interval=0.005)
        w.start()
        now = datetime.now(UTC)
        for k, age in enumerate((timedelta(days=90), timedelta(days=61), timedelta(days=59), timedelta(hours=1))):
            ev = started(f"p-{k}", who)
            ev.started_at = now - age
            w.submit(ev)
            end = ended(f"p-{k}", response_id=f"r{k}", prompt="hi")
            end.ended_at = now - age + timedelta(seconds=1)
            w.submit(end)
        await w.close(10)
        await db.close()

    asyncio.run(seed())
    out = json.loads(run_cli(data, "purge").stdout)  # default 60d
    assert out["deleted_interceptions"] == 2 and out["deleted_child_rows"] == 4
    before = datetime.fromisoformat(out["before"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - before) - timedelta(days=60)) < timedelta(minutes=5)
    left = json.loads(run_cli(data, "interceptions", "list").stdout)
    assert sorted(r["id"] for r in left) == ["p-2", "p-3"]
    assert run_cli(data, "purge", "--retention", "soon", check=False).returncode == 2


