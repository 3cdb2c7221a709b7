from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import Initiator, InterceptionEnded, ModelThought, RecordEvent, TokenUsage, ToolCall
from aigw_proxy.storage import (
    DANGLING_MESSAGE,
    Database,
    RecordWriter,
    error_type_for_status,
    list_interceptions,
    open_database,
)
from tests.support.prices import VERSION, base, micros, rates
from tests.support.records import T0, at, ended, started

RFC3339_T0 = "2025-03-01T12:00:00.000000Z"


async def _by_id(db: Database) -> dict[str, dict]:
    return {item["id"]: item for item in await list_interceptions(db, limit=1000)}


async def test_round_trip_exact_fields(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    start = started(
        "i-1",
        alice,
        client_session_id="sess-1",
        metadata={"request_user_agent": "claude-cli/2.0", "stream": False},
    )
    start.credential_kind = "oauth"
    start.credential_hint = "sk-a…wxyz"
    assert writer.submit(start)
    end = InterceptionEnded(
        id="i-1",
        ended_at=at(2.5),
        status="completed",
        upstream_status=200,
        model="claude-sonnet-4-5-20250929",
        prompt="list the files",
        prompt_response_id="msg_1",
        token_usages=[
            TokenUsage("msg_1", 100, 20, 300, 40, {"web_search_requests": 1}),
            TokenUsage("msg_2", 1, 2),
        ],
        tool_calls=[
            ToolCall("msg_1", "toolu_1", "Bash", '{"command":"ls"}'),
            ToolCall("msg_1", "toolu_2", "Read", '{"path":"a"}', item_id="fc_1"),
        ],
        thoughts=[ModelThought("hmm", "thinking"), ModelThought("so", "reasoning_summary")],
        metadata={"stream": True, "parse_errors": 0},
    )
    assert writer.submit(end)
    await writer.flush(timeout=5)
    assert writer.stats() == {"queue_depth": 0, "written": 2, "dropped": {}, "last_error": None, "spooled": 0,
                              "failing_since": None}

    [item] = await list_interceptions(db)
    ended_s = "2025-03-01T12:00:02.500000Z"
    r = rates("anthropic", "claude-sonnet-4-5-20250929", at(2.5))
    first_cost = (micros(100 * base(r.input_mtok)) + micros(20 * base(r.output_mtok))
                  + micros(300 * base(r.cache_read_mtok)) + micros(40 * base(r.cache_write_mtok))
                  + micros(base(r.web_searches_kcount) * 1000))
    second_cost = micros(1 * base(r.input_mtok)) + micros(2 * base(r.output_mtok))
    tu = item["token_usages"]
    tools = item["tool_usages"]
    [prompt] = item["user_prompts"]
    assert item == {
        "id": "i-1",
        "initiator": {"id": alice.user_id, "username": "alice"},
        "api_key_id": alice.token_id,
        "provider": "anthropic",
        "provider_name": "anthropic",
        "model": "claude-sonnet-4-5-20250929",
        "client": "Claude Code",
        "client_session_id": "sess-1",
        "session_id": "sess-1",
        "thread_parent_id": None,
        "thread_root_id": None,
        "status": "completed",
        "upstream_status": 200,
        "error_type": None,
        "error_message": None,
        "credential_kind": "oauth",
        "credential_hint": "sk-a…wxyz",
        "started_at": RFC3339_T0,
        "ended_at": ended_s,
        "metadata": {"request_user_agent": "claude-cli/2.0", "stream": True, "parse_errors": 0},
        "token_usages": [
            {
                "id": tu[0]["id"],
                "interception_id": "i-1",
                "provider_response_id": "msg_1",
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_input_tokens": 300,
                "cache_write_input_tokens": 40,
                "metadata": {"web_search_requests": 1},
                "created_at": ended_s,
                # Sonnet 4.5's list price, web search per 1000, the 5 m cache-write rate (no TTL split given).
                "input_price_micros": micros(100 * base(r.input_mtok)),
                "output_price_micros": micros(20 * base(r.output_mtok)),
                "cache_read_price_micros": micros(300 * base(r.cache_read_mtok)),
                "cache_write_price_micros": micros(40 * base(r.cache_write_mtok)),
                "other_price_micros": micros(1 * base(r.web_searches_kcount) * 1000),
                "cost_micros": first_cost,
                "price_source": "genai-prices", "price_version": VERSION, "price_ref": "anthropic/claude-sonnet-4-5",
                "api_equivalent": True,  # an OAuth (subscription) call
                "effective_group_id": None, "priced": True,
            },
            {
                "id": tu[1]["id"],
                "interception_id": "i-1",
                "provider_response_id": "msg_2",
                "input_tokens": 1,
                "output_tokens": 2,
                "cache_read_input_tokens": 0,
                "cache_write_input_tokens": 0,
                "metadata": {},
                "created_at": ended_s,
                "input_price_micros": micros(1 * base(r.input_mtok)),
                "output_price_micros": micros(2 * base(r.output_mtok)),
                "cache_read_price_micros": 0, "cache_write_price_micros": 0, "other_price_micros": 0,
                "cost_micros": second_cost,
                "price_source": "genai-prices", "price_version": VERSION, "price_ref": "anthropic/claude-sonnet-4-5",
                "api_equivalent": True, "effective_group_id": None, "priced": True,
            },
        ],
        # Subscription value, kept apart from the cost billed per token (none here).
        "cost": {"priced": True, "unpriced_records": 0, "cost_micros": 0, "cost_usd": 0.0,
                 "api_equivalent_micros": first_cost + second_cost,
                 "api_equivalent_usd": round((first_cost + second_cost) / 1e6, 6)},
        "user_prompts": [
            {"id": prompt["id"], "interception_id": "i-1", "provider_response_id": "msg_1", "prompt": "list the files",
             "metadata": {}, "created_at": ended_s}
        ],
        "tool_usages": [
            {
                "id": tools[0]["id"],
                "interception_id": "i-1",
                "provider_response_id": "msg_1",
                "provider_tool_call_id": "toolu_1",
                "provider_item_id": None,
                "tool": "Bash",
                "input": '{"command":"ls"}',
                "injected": False,
                "server_url": None,
                "invocation_error": None,
                "metadata": {},
                "created_at": ended_s,
            },
            {
                "id": tools[1]["id"],
                "interception_id": "i-1",
                "provider_response_id": "msg_1",
                "provider_tool_call_id": "toolu_2",
                "provider_item_id": "fc_1",
                "tool": "Read",
                "input": '{"path":"a"}',
                "injected": False,
                "server_url": None,
                "invocation_error": None,
                "metadata": {},
                "created_at": ended_s,
            },
        ],
        "model_thoughts": [
            {"interception_id": "i-1", "content": "hmm", "metadata": {"source": "thinking"}, "created_at": ended_s},
            {"interception_id": "i-1", "content": "so", "metadata": {"source": "reasoning_summary"},
             "created_at": ended_s},
        ],
    }
    assert len({tu[0]["id"], tu[1]["id"], tools[0]["id"], tools[1]["id"], prompt["id"]}) == 5


async def test_in_flight_interceptions_are_not_listed(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("i-1", alice))
    await writer.flush()
    assert await list_interceptions(db) == []
    writer.submit(ended("i-1"))
    await writer.flush()
    assert [i["id"] for i in await list_interceptions(db)] == ["i-1"]


async def test_failed_interception_error_fields(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("i-1", alice))
    writer.submit(ended("i-1", status="failed", upstream_status=529, error="x" * 5000))
    writer.submit(started("i-2", alice, t=1))
    writer.submit(ended("i-2", status="failed", upstream_status=None, error="connection reset", model=None))
    await writer.flush()
    items = await _by_id(db)
    assert items["i-1"]["error_type"] == "overloaded"
    assert items["i-1"]["upstream_status"] == 529
    assert len(items["i-1"]["error_message"]) == 1024
    assert items["i-2"]["error_type"] == "unknown"
    assert items["i-2"]["error_message"] == "connection reset"
    assert items["i-2"]["model"] == "claude-sonnet-4-5"  # an end without a model keeps the start's


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "bad_request"),
        (404, "bad_request"),
        (413, "bad_request"),
        (422, "bad_request"),
        (401, "unauthorized"),
        (403, "unauthorized"),
        (429, "rate_limited"),
        (529, "overloaded"),
        (503, "overloaded"),
        (500, "server_error"),
        (502, "server_error"),
        (504, "timeout"),
        (408, "timeout"),
        (409, "unknown"),
        (200, "unknown"),
        (None, "unknown"),
    ],
)
def test_error_type_for_status(status: int | None, kind: str) -> None:
    assert error_type_for_status(status) == kind


async def test_metadata_merge_reads_the_row_when_not_in_memory(
    db: Database, alice: Initiator, writer: RecordWriter
) -> None:
    writer.submit(started("i-1", alice, metadata={"a": 1, "b": 1}))
    await writer.flush()
    writer._inflight.clear()  # as if evicted: the writer must read the start metadata back
    writer.submit(ended("i-1", metadata={"b": 2, "c": [3]}))
    await writer.flush()
    [item] = await list_interceptions(db)
    assert item["metadata"] == {"a": 1, "b": 2, "c": [3]}


async def test_thread_lineage_via_tool_call_id(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    infos: dict[str, CommitInfo] = {}

    def note(ev: RecordEvent, info: CommitInfo) -> None:
        infos.setdefault(type(ev).__name__ + ":" + ev.id, info)

    writer.add_listener(note)
    writer.submit(started("a", alice, t=0))
    writer.submit(ended("a", t=1, response_id="msg_a", tool_call_ids=("call_1",)))
    await writer.flush()
    writer.submit(started("b", alice, t=2, correlating_tool_call_id="call_1"))
    writer.submit(ended("b", t=3, response_id="msg_b", tool_call_ids=("call_2",)))
    await writer.flush()
    writer.submit(started("c", alice, t=4, correlating_tool_call_id="call_2"))
    writer.submit(ended("c", t=5))
    writer.submit(started("d", alice, t=6, correlating_tool_call_id="call_unknown"))
    writer.submit(ended("d", t=7))
    await writer.flush()
    items = await _by_id(db)
    assert (items["a"]["thread_parent_id"], items["a"]["thread_root_id"]) == (None, None)
    assert (items["b"]["thread_parent_id"], items["b"]["thread_root_id"]) == ("a", "a")
    assert (items["c"]["thread_parent_id"], items["c"]["thread_root_id"]) == ("b", "a")
    assert (items["d"]["thread_parent_id"], items["d"]["thread_root_id"]) == (None, None)
    assert infos["InterceptionStarted:c"] == CommitInfo("b", "a", "a")
    assert infos["InterceptionEnded:c"] == CommitInfo("b", "a", "a", None)


async def test_thread_lineage_via_previous_response_id(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("a", alice, provider="openai", t=0))
    writer.submit(ended("a", t=1, response_id="resp_a"))
    await writer.flush()
    writer.submit(started("b", alice, provider="openai", t=2, previous_response_id="resp_a"))
    writer.submit(ended("b", t=3))
    writer.submit(started("c", alice, provider="openai", t=4, previous_response_id="resp_nope"))
    writer.submit(ended("c", t=5))
    await writer.flush()
    items = await _by_id(db)
    assert (items["b"]["thread_parent_id"], items["b"]["thread_root_id"]) == ("a", "a")
    assert items["b"]["session_id"] == "a"
    assert (items["c"]["thread_parent_id"], items["c"]["thread_root_id"]) == (None, None)


async def test_thread_lineage_within_one_batch(db: Database, alice: Initiator) -> None:
    writer = RecordWriter(db, batch_size=500, flush_interval=0.2)
    batches: list[int] = []
    real = writer._attempt

    async def spy(batch, replay):
        batches.append(len(batch))
        return await real(batch, replay)

    writer._attempt = spy  # type: ignore[method-assign]
    # Everything is queued before the writer starts: one batch, one transaction.
    writer.submit(started("a", alice, t=0))
    writer.submit(ended("a", t=1, response_id="resp_a", tool_call_ids=("call_1",)))
    writer.submit(started("b", alice, t=2, correlating_tool_call_id="call_1"))
    writer.submit(ended("b", t=3, response_id="resp_b"))
    writer.submit(started("c", alice, t=4, previous_response_id="resp_b"))
    writer.submit(ended("c", t=5))
    writer.start()
    await writer.flush(timeout=5)
    await writer.close()
    assert batches == [6]
    items = await _by_id(db)
    assert (items["b"]["thread_parent_id"], items["b"]["thread_root_id"]) == ("a", "a")
    assert (items["c"]["thread_parent_id"], items["c"]["thread_root_id"]) == ("b", "a")


async def test_lineage_ignores_other_users_tool_calls(
    db: Database, alice: Initiator, bob: Initiator, writer: RecordWriter
) -> None:
    writer.submit(started("a", alice))
    writer.submit(ended("a", tool_call_ids=("call_0",)))
    writer.submit(started("b", bob, t=2, correlating_tool_call_id="call_0"))
    writer.submit(ended("b", t=3))
    await writer.flush()
    assert (await _by_id(db))["b"]["thread_parent_id"] is None


async def test_session_id_fallback(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("a", alice, client_session_id="sess-1"))
    writer.submit(ended("a", tool_call_ids=("call_a",)))
    writer.submit(started("b", alice, t=2))
    writer.submit(ended("b", t=3, tool_call_ids=("call_b",)))
    writer.submit(started("c", alice, t=4, correlating_tool_call_id="call_b"))
    writer.submit(ended("c", t=5))
    writer.submit(started("d", alice, t=6, correlating_tool_call_id="call_a", client_session_id="   "))
    writer.submit(ended("d", t=7))
    await writer.flush()
    items = await _by_id(db)
    assert items["a"]["session_id"] == "sess-1"  # client session id first
    assert items["b"]["session_id"] == "b"  # a root without one: its own id
    assert items["c"]["session_id"] == "b"  # then the thread root
    assert items["d"]["client_session_id"] is None  # blank → NULL
    assert items["d"]["session_id"] == "a"


async def test_locked_database_delays_writes_but_loses_nothing(
    db: Database, db_path: Path, alice: Initiator, writer: RecordWriter
) -> None:
    await writer.flush()
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    lock_started = time.monotonic()
    lags: list[float] = []

    async def ticker() -> None:  # the event loop must keep turning while the writer waits for the lock
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        for n in range(100):
            assert writer.submit(started(f"i-{n}", alice, t=n))
            assert writer.submit(ended(f"i-{n}", t=n + 0.5))
            if n % 25 == 0:
                await asyncio.sleep(0.05)  # let the writer start waiting on the lock
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - lock_started)))
        # All 200 events were accepted while the database was locked: submit never waited for it.
        assert writer.written == 0
        assert writer.queue_depth == 200
        assert await list_interceptions(db) == []  # WAL: readers are not blocked by the writer lock
        ticks_while_locked = len(lags)
    finally:
        locker.execute("COMMIT")
        locker.close()
    await writer.flush(timeout=10)
    tick.cancel()
    # The loop kept turning through the locked second (a writer blocking the loop would leave a handful of
    # 10 ms ticks at most, not dozens): a functional check, not a timing threshold.
    assert ticks_while_locked >= 20, f"only {ticks_while_locked} loop ticks while the database was locked"
    assert writer.written == 200
    assert writer.dropped == {}
    assert len(await list_interceptions(db, limit=1000)) == 100


async def test_lock_longer_than_busy_timeout_is_retried(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05)
    writer.start()
    try:
        await writer.flush()
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        for n in range(10):
            writer.submit(started(f"i-{n}", alice, t=n))
            writer.submit(ended(f"i-{n}", t=n + 0.5))
        await asyncio.sleep(0.6)
        assert writer.written == 0
        assert writer.last_error is not None and "locked" in writer.last_error
        locker.execute("COMMIT")
        locker.close()
        await writer.flush(timeout=10)
        assert writer.written == 20 and writer.dropped == {}
        assert len(await list_interceptions(db)) == 10
    finally:
        await writer.close()
        await db.close()


async def test_a_failing_database_loses_nothing_within_the_spool_bound(
    db_path: Path, alice: Initiator, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes failing for longer than any retry window: the backlog goes to the spool file beside the database
    (nothing dropped, nothing counted as written), health says so, and it is all written once the lock goes."""
    db = await open_database(db_path, busy_timeout_ms=20)
    writer = RecordWriter(db, flush_interval=0.001, max_backoff=0.05, batch_size=7)
    writer.start()
    try:
        await writer.flush()
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        with caplog.at_level(logging.WARNING, logger="aigw_proxy.storage"):
            for n in range(40):
                writer.submit(started(f"i-{n}", alice, t=n))
                writer.submit(ended(f"i-{n}", t=n + 0.5, response_id=f"r-{n}"))
            await asyncio.sleep(1.0)
        health = writer.health()
        assert writer.written == 0 and writer.dropped == {}
        assert health.failing_since is not None and health.consecutive_failures > 1
        assert health.last_error is not None and "locked" in health.last_error
        assert health.spooled == 80 and health.queue_depth == 0 and health.spool_bytes > 0
        spool = db_path.with_name(db_path.name + "-spool.jsonl")
        assert await asyncio.to_thread(spool.exists)
        assert (await asyncio.to_thread(spool.stat)).st_mode & 0o777 == 0o600
        assert any("database write failed" in r.getMessage() for r in caplog.records)
        locker.execute("COMMIT")
        locker.close()
        await writer.flush(timeout=10)
        assert writer.written == 80 and writer.dropped == {}
        assert writer.health().failing_since is None and writer.health().spooled == 0
        assert not await asyncio.to_thread(spool.exists)  # deleted once written
        rows = await list_interceptions(db, limit=100)
        assert sorted(r["id"] for r in rows) == sorted(f"i-{n}" for n in range(40))
        assert all(r["status"] == "completed" and r["token_usages"] for r in rows)
    finally:
        await writer.close()
        await db.close()


async def test_queue_full_drops_are_counted(db: Database, alice: Initiator) -> None:
    writer = RecordWriter(db, max_queue=3)
    results = [writer.submit(started(f"i-{n}", alice, t=n)) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert writer.dropped == {"queue_full": 2}
    assert writer.queue_depth == 3
    writer.start()
    await writer.flush(timeout=5)
    assert writer.written == 3 and writer.queue_depth == 0
    await writer.close()
    assert writer.submit(started("late", alice)) is False
    assert writer.dropped == {"queue_full": 2, "closed": 1}


async def test_close_flushes_everything(db: Database, alice: Initiator) -> None:
    writer = RecordWriter(db, batch_size=7)
    writer.start()
    for n in range(50):
        writer.submit(started(f"i-{n}", alice, t=n))
        writer.submit(ended(f"i-{n}", t=n + 1))
    await writer.close(timeout=10)
    assert writer.written == 100 and writer.queue_depth == 0
    assert len(await list_interceptions(db)) == 50


async def test_restart_closes_dangling_interceptions(db_path: Path, alice: Initiator) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    writer.submit(started("open", alice))
    writer.submit(started("done", alice, t=1))
    writer.submit(ended("done", t=2))
    await writer.close()
    await db.close()

    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    try:
        await writer.flush(timeout=5)
        assert writer.closed_dangling == 1
        items = await _by_id(db)
        assert items["open"]["status"] == "failed"
        assert items["open"]["error_type"] == "unknown"
        assert items["open"]["error_message"] == DANGLING_MESSAGE
        assert items["open"]["ended_at"] > RFC3339_T0
        assert items["done"]["status"] == "completed"
        writer.submit(ended("open", t=3))  # too late: already closed
        writer.submit(ended("never-started"))
        await writer.flush()
        assert writer.dropped == {"already_ended": 1, "unknown_interception": 1}
    finally:
        await writer.close()
        await db.close()


async def test_a_refused_record_does_not_lose_its_batch(
    db: Database, alice: Initiator, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RecordWriter(db)
    writer.submit(started("a", alice))
    writer.submit(started("a", alice))  # duplicate id (and start time: the key on PostgreSQL): refused
    writer.submit(ended("a", t=2))
    writer.submit(started("b", alice, t=3))
    writer.submit(ended("b", t=4))
    writer.start()
    await writer.flush(timeout=5)
    await writer.close()
    assert writer.dropped == {"invalid": 1}
    assert writer.written == 4
    assert sorted(await _by_id(db)) == ["a", "b"]


async def test_listener_errors_never_propagate(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    seen: list[str] = []

    def bad(ev: object, info: CommitInfo) -> None:
        raise RuntimeError("boom")

    writer.add_listener(bad)
    writer.add_listener(lambda ev, info: seen.append(ev.id))
    writer.submit(started("a", alice))
    writer.submit(ended("a"))
    await writer.flush()
    assert seen == ["a", "a"]
    assert writer.written == 2


async def test_children_keep_insertion_order(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    calls = tuple(f"call_{n:03d}" for n in range(60))[::-1]  # not sorted: order must come from insertion
    writer.submit(started("a", alice))
    writer.submit(ended("a", response_id="r", tool_call_ids=calls))
    await writer.flush()
    [item] = await list_interceptions(db)
    assert tuple(t["provider_tool_call_id"] for t in item["tool_usages"]) == calls


async def test_naive_times_are_taken_as_utc(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    ev = started("a", alice)
    ev.started_at = T0.replace(tzinfo=None)
    writer.submit(ev)
    writer.submit(ended("a"))
    await writer.flush()
    [item] = await list_interceptions(db)
    assert item["started_at"] == RFC3339_T0


async def test_lineage_from_the_database_after_a_restart(db_path: Path, alice: Initiator) -> None:
    """A new process has nothing in memory: the parent is found in the database."""
    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    writer.submit(started("a", alice))
    writer.submit(ended("a", response_id="resp_a", tool_call_ids=("call_a",)))
    await writer.close()
    await db.close()

    db = await open_database(db_path)
    writer = RecordWriter(db)
    writer.start()
    try:
        writer.submit(started("b", alice, t=2, correlating_tool_call_id="call_a"))
        writer.submit(ended("b", t=3))
        writer.submit(started("c", alice, t=4, previous_response_id="resp_a"))
        writer.submit(ended("c", t=5))
        await writer.flush()
        items = await _by_id(db)
        assert (items["b"]["thread_parent_id"], items["b"]["thread_root_id"]) == ("a", "a")
        assert (items["c"]["thread_parent_id"], items["c"]["thread_root_id"]) == ("a", "a")
    finally:
        await writer.close()
        await db.close()


async def test_lineage_database_lookup_sees_rows_queued_in_the_same_batch(
    db: Database, alice: Initiator, bob: Initiator
) -> None:
    """Memory points at bob's call with the same id, so alice's lookup goes to the database, which must see
    alice's parent written earlier in the same (uncommitted) batch."""
    writer = RecordWriter(db, flush_interval=0.2)
    writer.submit(started("a", alice))
    writer.submit(ended("a", tool_call_ids=("call_0",)))
    writer.submit(started("b", bob, t=1))
    writer.submit(ended("b", t=1.5, tool_call_ids=("call_0",)))
    writer.submit(started("c", alice, t=2, correlating_tool_call_id="call_0"))
    writer.submit(ended("c", t=3))
    writer.submit(started("d", bob, t=2, correlating_tool_call_id="call_0"))
    writer.submit(ended("d", t=3))
    writer.start()
    await writer.flush(timeout=5)
    await writer.close()
    items = await _by_id(db)
    assert (items["c"]["thread_parent_id"], items["c"]["thread_root_id"]) == ("a", "a")
    assert (items["d"]["thread_parent_id"], items["d"]["thread_root_id"]) == ("b", "b")
