"""Schema v3 on a database that already holds data: `last_prompt_at` is back-filled from the prompts and the
sessions list answers exactly as it did before the upgrade."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import RecordWriter, open_database
from aigw_proxy.storage.read.filters import InterceptionFilter
from aigw_proxy.storage.read.session_list import sessions_page
from aigw_proxy.storage.schema.migrations import LATEST_VERSION, V3_INDEX_NAMES
from tests.storage.test_session_slices import downgrade_to_v3
from tests.support.records import ended, started

FILTERS = (
    InterceptionFilter(model="gpt-5"),
    InterceptionFilter(provider="anthropic"),
    InterceptionFilter(provider_name="openai"),
    InterceptionFilter(client="Codex"),
    InterceptionFilter(client="Unknown"),
    InterceptionFilter(),
)


async def _write(writer: RecordWriter, alice: Initiator, bob: Initiator) -> None:
    calls = [  # id, who, session, model, provider, client, start, end, prompt
        ("a1", alice, "s1", "gpt-5", "openai", "Codex", 0, 5, "first question"),
        ("a2", alice, "s1", "claude-sonnet-4-5", "anthropic", "Codex", 10, 20, None),
        ("a3", alice, "s1", "gpt-5", "openai", "Codex", 30, 40, "second question"),
        ("a4", alice, "s2", "gpt-5", "openai", None, 50, 55, None),
        ("b1", bob, "s1", "gpt-5", "openai", "Codex", 60, 70, "bob asks"),
        ("b2", bob, "s3", "claude-haiku-4-5", "anthropic", "Claude Code", 80, 90, "haiku please"),
    ]
    for iid, who, sess, model, provider, client, t0, t1, prompt in calls:
        writer.submit(started(iid, who, t=t0, model=model, provider=provider, provider_name=provider,
                              client=client, client_session_id=sess))  # type: ignore[arg-type]
        writer.submit(ended(iid, t=t1, prompt=prompt))
    writer.submit(started("open", alice, t=100, model="gpt-5", client_session_id="s1"))  # still in flight
    await writer.flush(timeout=10)


def _downgrade_to_v2(path: Path) -> None:
    """What a v2 database looked like: no v3 indexes, no `last_prompt_at` column, version 2."""
    downgrade_to_v3(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        for index in V3_INDEX_NAMES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        conn.execute("ALTER TABLE aibridge_interceptions DROP COLUMN last_prompt_at")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 3")
        # A second, later prompt on a3 written by hand: the back-fill takes the newest.
        conn.execute("INSERT INTO aibridge_user_prompts (id, interception_id, provider_response_id, prompt, metadata, "
                     "created_at) VALUES ('p-extra', 'a3', '', 'follow-up', '{}', '2025-03-01 12:00:45.000000')")


def _last_prompt_at(path: Path) -> dict[str, str | None]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT id, last_prompt_at FROM aibridge_interceptions"))


async def _pages(db_path: Path) -> list[tuple[int | None, list[dict[str, Any]]]]:
    db = await open_database(db_path)
    try:
        return [await sessions_page(db, flt) for flt in FILTERS]
    finally:
        await db.close()


async def test_v3_backfills_last_prompt_at_and_sessions_answer_the_same(
    db_path: Path, writer: RecordWriter, alice: Initiator, bob: Initiator
) -> None:
    await _write(writer, alice, bob)
    await writer.close(timeout=10)
    written = _last_prompt_at(db_path)
    assert written == {
        "a1": "2025-03-01 12:00:05.000000", "a2": None, "a3": "2025-03-01 12:00:40.000000", "a4": None,
        "b1": "2025-03-01 12:01:10.000000", "b2": "2025-03-01 12:01:30.000000", "open": None,
    }

    _downgrade_to_v2(db_path)
    db = await open_database(db_path)  # migrates v2 → v3 → … → the latest
    await db.close()
    with closing(sqlite3.connect(db_path)) as conn:
        assert max(v for (v,) in conn.execute("SELECT version FROM schema_migrations")) == LATEST_VERSION
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(aibridge_interceptions)")}
    assert not set(V3_INDEX_NAMES) & indexes  # made by v3, dropped by v4: the session slices replace them
    assert _last_prompt_at(db_path) == {**written, "a3": "2025-03-01 12:00:45.000000"}

    pages = await _pages(db_path)
    by_filter = {flt: {(s["id"], s["initiator"]["username"]): s for s in page} for flt, (_, page) in
                 zip(FILTERS, pages, strict=True)}
    # model:gpt-5, newest activity first: bob's s1 is a session of its own; alice's s2 has no prompt (last active
    # = its start); alice's s1 covers a1 and a3 (a3's newest prompt is the hand-written follow-up).
    gpt5 = by_filter[FILTERS[0]]
    assert [s["id"] for s in pages[0][1]] == ["s1", "s2", "s1"] and pages[0][0] == 3
    assert gpt5[("s1", "alice")]["last_active_at"] == "2025-03-01T12:00:45.000000Z"
    assert gpt5[("s1", "alice")]["interceptions"] == 2 and gpt5[("s1", "alice")]["threads"] == 2
    assert gpt5[("s1", "alice")]["started_at"] == "2025-03-01T12:00:00.000000Z"
    assert gpt5[("s1", "alice")]["ended_at"] == "2025-03-01T12:00:40.000000Z"
    assert gpt5[("s2", "alice")]["last_active_at"] == "2025-03-01T12:00:50.000000Z"
    assert gpt5[("s1", "bob")]["last_active_at"] == "2025-03-01T12:01:10.000000Z"
    # provider:anthropic — only a2 of alice's s1 matches and it has no prompt: last active = a2's start.
    assert by_filter[FILTERS[1]][("s1", "alice")]["last_active_at"] == "2025-03-01T12:00:10.000000Z"
    assert by_filter[FILTERS[3]].keys() == {("s1", "alice"), ("s1", "bob")}
    assert by_filter[FILTERS[4]].keys() == {("s2", "alice")}  # no client recorded counts as Unknown
    # Filtered by everything a session has, the grouped answer is the summary table's.
    everything = by_filter[FILTERS[5]]
    for flt in FILTERS[:3]:
        for key, s in by_filter[flt].items():
            if s["interceptions"] == everything[key]["interceptions"]:
                assert s == everything[key]
