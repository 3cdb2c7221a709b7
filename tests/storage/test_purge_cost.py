"""Deleting an interception (retention) must cost the same whatever the size of the database: the summary
triggers rebuild only the deleted row's session and slices. Measured in SQLite virtual-machine steps (a progress
handler), not time, so the test is exact: a trigger that aggregates a whole table shows up as steps that grow with
the table."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from aigw_proxy.storage import open_database

STEP = 100


def _insert_sessions(conn: sqlite3.Connection, first: int, count: int) -> None:
    rows, tokens = [], []
    for n in range(first, first + count):
        iid = f"i{n:07d}"
        ts = f"2025-03-01 12:{n // 60 % 60:02d}:{n % 60:02d}.000000"
        rows.append((iid, f"sess-{n // 4}", ts, ts))
        tokens.append((f"t{n:07d}", iid, ts))
    with conn:
        conn.executemany(
            "INSERT INTO aibridge_interceptions (id, initiator_id, provider, provider_name, model, client, "
            "client_session_id, started_at, ended_at, status, metadata) "
            "VALUES (?, 'u1', 'anthropic', 'anthropic', 'claude-sonnet-4-5', 'Claude Code', ?, ?, ?, 'completed', "
            "'{}')",
            rows)
        conn.executemany(
            "INSERT INTO aibridge_token_usages (id, interception_id, provider_response_id, input_tokens, "
            "output_tokens, cache_read_input_tokens, cache_write_input_tokens, metadata, created_at) "
            "VALUES (?, ?, 'r', 10, 5, 0, 0, '{}', ?)", tokens)


def _steps_to_delete(conn: sqlite3.Connection, iid: str) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, STEP)
    with conn:
        conn.execute("DELETE FROM aibridge_token_usages WHERE interception_id = ?", (iid,))
        conn.execute("DELETE FROM aibridge_interceptions WHERE id = ?", (iid,))
    conn.set_progress_handler(None, STEP)
    return steps


async def test_deleting_an_interception_does_not_scale_with_the_tables(db_path: Path) -> None:
    await (await open_database(db_path)).close()  # the schema, triggers included
    with closing(sqlite3.connect(db_path)) as conn:
        _insert_sessions(conn, 0, 1000)
        small = _steps_to_delete(conn, "i0000001")
        _insert_sessions(conn, 1000, 9000)
        large = _steps_to_delete(conn, "i0000005")
        session = conn.execute("SELECT interceptions, input_tokens FROM aigw_sessions WHERE session_id = 'sess-1'")
        assert session.fetchone() == (3, 30)  # the rebuilt session lost the deleted call and its tokens
    assert small > 0
    assert large < 2 * small, (small, large)  # 10x the rows: the same work, not 10x
