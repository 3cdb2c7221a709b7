"""Provider responses as the real APIs shape them, for the stand-in to play back."""

from __future__ import annotations

import json

from tests.support.standin import Reply


def anthropic_usage(inp: int, out: int, cache_read: int = 0, cache_5m: int = 0, cache_1h: int = 0,
                    web_search: int = 0) -> dict:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
        "server_tool_use": {"web_search_requests": web_search},
        "service_tier": "standard",
    }


def anthropic_message(msg_id: str, model: str, content: list[dict], usage: dict,
                      stop_reason: str = "end_turn") -> dict:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def anthropic_stream(msg_id: str, model: str, blocks: list[dict], usage: dict, *,
                     stop_reason: str = "end_turn", delay: float = 0.0, **kw: object) -> Reply:
    """The event sequence of a streamed Messages call for content `blocks` (text, thinking, tool_use)."""
    start_usage = dict(usage, output_tokens=1)
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": anthropic_message(msg_id, model, [], start_usage,
                                                                                  stop_reason=None)}),  # type: ignore[arg-type]
    ]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            words = b["text"].split(" ")
            for j, w in enumerate(words):
                piece = w if j == 0 else " " + w
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        elif b["type"] == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "thinking", "thinking": "",
                                                                     "signature": ""}}))
            half = len(b["thinking"]) // 2
            for piece in (b["thinking"][:half], b["thinking"][half:]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "thinking_delta", "thinking": piece}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "signature_delta", "signature": "c2ln"}}))
        elif b["type"] == "tool_use":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "tool_use", "id": b["id"],
                                                                     "name": b["name"], "input": {}}}))
            raw = json.dumps(b["input"])
            for k in range(0, len(raw), 7):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": raw[k:k + 7]}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("ping", {"type": "ping"}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return Reply.sse(events, delay=delay, **kw)


def chat_completion(cid: str, model: str, message: dict, usage: dict, finish: str = "stop") -> dict:
    return {"id": cid, "object": "chat.completion", "created": 1763800000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage}


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def chat_stream(cid: str, model: str, *, text: str = "", tool_calls: list[dict] | None = None,
                usage: dict | None = None, finish: str = "stop", **kw: object) -> Reply:
    base = {"id": cid, "object": "chat.completion.chunk", "created": 1763800000, "model": model}
    events: list[tuple[str | None, object]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]})]
    for word in text.split(" ") if text else []:
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"content": word + " "},
                                                   "finish_reason": None}]}))
    for n, tc in enumerate(tool_calls or []):
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": n, "id": tc["id"], "type": "function",
             "function": {"name": tc["name"], "arguments": ""}}]}, "finish_reason": None}]}))
        args = json.dumps(tc["arguments"])
        for k in range(0, len(args), 5):
            events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": n, "function": {"arguments": args[k:k + 5]}}]}, "finish_reason": None}]}))
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if usage is not None:
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return Reply.sse(events, **kw)


def responses_object(rid: str, model: str, output: list[dict], usage: dict, status: str = "completed") -> dict:
    return {"id": rid, "object": "response", "created_at": 1763800000, "status": status, "model": model,
            "output": output, "usage": usage, "error": None, "incomplete_details": None,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def responses_usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def responses_stream(resp: dict, **kw: object) -> Reply:
    """response.created … output items … response.completed, as the Responses API streams them."""
    seq = 0

    def ev(t: str, **fields: object) -> tuple[str, dict]:
        nonlocal seq
        seq += 1
        return t, {"type": t, "sequence_number": seq, **fields}

    shell = dict(resp, status="in_progress", output=[], usage=None)
    events = [ev("response.created", response=shell), ev("response.in_progress", response=shell)]
    for i, item in enumerate(resp["output"]):
        added = dict(item)
        if item["type"] == "function_call":
            added["arguments"] = ""
        events.append(ev("response.output_item.added", output_index=i, item=added))
        if item["type"] == "function_call":
            args = item["arguments"]
            for k in range(0, len(args), 6):
                events.append(ev("response.function_call_arguments.delta", output_index=i,
                                 item_id=item["id"], delta=args[k:k + 6]))
            events.append(ev("response.function_call_arguments.done", output_index=i, item_id=item["id"],
                             arguments=args))
        if item["type"] == "message":
            for part in item["content"]:
                events.append(ev("response.output_text.delta", output_index=i, item_id=item["id"],
                                 content_index=0, delta=part["text"]))
        if item["type"] == "reasoning":
            for s in item.get("summary", []):
                events.append(ev("response.reasoning_summary_text.delta", output_index=i, item_id=item["id"],
                                 summary_index=0, delta=s["text"]))
        events.append(ev("response.output_item.done", output_index=i, item=item))
    events.append(ev("response.completed", response=resp))
    return Reply.sse(events, **kw)  # type: ignore[arg-type]
