"""OpenAI Responses API parser: Codex-shaped requests, streamed and whole responses, hostile input."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.parsing import openai_responses as r
from aigw_proxy.recording.records import ModelThought, RequestFacts, ResponseFacts, TokenUsage, ToolCall

# --- fixtures --------------------------------------------------------------------------------------------

SESSION = "019a5c2e-7d1b-7c40-9a51-3f0c1d2e4b6a"
AGENTS_MD = (
    "# AGENTS.md instructions for /work/repo\n\n<INSTRUCTIONS>\nRun ruff before committing.\n</INSTRUCTIONS>"
)
ENV_CONTEXT = (
    "<environment_context>\n  <cwd>/work/repo</cwd>\n  <approval_policy>never</approval_policy>\n"
    "  <sandbox_mode>workspace-write</sandbox_mode>\n  <shell>bash</shell>\n</environment_context>"
)
PROMPT = "Fix the failing test in tests/test_app.py"
TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
            "required": ["command"],
        },
    },
    {"type": "custom", "name": "apply_patch", "description": "Apply a patch.", "format": {"type": "grammar"}},
]


def _user(*texts: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t} for t in texts]}


CODEX_REQUEST: dict[str, Any] = {
    "model": "gpt-5.1-codex",
    "instructions": "You are Codex, based on GPT-5.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [
                {"type": "input_text", "text": "<permissions instructions>…</permissions instructions>"}
            ],
        },
        {"type": "additional_tools", "tools": TOOLS},
        _user(AGENTS_MD),
        _user(ENV_CONTEXT),
        _user(PROMPT),
        {"type": "configuration_update", "model": "gpt-5.1-codex", "reasoning_effort": "medium"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": SESSION,
    "text": {"verbosity": "medium"},
    "client_metadata": {"session_id": SESSION},
}

INCREMENTAL_REQUEST: dict[str, Any] = {
    "type": "response.create",
    "model": "gpt-5.1-codex",
    "previous_response_id": "resp_0a1b2c",
    "input": [{"type": "function_call_output", "call_id": "call_shell1", "output": "1 failed, 12 passed"}],
    "stream": True,
    "store": False,
    "client_metadata": {"session_id": SESSION},
}

RID = "resp_0a1b2c"
MODEL = "gpt-5.1-codex-2025-11-13"
SHELL_ARGS = '{"command": ["pytest", "-q", "tests/test_app.py"], "workdir": "/work/repo"}'
PATCH = "*** Begin Patch\n*** Update File: app.py\n@@\n-x = 1\n+x = 2\n*** End Patch\n"
SUMMARY = "**Inspecting the failing test**\n\nI should run the test to see the failure."
COMMENTARY = "I'll run the failing test first."

REASONING_ITEM = {
    "id": "rs_1",
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": SUMMARY}, {"type": "summary_text", "text": "  "}],
    "encrypted_content": "gAAAAABpZ...",
}
COMMENTARY_ITEM = {
    "id": "msg_1",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "phase": "commentary",
    "content": [{"type": "output_text", "text": COMMENTARY, "annotations": [], "logprobs": []}],
}
FUNCTION_ITEM = {
    "id": "fc_1",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_shell1",
    "name": "shell",
    "arguments": SHELL_ARGS,
}
CUSTOM_ITEM = {
    "id": "ctc_1",
    "type": "custom_tool_call",
    "status": "completed",
    "call_id": "call_patch1",
    "name": "apply_patch",
    "input": PATCH,
}
USAGE = {
    "input_tokens": 12000,
    "input_tokens_details": {"cached_tokens": 9000},
    "output_tokens": 350,
    "output_tokens_details": {"reasoning_tokens": 128},
    "total_tokens": 12350,
}
RESPONSE: dict[str, Any] = {
    "id": RID,
    "object": "response",
    "created_at": 1763000000,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": MODEL,
    "output": [REASONING_ITEM, COMMENTARY_ITEM, FUNCTION_ITEM, CUSTOM_ITEM],
    "parallel_tool_calls": False,
    "previous_response_id": None,
    "store": False,
    "usage": USAGE,
}

EXPECTED_USAGE = TokenUsage(
    provider_response_id=RID,
    input_tokens=3000,
    output_tokens=350,
    cache_read_input_tokens=9000,
    cache_write_input_tokens=0,
    metadata={"input_cached": 9000, "output_reasoning": 128, "total_tokens": 12350},
)
SHELL_CALL = ToolCall(
    RID,
    "call_shell1",
    "shell",
    '{"command":["pytest","-q","tests/test_app.py"],"workdir":"/work/repo"}',
    "fc_1",
)
PATCH_CALL = ToolCall(RID, "call_patch1", "apply_patch", PATCH, "ctc_1")
THOUGHTS = [ModelThought(SUMMARY, "reasoning_summary"), ModelThought(COMMENTARY, "commentary")]
EXPECTED = ResponseFacts(
    response_ids=[RID],
    model=MODEL,
    token_usages=[EXPECTED_USAGE],
    tool_calls=[SHELL_CALL, PATCH_CALL],
    thoughts=THOUGHTS,
    completed=True,
)


def _start(status: str = "in_progress") -> dict:
    return {**RESPONSE, "status": status, "output": [], "usage": None}


def _events() -> list[dict]:
    """The stream of RESPONSE, event by event, as the API sends it."""
    ev: list[dict] = [
        {"type": "response.created", "response": _start()},
        {"type": "response.in_progress", "response": _start()},
        {"type": "response.output_item.added", "output_index": 0, "item": {**REASONING_ITEM, "summary": []}},
        {
            "type": "response.reasoning_summary_part.added",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "delta": SUMMARY[:20],
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "delta": SUMMARY[20:],
        },
        {
            "type": "response.reasoning_summary_text.done",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "text": SUMMARY,
        },
        {
            "type": "response.reasoning_summary_part.done",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": SUMMARY},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": REASONING_ITEM},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**COMMENTARY_ITEM, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "delta": COMMENTARY,
        },
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "text": COMMENTARY,
        },
        {
            "type": "response.content_part.done",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text", "text": COMMENTARY, "annotations": []},
        },
        {"type": "response.output_item.done", "output_index": 1, "item": COMMENTARY_ITEM},
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {**FUNCTION_ITEM, "status": "in_progress", "arguments": ""},
        },
    ]
    for i in range(0, len(SHELL_ARGS), 25):
        ev.append(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_1",
                "output_index": 2,
                "delta": SHELL_ARGS[i : i + 25],
            }
        )
    ev += [
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 2,
            "arguments": SHELL_ARGS,
        },
        {"type": "response.output_item.done", "output_index": 2, "item": FUNCTION_ITEM},
        {
            "type": "response.output_item.added",
            "output_index": 3,
            "item": {**CUSTOM_ITEM, "status": "in_progress", "input": ""},
        },
        {
            "type": "response.custom_tool_call_input.delta",
            "item_id": "ctc_1",
            "output_index": 3,
            "delta": PATCH,
        },
        {
            "type": "response.custom_tool_call_input.done",
            "item_id": "ctc_1",
            "output_index": 3,
            "input": PATCH,
        },
        {"type": "response.output_item.done", "output_index": 3, "item": CUSTOM_ITEM},
        {"type": "response.completed", "response": RESPONSE},
    ]
    for n, e in enumerate(ev):
        e["sequence_number"] = n
    return copy.deepcopy(ev)


def _sse(events: list[dict]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _stream(data: bytes, cuts: list[int] | None = None) -> ResponseFacts:
    p = r.stream_parser()
    prev = 0
    for c in [*sorted(cuts or []), len(data)]:
        p.feed(data[prev:c])
        prev = c
    return p.finish()


def _accumulate(events: list[dict]) -> ResponseFacts:
    acc = r.StreamAccumulator()
    for e in events:
        acc.on_event(e)
    return acc.result()


def _upto(predicate) -> list[dict]:
    """The events up to and including the first one `predicate` accepts (a stream that broke there)."""
    events = _events()
    end = next(i for i, e in enumerate(events) if predicate(e))
    return events[: end + 1]


# --- requests --------------------------------------------------------------------------------------------


def test_codex_request() -> None:
    facts = r.parse_request(json.dumps(CODEX_REQUEST).encode())
    assert facts == RequestFacts(model="gpt-5.1-codex", stream=True, prompt=PROMPT, body_session_id=SESSION)


def test_incremental_tool_output_request() -> None:
    facts = r.parse_request(json.dumps(INCREMENTAL_REQUEST).encode())
    assert facts == RequestFacts(
        model="gpt-5.1-codex",
        stream=True,
        correlating_tool_call_id="call_shell1",
        previous_response_id="resp_0a1b2c",
        body_session_id=SESSION,
    )
    assert r.parse_request_object(INCREMENTAL_REQUEST) == facts


def test_full_history_ending_in_custom_tool_output_then_bookkeeping() -> None:
    req = copy.deepcopy(CODEX_REQUEST)
    req["input"][-1:-1] = [
        REASONING_ITEM,
        CUSTOM_ITEM,
        {"type": "custom_tool_call_output", "call_id": "call_patch1", "output": "Success."},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "note"}]},
    ]
    facts = r.parse_request_object(req)
    assert facts.prompt is None
    assert facts.correlating_tool_call_id == "call_patch1"


def test_string_input_and_plain_content() -> None:
    assert r.parse_request(b'{"model":"gpt-4.1","input":"hello there"}').prompt == "hello there"
    easy = {"input": [{"role": "user", "content": "typed"}, {"role": "system", "content": "sys"}]}
    assert r.parse_request_object(easy).prompt == "typed"


def test_mixed_parts_keep_only_typed_text() -> None:
    req = {"input": [_user(ENV_CONTEXT, "first line", "<system-reminder>x</system-reminder>", "second")]}
    assert r.parse_request_object(req).prompt == "first line\nsecond"


def test_newest_user_message_wholly_injected_has_no_prompt() -> None:
    req = {
        "input": [_user(PROMPT), {"type": "message", "role": "assistant", "content": []}, _user(ENV_CONTEXT)]
    }
    assert r.parse_request_object(req).prompt is None


def test_non_user_newest_turn_has_no_prompt() -> None:
    for newest in (
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
        FUNCTION_ITEM,
        REASONING_ITEM,
        {"type": "local_shell_call", "call_id": "c9", "action": {}},
    ):
        facts = r.parse_request_object({"input": [_user(PROMPT), newest, {"type": "configuration_update"}]})
        assert (facts.prompt, facts.correlating_tool_call_id) == (None, None), newest


def test_warm_up_request() -> None:
    facts = r.parse_request_object(
        {"type": "response.create", "model": "gpt-5", "generate": False, "input": []}
    )
    assert facts == RequestFacts(model="gpt-5")


def test_request_field_types() -> None:
    facts = r.parse_request_object(
        {
            "model": 5,
            "stream": "true",
            "previous_response_id": "",
            "client_metadata": {"session_id": "  "},
            "input": {"not": "a list"},
        }
    )
    assert facts == RequestFacts()
    assert r.parse_request_object({"stream": 1}).stream is False


def test_unreadable_request_bodies() -> None:
    for body in (b"", b"not json", b"[1,2]", b"\xff\xfe"):
        facts = r.parse_request(body)
        assert facts.error and facts.prompt is None


# --- whole responses ---------------------------------------------------------------------------------------


def test_non_streamed_response() -> None:
    assert r.parse_response(json.dumps(RESPONSE).encode()) == EXPECTED


def test_streamed_response_equals_non_streamed() -> None:
    assert _stream(_sse(_events())) == EXPECTED
    assert _accumulate(_events()) == EXPECTED


def test_final_answer_and_invalid_arguments() -> None:
    resp = {
        **RESPONSE,
        "output": [
            {**FUNCTION_ITEM, "arguments": "{not json"},
            {**COMMENTARY_ITEM, "phase": "final_answer"},
            {**COMMENTARY_ITEM, "content": [{"type": "output_text", "text": ""}, {"type": "refusal"}]},
        ],
        "usage": None,
    }
    facts = r.parse_response(json.dumps(resp).encode())
    assert facts.tool_calls == [ToolCall(RID, "call_shell1", "shell", "{not json", "fc_1")]
    assert facts.thoughts == [] and facts.token_usages == [] and facts.completed


def test_non_ascii_arguments_are_kept() -> None:
    resp = {**RESPONSE, "output": [{**FUNCTION_ITEM, "arguments": '{"msg": "h\\u00e9llo ✓"}'}]}
    assert r.parse_response(json.dumps(resp).encode()).tool_calls[0].input == '{"msg":"héllo ✓"}'


def test_usage_clamps_and_ignores_junk() -> None:
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 50},
        "output_tokens": "7",
        "total_tokens": -3,
    }
    facts = r.parse_response(json.dumps({**RESPONSE, "usage": usage}).encode())
    assert facts.token_usages == [
        TokenUsage(RID, 0, 0, 50, 0, {"input_cached": 50, "total_tokens": 0})  # no output_tokens_details sent
    ]


def test_failed_response_body() -> None:
    body = {
        **RESPONSE,
        "status": "failed",
        "output": [],
        "usage": None,
        "error": {"code": "server_error", "message": "The model failed to generate a response."},
    }
    facts = r.parse_response(json.dumps(body).encode())
    assert facts.error == "server_error: The model failed to generate a response."
    assert facts.response_ids == [RID] and facts.completed


def test_error_bodies() -> None:
    bad_key = {
        "error": {
            "message": "Incorrect API key provided: sk-proj-****abcd.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    cases = {
        json.dumps(bad_key).encode(): "invalid_request_error: Incorrect API key provided: sk-proj-****abcd.",
        b'{"detail":"Unauthorized"}': "Unauthorized",
        b'{"code":"501","message":"background requests unsupported"}': "background requests unsupported",
        b'{"error":"rate limited"}': "rate limited",
    }
    for body, error in cases.items():
        facts = r.parse_response(body)
        assert (facts.error, facts.completed, facts.response_ids) == (error, False, []), body
    html = r.parse_response(b"<html><body>502 Bad Gateway</body></html>")
    assert html.error and html.error.startswith("invalid JSON") and html.parse_errors == 1
    assert not html.completed


# --- streams ---------------------------------------------------------------------------------------------


def test_truncated_after_function_call_done() -> None:
    facts = _accumulate(_upto(lambda e: e.get("item", {}).get("id") == "fc_1" and e["type"].endswith("done")))
    assert facts == ResponseFacts(response_ids=[RID], model=MODEL, tool_calls=[SHELL_CALL], thoughts=THOUGHTS)


def test_truncated_mid_arguments_drops_the_call() -> None:
    facts = _accumulate(_upto(lambda e: e["type"] == "response.function_call_arguments.delta"))
    assert facts.tool_calls == [] and facts.thoughts == THOUGHTS and not facts.completed


def test_truncated_after_arguments_done_keeps_the_call() -> None:
    facts = _accumulate(_upto(lambda e: e["type"] == "response.function_call_arguments.done"))
    assert facts.tool_calls == [SHELL_CALL]


def test_truncated_mid_reasoning_keeps_finished_summary_parts() -> None:
    facts = _accumulate(_upto(lambda e: e["type"] == "response.reasoning_summary_text.done"))
    assert facts.thoughts == [ModelThought(SUMMARY, "reasoning_summary")] and not facts.completed
    facts = _accumulate(_upto(lambda e: e["type"] == "response.reasoning_summary_text.delta"))
    assert facts.thoughts == [] and facts.response_ids == [RID]


def test_truncated_sse_bytes() -> None:
    data = _sse(_events())
    cut = data.index(b"event: response.completed")
    facts = _stream(data[: cut + 60])  # half of the terminal event
    assert facts.tool_calls == [SHELL_CALL, PATCH_CALL] and facts.thoughts == THOUGHTS
    assert facts.token_usages == [] and not facts.completed


def test_incomplete_response_is_finished() -> None:
    final = {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    events = [*_events()[:-1], {"type": "response.incomplete", "response": final}]
    assert _accumulate(events) == EXPECTED


def test_failed_stream() -> None:
    failed = {**_start("failed"), "error": {"code": "server_error", "message": "An error occurred."}}
    facts = _accumulate(
        [{"type": "response.created", "response": _start()}, {"type": "response.failed", "response": failed}]
    )
    assert facts == ResponseFacts(
        response_ids=[RID], model=MODEL, completed=True, error="server_error: An error occurred."
    )


def test_error_events() -> None:
    flat = {"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached.", "param": None}
    nested = {
        "type": "error",
        "status": 400,
        "error": {
            "type": "invalid_request_error",
            "code": "previous_response_not_found",
            "message": "Previous response not found.",
        },
    }
    assert _accumulate([flat]).error == "rate_limit_exceeded: Rate limit reached."
    facts = _accumulate([{"type": "response.created", "response": _start()}, nested])
    assert facts.error == "invalid_request_error: Previous response not found."
    assert facts.response_ids == [RID] and not facts.completed
    assert _accumulate([{"type": "error"}]).error == "stream error"


def test_malformed_events() -> None:
    events = _events()
    data = b"data: not json\n\ndata: [1]\n\n" + _sse(events[:3]) + b'data: {"no":"type"}\n\n'
    data += _sse([{"type": "response.output_item.done", "output_index": "x", "item": []}]) + _sse(events[3:])
    facts = _stream(data)
    assert facts.parse_errors == 4
    facts.parse_errors = 0
    assert facts == EXPECTED


def test_empty_final_output_falls_back_to_streamed_items() -> None:
    events = _events()
    events[-1]["response"]["output"] = []
    assert _accumulate(events) == EXPECTED


def test_terminal_event_without_response_object() -> None:
    events = [*_events()[:-1], {"type": "response.completed"}]
    facts = _accumulate(events)
    assert facts.completed and facts.response_ids == [RID] and facts.parse_errors == 1
    assert facts.tool_calls == [SHELL_CALL, PATCH_CALL] and facts.token_usages == []


def test_events_are_not_mutated() -> None:
    events = _events()
    before = copy.deepcopy(events)
    _accumulate(events)
    assert events == before


def test_two_responses_in_one_accumulator() -> None:
    second = {**RESPONSE, "id": "resp_2", "output": [], "usage": {"input_tokens": 5, "output_tokens": 1}}
    facts = _accumulate(
        [
            *_events(),
            {"type": "response.created", "response": {**second, "usage": None}},
            {"type": "response.completed", "response": second},
        ]
    )
    assert facts.response_ids == [RID, "resp_2"] and facts.completed
    assert [u.provider_response_id for u in facts.token_usages] == [RID, "resp_2"]
    assert facts.tool_calls == [SHELL_CALL, PATCH_CALL]


def test_crlf_framing() -> None:
    assert _stream(_sse(_events()).replace(b"\n", b"\r\n")) == EXPECTED


# --- properties ------------------------------------------------------------------------------------------

SSE_BYTES = _sse(_events())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
EVENT_TYPES = sorted({e["type"] for e in _events()} | {"response.failed", "response.incomplete", "error"})
EVENT_KEYS = [
    "response",
    "item",
    "output_index",
    "summary_index",
    "content_index",
    "text",
    "arguments",
    "input",
    "error",
    "code",
    "message",
    "delta",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(SSE_BYTES)), max_size=30))
def test_chunk_boundaries_do_not_matter(cuts: list[int]) -> None:
    assert _stream(SSE_BYTES, cuts) == EXPECTED


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(SSE_BYTES)), st.lists(st.integers(0, len(SSE_BYTES)), max_size=10))
def test_truncation_at_any_byte_is_consistent(end: int, cuts: list[int]) -> None:
    data = SSE_BYTES[:end]
    facts = _stream(data, [c for c in cuts if c <= end])
    assert facts == _stream(data)
    assert facts.completed == (end >= len(SSE_BYTES) - 2)  # the completed event needs its data line whole
    for call in facts.tool_calls:
        assert call in (SHELL_CALL, PATCH_CALL)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(r.parse_request(data), RequestFacts)
    assert isinstance(r.parse_response(data), ResponseFacts)
    assert isinstance(_stream(data), ResponseFacts)
    assert isinstance(_stream(SSE_BYTES[:200] + data), ResponseFacts)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["model", "stream", "input", "previous_response_id", "client_metadata"]), JSON
    ),
    st.lists(JSON, max_size=5),
)
def test_random_requests_never_raise(req: dict, items: list) -> None:
    assert r.parse_request_object(req).error is None
    assert r.parse_request_object({"input": [*items, _user(PROMPT), *items]}).error is None
    assert r.parse_request(json.dumps({**req, "input": items}).encode()).error is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda t, extra: {**extra, "type": t},
            st.sampled_from(EVENT_TYPES),
            st.dictionaries(st.sampled_from(EVENT_KEYS), JSON, max_size=4),
        ),
        max_size=12,
    ),
    JSON,
)
def test_random_events_never_raise(events: list[dict], body: Any) -> None:
    acc = r.StreamAccumulator()
    for e in [*_events()[:5], *events]:
        acc.on_event(e)
    assert isinstance(acc.result(), ResponseFacts)
    assert isinstance(r.parse_response(json.dumps(body).encode()), ResponseFacts)
    if isinstance(body, dict):
        assert isinstance(
            r.parse_response(json.dumps({**RESPONSE, "output": [body], "usage": body}).encode()),
            ResponseFacts,
        )


def test_deeply_nested_bodies_never_raise() -> None:
    deep = b"[" * 100_000
    assert r.parse_request(deep).error
    assert r.parse_response(deep).error
    args = '{"a":' * 100_000
    resp = {**RESPONSE, "output": [{**FUNCTION_ITEM, "arguments": args}]}
    assert r.parse_response(json.dumps(resp).encode()).tool_calls[0].input == args
