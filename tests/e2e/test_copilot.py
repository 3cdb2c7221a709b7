"""GitHub Copilot through the running proxy: Copilot in VS Code and the Copilot CLI, with their own User-Agents,
editor headers and GitHub-login bearer tokens, on api.individual.githubcopilot.com — Chat Completions, Responses
and Anthropic Messages (`/v1/messages`), driven by the official openai and anthropic SDKs."""

from __future__ import annotations

import json

import anthropic
import httpx2
import openai

from tests.support.daemon import Daemon
from tests.support.payloads import (
    anthropic_stream,
    anthropic_usage,
    chat_completion,
    chat_usage,
    responses_object,
    responses_stream,
    responses_usage,
)
from tests.support.standin import Reply, StandIn

COPILOT = "https://api.individual.githubcopilot.com"
# VS Code's Copilot token: minted from the user's GitHub login (`tid=…;exp=…;…;8kp=1:<hmac>`).
VSCODE_TOKEN = ("tid=5c1f0a8e2b7d4e6f9a3b1c0d8e7f6a5b;exp=1763803600;sku=copilot_for_individual;proxy-ep="
                "proxy.individual.githubcopilot.com;st=dotcom;chat=1;cit=1;malfil=1;8kp=1:" + "e" * 64)
CLI_TOKEN = "gho_" + "C" * 36  # the Copilot CLI's GitHub OAuth token
VSCODE_HEADERS = {
    "User-Agent": "GitHubCopilotChat/0.31.5",
    "Editor-Version": "vscode/1.104.2",
    "Editor-Plugin-Version": "copilot-chat/0.31.5",
    "Copilot-Integration-Id": "vscode-chat",
    "OpenAI-Intent": "conversation-agent",
    "X-GitHub-Api-Version": "2025-05-01",
    "X-Initiator": "user",
    "X-Interaction-Type": "conversation-agent",
    "X-Interaction-Id": "9b2f6f0c-3c1e-4d7a-8a55-1f2e3d4c5b6a",
    "VScode-SessionId": "0e2d6a4f-window-session-1763800000000",  # spans the whole window: not the session id
    "VScode-MachineId": "b5c0" + "0" * 60,
}
CLI_HEADERS = {
    "User-Agent": "copilot/0.0.403 (client/cli linux v22.17.0)",
    "Editor-Version": "copilot/0.0.403",
    "Copilot-Integration-Id": "copilot-developer-cli",
    "OpenAI-Intent": "conversation-agent",
    "X-Initiator": "user",
    "X-Client-Session-Id": "4a7d9c1e-cli-session",
}


def copilot_chat_stream(cid: str, model: str, words: list[str], usage: dict, tool_calls: list[dict] | None = None,
                        finish: str = "stop") -> Reply:
    """How Copilot streams Chat Completions: a `prompt_filter_results` chunk with an empty id first, usage on the
    chunk that carries `finish_reason`, then `[DONE]`."""
    base = {"id": cid, "created": 1763800000, "model": model, "system_fingerprint": "fp_copilot"}
    events: list[tuple[str | None, object]] = [(None, {
        "choices": [], "created": 0, "id": "", "prompt_filter_results": [
            {"content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}, "prompt_index": 0}]})]
    for w in words:
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"content": w, "role": "assistant"}}]}))
    for n, tc in enumerate(tool_calls or []):
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": n, "id": tc["id"], "type": "function",
             "function": {"name": tc["name"], "arguments": json.dumps(tc["arguments"])}}]}}]}))
    events.append((None, {**base, "choices": [{"index": 0, "finish_reason": finish, "delta": {"content": None}}],
                          "usage": usage}))
    events.append((None, "[DONE]"))
    return Reply.sse(events)


def test_vscode_chat_completions_stream(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(copilot_chat_stream("chatcmpl-CP1", "gpt-4.1-2025-04-14", ["The ", "tests ", "pass."],
                                       chat_usage(2400, 6, cached=2048)))
    c = openai.OpenAI(api_key=VSCODE_TOKEN, base_url=COPILOT, max_retries=0, default_headers=VSCODE_HEADERS)
    stream = c.chat.completions.create(model="gpt-4.1", stream=True, messages=[
        {"role": "system", "content": "You are an expert AI programming assistant."},
        {"role": "user", "content": "<context>\nThe current date is 2025-11-22.\n</context>"},
        {"role": "user", "content": "do the tests pass?"},
    ])
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == "The tests pass."
    ix = proxy_env.one(response_id="chatcmpl-CP1")
    assert (ix["provider"], ix["provider_name"], ix["model"]) == ("copilot", "copilot", "gpt-4.1")
    assert ix["client"] == "GitHub Copilot (VS Code)"
    assert ix["client_session_id"] == ix["session_id"] == VSCODE_HEADERS["X-Interaction-Id"]
    assert ix["metadata"]["route"] == "/chat/completions" and ix["metadata"]["streaming"] is True
    assert ix["status"] == "completed"
    assert [p["prompt"] for p in ix["user_prompts"]] == ["do the tests pass?"]
    [tu] = ix["token_usages"]
    assert (tu["provider_response_id"], tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (
        "chatcmpl-CP1", 352, 6, 2048)
    assert ix["credential_kind"] == "oauth" and ix["credential_hint"] == "tid=...eeee"
    assert VSCODE_TOKEN not in json.dumps(ix)
    seen = upstream.requests[-1]
    assert (seen.path, seen.headers["host"]) == ("/chat/completions", "api.individual.githubcopilot.com")
    assert seen.headers["editor-version"] == "vscode/1.104.2"
    assert seen.headers["copilot-integration-id"] == "vscode-chat"
    assert seen.headers["authorization"] == f"Bearer {VSCODE_TOKEN}"
    assert "proxy-authorization" not in seen.headers


def test_vscode_responses_stream_with_reasoning_and_a_tool_call(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(responses_stream(responses_object("resp_CPR", "gpt-5-codex", [
        {"type": "reasoning", "id": "rs_c", "summary": [{"type": "summary_text", "text": "Need the file list."}]},
        {"type": "function_call", "id": "fc_c", "call_id": "call_CPR", "name": "list_dir", "status": "completed",
         "arguments": json.dumps({"path": "."})},
    ], responses_usage(9000, 120, cached=8192, reasoning=64))))
    c = openai.OpenAI(api_key=VSCODE_TOKEN, base_url=COPILOT, max_retries=0, default_headers=VSCODE_HEADERS)
    with c.responses.stream(model="gpt-5-codex", input=[
            {"role": "user", "content": [{"type": "input_text", "text": "what files are here?"}]}]) as s:
        assert s.get_final_response().id == "resp_CPR"
    ix = proxy_env.one(response_id="resp_CPR")
    assert (ix["provider"], ix["client"], ix["metadata"]["route"]) == (
        "copilot", "GitHub Copilot (VS Code)", "/responses")
    assert ix["client_session_id"] == VSCODE_HEADERS["X-Interaction-Id"]
    assert [p["prompt"] for p in ix["user_prompts"]] == ["what files are here?"]
    [tu] = ix["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (808, 120, 8192)
    assert tu["metadata"]["output_reasoning"] == 64
    assert [(t["tool"], t["provider_tool_call_id"], t["input"]) for t in ix["tool_usages"]] == [
        ("list_dir", "call_CPR", '{"path":"."}')]
    assert [(t["content"], t["metadata"]["source"]) for t in ix["model_thoughts"]] == [
        ("Need the file list.", "reasoning_summary")]


def test_cli_anthropic_messages_on_the_copilot_host(proxy_env: Daemon, upstream: StandIn) -> None:
    model = "claude-sonnet-4.5"
    upstream.queue(anthropic_stream("msg_CPA", model, [
        {"type": "thinking", "thinking": "I should read the README first."},
        {"type": "tool_use", "id": "toolu_CPA", "name": "view", "input": {"path": "README.md"}},
    ], anthropic_usage(14, 40, cache_read=3000), stop_reason="tool_use"))
    c = anthropic.Anthropic(api_key=None, auth_token=CLI_TOKEN, base_url=COPILOT, max_retries=0,
                            default_headers=CLI_HEADERS)
    with c.messages.stream(model=model, max_tokens=512,
                           messages=[{"role": "user", "content": "summarise the README"}]) as s:
        assert s.get_final_message().stop_reason == "tool_use"
    ix = proxy_env.one(response_id="msg_CPA")
    assert (ix["provider"], ix["provider_name"], ix["model"]) == ("copilot", "copilot", model)
    assert ix["client"] == "GitHub Copilot (CLI)"
    assert ix["client_session_id"] == ix["session_id"] == CLI_HEADERS["X-Client-Session-Id"]
    assert ix["metadata"]["route"] == "/v1/messages" and ix["metadata"]["streaming"] is True
    assert [p["prompt"] for p in ix["user_prompts"]] == ["summarise the README"]
    [tu] = ix["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (14, 40, 3000)
    assert [(t["tool"], t["provider_tool_call_id"]) for t in ix["tool_usages"]] == [("view", "toolu_CPA")]
    assert [t["content"] for t in ix["model_thoughts"]] == ["I should read the README first."]
    assert ix["credential_kind"] == "oauth" and CLI_TOKEN not in json.dumps(ix)
    seen = upstream.requests[-1]
    assert (seen.path, seen.headers["authorization"]) == ("/v1/messages", f"Bearer {CLI_TOKEN}")
    assert seen.headers["copilot-integration-id"] == "copilot-developer-cli"


def test_cli_chat_tool_result_continues_the_thread(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(
        Reply.json(chat_completion("chatcmpl-CT1", "gpt-4.1", {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_CT1", "type": "function", "function": {"name": "bash", "arguments": "{\"cmd\":\"ls\"}"}}]},
            chat_usage(500, 9), finish="tool_calls")),
        Reply.json(chat_completion("chatcmpl-CT2", "gpt-4.1", {"role": "assistant", "content": "Two files."},
                                   chat_usage(540, 4))),
    )
    c = openai.OpenAI(api_key=CLI_TOKEN, base_url=COPILOT, max_retries=0, default_headers=CLI_HEADERS)
    msgs: list[dict] = [{"role": "user", "content": "list the files"}]
    first = c.chat.completions.create(model="gpt-4.1", messages=msgs)  # type: ignore[arg-type]
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": "call_CT1", "content": "a.txt b.txt"}]
    c.chat.completions.create(model="gpt-4.1", messages=msgs)  # type: ignore[arg-type]
    parent, child = proxy_env.one(response_id="chatcmpl-CT1"), proxy_env.one(response_id="chatcmpl-CT2")
    assert parent["client"] == child["client"] == "GitHub Copilot (CLI)"
    assert child["user_prompts"] == []
    assert child["thread_parent_id"] == parent["id"] == child["thread_root_id"]
    assert child["session_id"] == parent["session_id"] == CLI_HEADERS["X-Client-Session-Id"]


def test_copilot_models_list_passes_through_unrecorded(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json({"data": [{"id": "gpt-4.1"}], "object": "list"}))
    before = len(proxy_env.interceptions())
    with httpx2.Client(proxy=proxy_env.proxy_url(), verify=proxy_env.client_ssl_context()) as h:
        r = h.get(f"{COPILOT}/models", headers={**VSCODE_HEADERS, "Authorization": f"Bearer {VSCODE_TOKEN}"})
    assert r.json()["data"][0]["id"] == "gpt-4.1"
    assert len(proxy_env.interceptions(timeout=0.5)) == before
