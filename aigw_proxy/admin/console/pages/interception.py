"""One interception: its page and its views under `/console/requests/{iid}/…`.

Every view receives the record already loaded and checked (another user's interception, for a member, is 404
like a missing one). Adding a view (a raw capture, say) is an `async def view(console, request, viewer, record)`
here and one entry in VIEWS; a link to it goes in interception.html."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console import columns as cols
from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.capture import capture_json, capture_section
from aigw_proxy.admin.console.core import Console
from aigw_proxy.storage import InterceptionFilter, list_interceptions
from aigw_proxy.storage.schema.tables import interceptions

View = Callable[[Console, Request, Viewer, dict[str, Any]], Awaitable[Response]]
Page = Callable[[Console, Request, Viewer], Awaitable[Response]]


async def load(console: Console, iid: str, viewer: Viewer) -> dict[str, Any] | None:
    """The ended interception `iid` as the REST API returns it, if the viewer may see it."""
    t = interceptions
    async with console.db.reader.connect() as conn:
        row = (await conn.execute(sa.select(t.c.started_at, t.c.initiator_id).where(
            t.c.id == iid, t.c.ended_at.is_not(None)))).first()
    if row is None or (viewer.visible_to is not None and row.initiator_id != viewer.visible_to):
        return None
    found = await list_interceptions(console.db, InterceptionFilter(
        initiator=row.initiator_id, started_after=row.started_at, started_before=row.started_at,
        visible_to=viewer.visible_to), limit=1000)
    return next((r for r in found if r["id"] == iid), None)


def _record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False)


async def detail(console: Console, request: Request, viewer: Viewer, record: dict[str, Any]) -> Response:
    return console.render(request, viewer, "interception.html", {
        "r": record, "raw": _record_json(record), "call_columns": cols.CALL_TOKEN_COLUMNS,
        "capture": await capture_section(console.db, record["id"], viewer.visible_to)})


async def raw_json(console: Console, request: Request, viewer: Viewer, record: dict[str, Any]) -> Response:
    return Response(_record_json(record).encode(), 200, media_type="application/json")


# (path under /requests/{iid}, view): "" is the interception's page itself.
VIEWS: tuple[tuple[str, View], ...] = (
    ("", detail),
    ("raw", raw_json),
    ("capture", capture_json),  # --capture-bodies (console/capture.py)
)


def page(view: View) -> Page:
    """A console page for `view`: the record loaded and checked first, 404 when it is not there to see."""
    async def handler(console: Console, request: Request, viewer: Viewer) -> Response:
        record = await load(console, request.path_params["iid"], viewer)
        if record is None:
            return console.error(request, viewer, 404, "Interception not found.")
        return await view(console, request, viewer, record)

    return handler
