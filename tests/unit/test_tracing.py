"""Traces of single interceptions, exported to the SDK's in-memory exporter: which spans, nested how, with which
attributes, and which end in error. The writer's commits are played by calling the commit listener."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from aigw_proxy.intercept.interception import Interception
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import Initiator, RecordEvent
from aigw_proxy.telemetry import tracing
from aigw_proxy.telemetry.structured_log import StructuredLog
from aigw_proxy.telemetry.tracing import SpanEventHandler, Tracer
from tests.support.payloads import anthropic_stream, anthropic_usage

ANTHROPIC = next(p for p in builtin_providers() if p.name == "anthropic")
ALICE = Initiator("u-alice", "alice", "tok-1")
MODEL = "claude-x"
INTERCEPTION_ATTRS = ("interception_id", "user_id", "provider", "model", "streaming", "request_path")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracer(provider)


def request(**extra: object) -> bytes:
    body = {"model": MODEL, "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "hi there"}]}
    return json.dumps({**body, **extra}).encode()


def stream_body() -> bytes:
    blocks: list[dict] = [
        {"type": "thinking", "thinking": "let me think"},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "a"}},
    ]
    return b"".join(anthropic_stream("msg_1", MODEL, blocks, anthropic_usage(3, 4), stop_reason="tool_use").chunks)


def run_call(tracer: Tracer, *, status: int = 200, body: bytes | None = None, error: str | None = None,
             commit: bool = True) -> tuple[Interception, list[RecordEvent]]:
    events: list[RecordEvent] = []
    ix = Interception(api=Api.ANTHROPIC_MESSAGES, provider=ANTHROPIC, initiator=ALICE,
                      headers={"x-api-key": "sk-ant-api03-" + "k" * 40}, route="/v1/messages",
                      submit=events.append, tracer=tracer)
    ix.request_received(request(), None)
    ix.parse_request()
    if error is None:
        ctype = "text/event-stream" if status == 200 else "application/json"
        ix.response_started(status, ctype, None)
        ix.response_chunk(stream_body() if body is None else body)
    ix.finish(error)
    if commit:
        for event in events:
            tracer.committed(event, CommitInfo())
    return ix, events


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def test_one_call_makes_one_trace_with_every_span_under_intercept(tracer: Tracer,
                                                                  exporter: InMemorySpanExporter) -> None:
    ix, _ = run_call(tracer)
    spans = exporter.get_finished_spans()
    names = by_name(spans)
    assert sorted((n, len(v)) for n, v in names.items()) == sorted([
        ("Intercept", 1), ("Intercept.CreateInterceptor", 1), ("Intercept.ProcessRequest", 1),
        ("Intercept.ProcessRequest.Upstream", 1), ("Intercept.RecordInterception", 1),
        ("Intercept.RecordPromptUsage", 1), ("Intercept.RecordTokenUsage", 1), ("Intercept.RecordToolUsage", 2),
        ("Intercept.RecordModelThought", 1), ("Intercept.RecordInterceptionEnded", 1),
    ])
    [root] = names["Intercept"]
    [process] = names["Intercept.ProcessRequest"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    for s in spans:
        if s.name == "Intercept.ProcessRequest.Upstream":
            assert s.parent is not None and s.parent.span_id == process.context.span_id
        elif s is not root:
            assert s.parent is not None and s.parent.span_id == root.context.span_id, s.name
    # The interception's attributes are on every span, including those started before the model was known.
    for s in spans:
        assert s.attributes is not None
        assert {k: s.attributes.get(k) for k in INTERCEPTION_ATTRS} == {
            "interception_id": ix.id, "user_id": "u-alice", "provider": "anthropic", "model": MODEL,
            "streaming": True, "request_path": "/v1/messages"}, s.name
        assert s.status.status_code is StatusCode.UNSET, s.name
    upstream = names["Intercept.ProcessRequest.Upstream"][0]
    assert upstream.attributes is not None and upstream.attributes["http.response.status_code"] == 200


def test_upstream_error_status_marks_the_spans_as_errors(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    run_call(tracer, status=529, body=body)
    names = by_name(exporter.get_finished_spans())
    upstream = names["Intercept.ProcessRequest.Upstream"][0]
    assert upstream.status.status_code is StatusCode.ERROR
    assert upstream.status.description == "upstream returned HTTP 529"
    for name in ("Intercept", "Intercept.ProcessRequest"):
        status = names[name][0].status
        assert (status.status_code, status.description) == (StatusCode.ERROR, "overloaded_error: Overloaded"), name
    assert names["Intercept.RecordInterceptionEnded"][0].status.status_code is StatusCode.UNSET


def test_connection_failure_is_an_error_on_upstream_and_intercept(tracer: Tracer,
                                                                  exporter: InMemorySpanExporter) -> None:
    run_call(tracer, error="connection refused")
    names = by_name(exporter.get_finished_spans())
    for name in ("Intercept", "Intercept.ProcessRequest.Upstream"):
        status = names[name][0].status
        assert (status.status_code, status.description) == (StatusCode.ERROR, "connection refused"), name
    assert "Intercept.RecordTokenUsage" not in names


def test_unreadable_request_is_an_error_on_create_interceptor(tracer: Tracer,
                                                              exporter: InMemorySpanExporter) -> None:
    events: list[RecordEvent] = []
    ix = Interception(api=Api.ANTHROPIC_MESSAGES, provider=ANTHROPIC, initiator=ALICE, headers={},
                      route="/v1/messages", submit=events.append, tracer=tracer)
    ix.request_received(b"{not json", None)
    ix.parse_request()
    create = by_name(exporter.get_finished_spans())["Intercept.CreateInterceptor"][0]
    assert create.status.status_code is StatusCode.ERROR
    assert create.status.description is not None and "cannot parse the request" in create.status.description
    assert create.attributes is not None and create.attributes["model"] == "unknown"


def test_records_never_committed_end_in_error_at_shutdown(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    run_call(tracer, commit=False)
    open_records = {s.name for s in exporter.get_finished_spans() if s.name.startswith("Intercept.Record")}
    assert open_records == set()  # handed over but not committed: still open
    tracer.shutdown()
    records = [s for s in exporter.get_finished_spans() if s.name.startswith("Intercept.Record")]
    assert len(records) == 7
    assert {s.status.status_code for s in records} == {StatusCode.ERROR}
    assert records[0].status.description == "the proxy stopped before the interception was recorded"


def test_open_traces_are_bounded(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    small = Tracer(provider, max_open=3)
    for _ in range(5):
        run_call(small, commit=False)
    given_up = [s for s in exporter.get_finished_spans() if s.name == "Intercept.RecordInterceptionEnded"]
    assert len(given_up) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in given_up)


def test_record_log_lines_carry_their_span_and_become_span_events(tracer: Tracer,
                                                                   exporter: InMemorySpanExporter) -> None:
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    logger = logging.getLogger("test.tracing.records")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.addHandler(SpanEventHandler(tracer))
    structured = StructuredLog(tracer.record_span, logger)
    _, events = run_call(tracer, commit=False)
    for event in events:  # the daemon's order: the log listener first, then the tracer's
        structured.on_commit(event, CommitInfo())
        tracer.committed(event, CommitInfo())
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    assert [r.record_type for r in lines] == [  # type: ignore[attr-defined]
        "interception_start", "prompt_usage", "token_usage", "tool_usage", "tool_usage", "model_thought",
        "interception_end"]
    expected = {"interception_start": "Intercept.RecordInterception", "prompt_usage": "Intercept.RecordPromptUsage",
                "token_usage": "Intercept.RecordTokenUsage", "tool_usage": "Intercept.RecordToolUsage",
                "model_thought": "Intercept.RecordModelThought",
                "interception_end": "Intercept.RecordInterceptionEnded"}
    seen_spans = set()
    for r in lines:
        span = by_id[int(r.span_id, 16)]  # type: ignore[attr-defined]
        assert span.name == expected[r.record_type]  # type: ignore[attr-defined]
        assert r.trace_id == f"{span.context.trace_id:032x}"  # type: ignore[attr-defined]
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            ("interception log", {"log.severity": "INFO", "log.logger": "test.tracing.records",
                                  "record_type": r.record_type})]  # type: ignore[attr-defined]
        seen_spans.add(span.context.span_id)
    assert len(seen_spans) == len(lines)  # the two tool lines have a span each


def test_log_lines_naming_an_open_interception_become_events_on_intercept(tracer: Tracer,
                                                                           exporter: InMemorySpanExporter) -> None:
    handler = SpanEventHandler(tracer)
    ix = Interception(api=Api.ANTHROPIC_MESSAGES, provider=ANTHROPIC, initiator=ALICE, headers={},
                      route="/v1/messages", submit=lambda e: None, tracer=tracer)
    log = logging.getLogger("test.tracing.free")
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1,
                            "interception %s: odd header Authorization: Bearer %s", (ix.id, "x" * 30), None)
    handler.handle(record)
    handler.handle(log.makeRecord(log.name, logging.WARNING, __file__, 1, "about nothing in particular", (), None))
    ix.finish("client went away")
    [root] = [s for s in exporter.get_finished_spans() if s.name == "Intercept"]
    assert [(e.name, dict(e.attributes or {})) for e in root.events] == [
        (f"interception {ix.id}: odd header Authorization: Bearer [REDACTED:bearer-token]",
         {"log.severity": "WARNING", "log.logger": "test.tracing.free"})]


def test_service_name_defaults_to_aigw_proxy_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing._resource().attributes["service.name"] == "aigw-proxy"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    assert tracing._resource().attributes["service.name"] == "gateway-eu"
