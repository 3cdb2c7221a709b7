"""Responses over WebSocket (Codex's default transport): each generated response on a provider's Responses route
is one interception, and no frame waits for it.

mitmproxy relays a message right after the `websocket_message` hook returns; permessage-deflate is negotiated
with each peer and undone before the hook, so messages here are plain JSON text. The hook only queues the
message; parsing runs on the next event-loop turn, after the message has been relayed (as `_Tee` does for HTTP).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.websocket import WebSocketData

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.intercept import header_map
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.capture.raw import Capturing
from aigw_proxy.intercept.interception import Interception, Submit
from aigw_proxy.policy.providers import Api, Provider
from aigw_proxy.recording.records import Initiator

if TYPE_CHECKING:
    from aigw_proxy.telemetry.tracing import Tracer
from aigw_proxy.intercept.socket_turns import SocketTurns

log = logging.getLogger("aigw_proxy.websocket")

SOCKET = "aigw.socket"


class _SocketFeed:
    """One recorded socket: messages queued by the hook, handed to its turns a moment later."""

    __slots__ = ("_pending", "_scheduled", "turns")

    def __init__(self, turns: SocketTurns) -> None:
        self.turns = turns
        self._pending: list[tuple[bool, bytes]] = []
        self._scheduled = False

    def push(self, from_client: bool, content: bytes) -> None:
        self._pending.append((from_client, content))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.drain)

    def drain(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for from_client, content in pending:
            try:
                if from_client:
                    self.turns.client_message(content)
                else:
                    self.turns.server_message(content)
            except Exception:  # a parser bug must never reach the relay
                log.exception("websocket: a %s message could not be recorded", "client" if from_client else "server")

    def close(self, reason: str) -> None:
        self.drain()
        try:
            self.turns.close(reason)
        except Exception:
            log.exception("websocket: recording the end of the socket failed")


def _close_reason(ws: WebSocketData | None) -> str:
    if ws is None or ws.close_code is None:
        return "websocket closed before the response completed"
    who = "client" if ws.closed_by_client else "upstream"
    if ws.close_code == 1006:  # no close frame: the connection dropped
        return f"websocket connection to the {who} was lost before the response completed"
    return f"websocket closed by the {who} (code {ws.close_code}) before the response completed"


def records_socket(provider: Provider, path: str) -> bool:
    """A WebSocket on this provider path carries Responses turns, each recorded as an interception. The upgrade
    is a GET; the socket carries what a POST to the same route would."""
    return provider.api_for("POST", path.split("?", 1)[0]) is Api.OPENAI_RESPONSES


def is_websocket_upgrade(flow: http.HTTPFlow) -> bool:
    return flow.request.method == "GET" and flow.request.headers.get("upgrade", "").lower() == "websocket"


class ResponsesSocket:
    """Named so as not to clash with mitmproxy's own addons (addon names are the lower-cased class name)."""

    def __init__(self, submit: Submit, tracer: Tracer | None = None, capturing: Capturing | None = None) -> None:
        self.submit = submit
        self.tracer = tracer
        self.capturing = capturing  # `--capture-bodies`: None when off
        self._live: dict[str, _SocketFeed] = {}  # by flow id: sockets still open, closed on shutdown

    @property
    def turns_in_flight(self) -> int:
        """Turns sent and not yet answered in full, over all open sockets (graceful shutdown waits for them)."""
        return sum(feed.turns.pending for feed in self._live.values())

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        provider: Provider | None = flow.metadata.get(PROVIDER)
        initiator: Initiator | None = flow.metadata.get(INITIATOR)
        if provider is None or initiator is None:
            return
        path = flow.request.path.split("?", 1)[0]
        if not records_socket(provider, path):
            return  # another socket on a provider host: relayed untouched, not recorded
        headers = header_map(flow.request.headers)
        submit, tracer, capturing = self.submit, self.tracer, self.capturing

        def new_interception() -> Interception:
            return Interception(api=Api.OPENAI_RESPONSES, provider=provider, initiator=initiator, headers=headers,
                                route=path, submit=submit, transport="websocket", tracer=tracer, capturing=capturing)

        feed = _SocketFeed(SocketTurns(new_interception))
        flow.metadata[SOCKET] = feed
        self._live[flow.id] = feed

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        ws = flow.websocket
        if ws is None or not ws.messages:
            return
        message = ws.messages[-1]
        # mitmproxy keeps every message of a flow while its socket lives, and a Codex socket lives for hours:
        # keep only the newest, which is all a `websocket_message` hook may look at.
        del ws.messages[:-1]
        feed: _SocketFeed | None = flow.metadata.get(SOCKET)
        if feed is not None:
            feed.push(message.from_client, message.content)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        feed = self._live.pop(flow.id, None)
        if feed is not None:
            feed.close(_close_reason(flow.websocket))

    def done(self) -> None:
        # Shutdown cancels connections without a `websocket_end`: unfinished turns are still recorded (as failed).
        live, self._live = self._live, {}
        for feed in live.values():
            feed.close("the proxy shut down before the response completed")
