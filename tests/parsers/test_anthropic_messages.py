"""Anthropic Messages parser: Claude Code-shaped requests, blocking bodies and SSE streams, broken input."""

# ruff: noqa: E501  (SSE fixtures are verbatim wire lines, one event per line)

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.parsing import anthropic_messages as am
from aigw_proxy.recording.records import ModelThought, ResponseFacts, TokenUsage, ToolCall
from tests.parsers.chunking import feed_in_chunks

MSG_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
TOOL_ID = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
SESSION = "5d0c8e0a-3b52-4f57-9f0e-7c7f6a1b2c3d"
MODEL = "claude-sonnet-4-5-20250929"

# ----------------------------------------------------------------------------------------------------
# Requests

CLAUDE_CODE_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 32000,
    "stream": True,
    "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}],
    "metadata": {
        "user_id": json.dumps(
            {"device_id": "9a1b2c3d4e5f", "account_uuid": "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f", "session_id": SESSION}
        )
    },
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "tools": [{"name": "Edit", "description": "Edit a file", "input_schema": {"type": "object"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<system-reminder>\nAs you answer the user's questions, you can use the following "
                    "context:\n# claudeMd\nCodebase and user instructions are shown below.\n</system-reminder>\n",
                },
                {"type": "text", "text": "<system-reminder>\nToday's date is 2026-11-14.\n</system-reminder>"},
                {
                    "type": "text",
                    "text": "Rename _helper in utils.py to parse_config",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
        # Claude Code's mid-conversation system note: the user's turn is the user message before it.
        {"role": "system", "content": "The user changed the output style to Explanatory."},
    ],
}

TOOL_RESULT_REQUEST = {
    **CLAUDE_CODE_REQUEST,
    "messages": [
        CLAUDE_CODE_REQUEST["messages"][0],
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I'll edit utils.py.", "signature": "EqQBCgIYAhIM"},
                {"type": "tool_use", "id": TOOL_ID, "name": "Edit", "input": {"file_path": "/repo/utils.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": TOOL_ID, "content": "The file /repo/utils.py has been updated."},
                {"type": "text", "text": "<system-reminder>\nThe file was modified.\n</system-reminder>"},
            ],
        },
        {"role": "system", "content": "Mid-conversation note."},
    ],
}


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_claude_code_request_prompt_skips_reminders_and_trailing_system_message() -> None:
    facts = am.parse_request(body(CLAUDE_CODE_REQUEST))
    assert facts.prompt == "Rename _helper in utils.py to parse_config"
    assert facts.model == MODEL
    assert facts.stream is True
    assert facts.body_session_id == SESSION
    assert facts.correlating_tool_call_id is None
    assert facts.error is None


def test_tool_result_request_has_no_prompt_and_correlates_to_the_tool_use() -> None:
    facts = am.parse_request(body(TOOL_RESULT_REQUEST))
    assert facts.prompt is None
    assert facts.correlating_tool_call_id == TOOL_ID


def test_last_of_several_tool_results_correlates() -> None:
    msgs = [
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_A", "content": "a"},
            {"type": "tool_result", "tool_use_id": "toolu_B", "content": "b"},
        ]}
    ]
    assert am.parse_request(body({"messages": msgs})).correlating_tool_call_id == "toolu_B"


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "fix the failing test"}], "fix the failing test"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], None),
        ([{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"}]}], None),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "source": {}}]}], "a"),
        ([{"role": "user", "content": 42}], None),
        ([], None),
        ([{"role": "system", "content": "only system"}], None),
    ],
)
def test_prompt_rules(messages: list, prompt: str | None) -> None:
    assert am.parse_request(body({"model": MODEL, "messages": messages})).prompt == prompt


@pytest.mark.parametrize(
    ("user_id", "session"),
    [
        ("user_3b8f0c2a9d_account_1c2d3e4f-aaaa_session_7e6d5c4b-1111-2222-3333-444455556666",
         "7e6d5c4b-1111-2222-3333-444455556666"),
        (json.dumps({"device_id": "d", "account_uuid": "a"}), None),
        ("{not json", None),
        ("user_abc", None),
        (12345, None),
        ("", None),
    ],
)
def test_body_session_id(user_id: object, session: str | None) -> None:
    assert am.parse_request(body({"metadata": {"user_id": user_id}})).body_session_id == session


@pytest.mark.parametrize("stream", ["true", 1, None, False])
def test_stream_is_only_a_real_true(stream: object) -> None:
    assert am.parse_request(body({"model": MODEL, "stream": stream})).stream is False


@pytest.mark.parametrize(
    "raw", [b"", b"  \n", b"not json", b"[1, 2]", b"\xff\xfe\x00garbage", b'{"model": "c', b"[" * 100_000]
)
def test_unreadable_request_bodies_give_an_error(raw: bytes) -> None:
    facts = am.parse_request(raw)
    assert facts.error
    assert facts.prompt is None and facts.model is None


# ----------------------------------------------------------------------------------------------------
# Responses: a thinking + text + tool_use turn, blocking and streamed

USAGE = {
    "input_tokens": 3,
    "cache_creation_input_tokens": 2456,
    "cache_read_input_tokens": 18340,
    "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 408},
    "output_tokens": 187,
    "service_tier": "standard",
}
THINKING = "The user wants `_helper` renamed to parse_config; I'll edit utils.py."
TOOL_INPUT = '{"file_path":"/repo/utils.py","old_string":"def _helper(","new_string":"def parse_config(  # lädt"}'

BLOCKING_BODY = body({
    "id": MSG_ID,
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {"type": "thinking", "thinking": THINKING, "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
        {"type": "text", "text": "I'll rename the helper."},
        {"type": "tool_use", "id": TOOL_ID, "name": "Edit", "input": {
            "file_path": "/repo/utils.py", "old_string": "def _helper(", "new_string": "def parse_config(  # lädt"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": USAGE,
})

STREAM = r"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":2456,"cache_read_input_tokens":18340,"cache_creation":{"ephemeral_5m_input_tokens":2048,"ephemeral_1h_input_tokens":408},"output_tokens":8,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants `_helper` renamed"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" to parse_config; I'll edit utils.py."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"I'll rename the helper."}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: content_block_start
data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"Edit","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"file_path\": \"/repo/utils.py\", \"old_str"}}

event: content_block_delta
data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"ing\": \"def _helper(\", \"new_string\": \"def parse_config(  # lädt\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":3}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":187}}

event: message_stop
data: {"type":"message_stop"}

""".encode()

EXPECTED_USAGE = TokenUsage(
    provider_response_id=MSG_ID,
    input_tokens=3,
    output_tokens=187,
    cache_read_input_tokens=18340,
    cache_write_input_tokens=2456,
    metadata={  # no web_search_requests: this usage has no server_tool_use
        "cache_creation_input": 2456,
        "cache_read_input": 18340,
        "cache_ephemeral_1h_input": 408,
        "cache_ephemeral_5m_input": 2048,
    },
)
EXPECTED = ResponseFacts(
    response_ids=[MSG_ID],
    model=MODEL,
    token_usages=[EXPECTED_USAGE],
    tool_calls=[ToolCall(MSG_ID, TOOL_ID, "Edit", TOOL_INPUT)],
    thoughts=[ModelThought(THINKING, "thinking")],
    completed=True,
)


def run_stream(data: bytes, chunk: int | None = None) -> ResponseFacts:
    return feed_in_chunks(am.stream_parser, data, chunk)


def test_blocking_response_facts() -> None:
    assert am.parse_response(BLOCKING_BODY) == EXPECTED


def test_streamed_response_facts_equal_blocking() -> None:
    assert run_stream(STREAM) == EXPECTED
    assert run_stream(STREAM) == am.parse_response(BLOCKING_BODY)


def test_one_byte_chunks_and_crlf() -> None:
    assert run_stream(STREAM, chunk=1) == EXPECTED
    assert run_stream(STREAM.replace(b"\n", b"\r\n"), chunk=1) == EXPECTED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=40), crlf=st.booleans())
def test_any_chunking_gives_identical_facts(cuts: list[int], crlf: bool) -> None:
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = [0, *sorted(c * len(data) // len(STREAM) for c in cuts), len(data)]
    parser = am.stream_parser()
    for a, b in itertools.pairwise(bounds):
        parser.feed(data[a:b])
    assert parser.finish() == EXPECTED


def test_tool_use_without_input_deltas_uses_the_start_input() -> None:
    stream = sse(
        message_start(usage={"input_tokens": 10, "output_tokens": 1}),
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_X", "name": "TodoRead", "input": {}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    )
    facts = run_stream(stream)
    assert facts.tool_calls == [ToolCall(MSG_ID, "toolu_X", "TodoRead", "{}")]
    assert facts.token_usages[0].output_tokens == 12


# ----------------------------------------------------------------------------------------------------
# Web search counts and cumulative output


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def message_start(usage: dict) -> dict:
    return {"type": "message_start", "message": {
        "id": MSG_ID, "type": "message", "role": "assistant", "model": MODEL, "content": [], "usage": usage}}


def test_web_search_counts_blocking() -> None:
    facts = am.parse_response(body({
        "id": MSG_ID, "type": "message", "model": MODEL, "content": [{"type": "text", "text": "It is sunny."}],
        "usage": {"input_tokens": 2210, "output_tokens": 412, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, "server_tool_use": {"web_search_requests": 2}},
    }))
    assert facts.token_usages == [TokenUsage(MSG_ID, 2210, 412, 0, 0, {
        "web_search_requests": 2, "cache_creation_input": 0, "cache_read_input": 0})]  # no cache_creation breakdown
    assert facts.completed is True


def test_stream_output_and_web_searches_are_cumulative_last_delta_wins() -> None:
    stream = sse(
        message_start({"input_tokens": 2210, "cache_read_input_tokens": 512, "cache_creation_input_tokens": 0,
                       "output_tokens": 3, "server_tool_use": {"web_search_requests": 0}}),
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": '{"query": "weather paris"}'}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 90,
                                                         "server_tool_use": {"web_search_requests": 1}}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 412, "server_tool_use": {"web_search_requests": 2}}},
        {"type": "message_stop"},
    )
    facts = run_stream(stream)
    usage = facts.token_usages[0]
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (2210, 412, 512)
    assert usage.metadata["web_search_requests"] == 2
    assert facts.tool_calls == []  # server tools ran at Anthropic; the client never ran them
    assert facts.completed is True


# ----------------------------------------------------------------------------------------------------
# Broken streams and error bodies


def test_mid_stream_error_event_fails_with_partial_facts() -> None:
    cut = STREAM.index(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3")
    overloaded = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    facts = run_stream(STREAM[:cut] + overloaded)
    assert facts.error == "overloaded_error: Overloaded"
    assert facts.completed is False
    assert facts.thoughts == [ModelThought(THINKING, "thinking")]
    assert facts.tool_calls == []
    assert facts.token_usages[0].output_tokens == 8  # from message_start: no message_delta arrived


def test_stream_cut_inside_a_tool_use_reports_only_finished_blocks() -> None:
    cut = STREAM.index(b"ing\\\": \\\"def _helper(")
    facts = run_stream(STREAM[:cut])
    assert facts.completed is False and facts.error is None
    assert facts.response_ids == [MSG_ID]
    assert facts.thoughts == [ModelThought(THINKING, "thinking")]
    assert facts.tool_calls == []
    assert facts.token_usages[0].input_tokens == 3
    assert facts.token_usages[0].cache_read_input_tokens == 18340


def test_stream_without_message_stop_is_not_completed() -> None:
    facts = run_stream(STREAM[: STREAM.index(b"event: message_stop")])
    assert facts.completed is False
    assert facts.tool_calls == EXPECTED.tool_calls
    assert facts.token_usages == EXPECTED.token_usages


def test_malformed_events_are_counted_and_skipped() -> None:
    garbage = b'event: ping\ndata: {"type": "ping"\n\nevent: content_block_delta\ndata: [1, 2]\n\n'
    cut = STREAM.index(b"event: message_delta")
    facts = run_stream(STREAM[:cut] + garbage + STREAM[cut:])
    assert facts.parse_errors == 2
    assert facts.completed is True
    assert facts.tool_calls == EXPECTED.tool_calls


def test_non_utf8_bytes_in_a_stream_do_not_raise() -> None:
    cut = STREAM.index(b"event: message_delta")
    facts = run_stream(STREAM[:cut] + b"event: content_block_delta\ndata: \xff\xfe\xfd\n\n" + STREAM[cut:])
    assert facts.parse_errors == 1
    assert facts.token_usages == EXPECTED.token_usages


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
         b'"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}', "overloaded_error: Overloaded"),
        (b'{"type":"error","error":{"type":"invalid_request_error",'
         b'"message":"prompt is too long: 208423 tokens > 200000 maximum"}}',
         "invalid_request_error: prompt is too long: 208423 tokens > 200000 maximum"),
        (b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
         "authentication_error: invalid x-api-key"),
        (b'{"error": true, "message": "upstream unavailable"}', "upstream unavailable"),
    ],
)
def test_error_bodies(raw: bytes, error: str) -> None:
    facts = am.parse_response(raw)
    assert facts.error == error
    assert facts.completed is False
    assert facts.token_usages == [] and facts.tool_calls == []


@pytest.mark.parametrize(
    "raw", [b"", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"\xff\xfe\x00", b'{"id": "msg_', b"[]"]
)
def test_unreadable_response_bodies(raw: bytes) -> None:
    facts = am.parse_response(raw)
    assert facts.error and facts.parse_errors == 1 and facts.completed is False


def test_empty_stream() -> None:
    assert run_stream(b"") == ResponseFacts()


# ----------------------------------------------------------------------------------------------------
# Nothing raises, whatever the input

EVENT_TYPES = ["message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta",
               "content_block_stop", "error", "ping", "thinking", "tool_use", "thinking_delta", "input_json_delta",
               "tool_result", "text", "user", "system"]
KEYS = st.sampled_from([
    "type", "message", "id", "model", "usage", "content", "index", "delta", "content_block", "messages", "role",
    "text", "thinking", "tool_use_id", "input", "partial_json", "name", "output_tokens", "input_tokens",
    "cache_creation", "cache_read_input_tokens", "server_tool_use", "web_search_requests", "error", "metadata",
    "user_id", "stream",
])
LEAVES = (st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=12)
          | st.sampled_from(EVENT_TYPES))
JSON = st.recursive(LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=6), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_random_json_bodies_never_raise(value: object) -> None:
    raw = json.dumps(value).encode()
    am.parse_request(raw)
    am.parse_response(raw)
    am.parse_request(body({"messages": [value]}))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=12), types=st.data())
def test_random_events_never_raise(events: list[dict], types: st.DataObject) -> None:
    acc = am.StreamAccumulator()
    for event in events:
        event.setdefault("type", types.draw(st.sampled_from(EVENT_TYPES)))
        acc.on_event(event)
    facts = acc.result()
    assert isinstance(facts, ResponseFacts)
    parser = am.stream_parser()
    parser.feed(sse(*events))
    parser.finish()
