"""The interceptions page built as JSON by the database (`as_json`, what the REST API asks for: each interception's
object, its child arrays included) says exactly what the Python-built page says: the same values of the same JSON
types, the same key order, the same timestamp strings, the same cost."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator, InterceptionEnded, ModelThought, TokenUsage, ToolCall
from aigw_proxy.storage import Database, RecordWriter, list_interceptions
from aigw_proxy.storage.schema.tables import interceptions, model_thoughts, token_usages, tool_usages, user_prompts
from tests.support.json_answers import ODD_TEXT, as_read
from tests.support.records import at, started


async def _seed(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("i-1", alice, t=0, metadata={"n": {"deep": [1, None, "ü"]}}))
    writer.submit(InterceptionEnded(
        id="i-1", ended_at=at(1.000001), status="completed", upstream_status=200, prompt=ODD_TEXT,
        prompt_response_id="r1",
        token_usages=[TokenUsage("r1", 10, 20, 3, 4, metadata={"web_search_requests": 3}),
                      TokenUsage("r2", 1, 2)],
        tool_calls=[ToolCall("r1", "c1", "Bash", '{"command": "ls \\"x\\""}', item_id="it-1"),
                    ToolCall("r1", "c2", "Edit", ODD_TEXT), ToolCall("r2", "c3", "Read", "")],
        thoughts=[ModelThought(ODD_TEXT, "thinking"), ModelThought("more", "reasoning_summary")],
        metadata={"stream": True},
    ))
    writer.submit(started("i-2", alice, t=5))  # whole seconds
    writer.submit(InterceptionEnded(id="i-2", ended_at=at(6), status="failed", upstream_status=500, error="boom",
                                    prompt="again", prompt_response_id="r3",
                                    tool_calls=[ToolCall("r3", "c4", "X", "{}")]))
    writer.submit(started("i-3", alice, t=7.5))  # no children at all
    writer.submit(InterceptionEnded(id="i-3", ended_at=at(8), status="completed", upstream_status=200))
    await writer.flush(timeout=5)

    # Values the writer does not produce but the columns allow.
    t, u, p, m = token_usages.c, tool_usages.c, user_prompts.c, model_thoughts.c
    async with db.writer.begin() as conn:
        async def update(table: sa.Table, where: sa.ColumnElement[bool], **values: Any) -> None:
            await conn.execute(sa.update(table).where(where).values(**values))

        # One priced API row, one priced subscription row, one unpriced (every price column null).
        await update(token_usages, t.provider_response_id == "r1", input_price_micros=3, output_price_micros=15,
                     cache_read_price_micros=0, cache_write_price_micros=4, other_price_micros=7, cost_micros=48073,
                     price_source="genai-prices", price_version="0.0.9", price_ref="anthropic/x", api_equivalent=False,
                     effective_group_id="g-1", metadata={"a": 1.5, "b": -0.0, "c": 10**15, "é": [True, False, None]})
        await update(token_usages, t.provider_response_id == "r2", cost_micros=sa.null(), api_equivalent=True,
                     price_source=ODD_TEXT, metadata=sa.null())
        await update(tool_usages, u.provider_tool_call_id == "c1", injected=True, server_url="https://mcp.example/x",
                     metadata={"ok": True, "list": [1, 2.25, "x"]})
        await update(tool_usages, u.provider_tool_call_id == "c2", invocation_error=ODD_TEXT, provider_item_id=None,
                     metadata=sa.literal_column("'[]'"))
        await update(tool_usages, u.provider_tool_call_id == "c3", metadata=sa.literal_column("'0'"))
        await update(tool_usages, u.provider_tool_call_id == "c4", provider_tool_call_id=None,
                     metadata=sa.literal_column("'\"text\"'"))
        await update(user_prompts, p.interception_id == "i-1", metadata=sa.literal_column("'false'"))
        await update(user_prompts, p.interception_id == "i-2", metadata=sa.literal_column("'\"\"'"),
                     created_at=datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))  # a zero-padded year
        await update(model_thoughts, m.content == "more", metadata=sa.literal_column("'null'"))
        await update(model_thoughts, m.content == ODD_TEXT, metadata=sa.literal_column("'[1]'"))
        # The interceptions' own columns: no client, an empty one; odd text; a falsy JSON metadata; an initiator
        # with no user row (deleted); null ids and status.
        i = interceptions.c
        await update(interceptions, i.id == "i-1", client=None, error_message=ODD_TEXT, api_key_id="k-1",
                     client_session_id=ODD_TEXT, thread_parent_id="i-0", thread_root_id="i-0",
                     credential_kind="oauth", credential_hint="…x9")
        await update(interceptions, i.id == "i-2", client="", metadata=sa.literal_column("'0'"),
                     initiator_id="gone-user")
        await update(interceptions, i.id == "i-3", upstream_status=None, metadata=sa.literal_column("'[2]'"))


async def test_page_as_json_answers_the_same(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    await _seed(db, alice, writer)
    built = await list_interceptions(db, limit=1000)
    spliced = await list_interceptions(db, limit=1000, as_json=True)
    if db.dialect == "postgresql":  # the database did build them (SQLite: the Python dicts, as without the flag)
        assert all(isinstance(item, orjson.Fragment) for item in spliced)
    assert as_read(spliced) == as_read(built)

    # The cases above are all there, as the Python path gives them.
    by_id = {item["id"]: item for item in built}
    one, two, three = by_id["i-1"], by_id["i-2"], by_id["i-3"]
    assert [c["created_at"] for c in one["token_usages"]] == ["2025-03-01T12:00:01.000001Z"] * 2
    assert two["user_prompts"][0]["created_at"] == "0999-12-31T23:59:59.999999Z"
    assert two["tool_usages"][0]["created_at"] == "2025-03-01T12:00:06.000000Z"
    assert [t["priced"] for t in one["token_usages"]] == [True, False]
    assert [t["api_equivalent"] for t in one["token_usages"]] == [False, True]
    assert one["cost"]["cost_micros"] == 48073 and one["cost"]["unpriced_records"] == 1
    assert [t["injected"] for t in one["tool_usages"]] == [True, False, False]
    assert [t["metadata"] for t in one["tool_usages"]][1:] == [{}, {}] and two["tool_usages"][0]["metadata"] == "text"
    assert [t["metadata"] for t in one["model_thoughts"]] == [[1], {}]
    assert one["user_prompts"][0]["prompt"] == ODD_TEXT and two["user_prompts"][0]["metadata"] == {}
    assert three["token_usages"] == three["tool_usages"] == [] and three["cost"]["priced"]
    assert one["client"] == two["client"] == "Unknown" and one["error_message"] == ODD_TEXT
    assert one["session_id"] == ODD_TEXT and one["metadata"]["stream"] is True
    assert two["initiator"] == {"id": "gone-user", "username": None} and two["metadata"] == {}
    assert three["upstream_status"] is None and three["metadata"] == [2]


async def test_page_as_json_on_a_filtered_page(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    """A page of one: its neighbours' children stay out of it."""
    await _seed(db, alice, writer)
    [item] = await list_interceptions(db, limit=1, offset=1, as_json=True)
    assert orjson.loads(orjson.dumps(item))["id"] == "i-2"
    assert as_read([item]) == as_read(await list_interceptions(db, limit=1, offset=1))


def test_api_encoder_falls_back_with_fragments() -> None:
    """An answer orjson refuses (an integer beyond 64 bits) goes to the standard encoder, database-built arrays
    included."""
    from aigw_proxy.admin.api.app import _encode

    body = _encode({"big": 2**70, "kids": orjson.Fragment('[{"a":"ü","b":[1,2.5,null]}]')})
    assert json.loads(body) == {"big": 2**70, "kids": [{"a": "ü", "b": [1, 2.5, None]}]}


async def test_page_as_json_after_a_cursor_and_with_no_connection_to_spare(
        db: Database, alice: Initiator, writer: RecordWriter) -> None:
    """A long page (its children built on two connections in one snapshot, PostgreSQL) after a cursor; and the same
    page while the reader pool has no connection to spare (its children on the request's connection alone)."""
    await _seed(db, alice, writer)
    built = await list_interceptions(db, limit=1000, after_id="i-3")
    assert [item["id"] for item in built] == ["i-2", "i-1"]
    assert as_read(await list_interceptions(db, limit=1000, after_id="i-3", as_json=True)) == as_read(built)
    async with contextlib.AsyncExitStack() as held:
        pool = db.reader.pool
        assert isinstance(pool, sa.pool.QueuePool)
        for _ in range(pool.size()):
            await held.enter_async_context(db.reader.connect())
        assert as_read(await list_interceptions(db, limit=1000, after_id="i-3", as_json=True)) == as_read(built)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite builds its pages in Python, on one connection
async def test_a_long_page_whose_second_connection_cannot_join_the_snapshot_is_built_on_one(
        db: Database, alice: Initiator, writer: RecordWriter, monkeypatch: Any, caplog: Any) -> None:
    """A server or pooler that refuses `SET TRANSACTION SNAPSHOT` (here: an id no transaction exported, which
    PostgreSQL refuses as it would a snapshot from another server) costs a long page its second connection, not
    its answer; the proxy says so once."""
    from aigw_proxy.storage.dialects import backend_of

    await _seed(db, alice, writer)
    built = await list_interceptions(db, limit=1000)
    async with db.reader.connect() as conn:
        backend = type(backend_of(conn))
    exported = backend.export_snapshot

    async def unknown_snapshot(self: Any, conn: Any) -> str | None:
        await exported(self, conn)
        return "0000000F-000000FF-1"  # well formed, exported by no one

    monkeypatch.setattr(backend, "export_snapshot", unknown_snapshot)
    with caplog.at_level("WARNING", logger="aigw_proxy.storage.read.interceptions"):
        for _ in range(2):
            assert as_read(await list_interceptions(db, limit=1000, as_json=True)) == as_read(built)
    refused = [r for r in caplog.records if "could not join a page's snapshot" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelname == "WARNING"
