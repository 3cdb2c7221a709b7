"""One model call as the proxy sees it: request bytes, response bytes as they stream, and the records they make.

Transport-neutral (no mitmproxy imports): the HTTP addon feeds it bytes, the WebSocket addon feeds it a decoded
`response.create` message and server event dicts; both call `finish()`. Every failure inside is turned into a
failed or partial record; nothing raises into the proxy.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aigw_proxy.capture.raw import CaptureRecord, Capturing, RawCapture
from aigw_proxy.intercept.clients import classify_client, client_session_id
from aigw_proxy.intercept.credentials import credential_info
from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat, openai_responses
from aigw_proxy.intercept.parsing.decoding import StreamDecoder, decode_body
from aigw_proxy.intercept.parsing.interface import ApiParser, EventStreaming, JSONArrayStreaming, StreamParser
from aigw_proxy.intercept.parsing.sse import EventAccumulator
from aigw_proxy.policy.providers import Api, Provider
from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    InterceptionUsage,
    RecordEvent,
    RequestFacts,
    ResponseFacts,
    TokenUsage,
    ToolCall,
)

if TYPE_CHECKING:  # tracing (OpenTelemetry) is imported only when a tracer is configured
    from aigw_proxy.telemetry.tracing import InterceptionTrace, Tracer

log = logging.getLogger("aigw_proxy.interception")

# One parser module per provider API; each module implements the interface (checked by the type checker here).
PARSERS: dict[Api, ApiParser] = {
    Api.ANTHROPIC_MESSAGES: anthropic_messages,
    Api.OPENAI_CHAT: openai_chat,
    Api.OPENAI_RESPONSES: openai_responses,
    Api.GEMINI_GENERATE: gemini,
}
# The APIs that also run over a socket of JSON messages (Responses over a WebSocket).
SOCKET_PARSERS: dict[Api, EventStreaming] = {Api.OPENAI_RESPONSES: openai_responses}

# A request body, or a non-streamed response body, larger than this is relayed but not parsed (memory and parse
# time stay bounded whatever a peer sends); `metadata.truncated` then names it with its size.
MAX_PARSED_BODY = 64 * 1024 * 1024
SWITCHING_PROTOCOLS = 101  # a WebSocket turn's upstream status: the socket's upgrade succeeded

Submit = Callable[[RecordEvent], object]

# Tools that hand a task to a subagent: Claude Code's `Agent` (called `Task` before 2.1).
SUBAGENT_TOOLS = frozenset({"Agent", "Task"})


class SubagentTasks:
    """Tasks the model wrote for subagents, so each subagent's first call joins the thread of the call that
    launched it. A subagent's first request carries no tool result to link it by: its user turn is the task,
    verbatim, in the same client session. Keyed by user, client session and task text; bounded (oldest go)."""

    def __init__(self, limit: int = 4096) -> None:
        self._calls: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._limit = limit

    def note(self, user_id: str, session_id: str, calls: Iterable[ToolCall]) -> None:
        for call in calls:
            if call.name not in SUBAGENT_TOOLS or not call.call_id:
                continue
            task = _task_text(call.input)
            if task:
                key = (user_id, session_id, task)
                self._calls[key] = call.call_id
                self._calls.move_to_end(key)
                while len(self._calls) > self._limit:
                    self._calls.popitem(last=False)

    def claim(self, user_id: str, session_id: str, prompt: str) -> str | None:
        """The tool call id whose task this prompt is (once), else None."""
        return self._calls.pop((user_id, session_id, prompt.strip()), None)


def _task_text(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    task = value.get("prompt") if isinstance(value, dict) else None
    return task.strip() if isinstance(task, str) and task.strip() else None


SUBAGENT_TASKS = SubagentTasks()  # one per process: the launching call and its subagent may use any tunnel


def _now() -> datetime:
    return datetime.now(UTC)


class Interception:
    """Observe one model call: request_received → parse_request → response_started → response_chunk* → finish."""

    def __init__(
        self,
        *,
        api: Api,
        provider: Provider,
        initiator: Initiator,
        headers: Mapping[str, str],
        route: str,
        submit: Submit,
        transport: str = "http",
        tracer: Tracer | None = None,
        subagent_tasks: SubagentTasks | None = SUBAGENT_TASKS,
        capturing: Capturing | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.api = api
        self.provider = provider
        self.initiator = initiator
        self.route = route
        self.route_match = provider.match_route(route)  # what the path says (Gemini: model, streaming)
        self.transport = transport
        self.started_at = _now()
        self._submit = submit
        self._headers = headers
        self.client = classify_client(headers)
        self._tasks = subagent_tasks
        self.client_session_id: str | None = None
        self.request: RequestFacts | None = None
        self.response: ResponseFacts | None = None
        self.status_code: int | None = None
        self.streaming = False
        self.finished = False
        self._decoder: StreamDecoder | None = None
        self._stream: StreamParser | None = None
        self._events: EventAccumulator | None = None  # a WebSocket turn's server events
        self._body: bytearray | None = None
        self._body_overflow = False
        self._body_size = 0
        self._unparsed: dict[str, int] = {}  # body → size, for bodies too large to parse (`metadata.truncated`)
        self.metadata: dict[str, object] = {}  # merged into the end record's metadata (what a gate adds)
        self._raw_request: tuple[bytes, str | None] = (b"", None)
        self._usage_reported: list[tuple[object, ...]] = []  # the usage `progress()` last recorded
        self.error_type: str | None = None  # set by a gate that refuses the call itself (budgets, model policy)
        self._capturing = capturing
        # `--capture-bodies`: the bodies as relayed, bounded (capture/raw.py); None when off.
        self.capture: RawCapture | None = (
            RawCapture(capturing.builder.max_bytes, route=route, transport=transport, request_headers=dict(headers))
            if capturing is not None else None
        )
        self.trace: InterceptionTrace | None = (
            tracer.begin(self.id, initiator, provider.type, route) if tracer is not None else None
        )

    @property
    def parser(self) -> ApiParser:
        return PARSERS[self.api]

    # -- request ---------------------------------------------------------------------------------------------
    def request_received(self, raw: bytes, content_encoding: str | None) -> None:
        """Keep the request body; it is parsed by `parse_request` once it has been relayed."""
        self._raw_request = (raw, content_encoding)
        if self.trace is not None:
            self.trace.request_received()

    def parse_request(self) -> None:
        """Parse the request and record the interception's start (once)."""
        if self.request is not None:
            return
        raw, content_encoding = self._raw_request
        self._raw_request = (b"", None)
        body, err = decode_body(raw, content_encoding) if len(raw) <= MAX_PARSED_BODY else (raw, None)
        if self.capture is not None:
            self.capture.request.set(body if err is None else raw)
        if len(body) > MAX_PARSED_BODY:
            self._unparsed["request_body"] = len(body)
            facts = RequestFacts(error=f"request body of {len(body)} bytes not parsed (limit {MAX_PARSED_BODY})")
        else:
            facts = self.parser.parse_request(body) if err is None else RequestFacts(error=err)
        self._record_start(facts)

    def request_object(self, req: dict) -> None:
        """Parse an already-decoded request (a WebSocket `response.create` message) and record the start (once)."""
        if self.request is None:
            self._record_start(SOCKET_PARSERS[self.api].parse_request_object(req))

    def _record_start(self, facts: RequestFacts) -> None:
        if self.route_match is not None:  # a path-named model (Gemini) counts when the body names none
            facts.model = facts.model or self.route_match.model
            facts.stream = facts.stream or self.route_match.streaming
        if facts.error:
            log.warning("interception %s: cannot parse %s request: %s", self.id, self.api, facts.error)
        self.request = facts
        if self.trace is not None:
            self.trace.request_parsed(facts.model or "unknown", facts.stream, facts.error)
        kind, hint = credential_info(self._headers)
        self.client_session_id = client_session_id(self.client, self._headers, facts.body_session_id)
        metadata: dict[str, object] = {
            "request_user_agent": self._headers.get("user-agent", ""),
            "route": self.route,
            "streaming": facts.stream,
            "transport": self.transport,
            "username": self.initiator.username,
        }
        if facts.prompt and not facts.correlating_tool_call_id and self.client_session_id and self._tasks:
            launched_by = self._tasks.claim(self.initiator.user_id, self.client_session_id, facts.prompt)
            if launched_by:  # a subagent's first call: its thread hangs off the call that launched it
                facts.correlating_tool_call_id = launched_by
                metadata["prompt_author"] = "model"  # the task the model wrote, not text the user typed
        self._submit(
            InterceptionStarted(
                id=self.id,
                initiator=self.initiator,
                provider=self.provider.type,
                provider_name=self.provider.name,
                model=facts.model or "unknown",
                client=self.client,
                client_session_id=self.client_session_id,
                started_at=self.started_at,
                metadata=metadata,
                correlating_tool_call_id=facts.correlating_tool_call_id,
                previous_response_id=facts.previous_response_id,
                credential_kind=kind,
                credential_hint=hint,
                api=str(self.api),
                prompt=facts.prompt,  # stored with the start: a crash mid-call keeps it
            )
        )

    # -- response --------------------------------------------------------------------------------------------
    def response_started(self, status_code: int, content_type: str, content_encoding: str | None) -> None:
        self.status_code = status_code
        if self.capture is not None:
            self.capture.response_status = status_code
        self._decoder = StreamDecoder(content_encoding)
        if content_type.lower().startswith("text/event-stream"):
            self.streaming = True
            self._stream = self.parser.stream_parser()
        elif (json_array := self._json_array_parser(content_type)) is not None:
            self.streaming = True
            self._stream = json_array.json_stream_parser()
        else:
            self._body = bytearray()
        if self.trace is not None:
            self.trace.response_started(self.streaming)

    def _json_array_parser(self, content_type: str) -> JSONArrayStreaming | None:
        """A streaming route answering in JSON (Gemini without `alt=sse`) streams a JSON array, element by element."""
        parser = self.parser
        if (
            self.route_match is not None
            and self.route_match.streaming
            and content_type.lower().startswith("application/json")
            and isinstance(parser, JSONArrayStreaming)
        ):
            return parser
        return None

    def response_chunk(self, chunk: bytes) -> None:
        if self._decoder is None or not chunk:
            return
        data = self._decoder.decode(chunk)
        if self.capture is not None:
            self.capture.response.add(data)
        if self._stream is not None:
            self._stream.feed(data)
        elif self._body is not None:
            self._body_size += len(data)
            if self._body_overflow:
                return
            if len(self._body) + len(data) > MAX_PARSED_BODY:
                self._body_overflow = True
                self._body = bytearray()
            else:
                self._body += data

    def events_started(self) -> None:
        """The response comes as JSON event dicts on an upgraded socket (a WebSocket turn): `response_event`."""
        self.status_code = SWITCHING_PROTOCOLS
        self.streaming = True
        self._events = SOCKET_PARSERS[self.api].event_accumulator()

    def response_event(self, event: dict) -> None:
        if self._events is None:
            return
        status = event.get("status")
        if event.get("type") == "error" and isinstance(status, int) and not isinstance(status, bool):
            self.status_code = status  # the HTTP status the provider would have answered with (Codex reads it too)
        self._events.on_event(event)

    def note_request_message(self, data: bytes | str) -> None:
        """A WebSocket turn's request message as relayed (for the capture)."""
        if self.capture is not None:
            self.capture.request.set(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)

    def note_response_message(self, data: bytes | str) -> None:
        """A WebSocket turn's server message as relayed (for the capture: one message a line)."""
        if self.capture is not None:
            self.capture.response.add(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            self.capture.response.add(b"\n")

    def _response_facts(self) -> ResponseFacts:
        if self._stream is not None:
            facts = self._stream.finish()
        elif self._events is not None:
            try:
                facts = self._events.result()
            except Exception as exc:  # a bug in an accumulator must not reach the proxy
                facts = ResponseFacts(error=f"event parser failed: {exc!r}", parse_errors=1)
        elif self._body_overflow:
            facts = ResponseFacts(completed=True, error=None)
            facts.parse_errors = 1
            self._unparsed["response_body"] = self._body_size
        elif self._body is not None:
            facts = self.parser.parse_response(bytes(self._body))
        else:
            facts = ResponseFacts()
        if self._decoder is not None and self._decoder.error:
            facts.parse_errors += 1
            facts.error = self._decoder.error  # the root cause, not what parsing garbage said
        return facts

    def progress(self) -> InterceptionUsage | None:
        """Record the token usage seen so far while the response goes on, if it changed since the last time
        (the caller paces this; the record writer replaces each with the next and with the end's)."""
        if self.finished or self.request is None:
            return None
        facts: ResponseFacts | None = None
        if self._stream is not None:
            facts = self._stream.snapshot()
        elif self._events is not None:
            try:
                facts = self._events.result()
            except Exception:
                facts = None
        if facts is None or not facts.token_usages:
            return None
        seen = [_usage_key(u) for u in facts.token_usages]
        if seen == self._usage_reported:
            return None
        self._usage_reported = seen
        event = InterceptionUsage(self.id, _now(), [_copy_usage(u) for u in facts.token_usages])
        self._submit(event)
        return event

    def finish(self, error: str | None = None, error_type: str | None = None) -> InterceptionEnded | None:
        """Record the end: `error` is set when the connection failed (upstream unreachable, client gone, …), and
        `error_type` then says why when the transport knows (`timeout`, `client_disconnected`,
        `upstream_reset`)."""
        if self.finished:
            return None
        self.finished = True
        if self.trace is not None:
            self.trace.upstream_ended(self.status_code, error)
        self.parse_request()  # no-op when already parsed; the start is always recorded before the end
        facts = self._response_facts() if self.status_code is not None else ResponseFacts()
        self.response = facts
        if facts.tool_calls and self.client_session_id and self._tasks is not None:
            self._tasks.note(self.initiator.user_id, self.client_session_id, facts.tool_calls)
        req = self.request or RequestFacts()
        status_ok = self.status_code is not None and (
            200 <= self.status_code < 300 or (self.status_code == SWITCHING_PROTOCOLS and self._events is not None)
        )
        # One rule for every transport: once the provider's terminal event (or the whole body) has arrived, the
        # call completed. A connection that closes afterwards — a client that stops reading at
        # `response.completed` before the body's end arrives, a socket dropped between turns — changes nothing.
        failure = None if facts.completed and not facts.error else error
        if failure is None and self.status_code is not None and not status_ok:
            failure = facts.error or f"upstream returned HTTP {self.status_code}"
        if failure is None and facts.error:
            failure = facts.error
        if failure is None and not facts.completed:
            failure = "stream ended before the final event" if self.streaming else "response was incomplete"
        if facts.parse_errors:
            log.warning("interception %s: %d unparseable event(s) in the %s response",
                        self.id, facts.parse_errors, self.api)
        ended = InterceptionEnded(
            id=self.id,
            ended_at=_now(),
            status="failed" if failure else "completed",
            upstream_status=self.status_code,
            error=failure,
            model=None if req.model else facts.model,
            prompt=req.prompt,
            prompt_response_id=facts.first_response_id,
            token_usages=facts.token_usages,
            tool_calls=facts.tool_calls,
            thoughts=facts.thoughts,
            metadata={**self.metadata, **({"truncated": dict(self._unparsed)} if self._unparsed else {}),
                      **({"streaming": self.streaming or req.stream} if self.streaming != req.stream else {})},
            parse_errors=facts.parse_errors + (1 if req.error else 0),
            # The proxy's own refusal (a gate: budgets, model policy) first, else the cause the transport knows.
            error_type=(self.error_type if failure else None)
            or (error_type if error is not None and failure == error else None),
        )
        if self.trace is not None:
            self.trace.finished(ended)
        self._submit(ended)
        if self.capture is not None and self._capturing is not None:  # after the end: its row exists first
            capture, self.capture = self.capture, None
            capture.response_status = self.status_code
            capture.streamed = self.streaming
            self._capturing.submit(CaptureRecord(self.id, self.started_at, raw=capture,
                                                 builder=self._capturing.builder))
        return ended


def _usage_key(u: TokenUsage) -> tuple[object, ...]:
    return (u.provider_response_id, u.input_tokens, u.output_tokens, u.cache_read_input_tokens,
            u.cache_write_input_tokens, tuple(sorted(u.metadata.items())))


def _copy_usage(u: TokenUsage) -> TokenUsage:
    return TokenUsage(u.provider_response_id, u.input_tokens, u.output_tokens, u.cache_read_input_tokens,
                      u.cache_write_input_tokens, dict(u.metadata))
