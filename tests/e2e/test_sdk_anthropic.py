"""The official anthropic SDK through the running proxy (HTTPS_PROXY with credentials, our CA trusted), against the
stand-in upstream: the exact records a user would look at."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest
import zstandard

from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage
from tests.support.standin import Reply, StandIn

MODEL = "claude-sonnet-4-5-20250929"
API_KEY = "sk-ant-api03-" + "k" * 80

CLAUDE_CODE_HEADERS = {
    "User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "X-Claude-Code-Session-Id": "6f1c2c7e-4f3b-4a57-9d1e-0c7f2f9b1a11",
    "x-app": "cli",
}


@pytest.fixture
def proxy_env(proxy_env_each_backend: Daemon) -> Daemon:
    """These tests run against a daemon recording into SQLite and one recording into PostgreSQL."""
    return proxy_env_each_backend


def client(**kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=API_KEY, max_retries=0, **kw)  # type: ignore[arg-type]


def claude_code_messages(prompt: str) -> list[anthropic.types.MessageParam]:
    return [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer, use the context below.\n</system-reminder>"},
            {"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}},
        ]},
    ]


def test_streaming_thinking_and_tool_use_recorded_exactly(proxy_env: Daemon, upstream: StandIn) -> None:
    usage = anthropic_usage(12, 87, cache_read=20480, cache_5m=1500, cache_1h=500)
    upstream.queue(anthropic_stream("msg_01StreamA", MODEL, [
        {"type": "thinking", "thinking": "The user wants the file list; I should run ls."},
        {"type": "text", "text": "Let me look at the directory."},
        {"type": "tool_use", "id": "toolu_01Bash", "name": "Bash", "input": {"command": "ls -la", "timeout": 5}},
    ], usage, stop_reason="tool_use"))
    with client(default_headers=CLAUDE_CODE_HEADERS).messages.stream(
        model=MODEL, max_tokens=1024, messages=claude_code_messages("list the files here"),
        system="You are Claude Code.", tools=[{"name": "Bash", "description": "run", "input_schema": {
            "type": "object", "properties": {"command": {"type": "string"}}}}],
        thinking={"type": "enabled", "budget_tokens": 2000},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = final.content[2]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock), tool_use
    assert tool_use.input == {"command": "ls -la", "timeout": 5}
    ix = proxy_env.one(response_id="msg_01StreamA")
    assert ix["initiator"]["username"] == "alice"
    assert (ix["provider"], ix["provider_name"], ix["model"]) == ("anthropic", "anthropic", MODEL)
    assert ix["client"] == "Claude Code"
    assert ix["client_session_id"] == CLAUDE_CODE_HEADERS["X-Claude-Code-Session-Id"]
    assert ix["session_id"] == CLAUDE_CODE_HEADERS["X-Claude-Code-Session-Id"]
    assert ix["status"] == "completed"
    assert ix["metadata"]["streaming"] is True and ix["metadata"]["route"] == "/v1/messages"
    assert ix["metadata"]["request_user_agent"] == CLAUDE_CODE_HEADERS["User-Agent"]
    assert [p["prompt"] for p in ix["user_prompts"]] == ["list the files here"]
    assert ix["user_prompts"][0]["provider_response_id"] == "msg_01StreamA"
    [tu] = ix["token_usages"]
    assert (tu["provider_response_id"], tu["input_tokens"], tu["output_tokens"]) == ("msg_01StreamA", 12, 87)
    assert (tu["cache_read_input_tokens"], tu["cache_write_input_tokens"]) == (20480, 2000)
    assert tu["metadata"]["cache_ephemeral_5m_input"] == 1500
    assert tu["metadata"]["cache_ephemeral_1h_input"] == 500
    [tool] = ix["tool_usages"]
    assert (tool["tool"], tool["provider_tool_call_id"]) == ("Bash", "toolu_01Bash")
    assert json.loads(tool["input"]) == {"command": "ls -la", "timeout": 5}
    assert [(t["content"], t["metadata"]["source"]) for t in ix["model_thoughts"]] == [
        ("The user wants the file list; I should run ls.", "thinking")]
    # The credential is classified and masked, never stored.
    assert ix["credential_kind"] == "api_key" and API_KEY not in json.dumps(ix)
    # The upstream got the request with its original Host header and without the proxy credential.
    seen = upstream.requests[-1]
    assert seen.headers["host"] == "api.anthropic.com"
    assert "proxy-authorization" not in seen.headers
    sent_keys = (seen.headers.get("x-api-key"), seen.headers.get("authorization", "").removeprefix("Bearer "))
    assert API_KEY in sent_keys


def test_tool_result_continues_the_thread(proxy_env: Daemon, upstream: StandIn) -> None:
    """The request answering a tool call carries no prompt and joins the thread of the call that asked."""
    usage = anthropic_usage(30, 10)
    upstream.queue(
        Reply.json(anthropic_message("msg_T1", MODEL, [
            {"type": "tool_use", "id": "toolu_T1", "name": "Read", "input": {"path": "README.md"}}],
            usage, stop_reason="tool_use")),
        Reply.json(anthropic_message("msg_T2", MODEL, [{"type": "text", "text": "It is a proxy."}], usage)),
    )
    c = client()
    msgs: list[dict] = [{"role": "user", "content": "what is this repo?"}]
    first = c.messages.create(model=MODEL, max_tokens=100, messages=msgs)  # type: ignore[arg-type]
    msgs += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_T1", "content": "aigw"}]},
             {"role": "system", "content": "mid-conversation note"}]
    c.messages.create(model=MODEL, max_tokens=100, messages=msgs)  # type: ignore[arg-type]
    parent, child = proxy_env.one(response_id="msg_T1"), proxy_env.one(response_id="msg_T2")
    assert [p["prompt"] for p in parent["user_prompts"]] == ["what is this repo?"]
    assert child["user_prompts"] == []
    assert child["thread_parent_id"] == parent["id"]
    assert child["thread_root_id"] == parent["id"]
    assert parent["thread_root_id"] is None
    assert child["session_id"] == parent["id"] == parent["session_id"]


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_compressed_stream_is_relayed_unchanged_and_parsed(proxy_env: Daemon, upstream: StandIn,
                                                           encoding: str) -> None:
    usage = anthropic_usage(5, 9)
    reply = anthropic_stream(f"msg_{encoding}", MODEL, [{"type": "text", "text": "compressed hello"}], usage)
    reply.encoding = encoding
    upstream.queue(reply)
    with client().messages.stream(model=MODEL, max_tokens=50,
                                  messages=[{"role": "user", "content": f"say hi in {encoding}"}]) as s:
        text = s.get_final_text()
    assert text == "compressed hello"
    ix = proxy_env.one(response_id=f"msg_{encoding}")
    assert ix["token_usages"][0]["output_tokens"] == 9
    assert ix["user_prompts"][0]["prompt"] == f"say hi in {encoding}"
    assert ix["status"] == "completed"


def test_zstd_stream_reaches_the_client_byte_for_byte(proxy_env: Daemon, upstream: StandIn) -> None:
    """Claude Code accepts zstd: the client gets the upstream's compressed bytes unchanged; the parser reads a
    decompressed copy."""
    reply = anthropic_stream("msg_zstd", MODEL, [{"type": "text", "text": "zstd hello"}], anthropic_usage(4, 6))
    reply.encoding = "zstd"
    upstream.queue(reply)
    body = json.dumps({"model": MODEL, "max_tokens": 9, "stream": True,
                       "messages": [{"role": "user", "content": "zstd please"}]})
    with httpx2.Client(proxy=proxy_env.proxy_url(), verify=proxy_env.client_ssl_context()) as h, h.stream(
        "POST", "https://api.anthropic.com/v1/messages?beta=true", content=body,
        headers={"accept-encoding": "zstd", "content-type": "application/json", "x-api-key": API_KEY},
    ) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == b"".join(reply.chunks)
    ix = proxy_env.one(response_id="msg_zstd")
    assert ix["token_usages"][0]["output_tokens"] == 6 and ix["status"] == "completed"
    assert ix["metadata"]["route"] == "/v1/messages"  # the query string is ignored when matching


def test_non_streaming_gzip_json(proxy_env: Daemon, upstream: StandIn) -> None:
    usage = anthropic_usage(40, 7, cache_read=100)
    upstream.queue(Reply.json(anthropic_message("msg_gz", MODEL, [{"type": "text", "text": "ok"}], usage),
                              encoding="gzip"))
    msg = client().messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "gz?"}])
    assert msg.content[0].text == "ok"  # type: ignore[union-attr]
    ix = proxy_env.one(prompt="gz?")
    assert ix["metadata"]["streaming"] is False
    tu = ix["token_usages"][0]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (40, 7, 100)


def test_upstream_error_is_relayed_and_recorded_failed(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                              status=529))
    with pytest.raises(anthropic.APIStatusError) as err:
        client().messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "busy?"}])
    assert err.value.status_code == 529
    ix = proxy_env.one(prompt="busy?")
    assert ix["status"] == "failed"
    assert ix["upstream_status"] == 529
    assert "Overloaded" in ix["error_message"]


def test_mid_stream_error_event_gives_failed_partial_record(proxy_env: Daemon, upstream: StandIn) -> None:
    usage = anthropic_usage(11, 3)
    reply = anthropic_stream("msg_err", MODEL, [{"type": "text", "text": "partial answer here"}], usage)
    reply.chunks = [
        *reply.chunks[:4],
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
    ]
    upstream.queue(reply)
    with pytest.raises(anthropic.APIStatusError), client().messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "stream then fail"}]
    ) as s:
        s.get_final_text()
    ix = proxy_env.one(prompt="stream then fail")
    assert ix["status"] == "failed" and "Overloaded" in ix["error_message"]
    assert ix["token_usages"][0]["input_tokens"] == 11  # what message_start said is kept


def test_passthrough_paths_are_relayed_not_recorded(proxy_env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json({"input_tokens": 42}))
    before = len(proxy_env.interceptions())
    count = client().messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count me"}])
    assert count.input_tokens == 42
    assert upstream.requests[-1].path == "/v1/messages/count_tokens"
    assert len(proxy_env.interceptions(timeout=0.5)) == before
