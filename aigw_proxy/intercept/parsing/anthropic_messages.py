"""Anthropic Messages API (`POST /v1/messages`): request facts, whole-body response facts, stream accumulator.

Mapping: docs/compatibility.md#prompts-and-tool-calls, docs/compatibility.md#token-usage and
docs/compatibility.md#session-ids; Claude Code's real request shapes: docs/agent-traffic.md#claude-code.
Bytes in, facts out; nothing here raises for any input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from aigw_proxy.intercept.parsing.call_ids import call_key
from aigw_proxy.intercept.parsing.jsonwalk import (
    arr,
    compact_json,
    count,
    error_text,
    json_text,
    loads_object,
    nonempty,
    obj,
    request_guard,
    response_guard,
    sent_figures,
    text,
)
from aigw_proxy.intercept.parsing.prompt_context import typed_prompt
from aigw_proxy.intercept.parsing.sse import SSEStreamParser
from aigw_proxy.recording.records import ModelThought, RequestFacts, ResponseFacts, TokenUsage, ToolCall

# Not conversation turns: Claude Code can end `messages` with a mid-conversation system note.
_NOT_TURNS = frozenset({"system", "developer"})
_LEGACY_SESSION = re.compile(r"_session_(.+)$")
# metadata key → (usage section or None for the top level, field): the extra kinds Coder stores
# (docs/compatibility.md#token-usage), each only when the provider sent it: `server_tool_use` and
# `cache_creation` are often absent.
_EXTRAS: dict[str, tuple[str | None, str]] = {
    "web_search_requests": ("server_tool_use", "web_search_requests"),
    "cache_creation_input": (None, "cache_creation_input_tokens"),
    "cache_read_input": (None, "cache_read_input_tokens"),
    "cache_ephemeral_1h_input": ("cache_creation", "ephemeral_1h_input_tokens"),
    "cache_ephemeral_5m_input": ("cache_creation", "ephemeral_5m_input_tokens"),
}


@request_guard
def parse_request(body: bytes) -> RequestFacts:
    req, why = loads_object(body)
    if req is None:
        return RequestFacts(error=why)
    facts = RequestFacts(
        model=nonempty(req.get("model")),
        stream=req.get("stream") is True,
        body_session_id=_session_id(obj(req.get("metadata")).get("user_id")),
    )
    turn = next((m for m in reversed(arr(req.get("messages"))) if _is_turn(m)), None)
    if turn is None or turn.get("role") != "user":
        return facts
    content = turn.get("content")
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}]
    else:
        blocks = [obj(b) for b in arr(content)]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results:  # a tool result answers the model: no new prompt, but it continues that call's thread
        ids = (call_key(b.get("tool_use_id")) for b in reversed(results))
        facts.correlating_tool_call_id = next((i for i in ids if i), None)
        return facts
    # Claude Code: <system-reminder> context blocks first, the typed prompt last.
    facts.prompt = typed_prompt((b.get("text") for b in blocks if b.get("type") == "text"), "last")
    return facts


def _is_turn(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") not in _NOT_TURNS


def _session_id(user_id: Any) -> str | None:
    """Claude Code's `metadata.user_id`: a JSON object string with `session_id`, or the legacy
    `user_<hash>_account_<id>_session_<uuid>` form."""
    raw = nonempty(user_id)
    if raw is None:
        return None
    if raw.startswith("{"):
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):
            meta = None
        if isinstance(meta, dict):
            return nonempty(meta.get("session_id"))
    m = _LEGACY_SESSION.search(raw)
    return nonempty(m.group(1)) if m else None


@response_guard
def parse_response(body: bytes) -> ResponseFacts:
    msg, why = loads_object(body)
    if msg is None:
        return ResponseFacts(error=why, parse_errors=1)
    if msg.get("type") == "error" or msg.get("error") not in (None, False, ""):
        return ResponseFacts(error=error_text(msg) or "provider error")
    msg_id = nonempty(msg.get("id")) or ""
    facts = ResponseFacts([msg_id] if msg_id else [], model=nonempty(msg.get("model")), completed=True)
    if isinstance(msg.get("usage"), dict):
        facts.token_usages.append(_usage(msg_id, msg["usage"]))
    for block in map(obj, arr(msg.get("content"))):
        if block.get("type") == "thinking":
            _add_thought(facts.thoughts, block.get("thinking"))
        elif block.get("type") == "tool_use":
            facts.tool_calls.append(_tool_call(msg_id, block, json_text(block.get("input", {}))))
    return facts


def _usage(msg_id: str, usage: dict[str, Any]) -> TokenUsage:
    return TokenUsage(
        provider_response_id=msg_id,
        input_tokens=count(usage.get("input_tokens")),
        output_tokens=count(usage.get("output_tokens")),
        cache_read_input_tokens=count(usage.get("cache_read_input_tokens")),
        cache_write_input_tokens=count(usage.get("cache_creation_input_tokens")),
        metadata=sent_figures(usage, _EXTRAS),
    )


def _add_thought(thoughts: list[ModelThought], value: Any) -> None:
    if nonempty(value):
        thoughts.append(ModelThought(value, "thinking"))


def _tool_call(msg_id: str, block: dict[str, Any], raw_input: str) -> ToolCall:
    call_id, name = call_key(block.get("id")) or "", text(block.get("name")) or ""
    return ToolCall(msg_id, call_id, name, compact_json(raw_input))


@dataclass(slots=True)
class _Block:
    """A content block still streaming: a thinking block or a tool_use block."""

    kind: str
    block: dict[str, Any]  # the content_block_start payload (tool id, name, initial input)
    parts: list[str] = field(default_factory=list)


class StreamAccumulator:
    """Messages stream events → facts. Content blocks count only once their `content_block_stop` arrived."""

    @staticmethod
    def ignores(event: str | None, data: str) -> bool:
        """Streamed answer text is most of a stream and never recorded: skip it undecoded. The marker cannot
        match inside a JSON string value, where quotes are escaped. The API sends compact JSON; JSON spaced as
        Python's json.dumps does is matched too; any other spacing is just decoded."""
        return event == "content_block_delta" and (
            '"delta":{"type":"text_delta"' in data or '"delta": {"type": "text_delta"' in data
        )

    def __init__(self) -> None:
        self._msg_id = ""
        self._ids: list[str] = []
        self._model: str | None = None
        self._usages: dict[str, TokenUsage] = {}
        self._usage: TokenUsage | None = None  # the current message's
        self._blocks: dict[int, _Block] = {}
        self._tool_calls: list[ToolCall] = []
        self._thoughts: list[ModelThought] = []
        self._stopped = False
        self._error: str | None = None

    def on_event(self, event: dict) -> None:
        event = obj(event)
        kind = event.get("type")
        if kind == "message_start":
            self._message_start(obj(event.get("message")))
        elif kind == "message_delta":
            self._message_delta(obj(event.get("usage")))
        elif kind == "content_block_start":
            self._block_start(event)
        elif kind == "content_block_delta":
            self._block_delta(event)
        elif kind == "content_block_stop":
            self._block_stop(event)
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error":
            self._error = error_text(event) or "stream error"

    def _message_start(self, msg: dict[str, Any]) -> None:
        self._msg_id = nonempty(msg.get("id")) or self._msg_id
        if self._msg_id and self._msg_id not in self._ids:
            self._ids.append(self._msg_id)
        self._model = self._model or nonempty(msg.get("model"))
        self._blocks.clear()  # block indices restart with each message
        self._usage = None
        if isinstance(msg.get("usage"), dict):
            self._usage = self._usages[self._msg_id] = _usage(self._msg_id, msg["usage"])

    def _message_delta(self, usage: dict[str, Any]) -> None:
        if not usage:
            return
        if self._usage is None:  # no usage in message_start: the delta's figures are all there is
            self._usage = self._usages[self._msg_id] = _usage(self._msg_id, usage)
        # Both figures are cumulative: the last delta wins, never a sum.
        if "output_tokens" in usage:
            self._usage.output_tokens = count(usage["output_tokens"])
        searches = obj(usage.get("server_tool_use")).get("web_search_requests")
        if searches is not None:
            self._usage.metadata["web_search_requests"] = count(searches)

    def _block_start(self, event: dict[str, Any]) -> None:
        index, block = _index(event), obj(event.get("content_block"))
        if index is None:
            return
        if block.get("type") == "thinking":
            first = text(block.get("thinking"))
            self._blocks[index] = _Block("thinking", block, [first] if first else [])
        elif block.get("type") == "tool_use":
            self._blocks[index] = _Block("tool_use", block)
        else:
            self._blocks.pop(index, None)

    def _block_delta(self, event: dict[str, Any]) -> None:
        index, delta = _index(event), obj(event.get("delta"))
        current = self._blocks.get(index) if index is not None else None
        if current is None:
            return
        if current.kind == "thinking" and delta.get("type") == "thinking_delta":
            piece = delta.get("thinking")
        elif current.kind == "tool_use" and delta.get("type") == "input_json_delta":
            piece = delta.get("partial_json")
        else:
            return
        if isinstance(piece, str):
            current.parts.append(piece)

    def _block_stop(self, event: dict[str, Any]) -> None:
        index = _index(event)
        done = self._blocks.pop(index, None) if index is not None else None
        if done is None:
            return
        joined = "".join(done.parts)
        if done.kind == "thinking":
            _add_thought(self._thoughts, joined)
        else:  # no input_json_delta at all: the start block's input (usually {}) is the whole input
            raw = joined or json_text(done.block.get("input", {}))
            self._tool_calls.append(_tool_call(self._msg_id, done.block, raw))

    def result(self) -> ResponseFacts:
        return ResponseFacts(
            response_ids=list(self._ids),
            model=self._model,
            token_usages=[replace(u, metadata=dict(u.metadata)) for u in self._usages.values()],
            tool_calls=list(self._tool_calls),
            thoughts=list(self._thoughts),
            completed=self._stopped and self._error is None,
            error=self._error,
        )


def _index(event: dict[str, Any]) -> int | None:
    i = event.get("index")
    return i if isinstance(i, int) and not isinstance(i, bool) else None


def stream_parser() -> SSEStreamParser:
    return SSEStreamParser(StreamAccumulator())
