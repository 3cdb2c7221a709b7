"""OpenAI Chat Completions parser: requests, blocking bodies, include_usage streams, broken input."""

# ruff: noqa: E501  (SSE fixtures are verbatim wire lines, one event per line)

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.parsing import openai_chat as oc
from aigw_proxy.recording.records import ResponseFacts, TokenUsage, ToolCall
from tests.parsers.chunking import feed_in_chunks

RESP_ID = "chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0"
MODEL = "o4-mini-2025-04-16"
CALL_A = "call_p1Wq0XbT7sJc4kLm9nRz2yVu"
CALL_B = "call_Tk9fG3hJ8dS2aQ1wE6rT5yUi"


def body(value: object) -> bytes:
    return json.dumps(value).encode()


# ----------------------------------------------------------------------------------------------------
# Requests

USER_TURN = {
    "role": "user",
    "content": [
        {"type": "text", "text": "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>"},
        {"type": "text", "text": "What's the weather in Paris and the time in Tokyo?"},
    ],
}
ASSISTANT_TOOL_CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": CALL_A, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": CALL_B, "type": "function", "function": {"name": "get_time", "arguments": '{"timezone":"Asia/Tokyo"}'}},
    ],
}
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "developer", "content": "You are a helpful coding assistant."}, USER_TURN],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}


def test_request_prompt_is_the_last_typed_text_part() -> None:
    facts = oc.parse_request(body(REQUEST))
    assert facts.prompt == "What's the weather in Paris and the time in Tokyo?"
    assert facts.model == MODEL
    assert facts.stream is True
    assert facts.correlating_tool_call_id is None
    assert facts.error is None


def test_tool_results_request_correlates_to_the_last_tool_message() -> None:
    messages = [
        *REQUEST["messages"],
        ASSISTANT_TOOL_CALLS,
        {"role": "tool", "tool_call_id": CALL_A, "content": "18°C, light rain"},
        {"role": "tool", "tool_call_id": CALL_B, "content": "2026-11-14T21:04:00+09:00"},
        {"role": "system", "content": "Be brief."},
    ]
    facts = oc.parse_request(body({**REQUEST, "messages": messages}))
    assert facts.prompt is None
    assert facts.correlating_tool_call_id == CALL_B


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "explain this stack trace"}], "explain this stack trace"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], None),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}], None),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "  "}]}], "a"),
        ([{"role": "user", "content": None}], None),
        ([], None),
        ("not a list", None),
    ],
)
def test_prompt_rules(messages: object, prompt: str | None) -> None:
    assert oc.parse_request(body({"model": MODEL, "messages": messages})).prompt == prompt


@pytest.mark.parametrize("stream", ["true", 1, None])
def test_stream_is_only_a_real_true(stream: object) -> None:
    assert oc.parse_request(body({"stream": stream})).stream is False


@pytest.mark.parametrize("raw", [b"", b"null", b"not json", b"\xff\xfe\x00", b'{"messages": [', b"[" * 100_000])
def test_unreadable_request_bodies_give_an_error(raw: bytes) -> None:
    facts = oc.parse_request(raw)
    assert facts.error and facts.prompt is None


# ----------------------------------------------------------------------------------------------------
# Responses: two parallel tool calls, reasoning tokens, cached prompt tokens

USAGE = {
    "prompt_tokens": 1480,
    "completion_tokens": 250,
    "total_tokens": 1730,
    "prompt_tokens_details": {"cached_tokens": 1152, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
    },
}
BLOCKING_BODY = body({
    "id": RESP_ID,
    "object": "chat.completion",
    "created": 1763150640,
    "model": MODEL,
    "choices": [{
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": CALL_A, "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "°C"}'}},
                {"id": CALL_B, "type": "function",
                 "function": {"name": "get_time", "arguments": '{"timezone": "Asia/Tokyo"}'}},
            ],
            "refusal": None,
            "annotations": [],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
    }],
    "usage": USAGE,
    "service_tier": "default",
    "system_fingerprint": None,
})

STREAM = r"""data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_p1Wq0XbT7sJc4kLm9nRz2yVu","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Pa"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ris\", \"unit\": \"°C\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Tk9fG3hJ8dS2aQ1wE6rT5yUi","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"timezone\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":" \"Asia/Tokyo\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk","created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default","system_fingerprint":null,"choices":[],"usage":{"prompt_tokens":1480,"completion_tokens":250,"total_tokens":1730,"prompt_tokens_details":{"cached_tokens":1152,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]

""".encode()

EXPECTED = ResponseFacts(
    response_ids=[RESP_ID],
    model=MODEL,
    token_usages=[TokenUsage(
        provider_response_id=RESP_ID,
        input_tokens=328,  # 1480 prompt tokens − 1152 cached
        output_tokens=250,
        cache_read_input_tokens=1152,
        cache_write_input_tokens=0,
        metadata={
            "prompt_audio": 0,
            "prompt_cached": 1152,
            "completion_accepted_prediction": 0,
            "completion_rejected_prediction": 0,
            "completion_audio": 0,
            "completion_reasoning": 192,
        },
    )],
    tool_calls=[
        ToolCall(RESP_ID, CALL_A, "get_weather", '{"city":"Paris","unit":"°C"}'),
        ToolCall(RESP_ID, CALL_B, "get_time", '{"timezone":"Asia/Tokyo"}'),
    ],
    completed=True,
)


def run_stream(data: bytes, chunk: int | None = None) -> ResponseFacts:
    return feed_in_chunks(oc.stream_parser, data, chunk)


def chunk(**fields: object) -> bytes:
    return f"data: {json.dumps({'id': RESP_ID, 'object': 'chat.completion.chunk', 'model': MODEL, **fields})}\n\n".encode()


def test_blocking_response_facts() -> None:
    assert oc.parse_response(BLOCKING_BODY) == EXPECTED


def test_streamed_response_facts_equal_blocking() -> None:
    assert run_stream(STREAM) == EXPECTED
    assert run_stream(STREAM) == oc.parse_response(BLOCKING_BODY)


def test_one_byte_chunks_and_crlf() -> None:
    assert run_stream(STREAM, chunk=1) == EXPECTED
    assert run_stream(STREAM.replace(b"\n", b"\r\n"), chunk=1) == EXPECTED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=40), crlf=st.booleans())
def test_any_chunking_gives_identical_facts(cuts: list[int], crlf: bool) -> None:
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = [0, *sorted(c * len(data) // len(STREAM) for c in cuts), len(data)]
    parser = oc.stream_parser()
    for a, b in itertools.pairwise(bounds):
        parser.feed(data[a:b])
    assert parser.finish() == EXPECTED


# ----------------------------------------------------------------------------------------------------
# Completion rules and usage edge cases

FINISH = STREAM.index(b'data: {"id":"chatcmpl-CTz4mKq8d1a2b3c4d5e6f7g8h9i0","object":"chat.completion.chunk",'
                      b'"created":1763150640,"model":"o4-mini-2025-04-16","service_tier":"default",'
                      b'"system_fingerprint":null,"choices":[{"index":0,"delta":{},')
USAGE_CHUNK = STREAM.index(b'"choices":[],"usage"')
DONE = STREAM.index(b"data: [DONE]")


def test_finish_reason_and_usage_without_done_is_completed() -> None:
    facts = run_stream(STREAM[:DONE])
    assert facts == EXPECTED


def test_no_usage_chunk_records_no_usage() -> None:
    without_usage = STREAM[:STREAM.rindex(b"data: ", 0, USAGE_CHUNK)] + STREAM[DONE:]
    facts = run_stream(without_usage)
    assert facts.token_usages == []
    assert facts.tool_calls == EXPECTED.tool_calls
    assert facts.completed is True  # [DONE] arrived


def test_finish_reason_without_usage_or_done_is_not_completed() -> None:
    facts = run_stream(STREAM[:STREAM.rindex(b"data: ", 0, USAGE_CHUNK)])
    assert facts.completed is False
    assert facts.token_usages == []
    assert facts.tool_calls == EXPECTED.tool_calls  # the choice finished: its tool calls are whole


def test_stream_cut_mid_arguments_reports_no_tool_calls() -> None:
    facts = run_stream(STREAM[:FINISH])
    assert facts.completed is False and facts.error is None
    assert facts.response_ids == [RESP_ID] and facts.model == MODEL
    assert facts.tool_calls == [] and facts.token_usages == []


def test_cached_tokens_above_prompt_tokens_clamp_input_at_zero() -> None:
    facts = oc.parse_response(body({"id": RESP_ID, "model": MODEL, "choices": [], "usage": {
        "prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}}))
    usage = facts.token_usages[0]
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (0, 5, 64)
    assert usage.metadata == {"prompt_cached": 64}


def test_usage_without_details_has_no_extra_kinds() -> None:
    stream = (chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Done."}, "finish_reason": None}])
              + chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
              + chunk(choices=[], usage={"prompt_tokens": 42, "completion_tokens": 3, "total_tokens": 45}))
    facts = run_stream(stream)
    assert facts.token_usages == [TokenUsage(RESP_ID, 42, 3, 0, 0, {})]
    assert facts.tool_calls == []
    assert facts.completed is True


# ----------------------------------------------------------------------------------------------------
# Errors and broken input

SERVER_ERROR = (b'data: {"error":{"message":"The server had an error while processing your request. Sorry about that!",'
                b'"type":"server_error","param":null,"code":null}}\n\n')


def test_mid_stream_error_chunk_fails_the_stream() -> None:
    facts = run_stream(STREAM[:FINISH] + SERVER_ERROR + b"data: [DONE]\n\n")
    assert facts.error == "server_error: The server had an error while processing your request. Sorry about that!"
    assert facts.completed is False


def test_malformed_chunks_are_counted_and_skipped() -> None:
    garbage = b'data: {"id":"chatcmpl-CTz4m","choices":[{"index":0,\n\ndata: "just a string"\n\n'
    facts = run_stream(STREAM[:FINISH] + garbage + STREAM[FINISH:])
    assert facts.parse_errors == 2
    assert facts.tool_calls == EXPECTED.tool_calls and facts.completed is True


def test_non_utf8_bytes_in_a_stream_do_not_raise() -> None:
    facts = run_stream(STREAM[:FINISH] + b"data: \xff\xfe{\n\n" + STREAM[FINISH:])
    assert facts.parse_errors == 1
    assert facts.token_usages == EXPECTED.token_usages


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"error":{"message":"Rate limit reached for o4-mini in organization org-x on tokens per min (TPM).",'
         b'"type":"tokens","param":null,"code":"rate_limit_exceeded"}}',
         "tokens: Rate limit reached for o4-mini in organization org-x on tokens per min (TPM)."),
        (b'{"error":{"message":"Incorrect API key provided: sk-proj-****abcd.","type":"invalid_request_error",'
         b'"param":null,"code":"invalid_api_key"}}',
         "invalid_request_error: Incorrect API key provided: sk-proj-****abcd."),
        (b'{"error":{"message":"The model `gpt-9` does not exist","type":null,"code":"model_not_found"}}',
         "model_not_found: The model `gpt-9` does not exist"),
        (b'{"error": true, "message": "upstream connect error"}', "upstream connect error"),
    ],
)
def test_error_bodies(raw: bytes, error: str) -> None:
    facts = oc.parse_response(raw)
    assert facts.error == error
    assert facts.completed is False and facts.token_usages == []


@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b"\x80\x81", b'{"id": "chatcmpl', b"42"])
def test_unreadable_response_bodies(raw: bytes) -> None:
    facts = oc.parse_response(raw)
    assert facts.error and facts.parse_errors == 1 and facts.completed is False


def test_empty_stream() -> None:
    assert run_stream(b"") == ResponseFacts()


# ----------------------------------------------------------------------------------------------------
# Nothing raises, whatever the input

KEYS = st.sampled_from([
    "id", "model", "choices", "index", "delta", "message", "tool_calls", "function", "name", "arguments",
    "finish_reason", "usage", "prompt_tokens", "completion_tokens", "prompt_tokens_details", "cached_tokens",
    "completion_tokens_details", "reasoning_tokens", "error", "messages", "role", "content", "type", "text",
    "tool_call_id", "stream",
])
LEAVES = (st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=12)
          | st.sampled_from(["user", "tool", "assistant", "system", "text", "stop", "tool_calls"]))
JSON = st.recursive(LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=6), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_random_json_bodies_never_raise(value: object) -> None:
    raw = json.dumps(value).encode()
    oc.parse_request(raw)
    oc.parse_response(raw)
    oc.parse_request(body({"messages": [value]}))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=12), done=st.booleans())
def test_random_chunks_never_raise(events: list[dict], done: bool) -> None:
    acc = oc.StreamAccumulator()
    for event in events:
        acc.on_event(event)
    if done:
        acc.on_done()
    assert isinstance(acc.result(), ResponseFacts)
    parser = oc.stream_parser()
    parser.feed(b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n")
    parser.finish()


# ----------------------------------------------------------------------------------------------------
# Answer-text chunks are skipped undecoded: the facts are the same as when every chunk is decoded


def compact(**fields: object) -> bytes:
    data = {"id": RESP_ID, "object": "chat.completion.chunk", "created": 1763150640, "model": MODEL, **fields}
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def text_delta(text: str, **extra: object) -> bytes:
    return compact(choices=[{"index": 0, "delta": {"content": text, **extra}, "logprobs": None,
                             "finish_reason": None}], usage=None)


TEXT_STREAM = b"".join([
    compact(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    text_delta("Hello"),
    text_delta(' text that names "tool_calls", "usage":{} and "finish_reason":"stop", "error": true'),
    text_delta("a call: ", tool_calls=[{"index": 0, "id": CALL_A, "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{}"}}]),
    compact(choices=[{"index": 0, "delta": {"content": "."}, "finish_reason": "stop"}], usage=None),
    compact(choices=[], usage=USAGE),
    b"data: [DONE]\n\n",
])


def test_skipping_answer_text_gives_the_facts_of_decoding_every_chunk() -> None:
    decode_all = oc.stream_parser()
    decode_all._ignores = None  # the same parser with no chunk skipped
    decode_all.feed(TEXT_STREAM)
    expected = decode_all.finish()
    assert expected.tool_calls and expected.token_usages and expected.completed
    for size in (None, 1, 7):
        assert run_stream(TEXT_STREAM, size) == expected
    assert run_stream(TEXT_STREAM.replace(b"\n", b"\r\n"), 5) == expected


def test_only_plain_answer_text_is_skipped() -> None:
    acc = oc.StreamAccumulator()

    def data(raw: bytes) -> str:
        return raw.decode().removeprefix("data: ").strip()

    plain = data(text_delta("Hi"))
    assert not acc.ignores(None, plain)  # the id and model are not known yet
    acc.on_event(json.loads(data(compact(choices=[{"index": 0, "delta": {"role": "assistant"}}]))))
    assert acc.ignores(None, plain)
    assert not acc.ignores("error", plain)
    assert not acc.ignores(None, data(text_delta("x", tool_calls=[])))
    assert not acc.ignores(None, plain.replace('"finish_reason":null', '"finish_reason":"stop"'))
    assert not acc.ignores(None, plain.replace('"usage":null', '"usage":{"prompt_tokens":1}'))
    assert not acc.ignores(None, plain.replace('"delta":{', '"delta": {'))  # other spacing: decoded
