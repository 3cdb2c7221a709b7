"""One tool-call id rule for both sides: the id a response's tool call is recorded under equals the correlating id
of the request that returns its result, for every form the agents send or invent — so the writer's exact match
links the two calls into one thread."""

from __future__ import annotations

import json

import pytest

from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat, openai_responses
from aigw_proxy.intercept.parsing.call_ids import call_key
from tests.parsers.chunking import feed_in_chunks


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def sse(*events: dict) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


# ----------------------------------------------------------------------------------------------------
# Gemini: the model's functionCall (with or without an id) and Gemini CLI's functionResponse for it

NAME = "run_shell_command"
ARGS = {"command": "ls src | wc -l", "description": "count the files"}


def gemini_call_stream(call_id: str | None) -> bytes:
    call: dict = {"name": NAME, "args": ARGS}
    if call_id is not None:
        call["id"] = call_id
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": call}]}, "index": 0,
                             "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 20, "totalTokenCount": 920},
             "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}
    return sse(chunk)


def gemini_result_request(model_call_id: str | None, answered_id: str | None) -> bytes:
    """What Gemini CLI sends next: the history with the model's call, then the functionResponse."""
    call: dict = {"name": NAME, "args": ARGS}
    if model_call_id is not None:
        call["id"] = model_call_id
    response: dict = {"name": NAME, "response": {"output": "3"}}
    if answered_id is not None:
        response["id"] = answered_id
    return body({"contents": [
        {"role": "user", "parts": [{"text": "<session_context>\n...\n</session_context>"}, {"text": "count files"}]},
        {"role": "model", "parts": [{"functionCall": call}]},
        {"role": "user", "parts": [{"functionResponse": response}]},
    ]})


@pytest.mark.parametrize(
    ("model_call_id", "answered_id"),
    [
        # The model sent no id (Gemini 2.x): Gemini CLI 0.61 invents `<name>_<ms>_<n>` ...
        (None, f"{NAME}_1796113769368_0"),
        (None, f"{NAME}_1796113769368_12"),
        # ... older releases `<name>-<ms>-<hex>` ...
        (None, f"{NAME}-1763800000123-5f3a9c2e1b7d"),
        # ... newer ones prefix `<name>__`, with a `synth_<prompt id>_…` form under context management ...
        (None, f"{NAME}__{NAME}_1796113769368_0"),
        (None, f"{NAME}__synth_a1b2c3d4-1111-2222-3333-444455556666########2_1796113769368_1"),
        # ... and other clients answer with the name alone.
        (None, None),
        # The model sent an id (Gemini 3): echoed as it is, or behind the newer CLI's `<name>__` prefix.
        ("a8f3k2p1", "a8f3k2p1"),
        ("a8f3k2p1", f"{NAME}__a8f3k2p1"),
    ],
    ids=["cli-0.61", "cli-0.61-counter", "cli-old", "cli-new", "cli-new-synth", "name-only", "model-id",
         "model-id-prefixed"],
)
def test_gemini_tool_result_correlates_to_the_call_that_asked_for_it(model_call_id: str | None,
                                                                     answered_id: str | None) -> None:
    for make in (gemini.stream_parser, gemini.json_stream_parser):
        raw = gemini_call_stream(model_call_id)
        if make is gemini.json_stream_parser:
            raw = b"[" + raw.removeprefix(b"data: ").rstrip() + b"]"
        [call] = feed_in_chunks(make, raw).tool_calls
        request = gemini.parse_request(gemini_result_request(model_call_id, answered_id))
        assert request.correlating_tool_call_id == call.call_id
        assert request.prompt is None
    assert call.call_id == (model_call_id or NAME)
    assert call.name == NAME


def test_gemini_whole_body_call_is_keyed_like_the_streamed_one() -> None:
    raw = gemini_call_stream(None).removeprefix(b"data: ")
    [call] = gemini.parse_response(raw).tool_calls
    assert call.call_id == NAME


def test_gemini_model_id_that_only_looks_invented_still_matches() -> None:
    """Both sides go through the same rule, so even an id of the CLI's shape meets itself."""
    odd = f"{NAME}_17_0"
    [call] = feed_in_chunks(gemini.stream_parser, gemini_call_stream(odd)).tool_calls
    assert gemini.parse_request(gemini_result_request(odd, odd)).correlating_tool_call_id == call.call_id


def test_gemini_unrelated_ids_do_not_collapse_to_the_name() -> None:
    assert call_key("read_file-call-1", "read_file") == "read_file-call-1"
    assert call_key("fc-7Qm2", "list_directory") == "fc-7Qm2"
    assert call_key("other_tool_1796113769368_0", NAME) == "other_tool_1796113769368_0"
    assert call_key(f"{NAME}_abc_0", NAME) == f"{NAME}_abc_0"


# ----------------------------------------------------------------------------------------------------
# The other APIs: the provider's id on both sides, exactly


def test_anthropic_tool_use_id_is_the_tool_result_key() -> None:
    msg = {"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5", "content": [
        {"type": "tool_use", "id": " toolu_01A9q3 ", "name": "Bash", "input": {"command": "ls"}}],
        "usage": {"input_tokens": 1, "output_tokens": 1}}
    [call] = anthropic_messages.parse_response(body(msg)).tool_calls
    req = anthropic_messages.parse_request(body({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A9q3", "content": "a b c"}]}]}))
    assert call.call_id == req.correlating_tool_call_id == "toolu_01A9q3"


def test_chat_tool_call_id_is_the_tool_message_key() -> None:
    resp = {"id": "chatcmpl-1", "model": "gpt-4.1", "choices": [{"index": 0, "message": {"role": "assistant",
            "tool_calls": [{"id": "call_Xy7", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]}
    [call] = openai_chat.parse_response(body(resp)).tool_calls
    req = openai_chat.parse_request(body({"messages": [{"role": "tool", "tool_call_id": "call_Xy7", "content": "a"}]}))
    assert call.call_id == req.correlating_tool_call_id == "call_Xy7"


@pytest.mark.parametrize(("item_type", "output_type"), [("function_call", "function_call_output"),
                                                        ("custom_tool_call", "custom_tool_call_output")])
def test_responses_call_id_is_the_output_key_and_the_item_id_is_not(item_type: str, output_type: str) -> None:
    item = {"type": item_type, "id": "fc_0a1b", "call_id": "call_Qm3 ", "name": "exec", "arguments": "{}",
            "input": "ls", "status": "completed"}
    resp = {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5", "output": [item]}
    [call] = openai_responses.parse_response(body(resp)).tool_calls
    req = openai_responses.parse_request(body({"input": [{"type": output_type, "call_id": "call_Qm3", "output": "a"}]}))
    assert call.call_id == req.correlating_tool_call_id == "call_Qm3"
    assert call.item_id == "fc_0a1b"


@pytest.mark.parametrize(
    ("call_id", "name", "key"),
    [
        ("toolu_01A9q3", None, "toolu_01A9q3"),
        ("toolu_bdrk_01A9", None, "toolu_bdrk_01A9"),
        ("call_Xy7", None, "call_Xy7"),
        ("  call_Xy7\n", None, "call_Xy7"),
        ("fc_0a1b", None, "fc_0a1b"),
        (None, None, None),
        ("", "", None),
        (7, None, None),
        (None, NAME, NAME),
        ("", NAME, NAME),
        (f"{NAME}_1796113769368_0", NAME, NAME),
        (f"{NAME}_1796113769368_0", None, f"{NAME}_1796113769368_0"),  # without the name nothing is invented
    ],
)
def test_call_key(call_id: object, name: object, key: str | None) -> None:
    assert call_key(call_id, name) == key
