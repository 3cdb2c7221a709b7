"""What a provider-API parser is: the declared interface every parser module implements.

One provider API is one module (`anthropic_messages`, `openai_chat`, `openai_responses`, `gemini`), and each module
is itself the implementation: its functions satisfy these protocols, which the type checker verifies where the
interceptor registers them. Parsers are pure (bytes in, facts out, no mitmproxy or database imports) and never
raise: malformed, truncated or non-UTF-8 input yields facts with `error` set or a partial result.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from aigw_proxy.intercept.parsing.sse import EventAccumulator
from aigw_proxy.recording.records import RequestFacts, ResponseFacts


class StreamParser(Protocol):
    """A response stream's framing (SSE, a streamed JSON array) over an API's accumulator: chunks in as they are
    relayed, facts out at the end."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> ResponseFacts: ...

    def snapshot(self) -> ResponseFacts | None: ...  # the facts so far, while the stream goes on


@runtime_checkable
class ApiParser(Protocol):
    """Every provider API: a request body, a whole response body, a server-sent-event stream."""

    def parse_request(self, body: bytes) -> RequestFacts: ...

    def parse_response(self, body: bytes) -> ResponseFacts: ...

    def stream_parser(self) -> StreamParser: ...


@runtime_checkable
class JSONArrayStreaming(ApiParser, Protocol):
    """An API whose streaming route can also answer with a JSON array streamed element by element (Gemini
    without `alt=sse`)."""

    def json_stream_parser(self) -> StreamParser: ...


@runtime_checkable
class EventStreaming(ApiParser, Protocol):
    """An API that also runs over a socket of JSON messages (Responses over a WebSocket): a request arrives as a
    decoded object and the response as already-framed event dicts."""

    def parse_request_object(self, req: dict[str, Any]) -> RequestFacts: ...

    def event_accumulator(self) -> EventAccumulator: ...
