from __future__ import annotations

import random
from datetime import timedelta, timezone

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import (
    Database,
    InterceptionFilter,
    InvalidCursor,
    RecordWriter,
    count_interceptions,
    list_interceptions,
    purge_interceptions,
)
from tests.support.records import T0, at, ended, started


async def test_order_and_keyset_pagination(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    rng = random.Random(7)
    ids = [f"i-{n:03d}" for n in range(57)]
    rng.shuffle(ids)
    for n, iid in enumerate(ids):
        t = rng.choice([0, 1, 2, 3, 5])  # many ties on started_at: the id breaks them
        writer.submit(started(iid, alice, t=t))
        writer.submit(ended(iid, t=10 + n))
    writer.submit(started("in-flight", alice, t=4))
    await writer.flush()

    everything = await list_interceptions(db, limit=1000)
    keys = [(item["started_at"], item["id"]) for item in everything]
    assert keys == sorted(keys, reverse=True)
    assert len(everything) == 57 == await count_interceptions(db)

    for page_size in (1, 7, 10, 57, 100):
        seen: list[str] = []
        after: str | None = None
        while True:
            page = await list_interceptions(db, limit=page_size, after_id=after)
            if not page:
                break
            assert len(page) <= page_size
            seen += [item["id"] for item in page]
            after = page[-1]["id"]
        assert seen == [item["id"] for item in everything]

    by_offset = await list_interceptions(db, limit=10, offset=20)
    assert [i["id"] for i in by_offset] == [i["id"] for i in everything[20:30]]
    assert len(await list_interceptions(db)) == 57  # default limit 100
    assert len(await list_interceptions(db, limit=0)) == 57


async def test_cursor_errors(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    writer.submit(started("a", alice))
    writer.submit(ended("a"))
    writer.submit(started("in-flight", alice))
    await writer.flush()
    with pytest.raises(InvalidCursor, match="invalid pagination cursor"):
        await list_interceptions(db, after_id="nope")
    with pytest.raises(InvalidCursor):
        await list_interceptions(db, after_id="in-flight")
    with pytest.raises(ValueError, match="both"):
        await list_interceptions(db, after_id="a", offset=1)
    assert await list_interceptions(db, after_id="a") == []


async def test_filters(db: Database, alice: Initiator, bob: Initiator, writer: RecordWriter) -> None:
    rows = [
        ("a1", alice, "anthropic", "anthropic", "claude-sonnet-4-5", "Claude Code", "s1", 0),
        ("a2", alice, "openai", "openai", "gpt-5", "Codex", "s2", 10),
        ("a3", alice, "openai", "azure", "gpt-5", "Codex", "s2", 20),
        ("b1", bob, "anthropic", "anthropic", "claude-haiku-4-5", "Unknown", None, 30),
        ("b2", bob, "copilot", "copilot", "gpt-5", "GitHub Copilot (VS Code)", None, 40),
    ]
    for iid, who, provider, name, model, client, sess, t in rows:
        writer.submit(
            started(
                iid,
                who,
                t=t,
                provider=provider,
                provider_name=name,
                model=model,
                client=client,
                client_session_id=sess,
            )
        )
        writer.submit(ended(iid, t=t + 1))
    writer.submit(started("in-flight", alice, t=50))
    await writer.flush()

    async def ids(**kw: object) -> list[str]:
        flt = InterceptionFilter(**kw)  # type: ignore[arg-type]
        found = [i["id"] for i in await list_interceptions(db, flt)]
        assert await count_interceptions(db, flt) == len(found)
        return found

    assert await ids() == ["b2", "b1", "a3", "a2", "a1"]
    assert await ids(initiator="alice") == ["a3", "a2", "a1"]
    assert await ids(initiator=bob.user_id) == ["b2", "b1"]
    assert await ids(initiator="nobody") == []
    assert await ids(provider="openai") == ["a3", "a2"]
    assert await ids(provider_name="azure") == ["a3"]
    assert await ids(model="gpt-5") == ["b2", "a3", "a2"]
    assert await ids(client="Unknown") == ["b1"]
    assert await ids(client="Codex", provider_name="openai") == ["a2"]
    assert await ids(session_id="s2") == ["a3", "a2"]
    assert await ids(session_id="b1") == ["b1"]
    assert await ids(started_after=at(10)) == ["b2", "b1", "a3", "a2"]  # inclusive
    assert await ids(started_before=at(10)) == ["a2", "a1"]  # inclusive
    assert await ids(started_after=at(10), started_before=at(30), initiator="bob") == ["b1"]
    # Another timezone, same instant.
    new_york = timezone(timedelta(hours=-5))
    assert await ids(started_after=(T0 + timedelta(seconds=40)).astimezone(new_york)) == ["b2"]


async def test_purge_deletes_old_interceptions_and_children(
    db: Database, alice: Initiator, writer: RecordWriter
) -> None:
    for n in range(5):
        writer.submit(started(f"i-{n}", alice, t=n * 100))
        writer.submit(ended(f"i-{n}", t=n * 100 + 1, response_id=f"r{n}", prompt="hi", tool_call_ids=("c",)))
    await writer.flush()
    assert await purge_interceptions(db, at(250), batch_size=2) == 3
    assert [i["id"] for i in await list_interceptions(db)] == ["i-4", "i-3"]
    async with db.reader.connect() as conn:
        for table in ("aibridge_token_usages", "aibridge_user_prompts", "aibridge_tool_usages"):
            assert (await conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}")).scalar() == 2


@pytest.mark.sqlite_only("SQLite's free pages; PostgreSQL's autovacuum reuses the space")
async def test_purge_gives_pages_back(db: Database, alice: Initiator, writer: RecordWriter) -> None:
    for n in range(300):
        writer.submit(started(f"i-{n}", alice, t=n))
        writer.submit(ended(f"i-{n}", t=n + 1, prompt="x" * 2000))
    await writer.flush()
    assert await purge_interceptions(db, at(1000)) == 300
    async with db.reader.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar() == 0
