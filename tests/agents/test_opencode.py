"""OpenCode (the real `opencode`) through aigw-proxy with Anthropic as its provider: the title call, tool calls,
thinking and a continued session (`--session`) — every model call checked against the stand-in's ledger, and the
token figures of OpenCode's own `step_finish` events against the proxy's sums."""

from __future__ import annotations

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
from tests.support.agent_standin import AgentStandIn, ToolUse, Turn
from tests.support.agents import AgentHome, AgentRun, Route
from tests.support.daemon import Daemon

pytestmark = pytest.mark.real_agent("opencode")

PROMPT = "Run echo one, then echo two, then read notes.txt."
RESUMED = "Now run echo three."
MODEL = "anthropic/claude-sonnet-4-5"


def _with_tools(api: str, req: dict, headers: dict[str, str]) -> bool:
    return bool(req.get("tools"))  # the title call offers none


def opencode(home: AgentHome, key: str, *args: str) -> AgentRun:
    # OpenCode installs plugins with its bundled npm at start-up: keep that npm offline (no registry traffic).
    (home.home / ".npmrc").write_text("offline=true\n")
    return home.run(["opencode", "run", "--pure", "--format", "json", "-m", MODEL, *args],
                    env=home.env(ANTHROPIC_API_KEY=key)).check()


def three_tools(standin: AgentStandIn, home: AgentHome) -> None:
    notes = home.workspace / "notes.txt"
    notes.write_text("hello notes\n")
    standin.script(
        Turn(thinking="Two echoes, then the file.",
             tools=[ToolUse("bash", {"command": "echo one", "description": "Print one"})]),
        Turn(tools=[ToolUse("bash", {"command": "echo two", "description": "Print two"})]),
        Turn(tools=[ToolUse("read", {"filePath": str(notes)})]),
        Turn(text="one, two, hello notes"), api="anthropic", when=_with_tools)


def check_run(daemon: Daemon, standin: AgentStandIn, run: AgentRun, before: set[str], prompt: str, key: str) -> str:
    events = run.json_lines()
    [session] = {e["sessionID"] for e in events}
    calls = standin.calls()
    main = [c for c in calls if c.request.get("tools")]
    title = [c for c in calls if not c.request.get("tools")]
    rows = new_rows(daemon, before, len(calls))
    # OpenCode quotes an argument that holds spaces before sending it: the text the model got is the prompt in
    # quotes, and that is what is recorded (for the title call too, which gets the same text to summarise).
    sent = f'"{prompt}"'
    by_rid = check_calls(daemon, calls, rows, Expect(
        client="OpenCode", provider="anthropic", provider_name="anthropic", credential_kind="api_key", secret=key,
        session_id=session, prompts={c.response_id: sent for c in [main[0], *title]}))
    # OpenCode's step_finish token figures, summed, == the proxy's sums over the same (main-loop) calls.
    steps = [e["part"]["tokens"] for e in events if e["type"] == "step_finish"]
    assert len(steps) == len(main)
    s = sums(by_rid[c.response_id] for c in main)
    assert (sum(t["input"] for t in steps), sum(t["output"] for t in steps), sum(t["cache"]["read"] for t in steps),
            sum(t["cache"]["write"] for t in steps)) == (s["input"], s["output"], s["cache_read"], s["cache_write"])
    tools = [e["part"]["tool"] for e in events if e["type"] == "tool_use"]
    assert tools == [t.name for c in main for t in c.turn.tools]
    return session


def test_tools_and_continued_session(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, direct: Route,
                                     new_home: object) -> None:
    key = "sk-ant-api03-" + secrets.token_urlsafe(60)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    three_tools(standin, home)
    before = row_ids(agent_daemon)
    run = opencode(home, key, PROMPT)
    session = check_run(agent_daemon, standin, run, before, PROMPT, key)

    standin.reset()
    standin.script(Turn(tools=[ToolUse("bash", {"command": "echo three", "description": "Print three"})]),
                   Turn(text="three"), api="anthropic", when=_with_tools)
    before = row_ids(agent_daemon)
    again = check_run(agent_daemon, standin, opencode(home, key, "--session", session, RESUMED), before, RESUMED,
                      key)
    assert again == session
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)

    def one_session(route: Route, name: str) -> float:
        standin.reset()
        h: AgentHome = new_home(route, name)  # type: ignore[operator]
        three_tools(standin, h)
        return opencode(h, key, PROMPT).seconds

    compare_wall_time("opencode", one_session, proxied, direct)
