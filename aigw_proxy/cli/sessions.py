"""`aigw-proxy sessions …`: sessions and their threads, from the local database or a running proxy's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aigw_proxy.cli.common import fail, print_json, storage_call, storage_options
from aigw_proxy.cli.main import main
from aigw_proxy.cli.records import filter_options, print_page
from aigw_proxy.cli.remote import api_get, remote_options


@main.group()
def sessions() -> None:
    """Read sessions: interceptions grouped by client session (or thread) and user."""


@sessions.command("list")
@filter_options
@click.option("--after-session-id", help="Cursor: the id of the last session of the previous page.")
@remote_options
@storage_options
def sessions_list(after_session_id: str | None, url: str | None, token: str | None, data_dir: Path,
                  **kw: Any) -> None:
    """Print sessions as a JSON array, most recently active first."""
    from aigw_proxy.storage import list_sessions

    print_page(kw, url, token, data_dir, path="/sessions", key="sessions",
               cursor=("after_session_id", after_session_id),
               read=lambda db, flt: list_sessions(db, flt, limit=kw["limit"], after_session_id=after_session_id))


@sessions.command("show")
@click.argument("session_id")
@click.option("--after-id", help="Threads after this thread id.")
@click.option("--before-id", help="Threads before this thread id.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="Threads per page.")
@remote_options
@storage_options
def sessions_show(session_id: str, after_id: str | None, before_id: str | None, limit: int, url: str | None,
                  token: str | None, data_dir: Path) -> None:
    """Print one session and a page of its threads (prompt, model, tokens, tool calls, thinking) as JSON."""
    if after_id and before_id:
        raise click.UsageError("give --after-id or --before-id, not both")
    if url:
        from urllib.parse import quote

        print_json(api_get(url, token, f"/sessions/{quote(session_id, safe='')}",
                           {"after_id": after_id, "before_id": before_id, "limit": limit}))
        return
    from aigw_proxy.storage import get_session

    found = storage_call(data_dir, lambda db: get_session(db, session_id, after_id=after_id, before_id=before_id,
                                                          limit=limit))
    if found is None:
        fail(f"session {session_id!r} not found")
    print_json(found)
