"""The sessions page as the REST API asks for it (`as_json`: on PostgreSQL the database builds each session's JSON,
dialects/postgresql_sessions.py) says exactly what the Python-built page says: the same values of the same JSON
types, the same key order, the same timestamp strings, the same cost, for every way a page is read (the session
summary, the session slices, a user's grouped interceptions, offsets and cursors)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator, InterceptionEnded, TokenUsage
from aigw_proxy.storage import Database, RecordWriter, sessions_page
from aigw_proxy.storage.read.filters import InterceptionFilter
from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts
from tests.support.json_answers import ODD_TEXT, as_read
from tests.support.records import at, ended, started

DAY = 86400.0




async def _seed(db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator) -> None:
    # s-mixed: two providers, three models, the first two calls start at the same instant (the smaller id is the
    # first call: its client and metadata describe the session), over two UTC days; the newest prompt is odd text.
    writer.submit(started("m-b", alice, t=0, provider="openai", model="gpt-5", client="Codex",
                          client_session_id="s-mixed", metadata={"second": True}))
    writer.submit(started("m-a", alice, t=0, model="claude-haiku-4-5", client=None,  # type: ignore[arg-type]
                          client_session_id="s-mixed", metadata={"n": {"deep": [1, None, "ü"]}, "f": 1.5, "z": 0}))
    writer.submit(ended("m-a", t=2, prompt="first", response_id="r-a"))
    writer.submit(ended("m-b", t=3, prompt="second", response_id="r-b"))
    writer.submit(started("m-c", alice, t=DAY, client_session_id="s-mixed"))
    writer.submit(InterceptionEnded(id="m-c", ended_at=at(DAY + 4), status="completed", upstream_status=200,
                                    prompt=ODD_TEXT, prompt_response_id="r-c",
                                    token_usages=[TokenUsage("r-c", 7, 8, 1, 2), TokenUsage("r-c2", 1, 1)]))
    # s-plain: one call, no prompt, no token rows, falsy metadata and an empty client after the fact.
    writer.submit(started("p-1", alice, t=100, client_session_id="s-plain"))
    writer.submit(ended("p-1", t=101))
    # s-shared: one session id, two users; bob's calls are subscription calls (API-equivalent value).
    for n, who in enumerate((alice, bob, bob)):
        call = started(f"sh-{n}", who, t=200 + n, model="claude-sonnet-4-5", client_session_id="s-shared",
                       metadata={"who": who.username})
        writer.submit(replace(call, credential_kind="oauth") if who is bob else call)
        writer.submit(ended(f"sh-{n}", t=210 + n, prompt=f"prompt {n}" if n != 1 else None, response_id=f"r-sh{n}"))
    # Many more plain sessions, so that pages and cursors have something to cut.
    for n in range(12):
        writer.submit(started(f"x-{n:02d}", bob if n % 3 else alice, t=300 + 50 * n, provider="openai",
                              model="o4-mini", client_session_id=f"s-x{n:02d}"))
        writer.submit(ended(f"x-{n:02d}", t=301 + 50 * n, prompt=f"x {n}", response_id=f"r-x{n}"))
    await writer.flush(timeout=10)

    t, i, p = token_usages.c, interceptions.c, user_prompts.c
    async with db.writer.begin() as conn:
        async def update(table: sa.Table, where: sa.ColumnElement[bool], **values: Any) -> None:
            await conn.execute(sa.update(table).where(where).values(**values))

        await update(token_usages, t.provider_response_id == "r-a", cost_micros=48073)
        await update(token_usages, t.provider_response_id == "r-b", cost_micros=sa.null())  # unpriced
        await update(token_usages, t.provider_response_id == "r-c", cost_micros=1)  # $0.000001
        await update(token_usages, t.provider_response_id == "r-c2", cost_micros=10**12, api_equivalent=True)
        await update(token_usages, t.provider_response_id.in_(("r-sh1", "r-sh2")), cost_micros=sa.null(),
                     api_equivalent=True)  # every API-equivalent row unpriced: a null figure
        await update(interceptions, i.id == "p-1", client="", metadata=sa.literal_column("'0'"))
        await update(interceptions, i.id == "x-01", metadata=sa.literal_column("'[]'"))
        await update(interceptions, i.id == "x-02", metadata=sa.null())
        await update(interceptions, i.id == "x-03", metadata=sa.literal_column("'\"text\"'"))
        await update(user_prompts, p.prompt == "x 4", created_at=datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))


async def _both(db: Database, flt: InterceptionFilter | None = None, **page: Any) -> list[Any]:
    count, built = await sessions_page(db, flt, **page)
    count_json, spliced = await sessions_page(db, flt, **page, as_json=True)
    if db.dialect == "postgresql" and built:  # the database did build them (SQLite: the dicts, as without the flag)
        assert all(isinstance(s, orjson.Fragment) for s in spliced)
    assert count_json == count
    assert as_read(spliced) == as_read(built)
    return built


async def test_sessions_json_answers_the_same(db: Database, writer: RecordWriter, alice: Initiator,
                                              bob: Initiator) -> None:
    await _seed(db, writer, alice, bob)
    page = await _both(db, limit=1000)
    by_key = {(s["id"], s["initiator"]["username"]): s for s in page}
    mixed, plain = by_key[("s-mixed", "alice")], by_key[("s-plain", "alice")]
    # The cases above are all there, as the Python path gives them.
    assert mixed["providers"] == ["anthropic", "openai"]
    assert mixed["models"] == ["claude-haiku-4-5", "claude-sonnet-4-5", "gpt-5"]
    assert mixed["client"] == "Unknown" and mixed["metadata"] == {"n": {"deep": [1, None, "ü"]}, "f": 1.5, "z": 0}
    assert mixed["last_prompt"] == ODD_TEXT and mixed["started_at"] == "2025-03-01T12:00:00.000000Z"
    assert mixed["cost"] == {"priced": False, "unpriced_records": 1, "cost_micros": 48074, "cost_usd": 0.048074,
                             "api_equivalent_micros": 10**12, "api_equivalent_usd": 1000000.0}
    assert mixed["token_usage_summary"]["cache_read_input_tokens"] == 1
    assert plain["client"] == "Unknown" and plain["metadata"] == {} and plain["last_prompt"] is None
    assert plain["cost"]["priced"] and plain["cost"]["cost_micros"] == 0
    assert by_key[("s-shared", "bob")]["cost"]["api_equivalent_micros"] is None
    assert by_key[("s-shared", "bob")]["last_prompt"] == "prompt 2"
    assert by_key[("s-x03", "alice")]["metadata"] == "text"
    assert by_key[("s-x04", "bob")]["last_prompt"] == "x 4"

    # Pages and cursors; the summary, the slices (an attribute, a window straddling a session, both) and a user's
    # grouped interceptions: each listing its own per-session columns, each session described whole.
    assert len(await _both(db, limit=3, offset=2)) == 3
    await _both(db, limit=4, after_session_id="s-x05")
    assert {s["id"] for s in await _both(db, InterceptionFilter(provider="anthropic"))} == {"s-mixed", "s-plain",
                                                                                           "s-shared"}
    window = InterceptionFilter(started_after=at(1), started_before=at(DAY + 10))
    [listed] = [s for s in await _both(db, window) if s["id"] == "s-mixed"]
    assert listed["started_at"] == "2025-03-02T12:00:00.000000Z" and listed["interceptions"] == 1
    assert listed["providers"] == ["anthropic", "openai"]
    await _both(db, InterceptionFilter(model="gpt-5", started_before=at(DAY)))
    await _both(db, InterceptionFilter(provider="openai", client="Codex"))
    assert {s["initiator"]["username"] for s in await _both(db, InterceptionFilter(initiator="bob"))} == {"bob"}
    await _both(db, InterceptionFilter(session_id="s-shared"), limit=1, offset=1)
    assert await _both(db, InterceptionFilter(model="no-such-model")) == []


async def test_a_session_gone_from_the_summary_between_statements(db: Database, writer: RecordWriter,
                                                                  alice: Initiator, bob: Initiator) -> None:
    """A page row whose session a purge removed after the page was read (each statement sees its own snapshot):
    the page is still answered, as the Python path answers it (no calls, no tokens)."""
    from types import SimpleNamespace

    from aigw_proxy.storage.read.session_list import _enriched

    await _seed(db, writer, alice, bob)
    _, [real] = await sessions_page(db, InterceptionFilter(session_id="s-plain"))
    gone = SimpleNamespace(session_id="s-gone", initiator_id=alice.user_id, started_at=at(0), ended_at=at(1),
                           threads=1, interceptions=1, last_active_at=at(1))
    kept = SimpleNamespace(session_id="s-plain", initiator_id=alice.user_id, started_at=at(100), ended_at=at(101),
                           threads=1, interceptions=1, last_active_at=at(100))
    async with db.reader.connect() as conn:
        built = await _enriched(conn, [kept, gone], as_json=False, whole=True)
        spliced = await _enriched(conn, [kept, gone], as_json=True, whole=True)
    assert as_read(spliced) == as_read(built)
    assert as_read([built[0]]) == as_read([real])
    assert built[1]["providers"] == [] and built[1]["client"] is None and built[1]["cost"]["cost_micros"] == 0
