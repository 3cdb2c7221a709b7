"""Sessions lists answered from the session slices (schema v4) must equal grouping the matching interceptions.

Random traffic goes through the real RecordWriter (so the triggers see what production writes), then every
single-attribute filter and many time windows — edges on exact start times and through the middle of sessions —
are listed both ways: sliced (`sessions_page`) and grouped (`_grouped_page`, the reference). Then rows are
purged and a model corrected after the fact, and the trigger-kept tables must equal a rebuild from scratch.
"""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, open_database
from aigw_proxy.storage.read.filters import InterceptionFilter
from aigw_proxy.storage.read.session_list import SessionCursorNotFound, _grouped_page, sessions_page
from aigw_proxy.storage.read.sessions_from_slices import SlicePlan, slice_of
from aigw_proxy.storage.retention import purge_old_records
from aigw_proxy.storage.schema import summaries
from aigw_proxy.storage.schema.migrations import V3_INDEX_NAMES, V3_INDEXES
from aigw_proxy.storage.schema.session_slices import TRIGGERS, rebuild, session_slices, slice_counts
from tests.storage.test_spend_days import downgrade_to_v6
from tests.support.records import at, ended, started

PROVIDERS = {"anthropic": ("claude-sonnet-4-5", "claude-haiku-4-5"), "openai": ("gpt-5", "o4-mini"),
             "gemini": ("gemini-2.5-pro",)}
CLIENTS = ("Claude Code", "Codex", None, "Zed")
DAY = 86400


async def _write_random_traffic(writer: RecordWriter, people: list[Initiator], seed: int) -> list[float]:
    """~60 sessions over 10 days, some spanning days, mixing providers, models and clients; a few calls left in
    flight. Returns every start time (seconds after T0)."""
    rng = random.Random(seed)
    starts: list[float] = []
    n = 0
    for s in range(60):
        who = people[s % len(people)]
        sid = f"sess-{s:02d}" if s != 7 else "sess-shared \"ü\x1f"  # one id used by two users; odd characters
        t = rng.uniform(0, 10 * DAY)
        spread = rng.choice((60, 3600, 2 * DAY))  # minutes, hours or days between calls
        call_id = None
        for _ in range(rng.randint(1, 8)):
            provider = rng.choice(list(PROVIDERS))
            iid = f"i{n:04d}"
            n += 1
            writer.submit(started(iid, who, t=t, provider=provider, provider_name=rng.choice((provider, "corp")),
                                  model=rng.choice(PROVIDERS[provider]), client=rng.choice(CLIENTS),  # type: ignore[arg-type]
                                  client_session_id=sid, correlating_tool_call_id=call_id))
            starts.append(t)
            if rng.random() < 0.05:  # still in flight: never listed
                t += rng.uniform(1, spread)
                continue
            call_id = f"call-{iid}" if rng.random() < 0.4 else None
            writer.submit(ended(iid, t=t + rng.uniform(0.5, 30), prompt=rng.choice((None, "fix it", "again")),
                                response_id=f"r-{iid}", tool_call_ids=(call_id,) if call_id else ()))
            t += rng.uniform(1, spread)
        if s == 7:  # the same session id by another user
            writer.submit(started("shared-b", people[(s + 1) % len(people)], t=t, client_session_id=sid))
            writer.submit(ended("shared-b", t=t + 3, prompt="mine too"))
            starts.append(t)
    await writer.flush(timeout=20)
    return starts


def _filters(starts: list[float], seed: int) -> list[InterceptionFilter]:
    rng = random.Random(seed)
    attributes: list[dict[str, Any]] = [{}]
    attributes += [{"provider": p} for p in PROVIDERS] + [{"provider_name": "corp"}, {"provider_name": "openai"}]
    attributes += [{"model": m} for ms in PROVIDERS.values() for m in ms] + [{"model": "no-such-model"}]
    attributes += [{"client": c or "Unknown"} for c in CLIENTS]
    # Two at once: a model implies its provider (answered from the model's slice); a client does not.
    attributes += [{"provider": p, "model": ms[0]} for p, ms in PROVIDERS.items()]
    attributes += [{"provider": "anthropic", "client": "Codex"}, {"model": "gpt-5", "provider_name": "corp"}]
    windows: list[tuple[datetime | None, datetime | None]] = [(None, None)]
    for _ in range(5):
        a, b = sorted(rng.sample(starts, 2))
        windows.append((at(a), at(b)))  # edges exactly on start times (inclusive)
        windows.append((at(rng.uniform(0, 10 * DAY)), None))
        windows.append((None, at(rng.uniform(0, 10 * DAY))))
    windows.append((at(5 * DAY), at(4 * DAY)))  # empty: after > before
    out = [InterceptionFilter(**attrs, started_after=a, started_before=b) for attrs in attributes for a, b in windows]
    return [f for f in out if f.by_attribute]


def _key(s: dict[str, Any]) -> tuple[str, str]:
    return (s["last_active_at"], s["id"])


async def _slice_of(db: Database, flt: InterceptionFilter) -> SlicePlan | None:
    async with db.reader.connect() as conn:
        return await slice_of(conn, flt)


async def _assert_same(db: Database, flt: InterceptionFilter) -> list[dict[str, Any]]:
    total, page = await sessions_page(db, flt, limit=1000)
    ref_total, ref = await _grouped_page(db, flt, limit=1000, after_session_id=None, offset=0, count=True)
    assert total == ref_total == len(ref), flt
    assert [_key(s) for s in page] == sorted((_key(s) for s in page), reverse=True), flt
    assert sorted(page, key=lambda s: (*_key(s), s["initiator"]["id"])) == \
        sorted(ref, key=lambda s: (*_key(s), s["initiator"]["id"])), flt
    return page


async def _walk(db: Database, flt: InterceptionFilter, limit: int, *, keyset: bool) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        _, page = await sessions_page(db, flt, limit=limit, after_session_id=cursor if keyset else None,
                                      offset=0 if keyset else len(seen))
        seen += [(s["id"], s["initiator"]["id"]) for s in page]
        if len(page) < limit:
            return seen
        cursor = page[-1]["id"]


def _tables(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        return (sorted(conn.execute(f"SELECT * FROM {session_slices.name}")),
                sorted(conn.execute(f"SELECT * FROM {slice_counts.name} WHERE sessions > 0")))


async def _kept(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]],
                                       list[tuple[Any, ...]]]:
    """The trigger-kept tables as the column types read them: slices, slice counts, sessions, daily counts."""
    async with db.reader.connect() as conn:
        return tuple([sorted(tuple(r) for r in await conn.execute(query)) for query in (  # type: ignore[return-value]
            sa.select(session_slices),
            sa.select(slice_counts).where(slice_counts.c.sessions > 0),
            sa.select(summaries.sessions),
            sa.select(summaries.interception_days).where(summaries.interception_days.c.interceptions > 0),
        )])


async def _assert_kept_equals_a_rebuild(db: Database) -> None:
    """The trigger-kept slices, counts and session summaries equal a rebuild from scratch (done in place, as
    test_retention does)."""
    kept = await _kept(db)
    async with db.writer.begin() as conn:
        await conn.run_sync(rebuild)
        await conn.run_sync(summaries.rebuild)
    assert await _kept(db) == kept


@pytest.mark.parametrize("seed", [1, 2])
async def test_sliced_sessions_equal_grouped_sessions(
    db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator, seed: int
) -> None:
    starts = await _write_random_traffic(writer, [alice, bob], seed)
    filters = _filters(starts, seed)
    plans = {(f.provider, f.provider_name, f.model, f.client): await _slice_of(db, f) for f in filters}
    checked = {attrs for attrs, plan in plans.items() if plan is None or plan.others}
    assert checked == {("anthropic", None, None, "Codex"), (None, "corp", "gpt-5", None)}  # the non-implied pairs
    assert None not in plans.values()
    nonempty = 0
    for flt in filters:
        nonempty += bool(await _assert_same(db, flt))
    assert nonempty > len(filters) // 2  # the comparison is not between empty lists

    # Pagination both ways returns the full list in order, nothing lost or repeated.
    for flt in (filters[1], InterceptionFilter(provider="anthropic"), InterceptionFilter(client="Unknown")):
        _, full = await sessions_page(db, flt, limit=1000)
        expected = [(s["id"], s["initiator"]["id"]) for s in full]
        assert await _walk(db, flt, 7, keyset=True) == expected
        assert await _walk(db, flt, 7, keyset=False) == expected

    # The trigger-kept slices equal a rebuild, also after deletes (retention) and a model corrected later.
    await _assert_kept_equals_a_rebuild(db)
    await purge_old_records(db, at(3 * DAY), batch_size=17)
    async with db.writer.begin() as conn:
        await conn.exec_driver_sql("UPDATE aibridge_interceptions SET model = 'gpt-5', client = NULL "
                                   "WHERE id IN (SELECT id FROM aibridge_interceptions WHERE ended_at IS NOT NULL "
                                   "ORDER BY id LIMIT 5)")
    await _assert_kept_equals_a_rebuild(db)
    for flt in filters[::3]:
        await _assert_same(db, flt)


async def test_cursor_errors_and_routing(db: Database, writer: RecordWriter, alice: Initiator) -> None:
    writer.submit(started("a", alice, t=0, model="gpt-5", provider="openai", client_session_id="s1"))
    writer.submit(ended("a", t=1, prompt="hi"))
    writer.submit(started("b", alice, t=10 * DAY, model="gpt-5", provider="openai", client_session_id="s2"))
    writer.submit(ended("b", t=10 * DAY + 1))
    await writer.flush(timeout=10)
    recent = InterceptionFilter(model="gpt-5", started_after=at(DAY))
    _, page = await sessions_page(db, recent)
    assert [s["id"] for s in page] == ["s2"]
    with pytest.raises(SessionCursorNotFound, match='"s1"'):  # a session outside the window is no cursor
        await sessions_page(db, recent, after_session_id="s1")
    with pytest.raises(SessionCursorNotFound):
        await sessions_page(db, InterceptionFilter(started_after=at(2 * DAY), started_before=at(DAY)),
                            after_session_id="s2")
    # Narrowed to a user: grouped from the interceptions.
    assert await _slice_of(db, InterceptionFilter(model="gpt-5", visible_to=alice.user_id)) is None
    assert await _slice_of(db, InterceptionFilter(started_after=at(0))) == SlicePlan("all", "")
    assert await _slice_of(db, InterceptionFilter(client="Unknown")) == SlicePlan("client", "Unknown")
    # Every gpt-5 call was an openai call, not the other way round: the model's slice answers both.
    writer.submit(started("d", alice, t=DAY / 2, model="o4-mini", provider="openai", client_session_id="s4"))
    writer.submit(ended("d", t=DAY / 2 + 1))
    await writer.flush(timeout=10)
    assert await _slice_of(db, InterceptionFilter(model="gpt-5", provider="openai")) == SlicePlan("model", "gpt-5")
    writer.submit(started("c", alice, t=20 * DAY, model="gpt-5", provider="azure", client_session_id="s3"))
    writer.submit(ended("c", t=20 * DAY + 1))
    await writer.flush(timeout=10)
    # Now neither implies the other (3 calls each): one slice is read, checking the other attribute.
    assert await _slice_of(db, InterceptionFilter(model="gpt-5", provider="openai")) == SlicePlan(
        "provider", "openai", (("model", "gpt-5"),))
    assert await _slice_of(db, InterceptionFilter(model="gpt-5", provider="azure")) == SlicePlan("provider", "azure")
    for provider in ("openai", "azure"):
        flt = InterceptionFilter(model="gpt-5", provider=provider)
        total, page = await sessions_page(db, flt)
        assert (total, page) == await _grouped_page(db, flt, limit=100, after_session_id=None, offset=0, count=True)
    azure = InterceptionFilter(model="gpt-5", provider="azure")
    assert [s["id"] for s in (await sessions_page(db, azure))[1]] == ["s3"]


def downgrade_to_v3(path: Path) -> None:
    """What a v3 database looked like: no session slices, the v3 attribute indexes, version 3."""
    downgrade_to_v6(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        for ddl in V3_INDEXES:
            conn.execute(ddl)
        for name in TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(f"DROP TABLE {session_slices.name}")
        conn.execute(f"DROP TABLE {slice_counts.name}")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 4")  # and every later one


async def test_v4_upgrade_backfills_the_slices(
    db_path: Path, writer: RecordWriter, alice: Initiator, bob: Initiator
) -> None:
    starts = await _write_random_traffic(writer, [alice, bob], seed=3)
    await writer.close(timeout=10)
    before = _tables(db_path)
    downgrade_to_v3(db_path)
    db = await open_database(db_path)  # migrates v3 → v4
    try:
        assert _tables(db_path) == before
        with closing(sqlite3.connect(db_path)) as conn:
            indexes = {r[1] for r in conn.execute("PRAGMA index_list(aibridge_interceptions)")}
        assert not set(V3_INDEX_NAMES) & indexes  # the slices replace them
        for flt in _filters(starts, 3)[::5]:
            await _assert_same(db, flt)
    finally:
        await db.close()
