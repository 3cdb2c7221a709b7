"""Codex CLI (the real `codex` binary) through aigw-proxy: Responses over its default WebSocket transport and over
HTTP/SSE (a provider with websockets disabled), a resumed session (`codex exec resume --last`) and a ChatGPT-plan
login (`auth.json`) — every model call checked against the stand-in's ledger, and Codex's own `--json` usage
against the proxy's sums."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import subprocess
import time

import pytest

from tests.agents.conftest import compare_wall_time
from tests.support.agent_checks import (
    Expect,
    check_calls,
    check_secret_absent,
    check_stayed_local,
    new_rows,
    passthrough_routes,
    read_metrics,
    row_ids,
    sums,
)
from tests.support.agent_standin import AgentStandIn, ToolUse, Turn
from tests.support.agents import AgentHome, AgentRun, Route
from tests.support.daemon import Daemon

pytestmark = pytest.mark.real_agent("codex")

PROMPT = "Run `echo one`, then `echo two`, then show notes.txt."
RESUMED = "And now `echo three`."
# Codex's shell is a freeform `exec` tool taking JavaScript that calls its nested tools.
ECHO_ONE = 'text(await tools.exec_command({cmd: "echo one"}))'
ECHO_TWO = 'text(await tools.exec_command({cmd: "echo two"}))'
CAT_NOTES = 'text(await tools.exec_command({cmd: "cat notes.txt"}))'
ECHO_THREE = 'text(await tools.exec_command({cmd: "echo three"}))'
# A provider of Codex's own config that keeps it off the WebSocket (Codex's fallback transport).
HTTP_PROVIDER = """
model_provider = "{name}-http"
[model_providers.{name}-http]
name = "{name} over HTTP"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = true
supports_websockets = false
"""


def codex(home: AgentHome, *args: str) -> AgentRun:
    return home.run(["codex", "exec", "--json", "--skip-git-repo-check", *args]).check()


def login_with_key(home: AgentHome, key: str) -> None:
    """`codex exec` ignores OPENAI_API_KEY: it needs `codex login --with-api-key` (the key on stdin)."""
    subprocess.run(["codex", "login", "--with-api-key"], input=key, text=True, env=home.env(), cwd=home.workspace,
                   check=True, capture_output=True, timeout=60)


def _jwt(claims: dict) -> str:
    def b64(o: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.{secrets.token_urlsafe(32)}"


def chatgpt_login(home: AgentHome) -> str:
    """A ChatGPT-plan `auth.json` as `codex login` writes it; returns the access token (the bearer credential)."""
    now = int(time.time())
    auth = {"chatgpt_account_id": "acct-standin-0001", "chatgpt_plan_type": "plus", "chatgpt_user_id": "user-1"}
    common = {"iss": "https://auth.openai.com", "sub": "auth0|standin", "exp": now + 86400, "iat": now,
              "https://api.openai.com/auth": auth}
    id_token = _jwt({**common, "aud": ["app_standin"], "email": "agent@example.com", "email_verified": True})
    access = _jwt({**common, "aud": ["https://api.openai.com/v1"], "scp": ["openid", "profile", "email"]})
    (home.home / ".codex").mkdir(exist_ok=True)
    (home.home / ".codex" / "auth.json").write_text(json.dumps({
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": id_token, "access_token": access, "refresh_token": "rt_" + secrets.token_urlsafe(20),
                   "account_id": "acct-standin-0001"},
        "last_refresh": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")}))
    return access


def three_tools(standin: AgentStandIn, home: AgentHome) -> None:
    (home.workspace / "notes.txt").write_text("hello notes\n")
    standin.script(Turn(thinking="Two echoes and a cat.", tools=[ToolUse("exec", ECHO_ONE)]),
                   Turn(tools=[ToolUse("exec", ECHO_TWO)]),
                   Turn(tools=[ToolUse("exec", CAT_NOTES)]),
                   Turn(text="one, two, hello notes"), api="responses")


def check_run(daemon: Daemon, standin: AgentStandIn, run: AgentRun, before: set[str], prompt: str,
              *, kind: str, secret: str, provider_name: str, earlier: list[dict] | None = None,
              ) -> tuple[list, list[dict], str]:
    """Check a `codex exec` run's calls; `earlier`: the session's interceptions before a resume (Codex's usage
    report covers the whole session)."""
    events = run.json_lines()
    thread = next(e["thread_id"] for e in events if e["type"] == "thread.started")
    commands = [e["item"]["command"] for e in events
                if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"]
    calls = standin.calls()
    rows = new_rows(daemon, before, len(calls))
    check_calls(daemon, calls, rows, Expect(
        client="Codex", provider="openai", provider_name=provider_name, credential_kind=kind, secret=secret,
        session_id=thread, prompts={calls[0].response_id: prompt}))
    # Codex's own usage report == the proxy's sums over the session (its input counts cached input in).
    [usage] = [e["usage"] for e in events if e["type"] == "turn.completed"]
    s = sums([*(earlier or []), *rows])
    assert (usage["input_tokens"], usage["cached_input_tokens"], usage["output_tokens"],
            usage["reasoning_output_tokens"]) == (s["input"] + s["cache_read"], s["cache_read"], s["output"],
                                                  s["reasoning"])
    return commands, rows, thread


def test_websocket_tools_and_resume(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, direct: Route,
                                    new_home: object) -> None:
    key = "sk-proj-" + secrets.token_urlsafe(48)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    login_with_key(home, key)
    three_tools(standin, home)
    before = row_ids(agent_daemon)
    run = codex(home, PROMPT)
    commands, rows, thread = check_run(agent_daemon, standin, run, before, PROMPT, kind="api_key", secret=key,
                                       provider_name="openai")
    assert commands == ["/bin/bash -lc 'echo one'", "/bin/bash -lc 'echo two'", "/bin/bash -lc 'cat notes.txt'"]
    assert {c.transport for c in standin.calls()} == {"websocket"}

    standin.reset()
    standin.script(Turn(tools=[ToolUse("exec", ECHO_THREE)]), Turn(text="three"), api="responses")
    before = row_ids(agent_daemon)
    resumed = codex(home, "resume", "--last", RESUMED)
    _c, _r, resumed_thread = check_run(agent_daemon, standin, resumed, before, RESUMED, kind="api_key", secret=key,
                                       provider_name="openai", earlier=rows)
    assert resumed_thread == thread
    # Each socket upgrade is a recorded conversation, not an unrecorded passthrough request.
    assert not [r for r in passthrough_routes(read_metrics(agent_daemon)) if r.endswith("/responses")]
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)

    def session(route: Route, name: str) -> float:
        standin.reset()
        h: AgentHome = new_home(route, name)  # type: ignore[operator]
        login_with_key(h, key)
        three_tools(standin, h)
        return codex(h, PROMPT).seconds

    compare_wall_time("codex", session, proxied, direct)


def test_http_sse_transport(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, new_home: object) -> None:
    """Codex's fallback transport: POST /v1/responses with SSE. The SSE body ends some milliseconds after
    `response.completed`, by which time Codex has stopped reading: the calls still completed."""
    key = "sk-proj-" + secrets.token_urlsafe(48)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    login_with_key(home, key)
    (home.home / ".codex" / "config.toml").write_text(
        HTTP_PROVIDER.format(name="openai", base_url="https://api.openai.com/v1"))
    three_tools(standin, home)
    before = row_ids(agent_daemon)
    commands, _rows, _t = check_run(agent_daemon, standin, codex(home, PROMPT), before, PROMPT, kind="api_key",
                                    secret=key, provider_name="openai")
    assert len(commands) == 3
    assert {c.transport for c in standin.calls()} == {"http"}
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)


def test_chatgpt_plan_websocket_and_http(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route,
                                         new_home: object) -> None:
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    token = chatgpt_login(home)
    standin.script(Turn(tools=[ToolUse("exec", ECHO_ONE)]), Turn(text="one"), api="responses")
    before = row_ids(agent_daemon)
    commands, _rows, _t = check_run(agent_daemon, standin, codex(home, "Run `echo one`."), before, "Run `echo one`.",
                                    kind="oauth", secret=token, provider_name="chatgpt")
    assert commands == ["/bin/bash -lc 'echo one'"]
    assert [c.path for c in standin.calls()] == ["/backend-api/codex/responses"] * 2
    assert {c.transport for c in standin.calls()} == {"websocket"}
    # Its account check came first (and, like every non-model path, was relayed unrecorded).
    assert [r.kind for r in standin.requests if r.kind == "accounts_check"]

    # The same plan over HTTP/SSE.
    standin.reset()
    home2: AgentHome = new_home(proxied, "http")  # type: ignore[operator]
    token2 = chatgpt_login(home2)
    (home2.home / ".codex" / "config.toml").write_text(
        HTTP_PROVIDER.format(name="chatgpt", base_url="https://chatgpt.com/backend-api/codex"))
    standin.script(Turn(tools=[ToolUse("exec", ECHO_ONE)]), Turn(text="one"), api="responses")
    before = row_ids(agent_daemon)
    check_run(agent_daemon, standin, codex(home2, "Run `echo one`."), before, "Run `echo one`.", kind="oauth",
              secret=token2, provider_name="chatgpt")
    assert {c.transport for c in standin.calls()} == {"http"}
    check_secret_absent(agent_daemon, [token, token2])
    check_stayed_local(agent_daemon)
