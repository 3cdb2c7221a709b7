"""Spend controls in the database: groups and members, budgets set at run time, the snapshot the proxy enforces
from, the spend totals budgets read (API spend only, by UTC day and month, groups by the effective group stored
on the token rows), the enforcer's decisions, commits counted at once, and the schema step that adds the tables
to an older database."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
from genai_prices import Usage, calc_price

from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, TokenUsage
from aigw_proxy.spend.budgets import Budget, Scope, Spent
from aigw_proxy.spend.enforcer import BudgetVerdict, SpendControls
from aigw_proxy.storage import (
    LATEST_VERSION,
    ControlsStore,
    Database,
    GroupExistsError,
    GroupNotFoundError,
    InvalidGroupNameError,
    RecordWriter,
    UserNotFoundError,
    UserStore,
    open_database,
    spend_totals,
)
from aigw_proxy.storage.schema.controls import upgrade_v8
from aigw_proxy.storage.schema.migrations import MIGRATIONS
from aigw_proxy.telemetry.metrics import Metrics
from tests.storage.test_spend_days import assert_kept_equals_a_rebuild
from tests.support.metrics import Scrape

MODEL = "claude-sonnet-4-5"
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CALL = calc_price(Usage(input_tokens=1000, output_tokens=100), MODEL, provider_id="anthropic",
                  genai_request_timestamp=NOW).total_price  # USD


def micros(usd: Decimal) -> int:
    return int(usd * 1_000_000)


def call(writer: RecordWriter, iid: str, who: Initiator, at: datetime, *, kind: str = "api_key",
         model: str = MODEL) -> None:
    writer.submit(InterceptionStarted(id=iid, initiator=who, provider="anthropic", provider_name="anthropic",
                                      model=model, client="Claude Code", client_session_id=None, started_at=at,
                                      metadata={}, credential_kind=kind))
    writer.submit(InterceptionEnded(id=iid, ended_at=at + timedelta(seconds=2), status="completed",
                                    upstream_status=200, token_usages=[TokenUsage(f"msg_{iid}", 1000, 100)]))


def samples(metrics: Metrics) -> Scrape:
    return Scrape("", {f.name: [(x.name, dict(x.labels), x.value) for x in f.samples]
                       for f in metrics.registry.collect()})


async def test_groups_and_members(db: Database, alice: Initiator, bob: Initiator) -> None:
    store = ControlsStore(db)
    eng = await store.create_group("eng")
    await store.create_group("ops")
    with pytest.raises(GroupExistsError):
        await store.create_group("eng")
    with pytest.raises(InvalidGroupNameError):
        await store.create_group("no spaces")
    assert await store.add_member("eng", "alice") is True
    assert await store.add_member(eng["id"], bob.user_id) is True
    assert await store.add_member("eng", "alice") is False
    with pytest.raises(UserNotFoundError):
        await store.add_member("eng", "nobody")
    with pytest.raises(GroupNotFoundError):
        await store.add_member("nothing", "alice")
    listed = {g["name"]: [m["username"] for m in g["members"]] for g in await store.list_groups()}
    assert listed == {"eng": ["alice", "bob"], "ops": []}
    assert await store.remove_member("eng", "bob") is True
    assert await store.remove_member("eng", "bob") is False

    await store.set_budget(Budget.build("group:eng", daily=5))
    snap = await store.snapshot()
    assert snap.members == {alice.user_id: (eng["id"],)}
    assert snap.groups[eng["id"]] == "eng" and snap.users[bob.user_id] == ("bob", "admin")
    assert [str(b.scope) for b in snap.budgets] == ["group:eng"]
    await store.delete_group("eng")  # its members and its budget go with it
    snap = await store.snapshot()
    assert snap.members == {} and snap.budgets == () and list(snap.groups.values()) == ["ops"]


async def test_rename_a_group_keeps_its_members_and_budget(db: Database, alice: Initiator) -> None:
    store = ControlsStore(db)
    eng = await store.create_group("eng")
    await store.create_group("ops")
    await store.add_member("eng", "alice")
    await store.set_budget(Budget.build("group:eng", monthly=50))
    before = await store.version()
    assert await store.rename_group("eng", "platform") == {"id": eng["id"], "name": "platform", "old_name": "eng"}
    assert await store.version() > before  # the proxy re-reads its snapshot
    snap = await store.snapshot()
    assert snap.groups[eng["id"]] == "platform" and snap.members == {alice.user_id: (eng["id"],)}
    assert [str(b.scope) for b in snap.budgets] == ["group:platform"]
    with pytest.raises(GroupExistsError):
        await store.rename_group("platform", "ops")
    with pytest.raises(InvalidGroupNameError):
        await store.rename_group("platform", "no spaces")
    with pytest.raises(GroupNotFoundError):
        await store.rename_group("eng", "again")


async def test_budgets_set_replace_and_clear(db: Database, alice: Initiator) -> None:
    store = ControlsStore(db)
    stored = await store.set_budget(Budget.build("user:alice", daily=1, soft_fraction=0.5))
    assert stored.source == "database"
    await store.set_budget(Budget.build("user:alice", monthly=30))  # replaces the earlier one
    await store.set_budget(Budget.build("default", daily="2.5"))
    assert {str(b.scope): (b.daily_micros, b.monthly_micros, b.soft_fraction)
            for b in await store.list_budgets()} == {"default": (2_500_000, None, 0.8),
                                                     "user:alice": (None, 30_000_000, 0.8)}
    with pytest.raises(UserNotFoundError):
        await store.set_budget(Budget.build("user:ghost", daily=1))
    assert await store.clear_budget(Scope("default")) is True
    assert await store.clear_budget(Scope("default")) is False
    await UserStore(db).delete_user("alice")  # a deleted user's budget is not enforced any more
    assert await store.list_budgets() == []


async def test_spend_totals_count_api_spend_by_utc_day_and_month(db: Database, writer: RecordWriter,
                                                                 alice: Initiator, bob: Initiator) -> None:
    store = ControlsStore(db)
    gid = (await store.create_group("pair"))["id"]
    writer.group_of = lambda user_id: gid if user_id == alice.user_id else None  # what the proxy charges
    call(writer, "today-1", alice, NOW - timedelta(hours=1))
    call(writer, "today-2", alice, NOW.replace(hour=0, minute=0, second=1))
    call(writer, "earlier", alice, NOW - timedelta(days=3))
    call(writer, "last-month", alice, datetime(2026, 5, 31, 23, 59, tzinfo=UTC))
    call(writer, "plan", alice, NOW, kind="oauth")  # a subscription: API-equivalent value, not spend
    call(writer, "unpriced", alice, NOW, model="no-such-model")
    call(writer, "bob", bob, NOW)
    await writer.flush(timeout=10)
    async with db.reader.connect() as conn:
        result = await conn.exec_driver_sql("SELECT interception_id, effective_group_id FROM aibridge_token_usages")
        # SQLAlchemy 2.1 types exec_driver_sql's result as CursorResult[Any], i.e. rows of ONE column
        rows = cast("Sequence[tuple[str, str | None]]", result.all())
    charged = dict(rows)
    assert charged == {**dict.fromkeys(("today-1", "today-2", "earlier", "last-month", "plan", "unpriced"), gid),
                       "bob": None}
    one = micros(CALL)
    totals = await spend_totals(db, user_ids=[alice.user_id, bob.user_id], group_ids=[gid, "no-such-group"],
                                day=NOW.date())
    assert totals.users[alice.user_id] == Spent(NOW.date(), 2 * one, 3 * one)
    assert totals.users[bob.user_id] == Spent(NOW.date(), one, one)
    assert totals.groups[gid] == Spent(NOW.date(), 2 * one, 3 * one)  # alice's calls, charged to the group
    assert totals.groups["no-such-group"] == Spent(NOW.date())
    await assert_kept_equals_a_rebuild(db)  # the summaries budgets read, with the group in their keys


async def test_a_committed_call_counts_at_once(db: Database, writer: RecordWriter, alice: Initiator) -> None:
    controls = SpendControls(db, budgets=[Budget.build("user:alice", daily=CALL * 10)], clock=lambda: NOW)
    await controls.load_snapshot()
    writer.add_listener(controls.on_commit)
    first = controls.check_budget(alice)
    assert inspect.isawaitable(first) and await first is None
    call(writer, "c1", alice, NOW - timedelta(minutes=1))
    call(writer, "c2", alice, NOW - timedelta(minutes=1), kind="oauth")  # not spend
    await writer.flush(timeout=10)
    assert controls._users[alice.user_id].spent == Spent(NOW.date(), micros(CALL), micros(CALL))  # no refresh yet
    await controls.refresh_spend()  # the database agrees
    assert controls._users[alice.user_id].spent == Spent(NOW.date(), micros(CALL), micros(CALL))


async def test_the_enforcer_refuses_over_a_hard_limit_and_reports_soft_limits(
        db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator) -> None:
    clock = [NOW]
    metrics = Metrics()
    controls = SpendControls(db, metrics, budgets=[Budget.build("user:alice", daily=CALL * Decimal("1.5"),
                                                                monthly=CALL * 10, soft_fraction=0.5)],
                             clock=lambda: clock[0])
    await controls.load_snapshot()
    assert controls.check_budget(bob) is None  # no budget applies to bob: nothing to read
    pending = controls.check_budget(alice)
    assert inspect.isawaitable(pending)  # her figures: read once
    assert await pending is None
    assert controls.check_budget(alice) is None  # from the cache now, synchronously

    call(writer, "a1", alice, NOW - timedelta(minutes=5))
    await writer.flush(timeout=10)
    await controls.refresh_spend()
    assert controls.check_budget(alice) is None  # 1 call of 1.5: over the soft limit only
    s = samples(metrics)
    assert s.value("aigw_proxy_budget_soft_limit_reached", scope="user:alice", window="daily") == 1
    assert s.value("aigw_proxy_budget_soft_limit_crossings_total", scope="user:alice", window="daily") == 1

    call(writer, "a2", alice, NOW - timedelta(minutes=4))
    await writer.flush(timeout=10)
    await controls.refresh_spend()
    verdict = controls.check_budget(alice)
    assert isinstance(verdict, BudgetVerdict)
    assert verdict.message.startswith("budget_exceeded: the daily budget of user alice")
    assert verdict.retry_after(NOW) == 12 * 3600
    s = samples(metrics)
    assert s.value("coder_ai_gateway_cost_control_blocked_users", group_id="") == 1
    assert s.value("coder_ai_gateway_cost_control_blocked_requests_total", group_id="") == 1

    clock[0] = NOW + timedelta(days=1)  # a new UTC day: the daily window starts again, the month goes on
    assert controls.check_budget(alice) is None
    await controls.refresh_spend()
    assert controls._users[alice.user_id].spent == Spent(clock[0].date(), 0, 2 * micros(CALL))


async def test_schema_step_adds_the_tables_to_an_older_database(db_path: Path) -> None:
    db = await open_database(db_path)
    await db.close()
    with closing(sqlite3.connect(db_path)) as conn, conn:  # what a database before the step looked like
        for table in ("aigw_budgets", "aigw_group_members", "aigw_groups", "aigw_controls_version"):
            conn.execute(f"DROP TABLE {table}")
        step = next(m.version for m in MIGRATIONS if m.upgrade is upgrade_v8)
        conn.execute("DELETE FROM schema_migrations WHERE version >= ?", (step,))
    db = await open_database(db_path)  # applies the step
    try:
        store = ControlsStore(db)
        assert await store.list_groups() == [] and await store.version() == 0
        await store.create_group("after-the-upgrade")
        assert await store.version() == 1
    finally:
        await db.close()
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert max(v for (v,) in conn.execute("SELECT version FROM schema_migrations")) == LATEST_VERSION
