"""The PostgreSQL Grafana dashboard (deploy/grafana/aigw-proxy-postgres-dashboard.json) against a real PostgreSQL.

The proxy's tables are created from aigw_proxy.storage.schema.tables, after deploy/postgres/grafana-reader.sh has
made the dashboard's read-only role (as the postgres image does on first start, before any table exists). A few
users' calls are inserted; then every panel's SQL and every variable's query runs as that role, with Grafana's
template variables and macros expanded as Grafana does it, and must return exactly the figures of those calls.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from aigw_proxy.storage.schema import tables
from tests.support.postgres import APP_ROLE, PostgresCluster, run_sync, sqlalchemy_url

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "aigw-proxy-postgres-dashboard.json"
READER_SCRIPT = DEPLOY / "postgres" / "grafana-reader.sh"

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RANGE = (T0 - timedelta(hours=1), T0 + timedelta(hours=3))  # the dashboard's time range in these tests
INTERVAL = "1h"  # what Grafana would pick for $__interval


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# ------------------------------------------------------------------------------------- Grafana's expansion

def _regex_escape(value: str) -> str:
    """Grafana's `regex` variable format escapes each value like this (its `escapeRegex`)."""
    return re.sub(r"[\\^$*+?.()|[\]{}/]", lambda m: "\\" + m.group(0), value)


def _format_regex(selected: list[str] | None, all_value: str) -> str:
    if selected is None:  # "All" with a custom all value: inserted as it is
        return all_value
    escaped = [_regex_escape(v) for v in selected]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _interval_seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smhdw])", text)
    assert m is not None, text
    number, unit = m.groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _macro(name: str, args: list[str]) -> str:
    """The PostgreSQL datasource's macros (pkg/tsdb/grafana-postgresql-datasource/macros.go), for these tests."""
    start, end = RANGE
    match name:
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        case "__timeFrom":
            return f"'{_rfc3339(start)}'"
        case "__timeTo":
            return f"'{_rfc3339(end)}'"
        case "__timeGroup" | "__timeGroupAlias":
            seconds = _interval_seconds(args[1].strip("'"))
            expr = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
            return expr + (' AS "time"' if name == "__timeGroupAlias" else "")
    raise AssertionError(f"macro ${name} is not expanded by this test: add it")


def render(sql: str, variables: dict[str, list[str] | None], all_values: dict[str, str]) -> str:
    """Template variables first (the frontend does those), then the backend's macros."""
    def variable(m: re.Match[str]) -> str:
        name, fmt = m.group(1), m.group(2)
        assert fmt == "regex", f"${{{name}:{fmt}}}: only the regex format is expected in these queries"
        return _format_regex(variables.get(name), all_values[name])

    sql = re.sub(r"\$\{(\w+):(\w+)\}", variable, sql)
    sql = sql.replace("$__interval", INTERVAL)
    assert not re.search(r"\$(?!__)\w", sql), f"unexpanded variable in {sql}"
    return re.sub(r"\$(__\w+)\(([^)]*)\)", lambda m: _macro(m.group(1), [a.strip() for a in m.group(2).split(",")]),
                  sql)


# -------------------------------------------------------------------------------------------- the data

USERS = {"alice": "u-alice", "bob": "u-bob", "carol": "u-carol", "dave": "u-dave"}
DELETED = {"carol"}  # removed since; her calls stay on the dashboard, her name leaves the user picker


def _rows() -> dict[sa.Table, list[dict[str, Any]]]:
    def call(iid: str, who: str, minutes: float, provider: str, model: str, client: str | None,
             failed: str | None = None) -> dict[str, Any]:
        return {"id": iid, "initiator_id": USERS[who], "provider": provider, "provider_name": provider,
                "model": model, "client": client, "started_at": at(minutes), "ended_at": at(minutes + 1),
                "status": "failed" if failed else "completed", "upstream_status": 429 if failed else 200,
                "error_type": failed, "metadata": {}}

    def usage(uid: str, iid: str, minutes: float, inp: int, out: int, cread: int = 0, cwrite: int = 0,
              price: tuple[int, int, int, int, int] | None = None, subscription: bool = False) -> dict:
        """`price`: the stored (input, output, cache read, cache write, other) micro-dollars; None = unpriced."""
        names = ("input_price_micros", "output_price_micros", "cache_read_price_micros", "cache_write_price_micros",
                 "other_price_micros")
        priced = dict(zip(names, price, strict=True)) if price else dict.fromkeys(names)
        return {"id": uid, "interception_id": iid, "input_tokens": inp, "output_tokens": out,
                "cache_read_input_tokens": cread, "cache_write_input_tokens": cwrite, "created_at": at(minutes),
                **priced, "cost_micros": sum(price) if price else None, "api_equivalent": subscription}

    def prompt(pid: str, iid: str, minutes: float, text: str) -> dict:
        return {"id": pid, "interception_id": iid, "prompt": text, "created_at": at(minutes)}

    def tool(tid: str, iid: str, minutes: float, name: str, server: str | None = None,
             error: str | None = None) -> dict:
        return {"id": tid, "interception_id": iid, "tool": name, "input": '{"q": 1}', "server_url": server,
                "injected": server is not None, "invocation_error": error, "created_at": at(minutes)}

    return {
        tables.users: [
            {"id": uid, "username": name, "role": "member", "created_at": T0 - timedelta(days=30),
             "deleted_at": T0 if name in DELETED else None}
            for name, uid in USERS.items()
        ],
        tables.interceptions: [
            call("a1", "alice", 0, "anthropic", "claude-sonnet-4-5", "Claude Code"),
            call("b1", "bob", 30, "anthropic", "claude-sonnet-4-5", "Claude Code"),
            call("a2", "alice", 90, "openai", "gpt-4.1", "Codex", failed="rate_limited"),
            call("c1", "carol", 150, "openai", "gpt-4.1", None),
            call("old", "bob", -2 * 24 * 60, "anthropic", "claude-opus-4", "Claude Code"),  # before the range
        ],
        tables.token_usages: [
            usage("t1", "a1", 0.2, 100, 20, cread=5, cwrite=1, price=(300, 300, 2, 4, 10_000)),
            usage("t2", "a1", 0.5, 50, 10),  # unpriced
            usage("t3", "b1", 30.5, 200, 40, cwrite=10, price=(600, 600, 0, 38, 0), subscription=True),
            usage("t4", "c1", 150.5, 10, 1, price=(20, 8, 0, 0, 0)),
            usage("t5", "old", -2 * 24 * 60 + 0.5, 9999, 9999, price=(1, 1, 1, 1, 1)),
        ],
        tables.user_prompts: [
            prompt("p1", "a1", 0.1, "fix the failing tests"),
            prompt("p2", "b1", 30.1, "refactor the parser"),
            prompt("p3", "a2", 90.1, "write the release notes"),
            prompt("p4", "old", -2 * 24 * 60 + 0.1, "long ago"),
        ],
        tables.tool_usages: [
            tool("k1", "a1", 0.3, "Bash"),
            tool("k2", "a1", 0.4, "search_docs", server="https://mcp.example.com/docs", error="upstream timed out"),
            tool("k3", "b1", 30.3, "Read"),
        ],
    }


@dataclass
class DashboardDB:
    reader_url: str  # the dashboard's read-only role
    owner_url: str


def _psql(cluster: PostgresCluster) -> str:
    found = (cluster.bindir / "psql") if (cluster.bindir / "psql").exists() else shutil.which("psql")
    if not found:
        pytest.skip("psql is not installed (Debian's postgresql-client): needed to run grafana-reader.sh")
    return str(found)


@pytest.fixture(scope="module")
def dashboard_db(postgres_cluster: PostgresCluster) -> Iterator[DashboardDB]:
    db_url = postgres_cluster.create_database()
    database = db_url.rsplit("/", 1)[1]
    reader, password = f"grafana_{database}", secrets.token_urlsafe(12)
    psql = _psql(postgres_cluster)
    # The init script as the postgres image runs it: a superuser session, before the proxy creates any table.
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(postgres_cluster.port),
           "PGPASSWORD": postgres_cluster.superuser_password, "POSTGRES_USER": "postgres", "POSTGRES_DB": database,
           "AIGW_DB_OWNER": APP_ROLE, "AIGW_GRAFANA_DB_USER": reader, "AIGW_GRAFANA_DB_PASSWORD": password,
           "PATH": f"{Path(psql).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["sh", str(READER_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    async def load() -> None:
        engine = create_async_engine(sqlalchemy_url(db_url))  # the application role, as the proxy's migrations
        try:
            async with engine.begin() as conn:
                await conn.run_sync(tables.metadata.create_all)
                for table, rows in _rows().items():
                    await conn.execute(table.insert(), rows)
        finally:
            await engine.dispose()

    run_sync(load())
    reader_url = db_url.replace(f"{APP_ROLE}:{postgres_cluster.password}@", f"{reader}:{password}@")
    yield DashboardDB(reader_url=reader_url, owner_url=db_url)
    postgres_cluster.drop_database(database)
    postgres_cluster.execute(f'DROP ROLE IF EXISTS "{reader}"', superuser=True)


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> dict[str, str]:
    """SQL of every panel by title (each panel has one query)."""
    out: dict[str, str] = {}
    for panel in _dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        [target] = panel["targets"]
        assert panel["title"] not in out, f"two panels titled {panel['title']!r}"
        out[panel["title"]] = target["rawSql"]
    return out


def _all_values() -> dict[str, str]:
    return {v["name"]: v["allValue"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"}


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


async def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(_plain(v) for v in r.values()) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _panel(db: DashboardDB, title: str, **selected: list[str]) -> list[tuple[object, ...]]:
    return await _query(db.reader_url, render(_panels()[title], dict(selected), _all_values()))


def _epoch(t: datetime) -> int:
    return int(t.timestamp())


# The whole range, every variable on "All": what each panel must show for the calls above.
EXPECTED_ALL: dict[str, list[tuple[object, ...]]] = {
    "Tokens": [(360, 71, 5, 11)],
    "Interceptions": [(4, 1, 3, 4)],  # calls, failed, users, sessions
    "Leaderboard per user": [
        ("bob", 1, 200, 40, 0, 10),
        ("alice", 2, 150, 30, 5, 1),
        ("carol", 1, 10, 1, 0, 0),
    ],
    "Top models by interception count": [("claude-sonnet-4-5", 2), ("gpt-4.1", 2)],
    "Top clients by interception count": [("Claude Code", 2), ("Codex", 1), ("Unknown", 1)],
    # provider, model, records, unpriced; input, output, cache read, cache write, other (USD, every priced row);
    # total cost (API calls), API-equivalent value (subscription calls; none for gpt-4.1: empty, not $0)
    "Approximate cost": [
        ("anthropic", "claude-sonnet-4-5", 3, 1, 0.0009, 0.0009, 0.000002, 0.000042, 0.01, 0.010606, 0.001238),
        ("openai", "gpt-4.1", 1, 0, 0.00002, 0.000008, 0, 0, 0, 0.000028, None),
    ],
    "Interceptions over time by user": [
        (_epoch(T0), "alice", 1),
        (_epoch(T0), "bob", 1),
        (_epoch(at(60)), "alice", 1),
        (_epoch(at(120)), "carol", 1),
    ],
    "Failed interceptions by error type": [("rate_limited", 1)],
    "User prompts": [
        (at(90.1), "alice", "Codex", "openai", "gpt-4.1", "write the release notes", "a2", "a2"),
        (at(30.1), "bob", "Claude Code", "anthropic", "claude-sonnet-4-5", "refactor the parser", "b1", "b1"),
        (at(0.1), "alice", "Claude Code", "anthropic", "claude-sonnet-4-5", "fix the failing tests", "a1", "a1"),
    ],
    "Tool call totals": [(3, 1)],
    "Tool calls": [
        (at(30.3), "bob", "Claude Code", "anthropic", "claude-sonnet-4-5", "Read", None, False, '{"q": 1}', None,
         0, "b1"),
        (at(0.4), "alice", "Claude Code", "anthropic", "claude-sonnet-4-5", "search_docs",
         "https://mcp.example.com/docs", True, '{"q": 1}', "upstream timed out", 1, "a1"),
        (at(0.3), "alice", "Claude Code", "anthropic", "claude-sonnet-4-5", "Bash", None, False, '{"q": 1}', None,
         0, "a1"),
    ],
}


async def test_every_panel_shows_the_recorded_calls(dashboard_db: DashboardDB) -> None:
    assert set(_panels()) == set(EXPECTED_ALL), "a panel without expected figures here (or one gone)"
    for title, expected in EXPECTED_ALL.items():
        assert await _panel(dashboard_db, title) == expected, title


async def test_the_variables_filter_every_panel(dashboard_db: DashboardDB) -> None:
    db = dashboard_db
    assert await _panel(db, "Tokens", username=["alice"]) == [(150, 30, 5, 1)]
    assert await _panel(db, "Tokens", username=["alice", "bob"]) == [(350, 70, 5, 11)]
    assert await _panel(db, "Interceptions", provider=["openai"]) == [(2, 1, 2, 2)]
    # A model name with regex metacharacters matches itself only ("gpt-4.1", not "gpt-4x1").
    assert await _panel(db, "Leaderboard per user", model=["gpt-4.1"]) == [
        ("carol", 1, 10, 1, 0, 0), ("alice", 1, 0, 0, 0, 0),
    ]
    assert await _panel(db, "Top clients by interception count", client=["Unknown"]) == [("Unknown", 1)]
    assert await _panel(db, "Approximate cost", username=["bob"]) == [
        ("anthropic", "claude-sonnet-4-5", 1, 0, 0.0006, 0.0006, 0, 0.000038, 0, None, 0.001238)]
    assert await _panel(db, "Interceptions over time by user", username=["bob"]) == [(_epoch(T0), "bob", 1)]
    assert [r[5] for r in await _panel(db, "User prompts", client=["Claude Code"])] == [
        "refactor the parser", "fix the failing tests",
    ]
    assert await _panel(db, "Tool call totals", username=["bob"]) == [(1, 0)]
    # A username that is a prefix of another's must not match it: the filters are anchored.
    assert await _panel(db, "Tokens", username=["al"]) == [(0, 0, 0, 0)]


async def test_the_variable_pickers_list_what_was_recorded(dashboard_db: DashboardDB) -> None:
    values: dict[str, list[object]] = {}
    for var in _dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        rows = await _query(dashboard_db.reader_url, render(var["query"], {"provider": ["openai"]}, _all_values()))
        values[var["name"]] = [r[0] for r in rows]
    assert values == {
        "username": ["alice", "bob", "dave"],  # deleted users leave the picker
        "provider": ["anthropic", "openai"],  # in the time range only
        "model": ["gpt-4.1"],  # of the selected provider
        "client": ["Claude Code", "Codex", "Unknown"],
    }


async def test_the_dashboard_role_reads_but_cannot_write(dashboard_db: DashboardDB) -> None:
    conn = await asyncpg.connect(dashboard_db.reader_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM aibridge_interceptions") == 5
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM aibridge_interceptions")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # even when it asks for a writable transaction
            await conn.execute("BEGIN READ WRITE; DELETE FROM aibridge_user_prompts; COMMIT")
    finally:
        await conn.close()
