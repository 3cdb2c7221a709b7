"""Subscription logins through the running proxy: Claude Code on a Claude plan and Codex on a ChatGPT plan send
OAuth bearer tokens instead of API keys. Their calls are recorded like any other, with the credential kind
`oauth` and a masked hint, and the token itself appears nowhere the proxy writes (database, WAL, log)."""

from __future__ import annotations

import base64
import itertools
import json

import anthropic
import openai

from tests.support.daemon import Daemon
from tests.support.payloads import (
    anthropic_stream,
    anthropic_usage,
    responses_object,
    responses_stream,
    responses_usage,
)
from tests.support.standin import StandIn
from tests.support.ws_standin import Script, WsStandIn, responses_events

CLAUDE_CODE_HEADERS = {
    "User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "X-Claude-Code-Session-Id": "3c0e7a52-sub-claude-plan",
    "anthropic-beta": "claude-code-20250219,oauth-2025-04-20",
    "x-app": "cli",
}
CODEX_HEADERS = {
    "User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)",
    "originator": "codex_exec",
    "session-id": "0199a0b3-sub-chatgpt-plan",
    "chatgpt-account-id": "acct-sub-test",
}
CHATGPT_BASE = "https://chatgpt.com/backend-api/codex"
MODEL = "gpt-5.1-codex"


def chatgpt_jwt(subject: str) -> str:
    """A ChatGPT-plan access token's shape: a signed JWT (header.payload.signature, base64url)."""
    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return ".".join([b64({"alg": "RS256", "typ": "JWT"}),
                     b64({"sub": subject, "https://api.openai.com/auth": {"chatgpt_plan_type": "pro"}}),
                     b64({"sig": subject * 8})])


def assert_secret_nowhere(daemon: Daemon, secret: str, hint: str) -> None:
    """Neither the token nor any long piece of it is in a file the proxy wrote (SQLite db, WAL, CA) or its log,
    while its recorded hint is (so these are the files the records went to)."""
    pieces = [secret.encode(), secret[6:-6].encode()]
    files = [p for p in daemon.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) and any(p.suffix == ".db" for p in files)
    contents = {path.name: path.read_bytes() for path in [*files, daemon.log_path]}
    for name, data in contents.items():
        assert not any(piece in data for piece in pieces), f"the secret leaked into {name}"
    assert any(hint.encode() in data for data in contents.values())


def recorded_credentials(ix: dict) -> tuple[str, str]:
    return ix["credential_kind"], ix["credential_hint"]


def test_claude_plan_oauth_token_is_recorded_as_oauth(proxy_env: Daemon, upstream: StandIn) -> None:
    token = "sk-ant-oat01-" + "Q7x" * 30 + "-end9"
    upstream.queue(anthropic_stream("msg_01ClaudePlan", "claude-sonnet-4-5-20250929",
                                    [{"type": "text", "text": "Hello from the plan."}], anthropic_usage(9, 5)))
    c = anthropic.Anthropic(auth_token=token, max_retries=0, default_headers=CLAUDE_CODE_HEADERS)
    with c.messages.stream(model="claude-sonnet-4-5-20250929", max_tokens=256,
                           messages=[{"role": "user", "content": "hello on my Claude plan"}]) as s:
        assert s.get_final_text() == "Hello from the plan."
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {token}"  # the provider still gets it
    ix = proxy_env.one(response_id="msg_01ClaudePlan")
    assert recorded_credentials(ix) == ("oauth", "sk-a...end9")
    assert (ix["client"], ix["status"], ix["initiator"]["username"]) == ("Claude Code", "completed", "alice")
    assert [p["prompt"] for p in ix["user_prompts"]] == ["hello on my Claude plan"]
    assert (ix["token_usages"][0]["input_tokens"], ix["token_usages"][0]["output_tokens"]) == (9, 5)
    assert token not in json.dumps(ix)
    assert_secret_nowhere(proxy_env, token, ix["credential_hint"])


def test_chatgpt_plan_jwt_over_http_is_recorded_as_oauth(proxy_env: Daemon, upstream: StandIn) -> None:
    token = chatgpt_jwt("http-plan-user")
    upstream.queue(responses_stream(responses_object("resp_PLAN_HTTP", MODEL, [], responses_usage(70, 4))))
    c = openai.OpenAI(api_key=token, base_url=CHATGPT_BASE, max_retries=0, default_headers=CODEX_HEADERS)
    with c.responses.stream(model=MODEL, input="hello on my ChatGPT plan") as s:
        s.get_final_response()
    ix = proxy_env.one(response_id="resp_PLAN_HTTP")
    assert (ix["provider"], ix["provider_name"], ix["metadata"]["transport"]) == ("openai", "chatgpt", "http")
    assert recorded_credentials(ix) == ("oauth", f"{token[:4]}...{token[-4:]}")
    assert ix["client_session_id"] == "0199a0b3-sub-chatgpt-plan"
    assert_secret_nowhere(proxy_env, token, ix["credential_hint"])


def test_chatgpt_plan_jwt_over_websocket_is_recorded_as_oauth(ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    token = chatgpt_jwt("ws-plan-user")
    ws_upstream.queue(Script(responses_events(responses_object("resp_PLAN_WS", MODEL, [], responses_usage(80, 6)))))
    c = openai.OpenAI(api_key=token, base_url=CHATGPT_BASE, max_retries=0, default_headers=CODEX_HEADERS)
    with c.responses.connect(extra_headers={"openai-beta": "responses_websockets=2026-02-06"}) as conn:
        conn.response.create(model=MODEL, input="hello over a socket on my ChatGPT plan")
        for event in itertools.islice(conn, 100):
            if event.type == "response.completed":
                break
    assert ws_upstream.sockets[0].handshake.headers["authorization"] == f"Bearer {token}"
    ix = ws_proxy_env.one(response_id="resp_PLAN_WS")
    assert (ix["provider_name"], ix["metadata"]["transport"], ix["status"]) == ("chatgpt", "websocket", "completed")
    assert recorded_credentials(ix) == ("oauth", f"{token[:4]}...{token[-4:]}")
    assert_secret_nowhere(ws_proxy_env, token, ix["credential_hint"])
