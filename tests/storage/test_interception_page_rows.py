"""The interceptions page reads its rows as stored and converts timestamps and JSON itself: the values must be
exactly what the column types (UTCDateTime, JSON, Boolean) and rfc3339 give."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from aigw_proxy.recording.records import Initiator, InterceptionEnded, ModelThought, TokenUsage, ToolCall
from aigw_proxy.storage import Database, RecordWriter, list_interceptions, rfc3339
from aigw_proxy.storage.read.interceptions import children_of
from aigw_proxy.storage.read.stored_values import metadata_json, time_json
from aigw_proxy.storage.schema.tables import interceptions, model_thoughts, token_usages, tool_usages, user_prompts
from tests.support.records import at, started


@pytest.mark.parametrize(
    "stored",
    [
        "2025-03-01 12:00:00.000000",  # what UTCDateTime writes, zero microseconds
        "2025-03-01 12:00:00.000001",
        "0999-12-31 23:59:59.999999",  # a year below 1000 stays zero-padded
        # Not written by UTCDateTime, but read the same as through the column type:
        "2025-03-01 12:00:00",
        "2025-03-01T12:00:00.5",
        "2025-03-01 12:00:00.123+00",
        "2025-03-01 12:00:00.123456+02:00",  # the type reads stored text as UTC wall time
        "2025-W09-6 12:00:00.000000",  # an ISO week date of the canonical length
        None,
    ],
)
def test_stored_times_read_as_the_column_type_reads_them(stored: str | None) -> None:
    dialect = sqlite.dialect()
    typed = interceptions.c.started_at.type.dialect_impl(dialect).result_processor(dialect, None)
    assert typed is not None
    assert _outcome(time_json, stored) == _outcome(lambda v: rfc3339(typed(v)), stored)


def _outcome(read: Callable[[Any], Any], value: Any) -> Any:
    try:
        return read(value)
    except ValueError as exc:
        return type(exc)


def test_malformed_stored_time_still_fails() -> None:
    with pytest.raises(ValueError):
        time_json("2025-03-01 12:00:00.12345x")


def test_metadata_values() -> None:
    assert metadata_json(None) == {}
    assert metadata_json("null") == {}
    assert metadata_json("[]") == {}
    assert metadata_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert metadata_json(5) == 5 and metadata_json(0) == {}  # JSON numbers come back from SQLite as numbers
    nan = metadata_json('{"x": NaN, "y": Infinity}')  # json.dumps writes these; orjson cannot read them
    assert math.isnan(nan["x"]) and nan["y"] == math.inf


async def _page(db: Database) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in await list_interceptions(db, limit=1000)}


async def _typed_times(db: Database, table: sa.Table, column: str) -> dict[str, list[str | None]]:
    """A timestamp column as UTCDateTime + rfc3339 give it, by interception, in the page's order."""
    iid = table.c.id if table is interceptions else table.c.interception_id
    out: dict[str, list[str | None]] = {}
    async with db.reader.connect() as conn:
        for row_iid, value in await conn.execute(sa.select(iid, table.c[column]).order_by(table.c[column], table.c.id)):
            out.setdefault(row_iid, []).append(rfc3339(value))
    return out


async def test_page_values_match_the_column_types(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    sqlite = db.dialect == "sqlite"
    writer.submit(started("i-1", alice, t=0, metadata={"big": 2**70, "nan": float("nan"), "s": "ü\x00"}))
    writer.submit(InterceptionEnded(
        id="i-1",
        ended_at=at(1.000001),
        status="completed",
        upstream_status=200,
        prompt="hi",
        prompt_response_id="r1",
        token_usages=[TokenUsage("r1", 1, 2, metadata={"web_search_requests": 3})],
        tool_calls=[ToolCall("r1", "c1", "Bash", "{}")],
        thoughts=[ModelThought("hmm", "thinking")],
        metadata={"stream": True},
    ))
    writer.submit(started("i-2", alice, t=5.25, client=None))  # type: ignore[arg-type]
    writer.submit(InterceptionEnded(id="i-2", ended_at=at(6), status="failed", upstream_status=500, error="boom",
                                    prompt="again", prompt_response_id="r2",
                                    tool_calls=[ToolCall("r2", "c2", "X", "")]))
    await writer.flush(timeout=5)
    # Values the writer does not produce but the columns allow.
    async with db.writer.begin() as conn:
        await conn.execute(sa.update(interceptions).where(interceptions.c.id == "i-2").values(
            metadata=sa.null(), client=None))
        await conn.execute(sa.update(tool_usages).where(tool_usages.c.provider_tool_call_id == "c2").values(
            injected=True, metadata=sa.null()))
        await conn.execute(sa.update(user_prompts).where(user_prompts.c.interception_id == "i-2").values(
            metadata=sa.literal_column("'[]'")))
        # Not JSON, so only SQLite takes it.
        infinity = "'{\"x\": Infinity}'" if sqlite else "'{\"x\": 1e308}'"
        await conn.execute(sa.update(token_usages).values(metadata=sa.literal_column(infinity)))
        # Stored text UTCDateTime never writes (no microseconds, a 'T', an offset): read as before.
        await conn.execute(sa.update(model_thoughts).values(created_at=sa.literal_column("'2025-03-01 12:00:07'")))
        await conn.execute(sa.update(interceptions).where(interceptions.c.id == "i-2").values(
            ended_at=sa.literal_column("'2025-03-01T12:00:06.5+02:00'")))

    page = await _page(db)
    one, two = page["i-1"], page["i-2"]
    assert list(page) == ["i-2", "i-1"]
    assert one["started_at"] == "2025-03-01T12:00:00.000000Z"
    assert one["ended_at"] == "2025-03-01T12:00:01.000001Z"
    assert two["started_at"] == "2025-03-01T12:00:05.250000Z"
    # The offset of text UTCDateTime never writes: SQLite's type reads the wall time as UTC, timestamptz honours it.
    assert two["ended_at"] == ("2025-03-01T12:00:06.500000Z" if sqlite else "2025-03-01T10:00:06.500000Z")
    assert one["metadata"]["big"] == 2**70
    if sqlite:
        assert math.isnan(one["metadata"]["nan"]) and one["metadata"]["s"] == "ü\x00"
    else:  # jsonb holds neither NaN nor NUL: null and U+FFFD instead of losing the record
        assert one["metadata"]["nan"] is None and one["metadata"]["s"] == "ü\ufffd"
    assert two["metadata"] == {} and two["client"] == "Unknown"
    assert one["client"] == "Claude Code"
    assert [t["injected"] for t in two["tool_usages"]] == [True]
    assert [t["injected"] for t in one["tool_usages"]] == [False]
    assert two["tool_usages"][0]["metadata"] == {} and two["user_prompts"][0]["metadata"] == {}
    assert one["token_usages"][0]["metadata"] == {"x": math.inf if sqlite else 1e308}
    assert one["model_thoughts"] == [{"interception_id": "i-1", "content": "hmm", "metadata": {"source": "thinking"},
                                      "created_at": "2025-03-01T12:00:07.000000Z"}]

    # Every timestamp as UTCDateTime + rfc3339 give it.
    for table, key in ((token_usages, "token_usages"), (user_prompts, "user_prompts"),
                       (tool_usages, "tool_usages"), (model_thoughts, "model_thoughts")):
        listed = {iid: [c["created_at"] for c in item[key]] for iid, item in page.items() if item[key]}
        assert listed == await _typed_times(db, table, "created_at")
    for column in ("started_at", "ended_at"):
        assert {iid: [item[column]] for iid, item in page.items()} == await _typed_times(db, interceptions, column)


async def test_children_of_on_a_fresh_connection(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("i-1", alice))
    writer.submit(InterceptionEnded(id="i-1", ended_at=at(1), status="completed", upstream_status=200, prompt="p",
                                    prompt_response_id="r"))
    await writer.flush(timeout=5)
    async with db.reader.connect() as conn:  # no statement yet: children_of begins the reader's transaction
        kids = await children_of(["i-1", "nope"], conn)
        assert conn.in_transaction()
    assert [p["prompt"] for p in kids["i-1"]["user_prompts"]] == ["p"]
    assert kids["nope"] == {"token_usages": [], "user_prompts": [], "tool_usages": [], "model_thoughts": []}
    async with db.reader.connect() as conn:
        assert await children_of([], conn) == {}
    assert datetime.fromisoformat(kids["i-1"]["user_prompts"][0]["created_at"]) == at(1).astimezone(UTC)
