"""The record writer when things go wrong: the prompt and usage kept while a call is in flight (a crash keeps them),
a failing database's backlog kept in the spool and written once it is back (also after a restart), the bounds
past which records are dropped and how they are counted, a database file deleted or replaced under the writer,
and the summaries staying equal to a rebuild whatever order the rows come in."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator, InterceptionStarted, InterceptionUsage, RecordEvent, TokenUsage
from aigw_proxy.storage import DANGLING_MESSAGE, Database, RecordWriter, UserStore, list_interceptions, open_database
from aigw_proxy.storage.schema.migrations import MIGRATIONS
from aigw_proxy.storage.schema.tables import ERROR_TYPES_V1, error_type_check
from aigw_proxy.storage.write.spool import decode, encode
from tests.storage.test_session_slices import _assert_kept_equals_a_rebuild
from tests.support.records import at, ended, started


def with_prompt(ev: InterceptionStarted, prompt: str) -> InterceptionStarted:
    return replace(ev, prompt=prompt)


def usage(iid: str, rid: str, inp: int, out: int, t: float = 0.5) -> InterceptionUsage:
    return InterceptionUsage(iid, at(t), [TokenUsage(rid, inp, out, cache_read_input_tokens=7)])


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, args).fetchall()


def spool_of(path: Path) -> Path:
    return path.with_name(path.name + "-spool.jsonl")


async def _by_id(db: Database) -> dict[str, dict]:
    return {r["id"]: r for r in await list_interceptions(db, limit=1000)}


# -- the prompt and usage of a call in flight ------------------------------------------------------------------


async def test_prompt_and_usage_are_stored_while_the_call_is_in_flight(
    db: Database, db_path: Path, alice: Initiator, writer: RecordWriter
) -> None:
    writer.submit(with_prompt(started("a", alice, t=0), "list the files"))
    writer.submit(usage("a", "msg_a", 1200, 1))  # Anthropic's message_start
    await writer.flush()
    assert rows(db_path, "SELECT prompt, provider_response_id, created_at FROM aibridge_user_prompts") == [
        ("list the files", "", "2025-03-01 12:00:00.000000")]
    assert rows(db_path, "SELECT input_tokens, output_tokens FROM aibridge_token_usages") == [(1200, 1)]
    assert rows(db_path, "SELECT ended_at, last_prompt_at FROM aibridge_interceptions") == [
        (None, "2025-03-01 12:00:00.000000")]

    writer.submit(usage("a", "msg_a", 1200, 40, t=0.7))  # a later figure replaces the first
    await writer.flush()
    assert rows(db_path, "SELECT input_tokens, output_tokens FROM aibridge_token_usages") == [(1200, 40)]

    writer.submit(replace(ended("a", t=2, response_id="msg_a"), prompt="list the files"))
    await writer.flush()
    [item] = await list_interceptions(db)
    assert [(p["prompt"], p["provider_response_id"]) for p in item["user_prompts"]] == [("list the files", "msg_a")]
    assert [(u["input_tokens"], u["output_tokens"]) for u in item["token_usages"]] == [(10, 5)]  # the end's
    assert item["status"] == "completed"
    assert writer.dropped == {}


async def test_a_usage_update_and_its_end_in_one_batch_store_the_end_only(db: Database, alice: Initiator) -> None:
    writer = RecordWriter(db, flush_interval=0.2)
    for event in (with_prompt(started("a", alice), "hi"), usage("a", "r", 5, 1), usage("a", "r", 5, 3),
                  ended("a", response_id="r")):
        writer.submit(event)
    writer.start()
    await writer.flush(timeout=5)
    await writer.close()
    [item] = await list_interceptions(db)
    assert [(u["input_tokens"], u["output_tokens"]) for u in item["token_usages"]] == [(10, 5)]
    assert len(item["user_prompts"]) == 1


async def test_a_crash_mid_call_keeps_the_prompt_and_the_usage_seen(db_path: Path, alice: Initiator) -> None:
    """The process dies after the usage was committed: the next start closes the call as failed, with both."""
    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    writer.submit(with_prompt(started("a", alice), "refactor this"))
    writer.submit(usage("a", "msg_a", 3000, 1))
    await writer.flush()
    writer._task.cancel()  # type: ignore[union-attr]  # no close(): the way kill -9 leaves it
    await asyncio.sleep(0)
    await db.close()

    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    await writer.flush(timeout=10)
    await writer.close()
    [item] = await list_interceptions(db)
    await db.close()
    assert (item["status"], item["error_type"], item["error_message"]) == ("failed", "unknown", DANGLING_MESSAGE)
    assert [p["prompt"] for p in item["user_prompts"]] == ["refactor this"]
    assert [u["input_tokens"] for u in item["token_usages"]] == [3000]


async def test_summaries_equal_a_rebuild_with_prompts_and_usage_written_early(
    db: Database, alice: Initiator, bob: Initiator, writer: RecordWriter
) -> None:
    rng = random.Random(5)
    for n in range(150):
        who = (alice, bob)[n % 2]
        iid = f"i{n:03d}"
        t = n * 30.0
        start = started(iid, who, t=t, client_session_id=f"s{n % 12}", model=rng.choice(("m1", "m2")))
        writer.submit(with_prompt(start, f"prompt {n}") if rng.random() < 0.8 else start)
        for k in range(rng.randint(0, 3)):
            writer.submit(usage(iid, f"r-{iid}", 100 + n, k + 1, t=t + k))
        if rng.random() < 0.9:
            writer.submit(replace(ended(iid, t=t + 5, response_id=f"r-{iid}"), prompt=start.prompt))
        if rng.random() < 0.3:
            await writer.flush()  # some calls end in a later batch than their usage
    await writer.flush(timeout=20)
    await _assert_kept_equals_a_rebuild(db)  # sessions, days, session slices and their counts
    token_total = sum(u["input_tokens"] for r in await list_interceptions(db, limit=1000) for u in r["token_usages"])
    async with db.reader.connect() as conn:
        kept = (await conn.exec_driver_sql("SELECT sum(input_tokens) FROM aigw_sessions")).scalar()
    assert token_total == kept


# -- a failing database: the spool ---------------------------------------------------------------------------


async def _locked(db_path: Path) -> sqlite3.Connection:
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


async def test_the_spool_survives_a_restart_and_is_written_first(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05)
    writer.start()
    await writer.flush()
    locker = await _locked(db_path)
    for n in range(30):
        writer.submit(with_prompt(started(f"i{n}", alice, t=n), f"p{n}"))
        writer.submit(ended(f"i{n}", t=n + 1, response_id=f"r{n}"))
    writer.submit(with_prompt(started("open", alice, t=40), "still running"))  # in flight at shutdown
    await asyncio.sleep(0.5)
    await writer.close(timeout=5)  # the database still locked: everything goes to the spool
    await db.close()
    assert writer.dropped == {} and writer.written == 0
    assert len(spool_of(db_path).read_bytes().splitlines()) == 61
    locker.execute("ROLLBACK")
    locker.close()

    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    await writer.flush(timeout=10)
    await writer.close()
    items = await _by_id(db)
    await db.close()
    assert not spool_of(db_path).exists()
    assert sorted(items) == sorted([f"i{n}" for n in range(30)] + ["open"])
    assert all(items[f"i{n}"]["status"] == "completed" for n in range(30))
    assert [p["prompt"] for p in items["i7"]["user_prompts"]] == ["p7"]
    # Written before the clean-up of the previous run: the call left open is closed, with its prompt.
    assert (items["open"]["status"], items["open"]["error_message"]) == ("failed", DANGLING_MESSAGE)
    assert [p["prompt"] for p in items["open"]["user_prompts"]] == ["still running"]


async def test_a_spool_replayed_twice_writes_nothing_twice(db_path: Path, alice: Initiator) -> None:
    """A crash during a replay leaves the spool in place: replaying it again must not duplicate a record."""
    db = await open_database(db_path)
    events: list[RecordEvent] = [with_prompt(started("a", alice), "hi"), usage("a", "r", 3, 1),
                                 ended("a", response_id="r"), started("b", alice, t=2)]
    spool_of(db_path).write_bytes(b"".join(encode(e) for e in events))
    for _ in range(2):
        saved = spool_of(db_path).read_bytes()
        writer = RecordWriter(db)
        writer.start()
        await writer.flush(timeout=10)
        await writer.close()
        spool_of(db_path).write_bytes(saved)
    spool_of(db_path).unlink()
    assert set(writer.dropped) <= {"already_written", "already_ended"}
    assert rows(db_path, "SELECT count(*) FROM aibridge_user_prompts") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM aibridge_token_usages") == [(1,)]
    assert rows(db_path, "SELECT count(*) FROM aibridge_interceptions") == [(2,)]
    await db.close()


async def test_an_incomplete_or_unreadable_spool_line_is_skipped_and_counted(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path)
    good = encode(started("a", alice)) + encode(ended("a"))
    spool_of(db_path).write_bytes(b'{"v": 1, "kind": "nonsense"}\n' + good + b'{"v": 1, "kind": "star')
    writer = RecordWriter(db)
    writer.start()
    await writer.flush(timeout=10)
    await writer.close()
    assert [r["id"] for r in await list_interceptions(db)] == ["a"]
    # The earlier run's unreadable record is counted as lost; its cut-off last line was never a record.
    assert writer.dropped == {"spool_corrupt": 1}
    assert not spool_of(db_path).exists()
    await db.close()


def test_spool_lines_round_trip_every_event_kind(alice: Initiator) -> None:
    events: list[RecordEvent] = [
        with_prompt(started("a", alice, metadata={"route": "/v1/messages", "n": 1}), "ünïcode\n"),
        usage("a", "r", 1, 2),
        replace(ended("a", response_id="r", tool_call_ids=("c1",), status="failed", error="boom"),
                error_type="timeout"),
    ]
    assert [decode(encode(e)) for e in events] == events


async def test_past_the_spool_bound_records_are_dropped_and_counted(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05, max_queue=20, batch_size=5,
                          spool_max_bytes=3000)
    writer.start()
    await writer.flush()
    locker = await _locked(db_path)
    accepted = 0
    for n in range(200):
        accepted += writer.submit(started(f"i{n}", alice, t=n))
        if n % 10 == 0:
            await asyncio.sleep(0.05)
    health = writer.health()
    # Past the bounds: `spool_full` once the spool is at its bound (`queue_full` for those that found the queue
    # full while the writer was still moving it to the spool).
    assert writer.dropped["spool_full"] > 0 and set(writer.dropped) <= {"spool_full", "queue_full"}
    assert sum(writer.dropped.values()) == 200 - accepted
    assert health.dropped_recently == dict(writer.dropped)
    assert 0 < health.spool_bytes <= 3000 and health.queue_depth <= 20 + 5
    locker.execute("ROLLBACK")
    locker.close()
    await writer.flush(timeout=20)
    await writer.close()
    assert writer.written == accepted  # everything accepted is written, in order
    assert rows(db_path, "SELECT count(*) FROM aibridge_interceptions") == [(accepted,)]
    await db.close()


async def test_without_a_spool_the_memory_queue_is_the_bound(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05, max_queue=10, batch_size=4, spool_max_bytes=0)
    writer.start()
    await writer.flush()
    locker = await _locked(db_path)
    accepted = 0
    for n in range(40):
        accepted += writer.submit(started(f"i{n}", alice, t=n))
        await asyncio.sleep(0.01)
    assert writer.dropped["queue_full"] == 40 - accepted and accepted <= 10 + 4
    assert not spool_of(db_path).exists()
    locker.execute("ROLLBACK")
    locker.close()
    await writer.flush(timeout=20)
    await writer.close()
    assert writer.written == accepted
    await db.close()


async def test_a_full_disk_for_the_spool_keeps_the_backlog_in_memory(
    db_path: Path, alice: Initiator, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool cannot be written (here: its directory is gone): the backlog waits in memory, in order."""
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05,
                          spool_path=db_path.parent / "no-such-dir" / "spool.jsonl")
    writer.start()
    await writer.flush()
    locker = await _locked(db_path)
    with caplog.at_level(logging.ERROR, logger="aigw_proxy.storage"):
        for n in range(25):
            writer.submit(started(f"i{n}", alice, t=n))
            writer.submit(ended(f"i{n}", t=n + 1))
        await asyncio.sleep(0.4)
    assert writer.health().spooled == 0 and writer.queue_depth == 50
    assert any("cannot write the record spool" in r.getMessage() for r in caplog.records)
    locker.execute("ROLLBACK")
    locker.close()
    await writer.flush(timeout=10)
    await writer.close()
    assert writer.written == 50 and writer.dropped == {}
    assert all(r["status"] == "completed" for r in await list_interceptions(db, limit=100))
    await db.close()


# -- the database file deleted or replaced -------------------------------------------------------------------


@pytest.mark.parametrize("with_wal", [False, True], ids=["db-file", "db-wal-shm"])
async def test_a_deleted_database_is_restored_from_the_open_handle(
    db_path: Path, alice: Initiator, with_wal: bool
) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db, check_interval=0.1)
    writer.start()
    for n in range(10):
        writer.submit(started(f"before-{n}", alice, t=n))
        writer.submit(ended(f"before-{n}", t=n + 1))
    writer.submit(with_prompt(started("across", alice, t=20), "in flight while deleted"))
    await writer.flush()
    for suffix in ("", "-wal", "-shm") if with_wal else ("",):
        os.unlink(f"{db_path}{suffix}")
    writer.submit(ended("across", t=21, response_id="r"))
    for n in range(10):
        writer.submit(started(f"after-{n}", alice, t=30 + n))
        writer.submit(ended(f"after-{n}", t=31 + n))
    await writer.flush(timeout=10)
    assert await asyncio.to_thread(db_path.exists)
    assert writer.health().database_problem is None and writer.dropped == {}
    items = await _by_id(db)
    assert len(items) == 21 and items["across"]["status"] == "completed"
    assert [p["prompt"] for p in items["across"]["user_prompts"]] == ["in flight while deleted"]
    assert await UserStore(db).list_users()  # the users came back too: the proxy keeps authenticating
    await writer.close()
    await db.close()
    assert rows(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert os.stat(db_path).st_mode & 0o777 == 0o600


async def test_a_replaced_database_is_reopened_and_calls_in_flight_carried_over(
    tmp_path: Path, db_path: Path, alice: Initiator
) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db, check_interval=0.1)
    writer.start()
    writer.submit(started("old", alice))
    writer.submit(ended("old"))
    writer.submit(with_prompt(started("across", alice, t=5), "started in the old file"))
    writer.submit(usage("across", "r", 70, 1, t=5.5))
    await writer.flush()
    fresh = await open_database(tmp_path / "fresh.db")  # an empty database of this release
    await fresh.close()
    os.replace(tmp_path / "fresh.db", db_path)
    await asyncio.sleep(0.3)  # the idle check notices
    writer.submit(ended("across", t=6, response_id="r"))
    writer.submit(started("new", alice, t=7))
    writer.submit(ended("new", t=8))
    await writer.flush(timeout=10)
    items = await _by_id(db)
    assert sorted(items) == ["across", "new"]  # "old" stays in the file that was replaced
    assert [p["prompt"] for p in items["across"]["user_prompts"]] == ["started in the old file"]
    assert [u["input_tokens"] for u in items["across"]["token_usages"]] == [10]
    assert writer.health().database_problem is None
    assert db.file_problem() is None
    await writer.close()
    await db.close()


async def test_a_replacement_that_is_no_database_keeps_records_until_it_is_fixed(
    tmp_path: Path, db_path: Path, alice: Initiator
) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db, check_interval=0.1, max_backoff=0.1)
    writer.start()
    await writer.flush()
    shutil.copy(db_path, tmp_path / "good.db")
    (tmp_path / "junk").write_bytes(b"junk" * 4096)
    os.replace(tmp_path / "junk", db_path)
    for n in range(5):
        writer.submit(started(f"i{n}", alice, t=n))
        writer.submit(ended(f"i{n}", t=n + 1))
    await asyncio.sleep(0.5)
    health = writer.health()
    assert health.database_problem is not None and "was replaced" in health.database_problem
    assert health.failing_since is not None and "not a" in (health.last_error or "")
    assert health.spooled == 10 and writer.written == 0 and writer.dropped == {}
    os.replace(tmp_path / "good.db", db_path)
    await writer.flush(timeout=10)
    assert writer.health().database_problem is None and writer.written == 10
    assert len(await list_interceptions(db)) == 5
    await writer.close()
    await db.close()


async def test_error_type_from_the_transport_is_stored(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("a", alice))
    writer.submit(replace(ended("a", status="failed", error="upstream sent nothing for 300 s"), error_type="timeout"))
    writer.submit(started("b", alice))
    writer.submit(replace(ended("b", status="failed", error="Client disconnected."), error_type="client_disconnected"))
    await writer.flush()
    items = await _by_id(db)
    assert items["a"]["error_type"] == "timeout" and items["b"]["error_type"] == "client_disconnected"


async def test_v5_allows_the_new_error_types_in_an_older_database(db_path: Path) -> None:
    db = await open_database(db_path)
    await db.close()
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:  # what v1 made: the old constraint
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'aibridge_interceptions'").fetchone()[0]
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'aibridge_interceptions'",
                     (sql.replace(error_type_check(), error_type_check(ERROR_TYPES_V1)),))
        conn.execute(f"PRAGMA schema_version = {version + 1}")
        conn.execute("PRAGMA writable_schema = OFF")
    insert = ("INSERT INTO aibridge_interceptions (id, initiator_id, provider, model, started_at, error_type) "
              "VALUES (?, 'u', 'p', 'm', '2025-01-01 00:00:00.000000', ?)")
    with closing(sqlite3.connect(db_path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, ("x", "upstream_reset"))
    [v5] = [m for m in MIGRATIONS if m.version == 5]
    db = await open_database(db_path)
    try:
        async with db.writer.begin() as conn2:  # the step as an older database meets it
            await conn2.run_sync(v5.upgrade)
    finally:
        await db.close()
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(insert, ("y", "upstream_reset"))
        conn.execute(insert, ("z", "client_disconnected"))
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
