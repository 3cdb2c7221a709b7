"""A token figure the provider did not send is never invented: the extra kinds in a usage row's metadata are the
ones the provider's usage object carried, for every API, whole body and stream alike."""

from __future__ import annotations

import json

import pytest

from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat, openai_responses
from aigw_proxy.recording.records import ResponseFacts, TokenUsage
from tests.parsers.chunking import feed_in_chunks


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def sse(*events: dict, named: bool = False) -> bytes:
    return b"".join((f"event: {e['type']}\n" if named else "").encode() + f"data: {json.dumps(e)}\n\n".encode()
                    for e in events)


# ----------------------------------------------------------------------------------------------------
# Anthropic Messages


def anthropic_message(usage: dict) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn", "usage": usage}


def anthropic_stream(start_usage: dict, delta_usage: dict) -> bytes:
    start = anthropic_message(start_usage) | {"content": [], "stop_reason": None}
    return sse({"type": "message_start", "message": start},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage},
               {"type": "message_stop"}, named=True)


def anthropic_facts(usage: dict) -> list[ResponseFacts]:
    """The whole body, and the stream that carries the same usage (output in the last message_delta)."""
    start = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    delta = {"output_tokens": usage.get("output_tokens", 0)}
    if "server_tool_use" in usage:
        delta["server_tool_use"] = usage["server_tool_use"]
    return [anthropic_messages.parse_response(body(anthropic_message(usage))),
            feed_in_chunks(anthropic_messages.stream_parser, anthropic_stream(start, delta))]


def test_anthropic_usage_without_server_tools_or_cache_breakdown_invents_no_figures() -> None:
    """What Copilot's /v1/messages and other Anthropic-shaped upstreams answer: the main figures only."""
    for facts in anthropic_facts({"input_tokens": 12, "output_tokens": 34}):
        assert facts.token_usages == [TokenUsage("msg_1", 12, 34, 0, 0, {})]


def test_anthropic_cache_totals_without_a_breakdown_are_kept_and_nothing_more() -> None:
    usage = {"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 500,
             "cache_creation_input_tokens": 0, "service_tier": "standard"}
    for facts in anthropic_facts(usage):
        assert facts.token_usages == [TokenUsage("msg_1", 12, 34, 500, 0, {
            "cache_creation_input": 0, "cache_read_input": 500})]


def test_anthropic_every_sent_figure_is_kept_zeros_included() -> None:
    usage = {"input_tokens": 3, "output_tokens": 187, "cache_read_input_tokens": 18340,
             "cache_creation_input_tokens": 2456,
             "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
             "server_tool_use": {"web_search_requests": 0}}
    for facts in anthropic_facts(usage):
        assert facts.token_usages == [TokenUsage("msg_1", 3, 187, 18340, 2456, {
            "web_search_requests": 0, "cache_creation_input": 2456, "cache_read_input": 18340,
            "cache_ephemeral_1h_input": 0, "cache_ephemeral_5m_input": 2048})]


@pytest.mark.parametrize("usage", [
    {"input_tokens": 1, "output_tokens": 2, "server_tool_use": None, "cache_creation": None},
    {"input_tokens": 1, "output_tokens": 2, "server_tool_use": {}, "cache_creation": {}},
    {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": None, "cache_creation_input_tokens": None},
])
def test_anthropic_null_or_empty_sections_are_not_figures(usage: dict) -> None:
    for facts in anthropic_facts(usage):
        assert facts.token_usages[0].metadata == {}


def test_anthropic_web_searches_sent_only_in_the_last_delta_are_kept() -> None:
    stream = anthropic_stream({"input_tokens": 5, "output_tokens": 1},
                              {"output_tokens": 9, "server_tool_use": {"web_search_requests": 2}})
    [usage] = feed_in_chunks(anthropic_messages.stream_parser, stream).token_usages
    assert usage.metadata == {"web_search_requests": 2}


# ----------------------------------------------------------------------------------------------------
# OpenAI Responses


def responses_object(usage: dict) -> dict:
    return {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-mini", "output": [],
            "usage": usage}


def responses_facts(usage: dict) -> list[ResponseFacts]:
    resp = responses_object(usage)
    stream = sse({"type": "response.created", "response": resp | {"status": "in_progress", "usage": None}},
                 {"type": "response.completed", "response": resp}, named=True)
    return [openai_responses.parse_response(body(resp)), feed_in_chunks(openai_responses.stream_parser, stream)]


def test_responses_usage_without_details_invents_no_figures() -> None:
    for facts in responses_facts({"input_tokens": 40, "output_tokens": 7}):
        assert facts.token_usages == [TokenUsage("resp_1", 40, 7, 0, 0, {})]


def test_responses_sent_figures_are_kept_zeros_included() -> None:
    usage = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 47}
    for facts in responses_facts(usage):
        assert facts.token_usages == [TokenUsage("resp_1", 40, 7, 0, 0, {
            "input_cached": 0, "output_reasoning": 0, "total_tokens": 47})]


# ----------------------------------------------------------------------------------------------------
# Chat Completions and Gemini: the same rule


def test_chat_usage_without_details_invents_no_figures() -> None:
    resp = {"id": "chatcmpl-1", "model": "gpt-4.1", "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}}
    assert openai_chat.parse_response(body(resp)).token_usages == [TokenUsage("chatcmpl-1", 40, 7, 0, 0, {})]


def test_gemini_usage_with_main_figures_only_invents_no_figures() -> None:
    resp = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 7, "thoughtsTokenCount": None},
            "responseId": "g-1"}
    assert gemini.parse_response(body(resp)).token_usages == [TokenUsage("g-1", 40, 7, 0, 0, {})]
