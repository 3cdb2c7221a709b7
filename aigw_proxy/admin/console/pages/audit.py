"""The audit log (admins only): every change made from the console, newest first, keyset-paged."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.core import PAGE, Console
from aigw_proxy.storage.audit import list_actions


async def audit_page(console: Console, request: Request, viewer: Viewer) -> Response:
    before = None
    at, aid = request.query_params.get("before_at"), request.query_params.get("before_id")
    if at and aid:
        before = (at, aid)
    try:
        rows = await list_actions(console.db, limit=PAGE, before=before)
    except ValueError:
        rows = []
    nxt = {"before_at": rows[-1]["at"], "before_id": rows[-1]["id"]} if len(rows) == PAGE else None
    return console.render(request, viewer, "audit.html", {"rows": rows, "next": urlencode(nxt) if nxt else None})
