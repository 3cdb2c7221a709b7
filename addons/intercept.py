"""Observe model calls on decrypted provider hosts without holding them up.

Every response on a provider host is streamed (never buffered by the proxy). On model routes a tee hands the
chunks to the call's parser *after* they have been relayed: the tee only queues each chunk, and parsing runs on a
later event-loop turn, so parse time never sits between upstream and client. The queue is parsed in batches (once
it holds PARSE_BATCH_BYTES, and at the end of the response): one parse per few dozen events rather than one per
event, with nothing scheduled per chunk, is most of what a relayed event costs aigw beyond mitmproxy itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.http import Headers

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.intercept.interception import Interception, Submit
from aigw_proxy.policy.providers import Provider

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from aigw_proxy.telemetry.tracing import Tracer

log = logging.getLogger("aigw_proxy.intercept")

INTERCEPTION = "aigw.interception"
# A response's queued chunks are parsed a loop turn after they reach this many bytes (~50 SSE events), the rest
# when the response ends. Bounds what a stream holds unparsed, and what the end-of-response parse costs.
PARSE_BATCH_BYTES = 16 * 1024


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

    __slots__ = ("_ix", "_pending", "_scheduled", "_size")

    def __init__(self, ix: Interception) -> None:
        self._ix = ix
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self._pending.append(chunk)
            self._size += len(chunk)
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
    def __init__(self, submit: Submit, tracer: Tracer | None = None) -> None:
        self.submit = submit
        self.tracer = tracer  # None: tracing off, nothing is created per call

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
        flow.metadata[INTERCEPTION] = Interception(
            api=api, provider=provider, initiator=initiator, headers=headers, route=path, submit=self.submit,
            tracer=self.tracer,
        )

    def request(self, flow: http.HTTPFlow) -> None:
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or flow.response is not None:
            return
        ix.request_received(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"))
        # Parse after this hook returns, i.e. after the request has been handed to the upstream connection.
        asyncio.get_running_loop().call_soon(self._parse_request, ix)

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
        ix.response_started(flow.response.status_code, h.get("content-type", ""), h.get("content-encoding"))
        tee = _Tee(ix)
        flow.metadata["aigw.tee"] = tee
        flow.response.stream = tee
        if flow.response.raw_content:
            # Made by an earlier addon (the circuit breaker's 503): sent whole, never streamed, so parse it here.
            tee(flow.response.raw_content)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error else "connection failed")

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or ix.finished:
            return
        tee: _Tee | None = flow.metadata.get("aigw.tee")
        try:
            if tee is not None:
                tee.drain()
            ix.finish(error)
        except Exception:
            log.exception("interception %s: recording the end failed", ix.id)
