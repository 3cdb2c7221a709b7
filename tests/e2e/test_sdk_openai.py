"""The official openai SDK through the running proxy: Chat Completions and Responses, streamed and not."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from tests.support.daemon import Daemon
from tests.support.payloads import (
    chat_completion,
    chat_stream,
    chat_usage,
    responses_object,
    responses_stream,
    responses_usage,
)
from tests.support.standin import Reply, StandIn

MODEL = "gpt-5.1-codex"
API_KEY = "sk-proj-" + "o" * 60
CODEX_HEADERS = {
    "User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)",
    "originator": "codex_exec",
    "session-id": "0199a0b3-codex-session",
}


@pytest.fixture
def proxy_env(proxy_env_each_backend: Daemon) -> Daemon:
    """These tests run against a daemon recording into SQLite and one recording into PostgreSQL."""
    return proxy_env_each_backend


def client(**kw: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, max_retries=0, **kw)  # type: ignore[arg-type]


def test_chat_completions_streaming_tool_calls_and_cached_tokens(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(chat_stream("chatcmpl-S1", "gpt-4.1", tool_calls=[
        {"id": "call_A", "name": "get_weather", "arguments": {"city": "Oslo"}},
        {"id": "call_B", "name": "get_time", "arguments": {"tz": "Europe/Oslo"}},
    ], usage=chat_usage(1200, 64, cached=1024, reasoning=16), finish="tool_calls"))
    stream = client().chat.completions.create(
        model="gpt-4.1", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather and time in Oslo"}],
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1200
    ix = proxy_env.one(response_id="chatcmpl-S1")
    assert (ix["provider"], ix["provider_name"], ix["model"]) == ("openai", "openai", "gpt-4.1")
    assert ix["metadata"]["route"] == "/v1/chat/completions" and ix["metadata"]["streaming"] is True
    assert [p["prompt"] for p in ix["user_prompts"]] == ["weather and time in Oslo"]
    [tu] = ix["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (176, 64, 1024)
    assert tu["metadata"]["completion_reasoning"] == 16
    assert [(t["tool"], t["provider_tool_call_id"], json.loads(t["input"])) for t in ix["tool_usages"]] == [
        ("get_weather", "call_A", {"city": "Oslo"}), ("get_time", "call_B", {"tz": "Europe/Oslo"})]
    assert ix["status"] == "completed"


def test_chat_completions_blocking(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json(chat_completion("chatcmpl-B1", "gpt-4.1-mini", {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_X", "type": "function", "function": {"name": "ls", "arguments": "{\"d\":\".\"}"}}],
    }, chat_usage(50, 12), finish="tool_calls")))
    resp = client().chat.completions.create(model="gpt-4.1-mini",
                                            messages=[{"role": "user", "content": "list it"}])
    assert resp.choices[0].message.tool_calls[0].function.name == "ls"  # type: ignore[index,union-attr]
    ix = proxy_env.one(response_id="chatcmpl-B1")
    assert ix["metadata"]["streaming"] is False
    assert (ix["token_usages"][0]["input_tokens"], ix["token_usages"][0]["output_tokens"]) == (50, 12)
    assert [(t["tool"], t["input"]) for t in ix["tool_usages"]] == [("ls", '{"d":"."}')]


def codex_input(prompt: str) -> list[dict]:
    return [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>\n  <cwd>/work</cwd>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
        {"type": "configuration_update", "reasoning_effort": "medium"},
    ]


def test_responses_streaming_reasoning_tools_and_thread(proxy_env: Daemon, upstream: StandIn) -> None:
    first = responses_object("resp_R1", MODEL, [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need to list files."}]},
        {"type": "message", "id": "msg_c", "role": "assistant", "status": "completed", "phase": "commentary",
         "content": [{"type": "output_text", "text": "Listing the files now.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_R1", "name": "shell", "status": "completed",
         "arguments": json.dumps({"command": ["ls", "-la"]})},
    ], responses_usage(5000, 300, cached=4096, reasoning=128))
    second = responses_object("resp_R2", MODEL, [
        {"type": "message", "id": "msg_f", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Two files.", "annotations": []}]},
    ], responses_usage(5400, 20, cached=5000))
    upstream.queue(responses_stream(first), responses_stream(second))
    c = client(default_headers=CODEX_HEADERS)
    with c.responses.stream(model=MODEL, input=codex_input("what files are here?")) as s:  # type: ignore[arg-type]
        final = s.get_final_response()
    assert final.id == "resp_R1"
    with c.responses.stream(model=MODEL, input=[
        {"type": "function_call_output", "call_id": "call_R1", "output": "a.txt b.txt"}],
            previous_response_id="resp_R1") as s:
        s.get_final_response()
    a, b = proxy_env.one(response_id="resp_R1"), proxy_env.one(response_id="resp_R2")
    assert a["client"] == "Codex" and a["client_session_id"] == "0199a0b3-codex-session"
    assert [p["prompt"] for p in a["user_prompts"]] == ["what files are here?"]
    [tu] = a["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (904, 300, 4096)
    assert tu["metadata"]["output_reasoning"] == 128
    assert [(t["content"], t["metadata"]["source"]) for t in a["model_thoughts"]] == [
        ("Need to list files.", "reasoning_summary"), ("Listing the files now.", "commentary")]
    [tool] = a["tool_usages"]
    assert (tool["tool"], tool["provider_tool_call_id"], tool["provider_item_id"]) == ("shell", "call_R1", "fc_1")
    assert json.loads(tool["input"]) == {"command": ["ls", "-la"]}
    assert b["user_prompts"] == []
    assert b["thread_parent_id"] == a["id"] and b["thread_root_id"] == a["id"]


def test_responses_blocking(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json(responses_object("resp_B", "gpt-5-mini", [
        {"type": "message", "id": "m", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "hi", "annotations": []}]}], responses_usage(10, 2))))
    r = client().responses.create(model="gpt-5-mini", input="say hi")
    assert r.output_text == "hi"
    ix = proxy_env.one(response_id="resp_B")
    assert [p["prompt"] for p in ix["user_prompts"]] == ["say hi"]
    assert ix["metadata"]["route"] == "/v1/responses"


def test_chatgpt_plan_codex_route_is_recorded_as_chatgpt(proxy_env: Daemon, upstream: StandIn) -> None:
    """Codex on a ChatGPT plan: base URL chatgpt.com/backend-api/codex, OAuth bearer token."""
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlc2lnbmF0dXJl"
    upstream.queue(responses_stream(responses_object("resp_CG", MODEL, [], responses_usage(100, 5))))
    c = openai.OpenAI(api_key=jwt, base_url="https://chatgpt.com/backend-api/codex", max_retries=0,
                      default_headers=CODEX_HEADERS)
    with c.responses.stream(model=MODEL, input=codex_input("plan user prompt")) as s:  # type: ignore[arg-type]
        s.get_final_response()
    ix = proxy_env.one(response_id="resp_CG")
    assert (ix["provider"], ix["provider_name"]) == ("openai", "chatgpt")
    assert ix["metadata"]["route"] == "/backend-api/codex/responses"
    assert ix["credential_kind"] == "oauth"
    assert jwt not in json.dumps(ix) and ix["credential_hint"].startswith("eyJh")


def test_other_chatgpt_paths_pass_through_unrecorded(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json({"ok": 1}))
    before = len(proxy_env.interceptions())
    with httpx2.Client(proxy=proxy_env.proxy_url(), verify=proxy_env.client_ssl_context()) as h:
        r = h.post("https://chatgpt.com/backend-api/conversation", json={"x": 1})
    assert r.json() == {"ok": 1}
    assert len(proxy_env.interceptions(timeout=0.3)) == before


@pytest.mark.parametrize("broken_at", [2, 5])
def test_stream_cut_mid_response_is_a_failed_partial_record(proxy_env: Daemon, upstream: StandIn,
                                                            broken_at: int) -> None:
    resp = responses_object(f"resp_cut{broken_at}", MODEL, [
        {"type": "function_call", "id": "fc_c", "call_id": f"call_cut{broken_at}", "name": "shell",
         "status": "completed", "arguments": "{\"command\":[\"pwd\"]}"}], responses_usage(10, 2))
    reply = responses_stream(resp)
    reply.cut_after = broken_at
    upstream.queue(reply)
    with pytest.raises((openai.APIError, httpx2.HTTPError)), client().responses.stream(
            model=MODEL, input=f"cut at {broken_at}") as s:
        s.get_final_response()
    ix = proxy_env.one(prompt=f"cut at {broken_at}")
    assert ix["status"] == "failed"
    assert ix["token_usages"] == []  # never invent figures the stream did not deliver
