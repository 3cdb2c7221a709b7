"""HTTP/1.1 hardening around uvicorn's h11 server: what uvicorn leaves to the application or does not do.

h11 does the parsing (chunked bodies, Content-Length checked to be digits, HTTP/1.0 closed after one response);
uvicorn sends HEAD's headers without the body. Added here:

* `protocol_class()`: uvicorn's H11Protocol plus a deadline for the request head (slowloris) and one for the
  body, answered 408 and closed; and a protocol error h11 flags as 431 (header too large) answered 431, not 400.
* `RequestLimits`: an ASGI middleware that refuses Content-Length with Transfer-Encoding (400), answers 413 to a
  declared body over the cap before reading any of it and 413 once a streamed (chunked) body passes it, 431 to a
  head over the cap, and closes the connection after any response sent before the request body was read to its
  end (what is left of the body is never parsed as a request).
"""

from __future__ import annotations

import asyncio
import http
import json
from dataclasses import dataclass
from typing import Any

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True, slots=True)
class AdminLimits:
    max_body: int = 1 << 20  # bytes; nothing the admin listener serves takes a body today
    max_head: int = 16 << 10  # request line and headers, bytes
    head_timeout: float = 10.0  # seconds from the connection (or the previous response) to the end of the head
    body_timeout: float = 30.0  # seconds from the end of the head to the end of the body
    keep_alive: int = 5  # seconds an idle keep-alive connection is kept
    max_connections: int = 256  # beyond it requests are answered 503 (the proxy shares the process' descriptors)


class _Connection(h11.Connection):
    """Remembers the last protocol error, so the protocol can answer with h11's status hint."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


def _close_response(conn: h11.Connection, status: int, message: str) -> bytes:
    body = json.dumps({"message": message}).encode() + b"\n"
    out = conn.send(h11.Response(status_code=status, reason=http.HTTPStatus(status).phrase.encode(), headers=[
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]))
    out = (out or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    return out


LINGER_SECONDS = 2.0  # a lingering close reads and discards for at most this long...
LINGER_BYTES = 64 << 20  # ...or this much


class _LingeringTransport:
    """The connection's transport, whose close() lingers while the peer may still be sending (a body we refused,
    a head we rejected): send what is buffered and a FIN, then read and discard for a little while before
    closing. Closing at once with unread input makes the kernel send a reset, and a client still uploading would
    see "connection reset" instead of our 413 (RFC 9112 §9.6)."""

    def __init__(self, transport: asyncio.Transport, protocol: AdminProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self.discarded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not self._protocol.peer_may_be_sending() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()
        self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.abort_linger)

    def discard(self, data: bytes) -> None:
        self.discarded += len(data)
        if self.discarded > LINGER_BYTES:
            self.abort_linger()

    def abort_linger(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.close()


class AdminProtocol(H11Protocol):
    limits: AdminLimits = AdminLimits()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._h11 = self.conn = _Connection(h11.SERVER, self.limits.max_head)
        self._phase: str | None = None  # "head" or "body" while a deadline runs
        self._deadline: asyncio.TimerHandle | None = None

    # -- deadlines -------------------------------------------------------------------------------------------

    def _track(self) -> None:
        """Arm the deadline for what the peer must send next: a head (their state IDLE) or a body (SEND_BODY)."""
        if self.transport is None or self.transport.is_closing():
            self._cancel_deadline()
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel_deadline()
        self._phase = phase
        if phase is not None:
            timeout = self.limits.head_timeout if phase == "head" else self.limits.body_timeout
            self._deadline = self.loop.call_later(timeout, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started
        pending, _ = self.conn.trailing_data
        if phase == "head" and not pending:
            self.transport.close()  # an idle keep-alive connection: nothing to answer
            return
        if not started and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            what = "request head" if phase == "head" else "request body"
            timeout = self.limits.head_timeout if phase == "head" else self.limits.body_timeout
            try:
                self.transport.write(_close_response(self.conn, 408, f"{what} not received within {timeout:g} s"))
            except h11.LocalProtocolError:
                pass
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's receive() now answers http.disconnect
            self.cycle.message_event.set()
        self.transport.close()

    # -- uvicorn's hooks -------------------------------------------------------------------------------------

    def peer_may_be_sending(self) -> bool:
        return self.conn.their_state in (h11.SEND_BODY, h11.ERROR) or bool(self.conn.trailing_data[0])

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringTransport(transport, self)
        super().connection_made(self._lingering)  # type: ignore[arg-type]
        self._track()

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            self._lingering.discard(data)
            return
        super().data_received(data)
        self._track()

    def eof_received(self) -> None:
        if self._lingering.lingering:
            self._lingering.abort_linger()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._lingering.lingering:
            self._lingering.abort_linger()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers every protocol error 400; h11 knows better for an oversized head (431)."""
        err = self._h11.last_error
        status = err.error_status_hint if err is not None and err.error_status_hint in (400, 431) else 400
        message = "request header fields too large" if status == 431 else f"invalid HTTP request: {err or msg}"
        try:
            self.transport.write(_close_response(self.conn, status, message[:300]))
        except h11.LocalProtocolError:
            pass
        self.transport.close()


def protocol_class(limits: AdminLimits) -> type[AdminProtocol]:
    return type("AdminProtocol", (AdminProtocol,), {"limits": limits})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def _answer(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"message": message}).encode() + b"\n"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """Caps on the request head and body; see the module docstring. `OPTIONS *` (the server as a whole) is
    answered here too: no route matches `*`."""

    def __init__(self, app: ASGIApp, limits: AdminLimits, allow: str) -> None:
        self.app = app
        self.limits = limits
        self.allow = allow.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        head = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"]) + 12
        head += sum(len(k) + len(v) + 4 for k, v in headers)
        if head > limits.max_head:
            await _answer(send, 431, f"request header fields larger than {limits.max_head} bytes")
            return
        if scope["method"] == "OPTIONS" and scope["path"] == "*":
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", self.allow)]})
            await send({"type": "http.response.body", "body": b""})
            return
        declared = next((int(v) for k, v in headers if k == b"content-length"), None)  # h11 checked the digits
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        if chunked and declared is not None:
            # RFC 9112 §6.3: "ought to be handled as an error" — the classic request smuggling set-up.
            await _answer(send, 400, "Content-Length and Transfer-Encoding together")
            return
        if declared is not None and declared > limits.max_body:
            await _answer(send, 413, f"request body larger than {limits.max_body} bytes")
            return
        received = 0
        complete = not chunked and not declared

        async def limited_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limits.max_body:
                    raise BodyTooLarge(limits.max_body)
                if not message.get("more_body", False):
                    complete = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                # Answered before the body ended: close rather than read on and parse the rest as requests.
                hdrs = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*hdrs, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited_receive, closing_send)
