"""The records that flow one way through the proxy: parsers produce facts, the interceptor turns them into
interception events, the recorder queue carries the events to the writer, logs, metrics and spans.

Plain dataclasses with no mitmproxy or database imports, so every stage can be tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ThoughtSource = Literal["thinking", "reasoning_summary", "commentary"]
Status = Literal["completed", "failed"]


@dataclass(slots=True)
class TokenUsage:
    """Token figures for one provider response (one row per provider response id)."""

    provider_response_id: str
    input_tokens: int = 0  # uncached input
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    metadata: dict[str, int] = field(default_factory=dict)  # extra kinds, docs/compatibility.md#token-usage


@dataclass(slots=True)
class ToolCall:
    """A tool the model asked the client to run."""

    provider_response_id: str
    call_id: str
    name: str
    input: str  # JSON text (custom tools: the raw input string)
    item_id: str | None = None  # Responses output item id


@dataclass(slots=True)
class ModelThought:
    content: str
    source: ThoughtSource


@dataclass(slots=True)
class RequestFacts:
    """What a model-call request body says. Never raises: `error` says why a body could not be read."""

    model: str | None = None
    stream: bool = False
    prompt: str | None = None
    # The provider call id of the tool result this request answers: links it to the interception that made it.
    correlating_tool_call_id: str | None = None
    previous_response_id: str | None = None  # Responses API chaining
    body_session_id: str | None = None  # session id carried in the body (Claude Code metadata, Codex metadata)
    error: str | None = None


@dataclass(slots=True)
class ResponseFacts:
    """What a model-call response (whole body or stream) says. Partial when the stream broke."""

    response_ids: list[str] = field(default_factory=list)
    model: str | None = None
    token_usages: list[TokenUsage] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    thoughts: list[ModelThought] = field(default_factory=list)
    completed: bool = False  # the terminal event (or a whole JSON body) was seen
    error: str | None = None  # provider error text: error body, mid-stream error event, or unreadable body
    parse_errors: int = 0  # events or bodies that could not be parsed

    @property
    def first_response_id(self) -> str:
        return self.response_ids[0] if self.response_ids else ""


@dataclass(slots=True)
class Initiator:
    """The authenticated user behind a tunnel."""

    user_id: str
    username: str
    token_id: str


@dataclass(slots=True)
class InterceptionStarted:
    id: str
    initiator: Initiator
    provider: str  # provider type: anthropic | openai | copilot
    provider_name: str
    model: str
    client: str
    client_session_id: str | None
    started_at: datetime
    metadata: dict[str, object]
    correlating_tool_call_id: str | None = None
    previous_response_id: str | None = None
    credential_kind: str = "api_key"  # api_key | oauth | none
    credential_hint: str = ""
    api: str = ""  # the provider API called (providers.Api value), for per-API metrics
    # The user prompt, stored with the start so that a crash mid-call keeps it. The end carries it too (for logs,
    # metrics and spans); the writer stores it once.
    prompt: str | None = None


@dataclass(slots=True)
class InterceptionEnded:
    id: str
    ended_at: datetime
    status: Status
    upstream_status: int | None = None
    error: str | None = None
    model: str | None = None  # set when the request named none and the response did
    prompt: str | None = None
    prompt_response_id: str = ""
    token_usages: list[TokenUsage] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    thoughts: list[ModelThought] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)  # merged into the interception's metadata
    parse_errors: int = 0  # request or response parts that could not be parsed (metrics)
    # Why a failed call failed when the proxy or the transport knows better than its status: the proxy refused it
    # itself (`budget_exceeded`, `model_denied`), or the transport says (`timeout`, `client_disconnected`,
    # `upstream_reset`); None: derived from the upstream status.
    error_type: str | None = None


@dataclass(slots=True)
class InterceptionUsage:
    """Token usage seen so far on a call still in progress (Anthropic's `message_start` input figures, Gemini's
    running totals), stored as it becomes known so that a crash keeps it. Each one replaces the previous; the
    end's figures replace them all. Storage only: commit listeners are not told about these."""

    id: str
    at: datetime
    token_usages: list[TokenUsage] = field(default_factory=list)


RecordEvent = InterceptionStarted | InterceptionEnded | InterceptionUsage
