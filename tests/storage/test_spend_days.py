"""The spend report and the daily spend summary it reads (schema v7).

Random priced, unpriced and subscription traffic goes through the real RecordWriter; the report for every
grouping, many filters and time windows (edges on exact start times, on midnights, inside one day) must equal
the token-usage rows of the interceptions list summed by hand. The trigger-kept summary must equal a rebuild
after writes, a purge, a model corrected after the fact, a repricing and a cascade delete. And a v4 database with
data upgrades to v7 with its rows unpriced, until `reprice` prices them.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from aigw_proxy.recording.records import Initiator, TokenUsage
from aigw_proxy.spend import PriceOverride, Pricer, parse_price_overrides
from aigw_proxy.storage import (
    Database,
    InterceptionFilter,
    RecordWriter,
    list_interceptions,
    open_database,
    reprice,
    spend_report,
)
from aigw_proxy.storage.read.spend import GROUPINGS
from aigw_proxy.storage.retention import purge_old_records
from aigw_proxy.storage.schema import spend_days
from aigw_proxy.storage.schema.tables import PRICE_COLUMNS, users
from tests.support.backends import fresh_database
from tests.support.postgres import PostgresCluster
from tests.support.records import T0, at, ended, started

MODELS = {"anthropic": ("claude-sonnet-4-5", "claude-haiku-4-5", "mystery-claude"),
          "openai": ("gpt-5", "gpt-5-mini", "our-finetune"), "gemini": ("gemini-2.5-pro",)}
CLIENTS = ("Claude Code", "Codex", None)
DAY = 86400
V5_COLUMNS = (*PRICE_COLUMNS, "effective_group_id", "price_source", "price_version", "price_ref", "api_equivalent")


async def write_traffic(writer: RecordWriter, people: list[Initiator], seed: int, n: int = 150) -> list[float]:
    """`n` interceptions over 30 days across a month's end (T0 is March 1): 0-2 token usages each, some models
    unpriced, a third of the calls on a subscription (OAuth); a few left in flight. Returns the start times
    (seconds after T0)."""
    rng = random.Random(seed)
    starts = []
    for k in range(n):
        provider = rng.choice(list(MODELS))
        t = rng.uniform(-20 * DAY, 10 * DAY)
        if k % 17 == 0:
            t = (t // DAY) * DAY + 12 * 3600  # exactly on an hour: a window edge will fall on it
        ev = started(f"i{k:04d}", rng.choice(people), t=t, provider=provider,
                     provider_name=rng.choice((provider, "corp")), model=rng.choice(MODELS[provider]),
                     client=rng.choice(CLIENTS), client_session_id=f"s{k % 23}")  # type: ignore[arg-type]
        ev.credential_kind = rng.choice(("api_key", "api_key", "oauth"))
        writer.submit(ev)
        starts.append(t)
        if rng.random() < 0.04:
            continue  # in flight: not reported
        end = ended(ev.id, t=t + rng.uniform(1, 60), model=rng.choice((None, None, ev.model)))
        end.token_usages = [
            TokenUsage(f"r{k}-{j}", rng.randint(0, 5000), rng.randint(0, 2000), rng.choice((0, rng.randint(1, 90000))),
                       rng.choice((0, rng.randint(1, 4000))))
            for j in range(rng.choice((0, 1, 1, 2)))
        ]
        writer.submit(end)
    await writer.flush(timeout=30)
    return starts


def _group_key(by: str, item: dict[str, Any]) -> Any:
    # By provider: its name and type (a name is one provider's, but the traffic here reuses one for all types).
    return {"user": item["initiator"]["username"], "model": item["model"], "client": item["client"],
            "provider": (item["provider"], item["provider_name"]), "day": item["started_at"][:10]}[by]


def _cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The documented rule, by hand: per kind, the priced rows' sum, or null when every row of it is unpriced."""
    def kind(equivalent: bool) -> int | None:
        mine = [t for t in rows if t["api_equivalent"] is equivalent]
        if mine and all(t["cost_micros"] is None for t in mine):
            return None
        return sum(t["cost_micros"] or 0 for t in mine)
    api, eq = kind(False), kind(True)
    unpriced = sum(t["cost_micros"] is None for t in rows)
    return {"priced": unpriced == 0, "unpriced_records": unpriced, "cost_micros": api,
            "cost_usd": None if api is None else round(api / 1e6, 6), "api_equivalent_micros": eq,
            "api_equivalent_usd": None if eq is None else round(eq / 1e6, 6)}


def _figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    priced = [t for t in rows if t["cost_micros"] is not None]
    return {
        "records": len(rows),
        **{k: sum(t[k] for t in rows) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                "cache_write_input_tokens")},
        "cost": _cost(rows),
        "price_components": {f"{k}_micros": sum(t[f"{k}_price_micros"] for t in priced)
                             for k in ("input", "output", "cache_read", "cache_write", "other")} if priced else None,
    }


async def by_hand(db: Database, flt: InterceptionFilter, by: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(total, groups by key) summed from the interceptions list's token-usage rows."""
    items = await list_interceptions(db, flt, limit=100_000)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[_group_key(by, item)].extend(item["token_usages"])
    every = [t for item in items for t in item["token_usages"]]
    return _figures(every), {k: _figures(rows) for k, rows in groups.items() if rows}


async def assert_report_is_the_rows(db: Database, flt: InterceptionFilter, by: str) -> dict[str, Any]:
    report = await spend_report(db, flt, by=by)
    total, groups = await by_hand(db, flt, by)
    assert report["total"] == total, (flt, by)
    got = {(g["provider"], g["key"]) if by == "provider" else g["key"]:
           {k: v for k, v in g.items() if k not in ("key", "initiator", "provider", "provider_name")}
           for g in report["groups"]}
    assert len(got) == len(report["groups"])
    assert got == groups, (flt, by)
    return report


def _windows(starts: list[float], rng: random.Random) -> list[tuple[datetime | None, datetime | None]]:
    midnight = [T0.replace(hour=0) + timedelta(days=d) for d in range(12)]
    march, feb = T0.replace(hour=0), T0.replace(month=2, day=1, hour=0)
    out: list[tuple[datetime | None, datetime | None]] = [(None, None)]
    # Whole months, a month and its neighbours' days, a month's edge inside a window (the leaderboard's months).
    out += [(feb, march - timedelta(microseconds=1)), (feb, None), (None, march), (feb + timedelta(days=9), None),
            (feb + timedelta(days=9, hours=5), march + timedelta(days=3, hours=2)), (march, None)]
    for _ in range(4):
        a, b = sorted(rng.sample(starts, 2))
        out.append((at(a), at(b)))  # edges exactly on start times (inclusive)
        out.append((at(rng.uniform(0, 10 * DAY)), None))
        out.append((None, at(rng.uniform(0, 10 * DAY))))
    d = rng.randrange(1, 9)
    out += [
        (midnight[d], midnight[d + 3] - timedelta(microseconds=1)),  # whole days: the summary alone
        (midnight[d], None),
        (None, midnight[d]),  # the last day's only instant is its midnight
        (midnight[d] + timedelta(hours=1), midnight[d] + timedelta(hours=20)),  # inside one day
        (midnight[d] + timedelta(hours=12), midnight[d + 1] + timedelta(hours=12)),  # two partial days
        (at(5 * DAY), at(4 * DAY)),  # empty
    ]
    return out


@pytest.mark.parametrize("seed", [5, 6])
async def test_spend_report_equals_the_rows_summed_by_hand(
    db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator, seed: int
) -> None:
    starts = await write_traffic(writer, [alice, bob], seed)
    rng = random.Random(seed)
    everything = await assert_report_is_the_rows(db, InterceptionFilter(), "model")
    # The traffic has what the report must tell apart: unpriced rows, priced API and subscription rows.
    assert everything["total"]["cost"]["unpriced_records"] > 0
    assert everything["total"]["cost"]["cost_micros"] > 0 and everything["total"]["cost"]["api_equivalent_micros"] > 0
    unpriced = {g["key"]: g["cost"] for g in everything["groups"]}
    assert unpriced["mystery-claude"]["cost_micros"] is None and unpriced["mystery-claude"]["priced"] is False
    attributes: list[dict[str, Any]] = [{}, {"provider": "openai"}, {"provider_name": "corp"}, {"model": "gpt-5"},
                                        {"client": "Unknown"}, {"initiator": "alice"}, {"visible_to": bob.user_id},
                                        {"session_id": "s3"}, {"model": "no-such-model"}]
    checked = 0
    for attrs in attributes:
        for a, b in _windows(starts, rng):
            flt = InterceptionFilter(**attrs, started_after=a, started_before=b)
            for by in ("user", *rng.sample(("model", "client", "provider", "day"), 1)):
                report = await assert_report_is_the_rows(db, flt, by)
                checked += report["total"]["records"] > 0
    assert checked > 50  # the comparisons are not between empty reports


SUMMARIES = (spend_days.spend_days, spend_days.fleet_days, spend_days.user_months)


async def _summary(db: Database) -> list[list[tuple[Any, ...]]]:
    async with db.reader.connect() as conn:
        return [sorted(tuple(r) for r in await conn.execute(sa.select(t))) for t in SUMMARIES]


async def assert_kept_equals_a_rebuild(db: Database) -> None:
    """The three trigger-kept spend summaries equal a rebuild from the rows, with no key left without rows."""
    kept = await _summary(db)
    async with db.writer.begin() as conn:
        await conn.run_sync(spend_days.rebuild)
    assert await _summary(db) == kept
    # No key left without rows (records is the first sum, after the key).
    for table, rows in zip(SUMMARIES, kept, strict=True):
        width = len(table.primary_key.columns)
        assert rows and all(row[width] > 0 for row in rows), table.name


def _override(toml_tables: list[dict[str, Any]]) -> tuple[PriceOverride, ...]:
    return parse_price_overrides(toml_tables)


async def test_the_summary_follows_every_change(
    db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator
) -> None:
    writer.group_of = lambda user_id: "group-a" if user_id == alice.user_id else None  # alice's calls charged to it
    await write_traffic(writer, [alice, bob], seed=9)
    await assert_kept_equals_a_rebuild(db)
    for table in SUMMARIES:  # the effective group is part of every summary's key
        async with db.reader.connect() as conn:
            charged = set((await conn.execute(sa.select(table.c.effective_group_id).distinct())).scalars())
        assert charged == {"group-a", ""}, table.name
    before = await spend_report(db, by="model")

    # Reprice everything with a negotiated discount and a price for a model that had none.
    pricer = Pricer(_override([{"provider": "openai", "model": "our-finetune", "input": 1, "output": 2},
                               {"model": "claude-*", "discount": 0.5}]))
    result = await reprice(db, pricer, batch_size=13)
    assert result.rows == before["total"]["records"] and result.changed > 0
    await assert_kept_equals_a_rebuild(db)
    after = {g["key"]: g for g in (await spend_report(db, by="model"))["groups"]}
    old = {g["key"]: g for g in before["groups"]}
    assert old["our-finetune"]["cost"]["priced"] is False and after["our-finetune"]["cost"]["priced"] is True
    sonnet_before = old["claude-sonnet-4-5"]["price_components"]
    sonnet_after = after["claude-sonnet-4-5"]["price_components"]
    rounding = old["claude-sonnet-4-5"]["records"]  # half a micro-dollar per row at most
    assert abs(sonnet_after["output_micros"] - sonnet_before["output_micros"] / 2) <= rounding
    assert after["mystery-claude"]["cost"]["cost_micros"] is None  # a discount on no price is still no price
    await assert_report_is_the_rows(db, InterceptionFilter(), "model")

    # Repricing again with the same prices changes nothing.
    assert (await reprice(db, pricer)).changed == 0

    # A purge (children first), a model corrected later, a cascade delete of an interception with its rows.
    await purge_old_records(db, at(3 * DAY), batch_size=17)
    async with db.writer.begin() as conn:
        await conn.exec_driver_sql("UPDATE aibridge_interceptions SET model = 'gpt-5', client = NULL, "
                                   "started_at = '2025-03-09 01:00:00.000000' WHERE id IN (SELECT interception_id "
                                   "FROM aibridge_token_usages ORDER BY id LIMIT 5)")
        await conn.exec_driver_sql("DELETE FROM aibridge_interceptions WHERE id IN (SELECT interception_id "
                                   "FROM aibridge_token_usages ORDER BY id DESC LIMIT 3)")
    await assert_kept_equals_a_rebuild(db)
    for by in ("user", "day", "provider"):
        await assert_report_is_the_rows(db, InterceptionFilter(), by)


async def test_unpriced_only_leaves_priced_rows_alone(db: Database, writer: RecordWriter, alice: Initiator) -> None:
    await write_traffic(writer, [alice], seed=11, n=60)
    before = {t["id"]: t for i in await list_interceptions(db, limit=1000) for t in i["token_usages"]}
    pricer = Pricer(_override([{"model": "*", "input": 1, "output": 1}]))  # would change every row
    result = await reprice(db, pricer, unpriced_only=True, since=T0 - timedelta(days=30), until=T0 + timedelta(days=30))
    after = {t["id"]: t for i in await list_interceptions(db, limit=1000) for t in i["token_usages"]}
    was_unpriced = [k for k, t in before.items() if t["cost_micros"] is None]
    assert result.rows == result.changed == result.was_unpriced == len(was_unpriced) > 0
    for k, t in after.items():
        if k in was_unpriced:
            assert t["cost_micros"] == t["input_tokens"] + t["output_tokens"] + t["cache_read_input_tokens"] \
                + t["cache_write_input_tokens"] and t["price_source"] == "config"
        else:
            assert t == before[k]


def downgrade_to_v6(path: Path) -> None:
    """What a database looked like before the token-usage prices (v7): no price columns, no spend summaries, the
    later versions to apply again (they find their own parts in place)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        for name in spend_days.TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(f"DROP TABLE {spend_days.spend_days.name}")
        conn.execute(f"DROP TABLE {spend_days.fleet_days.name}")
        conn.execute(f"DROP TABLE {spend_days.user_months.name}")
        conn.execute("DROP INDEX idx_aibridge_token_usages_null_cost")
        for column in V5_COLUMNS:
            conn.execute(f"ALTER TABLE aibridge_token_usages DROP COLUMN {column}")
        conn.execute("DELETE FROM schema_migrations WHERE version >= 7")


async def test_v7_upgrade_leaves_old_rows_unpriced_until_reprice(
    db_path: Path, writer: RecordWriter, alice: Initiator, bob: Initiator
) -> None:
    await write_traffic(writer, [alice, bob], seed=13, n=80)
    await writer.close(timeout=10)
    db = await open_database(db_path)
    priced = await spend_report(db, by="day")
    await db.close()
    downgrade_to_v6(db_path)
    db = await open_database(db_path)  # migrates v6 → v7 → … → the latest
    try:
        upgraded = await spend_report(db, by="day")
        total = upgraded["total"]
        # Tokens and row counts back-filled; no price invented for history: every row unpriced (null, never 0).
        assert {k: total[k] for k in ("records", "input_tokens", "output_tokens")} == \
            {k: priced["total"][k] for k in ("records", "input_tokens", "output_tokens")}
        assert total["cost"]["unpriced_records"] == total["records"] > 0
        assert total["cost"]["cost_micros"] is None and total["price_components"] is None
        await assert_report_is_the_rows(db, InterceptionFilter(), "day")
        # `reprice` prices them exactly as the writer had.
        result = await reprice(db, Pricer(), since=datetime(2025, 1, 1, tzinfo=UTC))
        assert result.was_unpriced == result.rows == total["records"]
        assert await spend_report(db, by="day") == priced
    finally:
        await db.close()


async def _write_edge_traffic(db: Database, people: list[Initiator]) -> None:
    """The same rows wherever written: priced API and subscription calls, unpriced models, tiny (one token) and
    very large (10^12 tokens) amounts, spread over February and March; `people[-1]` only in February."""
    async with db.writer.begin() as conn:
        await conn.execute(sa.insert(users), [{"id": p.user_id, "username": p.username, "role": "member",
                                               "created_at": T0} for p in people])
    writer = RecordWriter(db, flush_interval=0.005)
    writer.start()
    try:
        rng = random.Random(11)
        active, february_only = people[:-1], people[-1]
        for k in range(120):
            who = february_only if k % 10 == 0 else rng.choice(active)
            t = rng.uniform(-20 * DAY, -DAY) if who is february_only else rng.uniform(-20 * DAY, 10 * DAY)
            provider = rng.choice(list(MODELS))
            ev = started(f"e{k:04d}", who, t=t, provider=provider, model=rng.choice(MODELS[provider]),
                         client=rng.choice(CLIENTS))  # type: ignore[arg-type]
            ev.credential_kind = rng.choice(("api_key", "oauth"))
            writer.submit(ev)
            end = ended(ev.id, t=t + 5)
            size = rng.choice((1, 1000, 10**12))
            end.token_usages = [TokenUsage(f"e{k}-{j}", rng.choice((0, size)), rng.choice((1, size)),
                                           rng.choice((0, size)), rng.choice((0, 1)))
                                for j in range(rng.choice((1, 1, 2)))]
            writer.submit(end)
        await writer.flush(timeout=30)
    finally:
        await writer.close(timeout=10)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_postgresql_reports_spend_byte_for_byte_as_sqlite(
    db: Database, postgres_cluster: PostgresCluster, backend: str
) -> None:
    """The same rows in SQLite and in PostgreSQL: every grouping's report, over all time, whole months, partial
    days and a window where a user has no rows, encodes to the same bytes (the API's JSON)."""
    people = [Initiator(f"00000000-0000-0000-0000-00000000000{n}", name, f"tok-{name}")
              for n, name in enumerate(("alice", "bob", "carol", "dave"))]
    with fresh_database(postgres_cluster) as url:
        pg = await open_database(url)
        try:
            for database in (db, pg):
                await _write_edge_traffic(database, people)
            windows = [(None, None), (T0.replace(month=2, day=1), T0 - timedelta(microseconds=1)),
                       (T0, None), (at(2.5 * DAY), at(7.25 * DAY)), (None, at(-3.5 * DAY))]
            checked = 0
            for a, b in windows:
                for initiator in (None, "carol", "dave"):
                    flt = InterceptionFilter(started_after=a, started_before=b, initiator=initiator)
                    for by in (*GROUPINGS, None):
                        sqlite_report, pg_report = [await spend_report(d, flt, by=by) for d in (db, pg)]
                        assert orjson.dumps(pg_report) == orjson.dumps(sqlite_report), (a, b, initiator, by)
                        checked += bool(sqlite_report["groups"])
            everything = await spend_report(db, by="user")
            assert everything["total"]["cost"]["unpriced_records"] > 0
            assert everything["total"]["cost"]["cost_micros"] > 10**12  # the large amounts (micro-dollars)
            assert everything["total"]["cost"]["api_equivalent_micros"] > 0
            since_march = await spend_report(db, InterceptionFilter(started_after=T0), by="user")
            assert "dave" not in {g["key"] for g in since_march["groups"]}  # a user with no rows in the window
            assert checked > 40
        finally:
            await pg.close()
