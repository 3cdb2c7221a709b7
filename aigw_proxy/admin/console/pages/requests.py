"""The request log: interceptions newest first, filtered like the sessions list (one interception's page:
interception.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console import columns as cols
from aigw_proxy.admin.console.auth import Viewer
from aigw_proxy.admin.console.core import PAGE, Console
from aigw_proxy.admin.console.filters import FilterForm
from aigw_proxy.storage import InvalidCursor, list_interceptions


async def requests_list(console: Console, request: Request, viewer: Viewer) -> Response:
    form = FilterForm.from_request(request, viewer)
    rows: list[dict[str, Any]] = []
    if form.error is None:
        try:
            rows = await list_interceptions(console.db, form.filter, limit=PAGE, after_id=form.after)
        except InvalidCursor:
            form.error = "That page no longer exists: start again from the newest."
    return console.render(request, viewer, "requests.html", {
        **form.context(rows, PAGE), "columns": cols.INTERCEPTION_COLUMNS})
