"""Google Gemini API (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`): request facts,
whole-body response facts, and one stream accumulator for both stream forms — SSE (`?alt=sse`, what the SDKs and
Gemini CLI use) and a JSON array streamed element by element (the REST default without `alt=sse`).

The model and whether the call streams are named by the path, not the body: the interception takes them from the
route. Every streamed chunk is a whole `GenerateContentResponse`; usage figures are cumulative (the last value of
each field wins). Bytes in, facts out; nothing here raises for any input.

Tool-call ids: Gemini models may send `functionCall.id`; when they do not, the function name is the call's key, and
the ids Gemini CLI invents for its answers map to the name too — the rule, for both sides, is `call_ids.call_key`.
"""

from __future__ import annotations

import json
from typing import Any

from aigw_proxy.intercept.parsing.call_ids import call_key
from aigw_proxy.intercept.parsing.jsonarray import JSONArrayStreamParser
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
from aigw_proxy.recording.records import ModelThought, RequestFacts, ResponseFacts, TokenUsage, ToolCall

# metadata key → (None: the usageMetadata object, field): the extra kinds kept beside the four main figures, only
# when sent.
_EXTRAS: dict[str, tuple[str | None, str]] = {
    "output_reasoning": (None, "thoughtsTokenCount"),
    "tool_use_prompt": (None, "toolUsePromptTokenCount"),
    "total_tokens": (None, "totalTokenCount"),
}


@request_guard
def parse_request(body: bytes) -> RequestFacts:
    req, why = loads_object(body)
    if req is None:
        return RequestFacts(error=why)
    facts = RequestFacts(model=_model_name(req.get("model")))
    contents = [c for c in arr(req.get("contents")) if isinstance(c, dict)]
    turn = contents[-1] if contents else None
    if turn is None or turn.get("role", "user") not in ("user", None):  # a Content without a role is the user's
        return facts
    parts = [obj(p) for p in arr(turn.get("parts"))]
    responses = [obj(p["functionResponse"]) for p in parts if isinstance(p.get("functionResponse"), dict)]
    if responses:  # function results answer the model: no new prompt, but they continue that call's thread
        ids = (call_key(r.get("id"), r.get("name")) for r in reversed(responses))
        facts.correlating_tool_call_id = next((i for i in ids if i), None)
        return facts
    # Gemini CLI: its <session_context> part, the typed text, then @-referenced file contents as further parts.
    facts.prompt = typed_prompt((p.get("text") for p in parts if p.get("thought") is not True), "first")
    return facts


def _model_name(value: Any) -> str | None:
    name = nonempty(value)
    return (name.removeprefix("models/") or None) if name else None


@response_guard
def parse_response(body: bytes) -> ResponseFacts:
    if body.lstrip().startswith(b"["):
        # A whole streamed array (a stream route answered without chunking, read in one piece).
        try:
            value = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError) as exc:
            return ResponseFacts(error=f"invalid JSON: {exc}", parse_errors=1)
        events = [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []
        if not events:
            return ResponseFacts(error="JSON array holds no response objects", parse_errors=1)
    else:
        resp, why = loads_object(body)
        if resp is None:
            return ResponseFacts(error=why, parse_errors=1)
        events = [resp]
    acc = StreamAccumulator()
    for event in events:
        acc.on_event(event)
    facts = acc.result()
    facts.completed = facts.error is None  # a whole body that parsed is the whole answer
    return facts


def _is_error(body: dict[str, Any]) -> bool:
    return body.get("error") not in (None, False, "")


def _error_text(body: dict[str, Any]) -> str:
    """Google's error shape: `{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}`."""
    err = obj(body.get("error"))
    status, message = nonempty(err.get("status")), nonempty(err.get("message"))
    if status and message:
        return f"{status}: {message}"
    return message or status or error_text(body) or "provider error"


def _usage(resp_id: str, usage: dict[str, Any]) -> TokenUsage:
    prompt = count(usage.get("promptTokenCount"))
    cached = count(usage.get("cachedContentTokenCount"))
    return TokenUsage(
        provider_response_id=resp_id,
        # promptTokenCount includes the cached tokens; store only the uncached part as input (never negative).
        input_tokens=max(prompt - cached, 0),
        # Thinking is billed as output, and OpenAI and Anthropic count it in their output figure too: include it,
        # so output tokens mean the same across providers; the reasoning share stays in `output_reasoning`.
        output_tokens=count(usage.get("candidatesTokenCount")) + count(usage.get("thoughtsTokenCount")),
        cache_read_input_tokens=cached,
        metadata=sent_figures(usage, _EXTRAS),
    )


class StreamAccumulator:
    """GenerateContentResponse chunks → facts. A call is complete once a candidate has a `finishReason` (or the
    prompt was blocked). Consecutive thought parts of a candidate make one thought."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._id = ""
        self._model: str | None = None
        self._usage: dict[str, dict[str, Any]] = {}  # response id → the usageMetadata fields seen, merged
        self._tool_calls: list[ToolCall] = []
        self._thoughts: list[ModelThought] = []
        self._thinking: dict[int, list[str]] = {}  # candidate index → thought text still arriving
        self._finished = False
        self._error: str | None = None

    def on_event(self, event: dict) -> None:
        chunk = obj(event)
        if _is_error(chunk):
            self._error = _error_text(chunk)
            return
        self._id = nonempty(chunk.get("responseId")) or self._id
        if self._id and self._id not in self._ids:
            self._ids.append(self._id)
        self._model = self._model or nonempty(chunk.get("modelVersion"))
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage.setdefault(self._id, {}).update(chunk["usageMetadata"])
        if nonempty(obj(chunk.get("promptFeedback")).get("blockReason")):
            self._finished = True  # the prompt was refused: a complete answer without candidates
        for pos, candidate in enumerate(map(obj, arr(chunk.get("candidates")))):
            index = _index(candidate, pos)
            for part in map(obj, arr(obj(candidate.get("content")).get("parts"))):
                self._part(index, part)
            if nonempty(candidate.get("finishReason")):
                self._finished = True
                self._end_thought(index)

    def _part(self, index: int, part: dict[str, Any]) -> None:
        if part.get("thought") is True:
            if isinstance(part.get("text"), str):
                self._thinking.setdefault(index, []).append(part["text"])
            return
        self._end_thought(index)
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = nonempty(call.get("name")) or ""
            args = call.get("args")
            raw = json_text({} if args is None else args)
            self._tool_calls.append(ToolCall(self._id, call_key(call.get("id"), name) or "", name, compact_json(raw)))

    def _end_thought(self, index: int) -> None:
        _add_thought(self._thoughts, self._thinking.pop(index, None))

    def result(self) -> ResponseFacts:
        thoughts = list(self._thoughts)
        for index in sorted(self._thinking):  # thoughts the stream ended in: everything that did arrive counts
            _add_thought(thoughts, self._thinking[index])
        return ResponseFacts(
            response_ids=list(self._ids),
            model=self._model,
            token_usages=[_usage(rid, u) for rid, u in self._usage.items()],
            tool_calls=list(self._tool_calls),
            thoughts=thoughts,
            completed=self._finished and self._error is None,
            error=self._error,
        )


def _add_thought(thoughts: list[ModelThought], pieces: list[str] | None) -> None:
    text = "".join(pieces or ())
    if nonempty(text):
        thoughts.append(ModelThought(text, "reasoning_summary"))


def _index(item: dict[str, Any], default: int) -> int:
    i = item.get("index")
    return i if isinstance(i, int) and not isinstance(i, bool) else default


def stream_parser() -> SSEStreamParser:
    """The `alt=sse` form: one `data:` event per GenerateContentResponse."""
    return SSEStreamParser(StreamAccumulator())


def json_stream_parser() -> JSONArrayStreamParser:
    """The form without `alt=sse`: a JSON array of GenerateContentResponse objects, streamed element by element."""
    return JSONArrayStreamParser(StreamAccumulator())
