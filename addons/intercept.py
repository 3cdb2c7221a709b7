"""Observe model calls on decrypted provider hosts without holding them up.

Every response on a provider host is streamed (never buffered by the proxy). On model routes a tee hands the
chunks to the call's parser *after* they have been relayed: the tee only queues each chunk, and parsing runs on a
later event-loop turn, so parse time never sits between upstream and client. The queue is parsed in batches (once
it holds PARSE_BATCH_BYTES, and at the end of the response): one parse per few dozen events rather than one per
event, with nothing scheduled per chunk, is most of what a relayed event costs aigw beyond mitmproxy itself.

A watchdog ticks every `TICK` seconds while model calls are in progress: it records the token usage each has
shown so far (Anthropic's `message_start`, Gemini's running totals), so that a crash keeps it, and it cuts an
upstream connection that has sent nothing for `upstream_idle_timeout` seconds since the request went out or
since its last byte (`--upstream-idle-timeout`): the client gets the broken response at once instead of waiting
on a dead stream, and the record says `timeout`. An HTTP/2 upstream connection carrying several calls is cut only
when all of them are silent: one call cannot be cut alone.

Why a call the connection ended before its response did failed (`failure_cause`): our idle timeout, the proxy
stopping, the client gone (`client_disconnected`) or the upstream closing or resetting mid-response
(`upstream_reset`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mitmproxy import ctx, http
from mitmproxy.connection import ConnectionState
from mitmproxy.http import Headers

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.connect_timeout import CONNECT_TIMED_OUT
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.capture.raw import Capturing
from aigw_proxy.intercept.interception import Interception, Submit
from aigw_proxy.policy.providers import Provider

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from aigw_proxy.telemetry.tracing import Tracer

log = logging.getLogger("aigw_proxy.intercept")

INTERCEPTION = "aigw.interception"
# A response's queued chunks are parsed a loop turn after they reach this many bytes (~50 SSE events), the rest
# when the response ends. Bounds what a stream holds unparsed, and what the end-of-response parse costs.
PARSE_BATCH_BYTES = 16 * 1024
DEFAULT_UPSTREAM_IDLE_TIMEOUT: Final = 300.0  # seconds; see README "Timeouts"
TICK: Final = 0.5  # seconds between two watchdog rounds
SHUTDOWN_MESSAGE: Final = "proxy stopped before the response ended (shutdown grace period over)"
# mitmproxy's texts for a call whose client went away (HTTP/1 close, HTTP/2 stream reset).
_CLIENT_GONE: Final = ("Client disconnected.", "stream reset by client")
_UPSTREAM_GONE: Final = ("server closed connection", "peer closed connection", "HTTP/2 connection closed")


@dataclass(slots=True)
class _Watch:
    """A model call in progress: when its upstream last sent something (or the request went out)."""

    flow: http.HTTPFlow
    ix: Interception
    last: float  # loop time
    cut_after: float | None = None  # set when the watchdog cut its upstream for silence: the timeout it passed


def failure_cause(flow: http.HTTPFlow, *, cut_after: float | None = None, stopping: bool = False
                  ) -> tuple[str, str | None]:
    """The error text and `error_type` of a model call whose connection ended before its response did (the
    `error` hook). `error_type` None: derived from the upstream status when stored."""
    message = flow.error.msg if flow.error else "connection failed"
    if cut_after is not None:
        return f"upstream sent nothing for {cut_after:g} s (--upstream-idle-timeout)", "timeout"
    if stopping:
        return SHUTDOWN_MESSAGE, None
    if CONNECT_TIMED_OUT in message:  # --upstream-connect-timeout: the connection was never made
        return message, "timeout"
    if not flow.client_conn.state & ConnectionState.CAN_READ or message.startswith(_CLIENT_GONE):
        return message, "client_disconnected"
    server = flow.server_conn
    if server.timestamp_tcp_setup is not None and (
        not server.state & ConnectionState.CAN_READ or message.startswith(_UPSTREAM_GONE)
    ):
        return message, "upstream_reset"
    return message, None


def header_map(headers: Headers) -> dict[str, str]:
    """Request headers as a plain dict with lower-case names (repeated headers joined, as mitmproxy does). One
    pass over the raw fields: `Headers.items()` rescans every field for each name."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers.fields:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class _Tee:
    """The `flow.response.stream` callable: forward the chunk as is, parse the queued chunks later, in batches."""

    __slots__ = ("_ix", "_pending", "_scheduled", "_size", "_watch")

    def __init__(self, ix: Interception, watch: _Watch | None = None) -> None:
        self._ix = ix
        self._watch = watch
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self._pending.append(chunk)
            self._size += len(chunk)
            if self._watch is not None:  # every byte counts as a sign of life, batched for parsing or not
                self._watch.last = time.monotonic()  # the event loop's clock
            if self._size >= PARSE_BATCH_BYTES and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.drain)
        return chunk

    def drain(self) -> None:
        """Parse what is queued (the parsers take any chunking, so the queue is handed over as one chunk)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending, self._size = [], 0
        try:
            self._ix.response_chunk(pending[0] if len(pending) == 1 else b"".join(pending))
        except Exception:  # a parser bug must never reach the relay
            log.exception("interception %s: response parser failed", self._ix.id)


class Interceptor:
    def __init__(self, submit: Submit, tracer: Tracer | None = None, *,
                 upstream_idle_timeout: float = DEFAULT_UPSTREAM_IDLE_TIMEOUT,
                 capturing: Capturing | None = None) -> None:
        self.submit = submit
        self.capturing = capturing  # `--capture-bodies`: None when off
        self.tracer = tracer  # None: tracing off, nothing is created per call
        self.upstream_idle_timeout = upstream_idle_timeout  # 0: off
        self.stopping = False  # set by the daemon before it cuts the calls left after the shutdown grace
        self._watched: dict[str, _Watch] = {}  # flow id → call in progress
        self._tick: asyncio.TimerHandle | None = None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        provider: Provider | None = flow.metadata.get(PROVIDER)
        initiator = flow.metadata.get(INITIATOR)
        if provider is None or initiator is None or flow.response is not None:
            return
        path = flow.request.path.split("?", 1)[0]
        api = provider.api_for(flow.request.method, path)
        if api is None:
            return  # passthrough: relayed untouched, not recorded
        headers = header_map(flow.request.headers)
        if provider.type == "gemini" and not headers.get("x-goog-api-key") and flow.request.query.get("key"):
            # Gemini also takes its key as `?key=`: classify and mask it like the header. The query string itself
            # is never recorded (`route` is the bare path).
            headers["x-goog-api-key"] = flow.request.query["key"]
        ix = flow.metadata[INTERCEPTION] = Interception(
            api=api, provider=provider, initiator=initiator, headers=headers, route=path, submit=self.submit,
            tracer=self.tracer, capturing=self.capturing,
        )
        if ix.capture is not None:
            ix.capture.method = flow.request.method

    def request(self, flow: http.HTTPFlow) -> None:
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or flow.response is not None:
            return
        ix.request_received(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"))
        # Parse after this hook returns, i.e. after the request has been handed to the upstream connection.
        loop = asyncio.get_running_loop()
        loop.call_soon(self._parse_request, ix)
        self._watched[flow.id] = _Watch(flow, ix, loop.time())
        if self._tick is None:
            self._tick = loop.call_later(TICK, self._watchdog)

    @staticmethod
    def _parse_request(ix: Interception) -> None:
        try:
            ix.parse_request()
        except Exception:
            log.exception("interception %s: request parser failed", ix.id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(PROVIDER) is None or flow.response is None:
            return
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None:
            flow.response.stream = True  # passthrough: relay as it arrives
            return
        h = flow.response.headers
        if ix.capture is not None:
            ix.capture.response_headers = header_map(h)
        ix.response_started(flow.response.status_code, h.get("content-type", ""), h.get("content-encoding"))
        watch = self._watched.get(flow.id)
        if watch is not None:
            watch.last = asyncio.get_running_loop().time()
        tee = _Tee(ix, watch)
        flow.metadata["aigw.tee"] = tee
        flow.response.stream = tee
        if flow.response.raw_content:
            # Made by an earlier addon (the circuit breaker's 503): sent whole, never streamed, so parse it here.
            tee(flow.response.raw_content)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None, None)

    def error(self, flow: http.HTTPFlow) -> None:
        watch = self._watched.get(flow.id)
        message, error_type = failure_cause(flow, cut_after=watch.cut_after if watch else None,
                                            stopping=self.stopping)
        self._finish(flow, message, error_type)

    def _finish(self, flow: http.HTTPFlow, error: str | None, error_type: str | None) -> None:
        self._watched.pop(flow.id, None)
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or ix.finished:
            return
        tee: _Tee | None = flow.metadata.get("aigw.tee")
        try:
            if tee is not None:
                tee.drain()
            ix.finish(error, error_type)
        except Exception:
            log.exception("interception %s: recording the end failed", ix.id)

    # -- the watchdog ----------------------------------------------------------------------------------------

    def _watchdog(self) -> None:
        self._tick = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        silent: dict[object, list[_Watch]] = {}  # upstream connection → its calls, while all are silent
        loud: set[object] = set()
        for watch in list(self._watched.values()):
            if watch.ix.finished:
                self._watched.pop(watch.flow.id, None)
                continue
            try:
                tee: _Tee | None = watch.flow.metadata.get("aigw.tee")
                if tee is not None:  # parse what is queued (a batch not yet full) so the usage seen is current
                    tee.drain()
                watch.ix.progress()
            except Exception:
                log.exception("interception %s: recording the usage so far failed", watch.ix.id)
            if self.upstream_idle_timeout <= 0 or watch.cut_after is not None:
                continue
            server = watch.flow.server_conn
            if now - watch.last >= self.upstream_idle_timeout:
                silent.setdefault(server.id, []).append(watch)
            else:
                loud.add(server.id)
        for server_id, watches in silent.items():
            if server_id not in loud:
                self._cut(watches, now)
        if self._watched:
            self._tick = loop.call_later(TICK, self._watchdog)

    def _cut(self, watches: list[_Watch], now: float) -> None:
        """Close the upstream connection of these silent calls: mitmproxy then fails each (`error` hook)."""
        flow = watches[0].flow
        idle = min(now - w.last for w in watches)
        for w in watches:
            # The record states the limit passed, not the silence measured: a late watchdog tick on a busy loop
            # would otherwise make the same timeout read "2 s" one time and "1 s" another.
            w.cut_after = self.upstream_idle_timeout
        try:
            handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
            io = handler.transports.get(flow.server_conn) if handler is not None else None
        except Exception:  # no proxy server (an addon test): nothing to cut
            io = None
        if io is None or io.handler is None:
            return
        log.warning("upstream %s sent nothing for %.0f s: closing it (%d model call(s) on it)",
                    flow.server_conn.address, idle, len(watches))
        io.handler.cancel("upstream idle timeout")
