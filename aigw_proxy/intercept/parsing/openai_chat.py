"""OpenAI Chat Completions (`POST /v1/chat/completions`): request facts, whole-body response facts, stream
accumulator.

Mapping: docs/compatibility.md#prompts-and-tool-calls and docs/compatibility.md#token-usage. Bytes in, facts
out; nothing here raises for any input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
)
from aigw_proxy.intercept.parsing.prompt_context import typed_prompt
from aigw_proxy.intercept.parsing.sse import SSEStreamParser
from aigw_proxy.recording.records import RequestFacts, ResponseFacts, TokenUsage, ToolCall

# Messages that are instructions, not conversation turns: skipped when looking for the newest turn.
_NOT_TURNS = frozenset({"system", "developer"})

# metadata key → (usage section, field): the extra kinds Coder stores (docs/compatibility.md#token-usage).
_EXTRAS: dict[str, tuple[str | None, str]] = {
    "prompt_audio": ("prompt_tokens_details", "audio_tokens"),
    "prompt_cached": ("prompt_tokens_details", "cached_tokens"),
    "completion_accepted_prediction": ("completion_tokens_details", "accepted_prediction_tokens"),
    "completion_rejected_prediction": ("completion_tokens_details", "rejected_prediction_tokens"),
    "completion_audio": ("completion_tokens_details", "audio_tokens"),
    "completion_reasoning": ("completion_tokens_details", "reasoning_tokens"),
}


@request_guard
def parse_request(body: bytes) -> RequestFacts:
    req, why = loads_object(body)
    if req is None:
        return RequestFacts(error=why)
    facts = RequestFacts(model=nonempty(req.get("model")), stream=req.get("stream") is True)
    messages = reversed(arr(req.get("messages")))
    turn = next((m for m in messages if isinstance(m, dict) and m.get("role") not in _NOT_TURNS), None)
    if turn is None:
        return facts
    if turn.get("role") == "tool":  # a tool result answers the model: no new prompt; it continues that thread
        facts.correlating_tool_call_id = call_key(turn.get("tool_call_id"))
    elif turn.get("role") == "user":
        content = turn.get("content")
        if isinstance(content, str):
            texts: list[Any] = [content]
        else:
            texts = [p.get("text") for p in map(obj, arr(content)) if p.get("type") == "text"]
        facts.prompt = typed_prompt(texts, "last")
    return facts


@response_guard
def parse_response(body: bytes) -> ResponseFacts:
    resp, why = loads_object(body)
    if resp is None:
        return ResponseFacts(error=why, parse_errors=1)
    if _is_error(resp):
        return ResponseFacts(error=error_text(resp) or "provider error")
    resp_id = nonempty(resp.get("id")) or ""
    facts = ResponseFacts([resp_id] if resp_id else [], model=nonempty(resp.get("model")), completed=True)
    if isinstance(resp.get("usage"), dict):
        facts.token_usages.append(_usage(resp_id, resp["usage"]))
    for choice in map(obj, arr(resp.get("choices"))):
        for call in map(obj, arr(obj(choice.get("message")).get("tool_calls"))):
            fn = obj(call.get("function"))
            args = fn.get("arguments")
            raw = "" if args is None else json_text(args)
            facts.tool_calls.append(_tool_call(resp_id, call.get("id"), fn.get("name"), raw))
    return facts


def _is_error(body: dict[str, Any]) -> bool:
    # OpenAI: `{"error": {...}}`; gateways: `{"error": true, "message": ...}`; `"error": null` is no error.
    return body.get("type") == "error" or body.get("error") not in (None, False, "")


def _usage(resp_id: str, usage: dict[str, Any]) -> TokenUsage:
    cached = count(obj(usage.get("prompt_tokens_details")).get("cached_tokens"))
    return TokenUsage(
        provider_response_id=resp_id,
        # prompt_tokens includes the cached ones; store only the uncached part as input (never negative).
        input_tokens=max(count(usage.get("prompt_tokens")) - cached, 0),
        output_tokens=count(usage.get("completion_tokens")),
        cache_read_input_tokens=cached,
        metadata=sent_figures(usage, _EXTRAS),
    )


def _tool_call(resp_id: str, call_id: Any, name: Any, raw: str) -> ToolCall:
    return ToolCall(resp_id, call_key(call_id) or "", nonempty(name) or "", compact_json(raw))


@dataclass(slots=True)
class _Call:
    """A streamed tool call: id and name from the first fragment that has them; arguments concatenated."""

    call_id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)


class StreamAccumulator:
    """Chat completion chunks → facts. Tool calls count once their choice finished (or `[DONE]` arrived)."""

    def __init__(self) -> None:
        self._id = ""
        self._model: str | None = None
        self._calls: dict[tuple[int, int], _Call] = {}
        self._finished: set[int] = set()  # choice indices that got a finish_reason
        self._usage: TokenUsage | None = None
        self._done = False
        self._error: str | None = None

    def ignores(self, event: str | None, data: str) -> bool:
        """A chunk that only streams answer text (most of a stream, never recorded) is skipped undecoded once the
        response id and model are known: it can change nothing here. Each marker below is a JSON key with its
        quotes, which cannot occur inside a string value (quotes there are escaped), so the text decides: answer
        text in `delta.content`, and no tool call, no finish reason, no usage, no error. The API sends compact
        JSON; any other spacing is just decoded."""
        return (
            not event
            and self._model is not None
            and self._id != ""
            and '"delta":{"content":' in data
            and '"tool_calls"' not in data
            and '"error"' not in data
            and data.count('"finish_reason"') == data.count('"finish_reason":null')
            and data.count('"usage"') == data.count('"usage":null')
        )

    def on_event(self, event: dict) -> None:
        chunk = obj(event)
        if _is_error(chunk):
            self._error = error_text(chunk) or "stream error"
            return
        self._id = self._id or nonempty(chunk.get("id")) or ""
        self._model = self._model or nonempty(chunk.get("model"))
        for pos, choice in enumerate(map(obj, arr(chunk.get("choices")))):
            choice_index = _index(choice, pos)
            for tpos, frag in enumerate(map(obj, arr(obj(choice.get("delta")).get("tool_calls")))):
                call = self._calls.setdefault((choice_index, _index(frag, tpos)), _Call())
                fn = obj(frag.get("function"))
                call.call_id = call.call_id or nonempty(frag.get("id")) or ""
                call.name = call.name or nonempty(fn.get("name")) or ""
                if isinstance(fn.get("arguments"), str):
                    call.args.append(fn["arguments"])
            if nonempty(choice.get("finish_reason")):
                self._finished.add(choice_index)
        # With stream_options.include_usage the last chunk (no choices) carries usage; none → no record.
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(self._id, chunk["usage"])

    def on_done(self) -> None:
        self._done = True

    def result(self) -> ResponseFacts:
        calls = [
            _tool_call(self._id, c.call_id, c.name, "".join(c.args))
            for (choice_index, _), c in sorted(self._calls.items())
            if self._done or choice_index in self._finished
        ]
        finished = self._done or (bool(self._finished) and self._usage is not None)
        return ResponseFacts(
            response_ids=[self._id] if self._id else [],
            model=self._model,
            token_usages=[self._usage] if self._usage else [],
            tool_calls=calls,
            completed=finished and self._error is None,
            error=self._error,
        )


def _index(item: dict[str, Any], default: int) -> int:
    i = item.get("index")
    return i if isinstance(i, int) and not isinstance(i, bool) else default


def stream_parser() -> SSEStreamParser:
    return SSEStreamParser(StreamAccumulator())
