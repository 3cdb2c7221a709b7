"""Copy a SQLite database into PostgreSQL (`aigw-proxy db migrate-to postgresql://…`).

Users and tokens first (rows already there, by id, are kept), the spend controls' groups, members and budgets
and the audit log likewise, then the interceptions in start-time order, a
chunk at a time: the chunk's interceptions that the target does not have yet are copied with all their child
rows in one transaction (COPY, the fastest way into PostgreSQL), so a copy interrupted at any point leaves only
whole interceptions behind, and running it again continues where it stopped (what is there is skipped). The
summary triggers stand aside during the copy (`Backend.bulk_load`); the summaries, session slices and spend
summaries are then rebuilt from the copied rows, and every table is counted on both sides.

Values are converted to what the target stores: SQLite's timestamp text to timestamptz, 0/1 to booleans, and
what PostgreSQL cannot hold (NaN or infinities in JSON, NUL characters in text) as the writer stores it there
(jsoncodec.jsonb_dumps). Child rows written before schema v10 get their interception's start from it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from aigw_proxy.storage.audit import audit_log
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects.postgresql import day_floor, ensure_partitions
from aigw_proxy.storage.jsoncodec import json_loads, jsonb_dumps
from aigw_proxy.storage.schema import session_slices, spend_days, summaries
from aigw_proxy.storage.schema.controls import budgets, controls_version, group_members, groups
from aigw_proxy.storage.schema.tables import CHILD_TABLES, api_tokens, interceptions, users

CHUNK = 5000  # interceptions per transaction

_JSON_UNSAFE = ("NaN", "Infinity", "\\u0000")


@dataclass(slots=True)
class TransferReport:
    copied: dict[str, int] = field(default_factory=dict)  # rows copied now, by table
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table → (source rows, target rows)
    summaries: dict[str, tuple[int, int]] = field(default_factory=dict)  # rebuilt: (source rows, target rows)
    skipped_users: list[str] = field(default_factory=list)  # usernames taken by another user in the target
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every source row is in the target (the target may have more: records it took meanwhile)."""
        return all(target >= source for source, target in self.counts.values())


def _stored_columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns if c.computed is None]


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else jsonb_dumps(value)
    return jsonb_dumps(json_loads(text)) if any(m in text for m in _JSON_UNSAFE) else text


def _text(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _converters(table: sa.Table, columns: Sequence[str]) -> list[Callable[[Any], Any]]:
    out: list[Callable[[Any], Any]] = []
    for name in columns:
        type_ = table.c[name].type
        if "DateTime" in type(type_).__name__:
            out.append(_time)
        elif isinstance(type_, sa.Boolean):
            out.append(lambda v: None if v is None else bool(v))
        elif isinstance(type_, sa.JSON):
            out.append(_json)
        elif isinstance(type_, sa.String):
            out.append(_text)
        else:
            out.append(lambda v: v)
    return out


class _Source:
    """The SQLite file, read with the standard driver in a worker thread, one chunk at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._query, sql, params)

    async def count(self, table: str) -> int:
        return int((await self.rows(f"SELECT count(*) FROM {table}"))[0][0])


async def _target_count(db: Database, table_and_where: str) -> int:
    async with db.reader.connect() as conn:
        return int((await conn.exec_driver_sql(f"SELECT count(*) FROM {table_and_where}")).scalar_one())


async def _copy(conn: Any, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table(table.name, records=rows, columns=columns)


async def transfer(source_path: Path, target: Database, *, chunk: int = CHUNK,
                   progress: Callable[[str], None] | None = None) -> TransferReport:
    """Copy the SQLite database at `source_path` (already migrated to this release's schema) into `target`
    (PostgreSQL, migrated). Resumable; see the module docstring."""
    if target.dialect != "postgresql":
        raise ValueError("the target of a transfer is a PostgreSQL database")
    began = time.monotonic()
    say = progress or (lambda _line: None)
    src = _Source(source_path)
    report = TransferReport()

    # Users and tokens: few rows, upserted by id (a username another user has in the target is reported).
    user_cols = _stored_columns(users)
    src_users = await src.rows(f"SELECT {', '.join(user_cols)} FROM users")
    token_cols = _stored_columns(api_tokens)
    src_tokens = await src.rows(f"SELECT {', '.join(token_cols)} FROM api_tokens")
    conv_u, conv_t = _converters(users, user_cols), _converters(api_tokens, token_cols)
    async with target.writer.begin() as conn:
        before = int((await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one())
        for row in src_users:
            values = dict(zip(user_cols, (f(v) for f, v in zip(conv_u, row, strict=True)), strict=True))
            await conn.execute(pg_insert(users).values(values).on_conflict_do_nothing())
        have = {r[0] for r in await conn.execute(sa.select(users.c.id))}
        report.skipped_users = sorted(r[1] for r in src_users if r[0] not in have)
        report.copied["users"] = len(have) - before
        before = int((await conn.execute(sa.select(sa.func.count()).select_from(api_tokens))).scalar_one())
        for row in src_tokens:
            values = dict(zip(token_cols, (f(v) for f, v in zip(conv_t, row, strict=True)), strict=True))
            if values["user_id"] in have:
                await conn.execute(pg_insert(api_tokens).values(values).on_conflict_do_nothing())
        report.copied["api_tokens"] = int(
            (await conn.execute(sa.select(sa.func.count()).select_from(api_tokens))).scalar_one()) - before

    # The spend controls (groups, their members, budgets) and the audit log: few rows, kept by their keys. A group
    # whose name the target has for another group is left out with its members and budget (reported).
    async with target.writer.begin() as conn:
        have_users = {r[0] for r in await conn.execute(sa.select(users.c.id))}
        for table in (groups, group_members, budgets, audit_log):
            cols = _stored_columns(table)
            conv = _converters(table, cols)
            before = int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
            have_groups = {r[0] for r in await conn.execute(sa.select(groups.c.id))}
            for row in await src.rows(f"SELECT {', '.join(cols)} FROM {table.name}"):
                values = dict(zip(cols, (f(v) for f, v in zip(conv, row, strict=True)), strict=True))
                if table is group_members and (values["group_id"] not in have_groups
                                               or values["user_id"] not in have_users):
                    continue
                if table is budgets and values["scope"].startswith("group:") \
                        and values["scope"].removeprefix("group:") not in have_groups:
                    continue
                await conn.execute(pg_insert(table).values(values).on_conflict_do_nothing())
            report.copied[table.name] = int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()) - before
        if report.copied[groups.name] or report.copied[group_members.name] or report.copied[budgets.name]:
            # Running proxies notice the change (storage/controls.py) and load the copied budgets.
            await conn.execute(sa.update(controls_version).values(version=controls_version.c.version + 1))

    # Interceptions with their children, a chunk at a time in (started_at, id) order.
    i_cols = _stored_columns(interceptions)
    conv_i = _converters(interceptions, i_cols)
    child_cols = {t.name: _stored_columns(t) for t in CHILD_TABLES}
    conv_c = {t.name: _converters(t, child_cols[t.name]) for t in CHILD_TABLES}
    total = await src.count(interceptions.name)
    report.copied[interceptions.name] = 0
    for t in CHILD_TABLES:
        report.copied[t.name] = 0
    cursor: tuple[str, str] | None = None
    seen = 0
    start_at, id_at = i_cols.index("started_at"), i_cols.index("id")
    while True:
        where, params = ("WHERE (started_at, id) > (?, ?) ", list(cursor)) if cursor else ("", [])
        rows = await src.rows(f"SELECT {', '.join(i_cols)} FROM {interceptions.name} {where}"
                              "ORDER BY started_at, id LIMIT ?", [*params, chunk])
        if not rows:
            break
        cursor = (rows[-1][start_at], rows[-1][id_at])
        seen += len(rows)
        converted = [tuple(f(v) for f, v in zip(conv_i, row, strict=True)) for row in rows]
        async with target.reader.connect() as conn:  # which of them the target has already
            existing = {(r[0], r[1]) for r in await conn.execute(
                sa.select(interceptions.c.id, interceptions.c.started_at).where(
                    interceptions.c.started_at.between(converted[0][start_at], converted[-1][start_at]),
                    interceptions.c.id.in_([r[id_at] for r in converted])))}
        missing = [r for r in converted if (r[id_at], r[start_at]) not in existing]
        if missing:
            await ensure_partitions(target, {day_floor(r[start_at]) for r in missing})
            starts = {r[id_at]: r[start_at] for r in missing}
            ids = list(starts)
            marks = ", ".join("?" * len(ids))
            children: dict[str, list[tuple[Any, ...]]] = {}
            for t in CHILD_TABLES:
                cols = child_cols[t.name]
                key_at, start_col = cols.index("interception_id"), cols.index("interception_started_at")
                out = []
                for row in await src.rows(f"SELECT {', '.join(cols)} FROM {t.name} "
                                          f"WHERE interception_id IN ({marks})", ids):
                    fields = [f(v) for f, v in zip(conv_c[t.name], row, strict=True)]
                    fields[start_col] = starts[fields[key_at]]  # pre-v5 rows have none; the same value otherwise
                    out.append(tuple(fields))
                children[t.name] = out
            async with target.writer.begin() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                await conn.exec_driver_sql("SELECT set_config('aigw.bulk', 'on', true)")  # summaries: rebuilt below
                await _copy(raw, interceptions, i_cols, missing)
                for t in CHILD_TABLES:
                    await _copy(raw, t, child_cols[t.name], children[t.name])
            report.copied[interceptions.name] += len(missing)
            for t in CHILD_TABLES:
                report.copied[t.name] += len(children[t.name])
        say(f"interceptions: {seen}/{total} read, {report.copied[interceptions.name]} copied")

    say("rebuilding the session summaries, slices and spend summaries")
    async with target.writer.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await conn.run_sync(summaries.rebuild)
        await conn.run_sync(session_slices.rebuild)
        await conn.run_sync(spend_days.rebuild)
        await conn.exec_driver_sql("ANALYZE")  # fresh statistics for the planner, partitioned parents included

    for table in (users, api_tokens, groups, group_members, budgets, audit_log, interceptions, *CHILD_TABLES):
        report.counts[table.name] = (await src.count(table.name), await _target_count(target, table.name))
    for table, where in ((summaries.sessions, ""), (summaries.interception_days, " WHERE interceptions > 0"),
                         (session_slices.session_slices, ""), *((t, "") for t in spend_days.TABLES)):
        report.summaries[table.name] = (await src.count(table.name + where),
                                        await _target_count(target, table.name + where))
    report.seconds = time.monotonic() - began
    return report
