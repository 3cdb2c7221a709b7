"""OpenTelemetry traces of interceptions (docs/compatibility.md#tracing), exported over OTLP/HTTP as the OTEL_*
variables say.

One trace per interception:

    Intercept                              interception created (request headers) → finish
    ├── Intercept.CreateInterceptor        created → request body read and parsed (model, stream known)
    ├── Intercept.ProcessRequest           request body complete → finish
    │   └── Intercept.ProcessRequest.Upstream   request handed to the upstream → response complete or failed
    ├── Intercept.RecordInterception       start record handed to the recorder → committed by the writer
    ├── Intercept.RecordPromptUsage        ┐
    ├── Intercept.RecordTokenUsage  (×n)   │ end records handed to the recorder at finish → committed
    ├── Intercept.RecordToolUsage   (×n)   │ (one span per row, like the rows and the log lines)
    ├── Intercept.RecordModelThought (×n)  │
    └── Intercept.RecordInterceptionEnded  ┘

Record spans run from hand-off to commit because the writer batches: a span around one batch's transaction
would be shared by many interceptions and say little, while hand-off → commit is what a record costs (queueing
included) and shows records that never reach the database (ended with status Error when abandoned).

Span state lives on each interception's `InterceptionTrace` and in a dict keyed by interception id (for the
writer's commit listener); nothing relies on contextvars across mitmproxy hooks. With tracing off nothing here
is created: the interception holds `trace = None`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.telemetry.log_setup import redact
from aigw_proxy.telemetry.structured_log import (
    INTERCEPTION_END,
    INTERCEPTION_START,
    MODEL_THOUGHT,
    PROMPT_USAGE,
    TOKEN_USAGE,
    TOOL_USAGE,
)

log = logging.getLogger("aigw_proxy.tracing")

DEFAULT_SERVICE_NAME: Final = "aigw-proxy"
INTERCEPT: Final = "Intercept"
CREATE_INTERCEPTOR: Final = "Intercept.CreateInterceptor"
PROCESS_REQUEST: Final = "Intercept.ProcessRequest"
UPSTREAM: Final = "Intercept.ProcessRequest.Upstream"
RECORD_SPANS: Final = {
    INTERCEPTION_START: "Intercept.RecordInterception",
    PROMPT_USAGE: "Intercept.RecordPromptUsage",
    TOKEN_USAGE: "Intercept.RecordTokenUsage",
    TOOL_USAGE: "Intercept.RecordToolUsage",
    MODEL_THOUGHT: "Intercept.RecordModelThought",
    INTERCEPTION_END: "Intercept.RecordInterceptionEnded",
}
_ERROR_MAX = 500  # characters of an error message kept in a span status
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_INTERCEPTION_IN_MESSAGE = re.compile(rf"\binterception ({_UUID})\b")  # how our log lines name an interception


def _error(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, redact(message)[:_ERROR_MAX]))


class InterceptionTrace:
    """The spans of one interception. Called by `Interception` at each step; never raises into it."""

    def __init__(self, tracer: trace.Tracer, attributes: dict[str, str | bool]) -> None:
        self._tracer = tracer
        self.attributes = attributes  # copied onto every child span (docs/compatibility.md#tracing)
        self.root = tracer.start_span(INTERCEPT, kind=SpanKind.SERVER, attributes=attributes)
        self._context = trace.set_span_in_context(self.root)
        self.create: Span | None = self._child(CREATE_INTERCEPTOR)
        self.process: Span | None = None
        self.upstream: Span | None = None
        self.records: dict[str, list[Span]] = {}

    @property
    def interception_id(self) -> str:
        return str(self.attributes["interception_id"])

    def _child(self, name: str, parent: Span | None = None, kind: SpanKind = SpanKind.INTERNAL) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else self._context
        return self._tracer.start_span(name, context=context, kind=kind, attributes=dict(self.attributes))

    def _set(self, key: str, value: str | bool) -> None:
        """Set an interception attribute learnt late (model, streaming) on every span still open."""
        self.attributes[key] = value
        spans = [self.root, self.create, self.process, self.upstream, *(s for v in self.records.values() for s in v)]
        for span in spans:
            if span is not None and span.is_recording():
                span.set_attribute(key, value)

    def request_received(self) -> None:
        if self.process is None:
            self.process = self._child(PROCESS_REQUEST)
            self.upstream = self._child(UPSTREAM, self.process, SpanKind.CLIENT)

    def request_parsed(self, model: str, streaming: bool, error: str | None) -> None:
        self._set("model", model)
        self._set("streaming", streaming)
        if self.create is not None:
            if error:
                _error(self.create, f"cannot parse the request: {error}")
            self.create.end()
            self.create = None
        self.records[INTERCEPTION_START] = [self._child(RECORD_SPANS[INTERCEPTION_START])]

    def response_started(self, streaming: bool) -> None:
        if streaming:
            self._set("streaming", True)

    def upstream_ended(self, status_code: int | None, error: str | None) -> None:
        if self.upstream is None:
            return
        if error:
            _error(self.upstream, error)
        elif status_code is None:
            _error(self.upstream, "no response")
        elif status_code >= 400:
            _error(self.upstream, f"upstream returned HTTP {status_code}")
        if status_code is not None:
            self.upstream.set_attribute("http.response.status_code", status_code)
        self.upstream.end()
        self.upstream = None

    def finished(self, ended: InterceptionEnded) -> None:
        """Hand-off of the end records: start their spans, then close the request's spans."""
        if ended.model:
            self._set("model", ended.model)
        counts = (
            (PROMPT_USAGE, 1 if ended.prompt else 0),
            (TOKEN_USAGE, len(ended.token_usages)),
            (TOOL_USAGE, len(ended.tool_calls)),
            (MODEL_THOUGHT, len(ended.thoughts)),
            (INTERCEPTION_END, 1),
        )
        for record_type, n in counts:
            if n:
                self.records[record_type] = [self._child(RECORD_SPANS[record_type]) for _ in range(n)]
        self.upstream_ended(None, "the interception ended before the upstream answered")  # no-op when ended
        for span in (self.create, self.process, self.root):
            if span is not None and span.is_recording():
                if ended.status == "failed":
                    _error(span, ended.error or "failed")
                span.end()
        self.create = self.process = None

    def committed(self, record_types: tuple[str, ...]) -> None:
        for record_type in record_types:
            for span in self.records.get(record_type, ()):
                if span.is_recording():
                    span.end()

    def abandon(self, why: str) -> None:
        """End whatever is still open with status Error (never finished, or a record that was never written)."""
        for span in [self.upstream, self.create, self.process, *(s for v in self.records.values() for s in v),
                     self.root]:
            if span is not None and span.is_recording():
                _error(span, why)
                span.end()

    def record_span(self, record_type: str, index: int) -> Span | None:
        spans = self.records.get(record_type, [])
        return spans[index] if 0 <= index < len(spans) else None


_END_RECORDS: Final = (PROMPT_USAGE, TOKEN_USAGE, TOOL_USAGE, MODEL_THOUGHT, INTERCEPTION_END)


class Tracer:
    """Creates each interception's trace and closes its record spans when the writer commits them."""

    def __init__(self, provider: TracerProvider, *, max_open: int = 10_000, keep_recent: int = 1_000) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("aigw_proxy")
        self._max_open = max_open
        self._keep_recent = keep_recent
        self._open: dict[str, InterceptionTrace] = {}  # insertion order = age
        self._recent: OrderedDict[str, InterceptionTrace] = OrderedDict()  # committed: late span-id look-ups

    def begin(self, interception_id: str, initiator: Initiator, provider: str, request_path: str) -> InterceptionTrace:
        attributes: dict[str, str | bool] = {
            "interception_id": interception_id,
            "user_id": initiator.user_id,
            "api_key_id": initiator.token_id,
            "provider": provider,
            "request_path": request_path,
        }
        t = InterceptionTrace(self._tracer, attributes)
        self._open[interception_id] = t
        while len(self._open) > self._max_open:  # bounded: a trace whose records never committed is given up
            oldest = next(iter(self._open))
            self._open.pop(oldest).abandon("the interception's records were not written in time")
        return t

    def committed(self, event: RecordEvent, info: CommitInfo) -> None:
        """The writer's commit listener: the records of `event` are in the database."""
        t = self._open.get(event.id)
        if t is None:
            return
        if isinstance(event, InterceptionStarted):
            t.committed((INTERCEPTION_START,))
        elif isinstance(event, InterceptionEnded):
            t.committed(_END_RECORDS)
            t.abandon("the interception's start record was not written")  # no-op unless something is open
            self._retire(event.id)

    def _retire(self, interception_id: str) -> None:
        t = self._open.pop(interception_id, None)
        if t is not None:
            self._recent[interception_id] = t
            while len(self._recent) > self._keep_recent:
                self._recent.popitem(last=False)

    def record_span(self, interception_id: str, record_type: str, index: int) -> Span | None:
        """The span of the `index`-th record of that type of an interception (for log correlation)."""
        t = self._open.get(interception_id) or self._recent.get(interception_id)
        return t.record_span(record_type, index) if t is not None else None

    def span_for_log(self, record: logging.LogRecord) -> Span | None:
        """Where a log record belongs: the current span if one is active in this call, else the open
        `Intercept` span of the interception the record names (`interception_id` field or message)."""
        current = trace.get_current_span()
        if current.is_recording():
            return current
        interception_id = record.__dict__.get("interception_id")
        if not isinstance(interception_id, str):
            m = _INTERCEPTION_IN_MESSAGE.search(record.getMessage())
            interception_id = m.group(1) if m else None
        t = self._open.get(interception_id) if interception_id else None
        return t.root if t is not None and t.root.is_recording() else None

    def shutdown(self) -> None:
        """End every open span (status Error: the proxy stopped first), export what is queued. Blocking."""
        for t in list(self._open.values()):
            t.abandon("the proxy stopped before the interception was recorded")
        self._open.clear()
        self._provider.shutdown()


class SpanEventHandler(logging.Handler):
    """`--trace-logs`: attach each log record to its span as an event (message masked, level, logger)."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("opentelemetry"):
            return  # the SDK's own complaints (e.g. an unreachable collector) have no span
        try:
            span = self._tracer.span_for_log(record)
            if span is None:
                return
            attributes: dict[str, str] = {"log.severity": record.levelname, "log.logger": record.name}
            record_type = record.__dict__.get("record_type")
            if isinstance(record_type, str):
                attributes["record_type"] = record_type
            span.add_event(redact(record.getMessage()), attributes=attributes)
        except Exception:
            self.handleError(record)


def _resource() -> Resource:
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def tracer_from_env() -> Tracer:
    """A tracer exporting in batches over OTLP/HTTP, configured by the standard OTEL_EXPORTER_OTLP_* variables
    (endpoint, headers, timeout, compression, certificates) and OTEL_BSP_* for batching."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(var)
        if protocol and protocol != "http/protobuf":
            log.warning("%s=%s is not supported; exporting traces over OTLP/HTTP (http/protobuf)", var, protocol)
            break
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracer(provider)
