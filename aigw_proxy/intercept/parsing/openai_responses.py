"""OpenAI Responses API (`POST /v1/responses`, ChatGPT-plan Codex `/backend-api/codex/responses`, and the same
events over a WebSocket): request facts, whole response bodies and stream events → facts. Mapping:
docs/compatibility.md#prompts-and-tool-calls, docs/compatibility.md#token-usage; Codex's traffic:
docs/agent-traffic.md#codex-cli.

The accumulator works on plain JSON event dicts so the SSE and WebSocket transports share it.
"""

from __future__ import annotations

import copy
import json
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
    sent_figures,
    text,
)
from aigw_proxy.intercept.parsing.prompt_context import typed_prompt
from aigw_proxy.intercept.parsing.sse import SSEStreamParser
from aigw_proxy.recording.records import ModelThought, RequestFacts, ResponseFacts, TokenUsage, ToolCall

# Input item types that are turns of the conversation; anything else (configuration_update, additional_tools,
# item_reference, compaction, ...) is client bookkeeping and is skipped when looking for the newest turn.
# Other `*_call` / `*_call_output` items (local_shell_call, computer_call_output, ...) are turns too: treating
# them as bookkeeping would walk back past them and re-record an old prompt.
_TURN_TYPES = frozenset({"reasoning", "function_call", "custom_tool_call"})
_TOOL_OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})

# metadata key → (usage section or None for the top level, field): the extra kinds Coder stores
# (docs/compatibility.md#token-usage), each only when the provider sent it.
_EXTRAS: dict[str, tuple[str | None, str]] = {
    "input_cached": ("input_tokens_details", "cached_tokens"),
    "output_reasoning": ("output_tokens_details", "reasoning_tokens"),
    "total_tokens": (None, "total_tokens"),
}

# Events whose `response` object carries the response id and model before the response is finished.
_START_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
# Terminal events: their `response` object is the authority for ids, usage and output.
_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Events after which a response is over, whatever its connection does next (`error`: over, as a failure). The SSE
# and WebSocket transports share this definition.
TERMINAL_EVENTS = _END_EVENTS | {"error"}


# --- request ---------------------------------------------------------------------------------------------


def parse_request(body: bytes) -> RequestFacts:
    req, why = loads_object(body)
    if req is None:
        return RequestFacts(error=why)
    return parse_request_object(req)


def parse_request_object(req: dict) -> RequestFacts:
    """Facts of an already-decoded request object (a POST body or a WebSocket `response.create` message)."""
    try:
        facts = RequestFacts(
            model=nonempty(req.get("model")),
            stream=req.get("stream") is True,
            previous_response_id=nonempty(req.get("previous_response_id")),
            body_session_id=nonempty(obj(req.get("client_metadata")).get("session_id")),
        )
        _read_input(req.get("input"), facts)
        return facts
    except Exception as exc:  # untrusted input must never break the proxy
        return RequestFacts(error=f"request parse failed: {exc!r}")


def _read_input(value: Any, facts: RequestFacts) -> None:
    if isinstance(value, str):
        facts.prompt = typed_prompt([value], "all")
        return
    item = _newest_turn(arr(value))
    if item is None:
        return
    kind = text(item.get("type"))
    if kind in _TOOL_OUTPUT_TYPES or (kind or "").endswith("_call_output"):
        facts.correlating_tool_call_id = call_key(item.get("call_id"))
    elif _is_message(item) and item.get("role") == "user":
        facts.prompt = _user_text(item.get("content"))


def _newest_turn(items: list[Any]) -> dict | None:
    for item in reversed(items):
        if isinstance(item, dict) and _is_turn(item):
            return item
    return None


def _is_message(item: dict) -> bool:
    # Easy-input messages may omit `"type": "message"`.
    return item.get("type", "message") == "message" and "role" in item


def _is_turn(item: dict) -> bool:
    if _is_message(item):
        return item.get("role") in ("user", "assistant")
    kind = text(item.get("type")) or ""
    return kind in _TURN_TYPES or kind in _TOOL_OUTPUT_TYPES or kind.endswith(("_call", "_call_output"))


def _user_text(content: Any) -> str | None:
    # Codex: the typed prompt is the newest user message (its context messages come before it).
    if isinstance(content, str):
        return typed_prompt([content], "all")
    return typed_prompt((p.get("text") for p in map(obj, arr(content)) if p.get("type") == "input_text"), "all")


# --- response --------------------------------------------------------------------------------------------


def parse_response(body: bytes) -> ResponseFacts:
    """Facts of a whole non-streamed body: a response object, or an error body."""
    facts = ResponseFacts()
    resp, why = loads_object(body)
    if resp is None:
        facts.error, facts.parse_errors = why, 1
        return facts
    try:
        if _is_error_body(resp):
            facts.error = _error_body_text(resp)
        else:
            _add_response(facts, resp, [])
    except Exception as exc:
        facts.error, facts.parse_errors = f"response parse failed: {exc!r}", facts.parse_errors + 1
    return facts


def _is_error_body(body: dict) -> bool:
    # A response object carries `"error": null` (or the failure, with status "failed"); an error body has an
    # error (`{"error": …}`, `{"code", "message"}`, ChatGPT's `{"detail": …}`) and no response fields.
    if body.get("object") == "response" or "output" in body or "status" in body:
        return False
    return body.get("error") not in (None, "") or (
        "id" not in body and ("message" in body or "detail" in body)
    )


def _error_body_text(body: dict) -> str:
    detail = body.get("detail")
    return (
        error_text(body)
        or nonempty(detail)
        or nonempty(obj(detail).get("message"))
        or json.dumps(body, ensure_ascii=False)[:1024]
    )


def _add_response(facts: ResponseFacts, resp: dict, streamed_items: list[dict]) -> None:
    """Fold a finished response object into `facts`. `streamed_items` backs up an empty `output` list."""
    rid = nonempty(resp.get("id"))
    if rid and rid not in facts.response_ids:
        facts.response_ids.append(rid)
    facts.model = nonempty(resp.get("model")) or facts.model
    usage = resp.get("usage")
    if isinstance(usage, dict):
        facts.token_usages.append(_usage(rid or "", usage))
    _add_items(facts, rid or "", arr(resp.get("output")) or streamed_items)
    facts.completed = True
    if resp.get("status") == "failed" or resp.get("error"):
        facts.error = error_text({"error": resp.get("error")}) or "response failed"


def _usage(rid: str, usage: dict) -> TokenUsage:
    total_in = count(usage.get("input_tokens"))
    cached = count(obj(usage.get("input_tokens_details")).get("cached_tokens"))
    return TokenUsage(
        provider_response_id=rid,
        input_tokens=max(total_in - cached, 0),
        output_tokens=count(usage.get("output_tokens")),
        cache_read_input_tokens=cached,
        metadata=sent_figures(usage, _EXTRAS),
    )


def _add_items(facts: ResponseFacts, rid: str, items: list[Any]) -> None:
    for item in items:
        item = obj(item)
        kind = item.get("type")
        if kind == "function_call":
            facts.tool_calls.append(_tool_call(rid, item, _normalise_args(item.get("arguments"))))
        elif kind == "custom_tool_call":
            facts.tool_calls.append(_tool_call(rid, item, text(item.get("input")) or ""))
        elif kind == "reasoning":
            for part in arr(item.get("summary")):
                _add_thought(facts, obj(part).get("text"), "reasoning_summary")
        elif kind == "message" and item.get("phase") == "commentary" and item.get("role") == "assistant":
            for part in arr(item.get("content")):
                if obj(part).get("type") == "output_text":
                    _add_thought(facts, part.get("text"), "commentary")


def _tool_call(rid: str, item: dict, args: str) -> ToolCall:
    return ToolCall(
        provider_response_id=rid,
        call_id=call_key(item.get("call_id")) or "",
        name=text(item.get("name")) or "",
        input=args,
        item_id=nonempty(item.get("id")),
    )


def _normalise_args(value: Any) -> str:
    if not isinstance(value, str):
        return "" if value is None else json_text(value)
    return compact_json(value)


def _add_thought(facts: ResponseFacts, value: Any, source: Any) -> None:
    if nonempty(value):
        facts.thoughts.append(ModelThought(value, source))


# --- stream ----------------------------------------------------------------------------------------------


class _Slot:
    """An output item of the response in progress, as far as the stream has told it."""

    __slots__ = ("final", "item", "ready")

    def __init__(self, item: dict, final: bool) -> None:
        self.item = item
        self.final = final  # seen in output_item.done: complete and not to be patched
        # Reportable if the stream breaks now. A tool call only once its arguments are complete; reasoning and
        # messages always, since only their finished parts are ever patched in.
        self.ready = final or item.get("type") not in ("function_call", "custom_tool_call")


class StreamAccumulator:
    """Responses stream events → facts. Meant for one response; a later response after a terminal event is
    folded in too. If the stream breaks before the terminal event, what was finished so far is reported."""

    __slots__ = ("_facts", "_items", "_model", "_open", "_rid")

    @staticmethod
    def ignores(event: str | None, data: str) -> bool:
        """Delta events (answer text, arguments, summaries) are never used: the `.done` events and the final
        response carry the whole values. Skip them undecoded."""
        return event is not None and event.endswith(".delta")

    def __init__(self) -> None:
        self._facts = ResponseFacts()
        self._rid: str | None = None  # id of the response in progress
        self._model: str | None = None
        self._open = False  # a response started and has not finished
        self._items: dict[int, _Slot] = {}  # by output_index

    def on_event(self, event: dict) -> None:
        kind = text(event.get("type"))
        if kind is None:
            self._facts.parse_errors += 1
        elif kind in _START_EVENTS:
            resp = obj(event.get("response"))
            self._open = True
            self._rid = nonempty(resp.get("id")) or self._rid
            self._model = nonempty(resp.get("model")) or self._model
        elif kind in _END_EVENTS:
            self._finish(event.get("response"))
        elif kind == "error":
            self._facts.error = _event_error(event)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._on_item(event, final=kind.endswith(".done"))
        elif kind in ("response.function_call_arguments.done", "response.custom_tool_call_input.done"):
            # Complete arguments make the call reportable even if output_item.done never comes.
            key = "arguments" if kind.startswith("response.function") else "input"
            if slot := self._open_slot(event):
                slot.item[key] = text(event.get(key)) or ""
                slot.ready = True
        elif kind == "response.reasoning_summary_text.done":
            if slot := self._open_slot(event):
                _set_part(slot.item, "summary", event.get("summary_index"), event)
        elif kind == "response.output_text.done":
            if slot := self._open_slot(event):
                _set_part(slot.item, "content", event.get("content_index"), event)
        # Deltas (arguments, summary text, output text) are repeated whole by their `.done` events and by the
        # final response, and a part cut off mid-delta is not reported: there is nothing to keep from them.

    def result(self) -> ResponseFacts:
        facts = _copy(self._facts)
        if self._open or self._items:
            # Broken stream: report what the response in progress finished before the break.
            if self._rid and self._rid not in facts.response_ids:
                facts.response_ids.append(self._rid)
            facts.model = facts.model or self._model
            _add_items(facts, self._rid or "", self._ready_items())
            facts.completed = False
        return facts

    def _on_item(self, event: dict, final: bool) -> None:
        item, index = event.get("item"), _index(event.get("output_index"))
        if not isinstance(item, dict) or index is None:
            self._facts.parse_errors += 1
            return
        self._open = True
        if final or index not in self._items:
            # Copy an added item: finished parts get patched into it, and the caller's event must not change.
            self._items[index] = _Slot(item if final else copy.deepcopy(item), final)

    def _open_slot(self, event: dict) -> _Slot | None:
        index = _index(event.get("output_index"))
        slot = self._items.get(index) if index is not None else None
        return slot if slot is not None and not slot.final else None

    def _ready_items(self) -> list[dict]:
        return [slot.item for _, slot in sorted(self._items.items()) if slot.ready]

    def _finish(self, resp: Any) -> None:
        if not isinstance(resp, dict):
            self._facts.parse_errors += 1
            resp = {}
        # Ids and model announced at the start stand in for any the final object lacks.
        resp = {**resp, "id": resp.get("id") or self._rid, "model": resp.get("model") or self._model}
        _add_response(self._facts, resp, self._ready_items())
        self._rid, self._model, self._open, self._items = None, None, False, {}


def _index(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _set_part(item: dict, key: str, index: Any, event: dict) -> None:
    """Put a finished text part at its index of an in-progress item's `summary` or `content` list."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
        return
    parts = item.get(key)
    if not isinstance(parts, list):
        parts = item[key] = []
    while len(parts) <= index:
        parts.append({})
    kind = "summary_text" if key == "summary" else "output_text"
    parts[index] = {"type": kind, "text": text(event.get("text")) or ""}


def _event_error(event: dict) -> str:
    if isinstance(event.get("error"), dict):
        return error_text(event) or "stream error"
    code, msg = nonempty(event.get("code")), nonempty(event.get("message"))
    if code and msg:
        return f"{code}: {msg}"
    return msg or code or "stream error"


def _copy(facts: ResponseFacts) -> ResponseFacts:
    return ResponseFacts(
        response_ids=list(facts.response_ids),
        model=facts.model,
        token_usages=list(facts.token_usages),
        tool_calls=list(facts.tool_calls),
        thoughts=list(facts.thoughts),
        completed=facts.completed,
        error=facts.error,
        parse_errors=facts.parse_errors,
    )


def stream_parser() -> SSEStreamParser:
    return SSEStreamParser(StreamAccumulator())


def event_accumulator() -> StreamAccumulator:
    """For Responses over a WebSocket: the server's messages are already-framed JSON events."""
    return StreamAccumulator()
