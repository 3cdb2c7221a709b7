"""GitHub Copilot CLI (the real `copilot`) through aigw-proxy, signed in with a GitHub OAuth token (`gho_`): its
user/token and model-list calls, then model calls on all three Copilot APIs — Responses (gpt-5-mini), Anthropic
Messages (`/v1/messages`, a Claude model) and Chat Completions (a model the list offers only there) — with tool
calls and a resumed session,
each call checked against the stand-in's ledger and Copilot's own token summary against the proxy's sums."""

from __future__ import annotations

import re
import secrets

import pytest

from tests.agents.conftest import compare_wall_time
from tests.support.agent_checks import (
    Expect,
    check_calls,
    check_secret_absent,
    check_stayed_local,
    new_rows,
    row_ids,
    sums,
)
from tests.support.agent_standin import AgentStandIn, ToolUse, Turn, Usage
from tests.support.agents import AgentHome, AgentRun, Route
from tests.support.daemon import Daemon

pytestmark = pytest.mark.real_agent("copilot")

PROMPT = "Run `echo one`, then `echo two`, then show notes.txt."
RESUMED = "Now run `echo three`."
# The stand-in's model list offers gpt-5.4-mini only on /chat/completions, so Copilot CLI calls that API for it.
API = {"gpt-5-mini": "responses", "claude-sonnet-4.5": "anthropic", "gpt-5.4-mini": "chat"}


def copilot(home: AgentHome, token: str, *args: str) -> AgentRun:
    # --disable-builtin-mcps: no GitHub MCP server (api.githubcopilot.com/mcp), --disable-client-telemetry: no
    # telemetry host; COPILOT_AUTO_UPDATE=false: no release check.
    return home.run(["copilot", *args, "--allow-all-tools", "--disable-builtin-mcps", "--disable-client-telemetry"],
                    env=home.env(COPILOT_GITHUB_TOKEN=token, COPILOT_AUTO_UPDATE="false")).check()


def small(n: int) -> Usage:
    """Figures below 1000, which Copilot's summary prints exactly (it rounds larger ones to `1.2k`)."""
    return Usage(input=40 + n, output=5 + n, cache_read=10 * n)


def tools_script(standin: AgentStandIn, home: AgentHome, api: str, commands: list[str], read: bool) -> None:
    (home.workspace / "notes.txt").write_text("hello notes\n")
    turns = [Turn(thinking="Run it." if i == 0 and api != "chat" else "", usage=small(i),
                  tools=[ToolUse("bash", {"command": c, "description": f"Run {c}"})]) for i, c in enumerate(commands)]
    if read:
        notes = str(home.workspace / "notes.txt")
        turns.append(Turn(usage=small(len(turns)), tools=[ToolUse("view", {"path": notes})]))
    turns.append(Turn(text="Done.", usage=small(len(turns))))
    standin.script(*turns, api=api, when=lambda _api, req, _h: bool(req.get("tools")))


def summary(run: AgentRun) -> tuple[int, int, int, str]:
    """(input, cached, output, session id) from the summary Copilot prints after a `-p` run."""
    text = run.stdout + run.stderr
    m = re.search(r"Tokens\s+↑\s*([\d.]+k?)\s*(?:\((\d+) cached\))?\s*•\s*↓\s*([\d.]+k?)", text)
    assert m, text[-1500:]
    assert "k" not in m.group(1) + m.group(3), "figures too large to compare exactly"
    session = re.search(r"copilot --resume=([0-9a-f-]+)", text)
    assert session, text[-1500:]
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3)), session.group(1)


def check_run(daemon: Daemon, standin: AgentStandIn, run: AgentRun, before: set[str], prompt: str, token: str,
              model: str, earlier: list[dict] | None = None) -> tuple[list[dict], str]:
    """Check a `copilot -p` run; `earlier`: the session's interceptions before a resume (Copilot's summary
    covers the whole session)."""
    inp, cached, out, session = summary(run)
    calls = standin.calls()
    assert calls and {c.model for c in calls} == {model} and {c.api for c in calls} == {API[model]}
    rows = new_rows(daemon, before, len(calls))
    check_calls(daemon, calls, rows, Expect(
        client="GitHub Copilot (CLI)", provider="copilot", provider_name="copilot", credential_kind="oauth",
        secret=token, session_id=session, prompts={calls[0].response_id: prompt}))
    s = sums([*(earlier or []), *rows])
    assert (inp, cached, out) == (s["input"] + s["cache_read"], s["cache_read"], s["output"])
    return rows, session


def test_responses_tools_and_resume(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, direct: Route,
                                    new_home: object) -> None:
    token = "gho_" + secrets.token_hex(18)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    tools_script(standin, home, "responses", ["echo one", "echo two"], read=True)
    before = row_ids(agent_daemon)
    run = copilot(home, token, "-p", PROMPT, "--model", "gpt-5-mini")
    rows, session = check_run(agent_daemon, standin, run, before, PROMPT, token, "gpt-5-mini")
    assert len(standin.calls()) == 4
    # Before its first model call it asked GitHub who the user is and Copilot which models there are.
    kinds = [r.kind for r in standin.requests]
    assert kinds.index("github") < kinds.index("models") < kinds.index("responses")

    standin.reset()
    tools_script(standin, home, "responses", ["echo three"], read=False)
    before = row_ids(agent_daemon)
    resumed = copilot(home, token, "-p", RESUMED, "--model", "gpt-5-mini", f"--resume={session}")
    _rows, again = check_run(agent_daemon, standin, resumed, before, RESUMED, token, "gpt-5-mini", rows)
    assert again == session
    check_secret_absent(agent_daemon, [token])
    check_stayed_local(agent_daemon)

    def one_session(route: Route, name: str) -> float:
        standin.reset()
        h: AgentHome = new_home(route, name)  # type: ignore[operator]
        tools_script(standin, h, "responses", ["echo one", "echo two"], read=True)
        return copilot(h, token, "-p", PROMPT, "--model", "gpt-5-mini").seconds

    compare_wall_time("copilot", one_session, proxied, direct)


def test_anthropic_messages_and_chat_completions(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route,
                                                 new_home: object) -> None:
    token = "gho_" + secrets.token_hex(18)
    for model, api in (("claude-sonnet-4.5", "anthropic"), ("gpt-5.4-mini", "chat")):
        standin.reset()
        home: AgentHome = new_home(proxied, model)  # type: ignore[operator]
        tools_script(standin, home, api, ["echo one"], read=True)
        before = row_ids(agent_daemon)
        run = copilot(home, token, "-p", PROMPT, "--model", model)
        check_run(agent_daemon, standin, run, before, PROMPT, token, model)
        assert len(standin.calls()) == 3
    check_secret_absent(agent_daemon, [token])
    check_stayed_local(agent_daemon)
