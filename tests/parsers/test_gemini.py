"""Gemini API parser: requests, whole bodies, both stream forms (SSE, streamed JSON array), broken input; and the
shared JSON-array splitter."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.parsing import gemini as gm
from aigw_proxy.intercept.parsing import jsonarray
from aigw_proxy.intercept.parsing.jsonarray import JSONArraySplitter
from aigw_proxy.recording.records import ModelThought, ResponseFacts, TokenUsage, ToolCall
from tests.parsers.chunking import StreamParser, feed_in_chunks

RESP_ID = "mPfcaN2nB8ak1dkPtr3HwQk"
MODEL = "gemini-2.5-pro"


def body(value: object) -> bytes:
    return json.dumps(value).encode()


# ----------------------------------------------------------------------------------------------------
# Requests

def request(*contents: dict, **extra: object) -> bytes:
    return body({"contents": list(contents), "systemInstruction": {"parts": [{"text": "You are Gemini CLI."}]},
                 "generationConfig": {"thinkingConfig": {"includeThoughts": True}}, **extra})


def user(*parts: dict) -> dict:
    return {"role": "user", "parts": list(parts)}


def test_prompt_is_the_first_typed_text_of_the_newest_user_turn() -> None:
    facts = gm.parse_request(request(
        user({"text": "hi"}),
        {"role": "model", "parts": [{"text": "Hello!"}]},
        user({"text": "explain @src/main.py"}, {"text": "\n--- Content from referenced files ---"},
             {"text": "\nContent from @src/main.py:\n"}, {"text": "print('hi')"}, {"text": "\n--- End of content ---"}),
    ))
    assert facts.prompt == "explain @src/main.py"
    assert (facts.model, facts.stream, facts.correlating_tool_call_id, facts.error) == (None, False, None, None)


@pytest.mark.parametrize(
    ("contents", "prompt"),
    [
        ([{"parts": [{"text": "no role means user"}]}], "no role means user"),
        ([{"role": None, "parts": [{"text": "null role too"}]}], "null role too"),
        ([user({"text": "q"}), {"role": "model", "parts": [{"text": "a"}]}], None),
        ([user({"text": "<system-reminder>ctx</system-reminder>"}, {"text": "typed"})], "typed"),
        ([user({"text": "  "}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}, {"text": "look"})], "look"),
        ([user({"text": "draft", "thought": True}, {"text": "real"})], "real"),
        ([user({"inlineData": {"mimeType": "image/png", "data": "iVBO"}})], None),
        ([], None),
        (["not a content", user({"text": "x"})], "x"),
    ],
)
def test_prompt_rules(contents: list, prompt: str | None) -> None:
    assert gm.parse_request(body({"contents": contents})).prompt == prompt


@pytest.mark.parametrize(
    ("responses", "correlating"),
    [
        ([{"id": "fc-7Qm2", "name": "list_directory", "response": {"output": "a"}}], "fc-7Qm2"),
        ([{"name": "read_file", "response": {"output": "a"}}], "read_file"),
        # Gemini CLI's invented id for a call the model sent without one: the name is the link.
        ([{"id": "read_file-1763800000123-5f3a9c2e1b7d", "name": "read_file", "response": {}}], "read_file"),
        ([{"id": "read_file-call-1", "name": "read_file", "response": {}}], "read_file-call-1"),
        ([{"id": "a", "name": "x", "response": {}}, {"id": "b", "name": "y", "response": {}}], "b"),
        ([{"response": {}}], None),
    ],
)
def test_function_responses_continue_the_calls_thread(responses: list[dict], correlating: str | None) -> None:
    facts = gm.parse_request(request(
        user({"text": "list it"}),
        {"role": "model", "parts": [{"functionCall": {"name": "list_directory", "args": {}}}]},
        user(*({"functionResponse": r} for r in responses)),
    ))
    assert facts.prompt is None
    assert facts.correlating_tool_call_id == correlating


def test_model_in_the_body_is_used_when_present() -> None:
    assert gm.parse_request(body({"model": "models/gemini-2.5-flash", "contents": []})).model == "gemini-2.5-flash"
    assert gm.parse_request(body({"model": 3, "contents": []})).model is None


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b"not json", b"\xff\xfe\x00", b'{"contents": [', b"[" * 100_000])
def test_unreadable_request_bodies_give_an_error(raw: bytes) -> None:
    facts = gm.parse_request(raw)
    assert facts.error and facts.prompt is None


# ----------------------------------------------------------------------------------------------------
# Responses: a thought summary, text, a function call with and without an id, cached and thought tokens

def chunk(parts: list[dict], usage: dict, finish: str | None = None) -> dict:
    candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL, "responseId": RESP_ID}


EARLY_USAGE = {"promptTokenCount": 6120, "totalTokenCount": 6120, "cachedContentTokenCount": 5000,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 6120}]}
FULL_USAGE = {"promptTokenCount": 6120, "candidatesTokenCount": 57, "totalTokenCount": 6431,
              "cachedContentTokenCount": 5000, "thoughtsTokenCount": 254,
              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 6120}],
              "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 5000}]}
CHUNKS = [
    chunk([{"text": "**Inspecting the build**\n\nThe user wants the failing test, ", "thought": True}], EARLY_USAGE),
    chunk([{"text": "so I will read the log first.", "thought": True}], EARLY_USAGE),
    chunk([{"text": "I'll check the log."}], EARLY_USAGE),
    chunk([{"functionCall": {"name": "read_file", "args": {"absolute_path": "/work/build.log", "limit": 200}},
            "thoughtSignature": "CiQBVKhc"}], EARLY_USAGE),
    chunk([{"functionCall": {"id": "fc-2", "name": "run_shell_command", "args": {"command": "ls -la"}}}],
          FULL_USAGE, finish="STOP"),
]
WHOLE_BODY = body({**chunk([p for c in CHUNKS for p in c["candidates"][0]["content"]["parts"]], FULL_USAGE,
                           finish="STOP")})
SSE = b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in CHUNKS)
ARRAY = b"[" + b",\r\n".join(json.dumps(c, indent=2, ensure_ascii=False).encode() + b"\n" for c in CHUNKS) + b"]"

EXPECTED = ResponseFacts(
    response_ids=[RESP_ID],
    model=MODEL,
    token_usages=[TokenUsage(
        provider_response_id=RESP_ID,
        input_tokens=1120,  # 6120 prompt tokens − 5000 cached
        output_tokens=311,  # 57 candidate tokens + 254 thinking tokens (billed as output)
        cache_read_input_tokens=5000,
        cache_write_input_tokens=0,
        metadata={"output_reasoning": 254, "total_tokens": 6431},
    )],
    tool_calls=[
        ToolCall(RESP_ID, "read_file", "read_file", '{"absolute_path":"/work/build.log","limit":200}'),
        ToolCall(RESP_ID, "fc-2", "run_shell_command", '{"command":"ls -la"}'),
    ],
    thoughts=[ModelThought("**Inspecting the build**\n\nThe user wants the failing test, so I will read the log first.",
                           "reasoning_summary")],
    completed=True,
)


def run(parser_factory: Callable[[], StreamParser], data: bytes, step: int | None = None) -> ResponseFacts:
    return feed_in_chunks(parser_factory, data, step)


def test_whole_body() -> None:
    assert gm.parse_response(WHOLE_BODY) == EXPECTED


def test_both_stream_forms_equal_the_whole_body() -> None:
    assert run(gm.stream_parser, SSE) == EXPECTED
    assert run(gm.json_stream_parser, ARRAY) == EXPECTED


def test_one_byte_chunks() -> None:
    assert run(gm.stream_parser, SSE, 1) == EXPECTED
    assert run(gm.json_stream_parser, ARRAY, 1) == EXPECTED


def test_a_whole_streamed_array_read_as_one_body() -> None:
    assert gm.parse_response(ARRAY) == EXPECTED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(0, 10_000), max_size=40), form=st.sampled_from(["sse", "array"]))
def test_any_chunking_gives_identical_facts(cuts: list[int], form: str) -> None:
    data = SSE if form == "sse" else ARRAY
    bounds = [0, *sorted(c * len(data) // 10_000 for c in cuts), len(data)]
    parser = gm.stream_parser() if form == "sse" else gm.json_stream_parser()
    for a, b in itertools.pairwise(bounds):
        parser.feed(data[a:b])
    assert parser.finish() == EXPECTED


def test_usage_figures_not_sent_are_not_invented() -> None:
    facts = gm.parse_response(body(chunk([{"text": "ok"}], {"promptTokenCount": 9, "candidatesTokenCount": 1},
                                         finish="STOP")))
    assert facts.token_usages == [TokenUsage(RESP_ID, 9, 1, 0, 0, {})]


def test_usage_fields_merge_across_chunks_and_the_last_value_wins() -> None:
    facts = run(gm.stream_parser, b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in [
        chunk([{"text": "a"}], {"promptTokenCount": 10, "thoughtsTokenCount": 3}),
        chunk([{"text": "b"}], {"promptTokenCount": 10, "candidatesTokenCount": 4, "toolUsePromptTokenCount": 2},
              finish="MAX_TOKENS"),
    ]))
    assert facts.token_usages == [TokenUsage(RESP_ID, 10, 7, 0, 0, {"output_reasoning": 3, "tool_use_prompt": 2})]
    assert facts.completed is True


def test_cached_above_prompt_clamps_input_at_zero() -> None:
    facts = gm.parse_response(body(chunk([], {"promptTokenCount": 5, "cachedContentTokenCount": 64}, "STOP")))
    assert (facts.token_usages[0].input_tokens, facts.token_usages[0].cache_read_input_tokens) == (0, 64)


def test_blocked_prompt_is_a_complete_answer_without_candidates() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 12},
               "modelVersion": MODEL, "responseId": RESP_ID}
    for facts in (gm.parse_response(body(blocked)), run(gm.stream_parser, f"data: {json.dumps(blocked)}\n\n".encode())):
        assert facts.completed is True and facts.error is None
        assert facts.token_usages == [TokenUsage(RESP_ID, 12, 0, 0, 0, {})]


def test_thoughts_of_parallel_candidates_stay_apart() -> None:
    two = {"responseId": RESP_ID, "candidates": [
        {"index": 0, "content": {"parts": [{"text": "zero ", "thought": True}]}},
        {"index": 1, "content": {"parts": [{"text": "one ", "thought": True}]}},
    ]}
    end = {"responseId": RESP_ID, "candidates": [
        {"index": 0, "content": {"parts": [{"text": "thinking", "thought": True}, {"text": "A"}]},
         "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [{"text": "thinking"}]}, "finishReason": "STOP"},
    ]}
    facts = run(gm.stream_parser, b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in (two, end)))
    assert [t.content for t in facts.thoughts] == ["zero thinking", "one "]


# ----------------------------------------------------------------------------------------------------
# Truncation, errors and broken input

def test_stream_without_a_finish_reason_is_not_complete() -> None:
    for factory, data in ((gm.stream_parser, SSE), (gm.json_stream_parser, ARRAY)):
        cut = data.rindex(b",\r\n{" if factory is gm.json_stream_parser else b"data: ")  # before the last chunk
        facts = run(factory, data[:cut])
        assert facts.completed is False and facts.error is None
        assert facts.tool_calls == EXPECTED.tool_calls[:1]  # function calls arrive whole
        assert facts.thoughts == EXPECTED.thoughts  # what did arrive counts
        assert facts.token_usages == [TokenUsage(RESP_ID, 1120, 0, 5000, 0, {"total_tokens": 6120})]


GOOGLE_ERROR = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                          "status": "RESOURCE_EXHAUSTED"}}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (body(GOOGLE_ERROR), "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."),
        (body([GOOGLE_ERROR]), "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."),
        (body({"error": {"code": 400, "message": "API key not valid."}}), "API key not valid."),
        (body({"error": {"status": "UNAVAILABLE"}}), "UNAVAILABLE"),
        (body({"error": "quota"}), "quota"),
    ],
)
def test_error_bodies(raw: bytes, error: str) -> None:
    facts = gm.parse_response(raw)
    assert facts.error == error
    assert facts.completed is False and facts.token_usages == []


def test_error_on_a_stream_route_in_either_form() -> None:
    assert run(gm.json_stream_parser, body(GOOGLE_ERROR)).error == (
        "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota).")
    assert run(gm.json_stream_parser, body([GOOGLE_ERROR])).completed is False


def test_mid_stream_error_fails_the_stream_and_keeps_what_arrived() -> None:
    for form, err in (("sse", f"data: {json.dumps(GOOGLE_ERROR)}\r\n\r\n".encode()),
                      ("array", b",\r\n" + body(GOOGLE_ERROR) + b"\n]")):
        if form == "sse":
            facts = run(gm.stream_parser, b"".join(f"data: {json.dumps(c)}\r\n\r\n".encode() for c in CHUNKS[:4]) + err)
        else:
            facts = run(gm.json_stream_parser, b"[" + b",".join(body(c) for c in CHUNKS[:4]) + err)
        assert facts.error == "RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."
        assert facts.completed is False
        assert facts.tool_calls == EXPECTED.tool_calls[:1]


def test_malformed_elements_are_counted_and_skipped() -> None:
    garbage = b',\n{"candidates": [1,]}\n, 42, "text",\n'  # invalid JSON inside balanced brackets; not objects
    array = b"[" + body(CHUNKS[0]) + garbage + b",".join(body(c) for c in CHUNKS[1:]) + b"]"
    facts = run(gm.json_stream_parser, array)
    assert facts.parse_errors == 3
    assert (facts.tool_calls, facts.thoughts, facts.completed) == (EXPECTED.tool_calls, EXPECTED.thoughts, True)
    sse = SSE.replace(b"data: ", b"data: {not json}\r\n\r\ndata: ", 1)
    assert run(gm.stream_parser, sse).parse_errors == 1


def test_an_oversized_element_is_skipped_with_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonarray, "MAX_ELEMENT", 1000)
    huge = chunk([{"text": "x" * 5000}], EARLY_USAGE)
    data = b"[" + body(huge) + b"," + b",".join(body(c) for c in CHUNKS) + b"]"
    splitter = JSONArraySplitter()
    out = [e for i in range(0, len(data), 100) for e in splitter.feed(data[i:i + 100])]
    assert len(out) == len(CHUNKS) and splitter.malformed == 1 and splitter.complete
    facts = run(gm.json_stream_parser, data, 100)
    assert facts.parse_errors == 1 and facts.tool_calls == EXPECTED.tool_calls


@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b"\x80\x81", b'{"candidates": [', b"42",
                                 b"[1, 2]", b"[]"])
def test_unreadable_response_bodies(raw: bytes) -> None:
    facts = gm.parse_response(raw)
    assert facts.error and facts.parse_errors == 1 and facts.completed is False


def test_non_json_stream_body_is_counted_not_raised() -> None:
    facts = run(gm.json_stream_parser, b"<html>502 Bad Gateway</html>")
    assert facts.parse_errors == 1 and facts.completed is False
    assert run(gm.json_stream_parser, b"") == ResponseFacts()
    assert run(gm.stream_parser, b"") == ResponseFacts()


# ----------------------------------------------------------------------------------------------------
# The JSON-array splitter on its own

def split(data: bytes, step: int = 1) -> tuple[list[bytes], JSONArraySplitter]:
    s = JSONArraySplitter()
    return [e for i in range(0, len(data), step) for e in s.feed(data[i:i + step])], s


def test_splitter_tracks_strings_escapes_and_nesting() -> None:
    data = b' [ {"a": "x]},\\"{y\\\\", "b": [1, [2], {"c": "]"}]} ,\n"s\\"]", -1.5e3 , true,null, [[]] ]  trailing'
    for step in (1, 2, 3, len(data)):
        out, s = split(data, step)
        assert out == [b'{"a": "x]},\\"{y\\\\", "b": [1, [2], {"c": "]"}]}', b'"s\\"]"', b"-1.5e3", b"true", b"null",
                       b"[[]]"]
        assert s.complete and s.malformed == 0


def test_splitter_hands_on_a_lone_object() -> None:
    out, s = split(b'\xef\xbb\xbf {"error": {"code": 500}}\n')
    assert out == [b'{"error": {"code": 500}}'] and s.complete


def test_splitter_gives_up_on_a_body_that_is_not_json() -> None:
    out, s = split(b"<html>[{}]</html>")
    assert out == [] and s.malformed == 1 and not s.complete


ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='"\\[]{},: \n\tab€'),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                        max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ANY_JSON, max_size=6), cuts=st.lists(st.integers(0, 2000), max_size=12),
       indent=st.sampled_from([None, 2]))
def test_splitter_yields_each_element_whatever_the_chunking(values: list, cuts: list[int], indent: int | None) -> None:
    data = json.dumps(values, indent=indent, ensure_ascii=False).encode()
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    s = JSONArraySplitter()
    out = [e for a, b in itertools.pairwise(bounds) for e in s.feed(data[a:b])]
    assert [json.loads(e) for e in out] == values
    assert s.complete and s.malformed == 0


def test_splitter_holds_an_unfinished_element() -> None:
    out, s = split(b'[{"a": 1}, {"b": "unterminated')
    assert out == [b'{"a": 1}'] and not s.complete


# ----------------------------------------------------------------------------------------------------
# Nothing raises, whatever the input

KEYS = st.sampled_from([
    "candidates", "content", "parts", "text", "thought", "functionCall", "functionResponse", "name", "args", "id",
    "finishReason", "index", "usageMetadata", "promptTokenCount", "candidatesTokenCount", "cachedContentTokenCount",
    "thoughtsTokenCount", "responseId", "modelVersion", "promptFeedback", "blockReason", "error", "contents", "role",
])
LEAVES = (st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=12)
          | st.sampled_from(["user", "model", "STOP", "SAFETY"]))
JSON = st.recursive(LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=6), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_random_json_bodies_never_raise(value: object) -> None:
    raw = json.dumps(value).encode()
    gm.parse_request(raw)
    gm.parse_response(raw)
    gm.parse_request(body({"contents": [value]}))
    gm.parse_request(body({"contents": [{"parts": [value]}]}))


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.dictionaries(KEYS, JSON, max_size=6), max_size=12))
def test_random_chunks_never_raise(events: list[dict]) -> None:
    acc = gm.StreamAccumulator()
    for event in events:
        acc.on_event(event)
    assert isinstance(acc.result(), ResponseFacts)
    array = b"[" + b",".join(body(e) for e in events) + b"]"
    for parser, data in ((gm.stream_parser(), b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)),
                         (gm.json_stream_parser(), array)):
        parser.feed(data)
        parser.finish()


@pytest.mark.parametrize("junk", [b"\x0c", b"\x0b", b"1\x0c2"])
def test_form_feed_and_vertical_tab_between_elements_end(junk: bytes) -> None:
    """Not JSON whitespace: counted as a malformed element, and the splitter moves on (it once looped for ever)."""
    splitter = JSONArraySplitter()
    elements = list(itertools.islice(splitter.feed(b"[" + junk + b', {"a": 1}]'), 10))
    assert elements[-1] == b'{"a": 1}' and len(elements) <= 3
    assert splitter.complete
