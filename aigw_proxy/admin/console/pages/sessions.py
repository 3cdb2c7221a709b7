"""Sessions: the filtered list, and one session's threads and calls as a timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console import columns as cols
from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.core import PAGE, Console
from aigw_proxy.admin.console.filters import FilterForm
from aigw_proxy.storage import (
    InterceptionFilter,
    InvalidCursor,
    SessionCursorNotFound,
    get_session,
    list_interceptions,
    sessions_page,
)

THREADS_PAGE = 50


async def sessions_list(console: Console, request: Request, viewer: Viewer) -> Response:
    form = FilterForm.from_request(request, viewer)
    count: int | None = 0
    rows: list[dict[str, Any]] = []
    if form.error is None:
        try:
            count, rows = await sessions_page(console.db, form.filter, limit=PAGE, after_session_id=form.after)
        except SessionCursorNotFound as exc:
            form.error = str(exc)
    return console.render(request, viewer, "sessions.html", {
        **form.context(rows, PAGE), "count": count, "columns": cols.SESSION_COLUMNS})


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


async def session_page(console: Console, request: Request, viewer: Viewer) -> Response:
    sid = request.path_params["sid"]
    after = request.query_params.get("after") or None
    try:
        found = await get_session(console.db, sid, visible_to=viewer.visible_to, after_id=after, limit=THREADS_PAGE)
    except InvalidCursor:
        found = None
    if found is None:
        return console.error(request, viewer, 404, "Session not found.")
    # Every call of the page's threads, with its children, for the timeline.
    calls = await list_interceptions(console.db, InterceptionFilter(
        session_id=sid, initiator=found["initiator"]["id"], visible_to=viewer.visible_to,
        started_after=_parse(found["page_started_at"]), started_before=_parse(found["page_ended_at"])),
        limit=1000)
    calls.reverse()  # oldest first
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        by_thread.setdefault(c["thread_root_id"] or c["id"], []).append(c)
    call_ids = {c["id"] for c in calls}
    children: dict[str, list[str]] = {}
    top: list[str] = []
    for t in found["threads"]:
        root = by_thread.get(t["id"], [{}])[0]
        parent = root.get("thread_parent_id")
        if parent and parent in call_ids:
            children.setdefault(parent, []).append(t["id"])
        else:
            top.append(t["id"])
    threads = {t["id"]: t for t in found["threads"]}
    last = found["threads"][-1]["id"] if found["threads"] else None
    more = last is not None and len(found["threads"]) == THREADS_PAGE
    return console.render(request, viewer, "session.html", {
        "s": found, "top": top, "threads": threads, "calls": by_thread, "children": children,
        "next": last if more else None})
