"""The interception page's "Raw capture" section (`--capture-bodies`), and its JSON view (`/requests/{iid}/capture`,
one of pages/interception.py's VIEWS): read with the page's own access rule (a member only ever reaches their own
interceptions). Rendered by templates/capture.html, included by interception.html; every value is autoescaped
there (bodies and headers are attacker-controlled text)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.storage import Database, get_capture

if TYPE_CHECKING:
    from aigw_proxy.admin.console.auth import Viewer
    from aigw_proxy.admin.console.core import Console


def _pretty_json(text: str) -> tuple[str, bool]:
    """The body pretty-printed when it is JSON, else as it is; and whether it was JSON."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
    except (ValueError, RecursionError):
        return text, False


async def capture_section(db: Database, interception_id: str, visible_to: str | None) -> dict[str, Any] | None:
    """The capture of an interception the viewer may see, ready to render; None when none was stored."""
    found = await get_capture(db, interception_id, visible_to=visible_to)
    if found is None:
        return None
    request, response = found["request"], found["response"]
    request["shown"], request["json"] = _pretty_json(request["body"])
    if response["streamed"]:
        response["shown"], response["json"] = response["body"], False  # the event stream as relayed
    else:
        response["shown"], response["json"] = _pretty_json(response["body"])
    return found


async def capture_json(console: Console, request: Request, viewer: Viewer, record: dict[str, Any]) -> Response:
    """The capture as the REST API returns it; 404 when none was stored."""
    found = await get_capture(console.db, record["id"], visible_to=viewer.visible_to)
    if found is None:
        return console.error(request, viewer, 404, "Capture not found.")
    return Response(json.dumps(found, indent=2, ensure_ascii=False).encode(), 200, media_type="application/json")
