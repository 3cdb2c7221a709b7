"""A scripted stand-in for the Responses API over WebSocket (OpenAI "WebSocket mode"): a TLS WebSocket server on
127.0.0.1 that answers each `response.create` with the Responses event sequence, as Codex's upstream does.

Tests queue one `Script` per generating `response.create`; a `"generate": false` warm-up is answered on its own
with an empty response. Handshakes (path, headers, negotiated extensions) and every client message are kept for
assertions. permessage-deflate is offered to every client that asks (the `websockets` default).
Runs its own event loop in a thread so synchronous SDK clients can call through the proxy into it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.payloads import responses_object, responses_stream


@dataclass
class Script:
    """The server's answer to one `response.create`."""

    events: list[dict]
    cut_after: int | None = None  # drop the TCP connection (no close frame) after this many events
    delay: float = 0.0  # seconds between events


@dataclass
class Handshake:
    path: str
    headers: dict[str, str]  # lower-cased names
    extensions: str  # the Sec-WebSocket-Extensions the server accepted ("" when none)


@dataclass
class Socket:
    handshake: Handshake
    messages: list[dict] = field(default_factory=list)  # client messages, decoded


def responses_events(resp: dict) -> list[dict]:
    """The event dicts of a streamed Responses call for `resp` (the same sequence the SSE stand-in plays)."""
    return [json.loads(chunk.split(b"data: ", 1)[1]) for chunk in responses_stream(resp).chunks]


class WsStandIn:
    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.ssl_context = ssl_context
        self.scripts: deque[Script] = deque()
        self.sockets: list[Socket] = []
        self.port = 0
        self._warm_ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> WsStandIn:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> int:
        self._server = await serve(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return next(iter(self._server.sockets)).getsockname()[1]

    def stop(self) -> None:
        async def _close() -> None:
            if self._server:
                self._server.close()
                await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def queue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def reset(self) -> None:
        self.scripts.clear()
        self.sockets.clear()

    # -- serving ---------------------------------------------------------------------------------------------
    async def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None and ws.response is not None
        sock = Socket(Handshake(
            path=ws.request.path,
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
            extensions=ws.response.headers.get("Sec-WebSocket-Extensions", ""),
        ))
        self.sockets.append(sock)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                sock.messages.append(msg)
                if msg.get("type") != "response.create":
                    continue
                script = self._warm_up() if msg.get("generate") is False else self._next_script()
                lane = {"stream_id": msg["stream_id"]} if "stream_id" in msg else {}
                for i, event in enumerate(script.events):
                    if script.cut_after is not None and i >= script.cut_after:
                        ws.transport.abort()  # a dropped connection: no close frame
                        return
                    if i and script.delay:
                        await asyncio.sleep(script.delay)
                    await ws.send(json.dumps({**event, **lane}))
        except ConnectionClosed:
            return

    def _next_script(self) -> Script:
        if self.scripts:
            return self.scripts.popleft()
        return Script([{"type": "error", "status": 500,
                        "error": {"type": "server_error", "message": "stand-in: no scripted response"}}])

    def _warm_up(self) -> Script:
        """What the API answers to `"generate": false`: an empty response, no output, no usage."""
        resp = responses_object(f"resp_warm_{next(self._warm_ids)}", "gpt-5.1-codex", [], None)  # type: ignore[arg-type]
        return Script([{"type": "response.created", "response": dict(resp, status="in_progress")},
                       {"type": "response.completed", "response": resp}])
