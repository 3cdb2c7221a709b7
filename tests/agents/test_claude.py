"""Claude Code (the real `claude` binary) through aigw-proxy: tool calls, thinking, a resumed session, a Claude plan
(OAuth) login and a subagent launched with the Agent tool — every model call checked against what the stand-in
answered, and Claude Code's own `--output-format json` usage against the proxy's sums."""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.real_agent("claude")

PROMPT = "Run `echo one`, then `echo two`, then read notes.txt, and tell me what you saw."
RESUMED = "Now run `echo three`."
TASK = "Run the command `echo from-subagent` and report its output."


def _main(api: str, req: dict, headers: dict[str, str]) -> bool:
    return headers.get("x-claude-code-request-class", "main") == "main"


def _subagent(api: str, req: dict, headers: dict[str, str]) -> bool:
    return headers.get("x-claude-code-request-class") == "subagent"


def claude(home: AgentHome, prompt: str, *extra: str, **env: str) -> AgentRun:
    return home.run(["claude", "-p", prompt, "--output-format", "json", "--allowedTools", "Bash", "Read", "Agent",
                     *extra], env=home.env(**env)).check()


def three_tools(standin: AgentStandIn, home: AgentHome) -> None:
    notes = home.workspace / "notes.txt"
    notes.write_text("the notes say hello\n")
    standin.script(
        Turn(thinking="Three steps: two echoes and a read.",
             tools=[ToolUse("Bash", {"command": "echo one", "description": "Print one"})]),
        Turn(tools=[ToolUse("Bash", {"command": "echo two", "description": "Print two"})]),
        Turn(tools=[ToolUse("Read", {"file_path": str(notes)})]),
        Turn(text="I saw one, two and the notes saying hello."),
        api="anthropic", when=_main)


def usage_matches(out: dict, main_rows: list[dict], rows: list[dict] | None = None) -> None:
    """Claude Code's own totals == the proxy's sums: `usage` over this run's main-thread calls, `modelUsage` (per
    model, summed here) over every call of the session (a resumed session's too)."""
    s = sums(main_rows)
    u = out["usage"]
    assert (u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"]) \
        == (s["input"], s["output"], s["cache_read"], s["cache_write"])
    s = sums(rows if rows is not None else main_rows)
    m = out["modelUsage"].values()
    assert (sum(x["inputTokens"] for x in m), sum(x["outputTokens"] for x in m),
            sum(x["cacheReadInputTokens"] for x in m), sum(x["cacheCreationInputTokens"] for x in m)) \
        == (s["input"], s["output"], s["cache_read"], s["cache_write"])


def test_tools_thinking_and_resume(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, direct: Route,
                                   new_home: object) -> None:
    key = "sk-ant-api03-" + secrets.token_urlsafe(60)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    three_tools(standin, home)
    before = row_ids(agent_daemon)
    run = claude(home, PROMPT, ANTHROPIC_API_KEY=key)
    out = json.loads(run.stdout)
    assert out["result"] == "I saw one, two and the notes saying hello." and out["num_turns"] == 4
    calls = standin.calls()
    assert len(calls) == 4 and [len(c.turn.tools) for c in calls] == [1, 1, 1, 0]
    rows = new_rows(agent_daemon, before, len(calls))
    expect = Expect(client="Claude Code", provider="anthropic", provider_name="anthropic", credential_kind="api_key",
                    secret=key, session_id=out["session_id"], prompts={calls[0].response_id: PROMPT})
    check_calls(agent_daemon, calls, rows, expect)
    usage_matches(out, rows)
    first_rows = rows

    # Resumed: the same Claude Code session id, a new prompt, the thread continues from the resumed history.
    standin.reset()
    standin.script(Turn(tools=[ToolUse("Bash", {"command": "echo three", "description": "Print three"})]),
                   Turn(text="three"), api="anthropic", when=_main)
    before = row_ids(agent_daemon)
    resumed = json.loads(claude(home, RESUMED, "--resume", out["session_id"], ANTHROPIC_API_KEY=key).stdout)
    assert resumed["session_id"] == out["session_id"]
    calls = standin.calls()
    rows = new_rows(agent_daemon, before, len(calls))
    check_calls(agent_daemon, calls, rows, Expect(**{**expect.__dict__, "prompts": {calls[0].response_id: RESUMED}}))
    usage_matches(resumed, rows, [*first_rows, *rows])
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)

    def session(route: Route, name: str) -> float:
        standin.reset()
        h: AgentHome = new_home(route, name)  # type: ignore[operator]
        three_tools(standin, h)
        return claude(h, PROMPT, ANTHROPIC_API_KEY=key).seconds

    compare_wall_time("claude", session, proxied, direct)


def test_claude_plan_login_and_subagent(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route,
                                        new_home: object) -> None:
    token = "sk-ant-oat01-" + secrets.token_urlsafe(70)
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    standin.script(
        Turn(thinking="A subagent can do this.",
             tools=[ToolUse("Agent", {"description": "Echo in a subagent", "prompt": TASK,
                                      "subagent_type": "general-purpose", "run_in_background": False})]),
        Turn(text="The subagent printed from-subagent."),
        api="anthropic", when=_main)
    standin.script(
        Turn(tools=[ToolUse("Bash", {"command": "echo from-subagent", "description": "Print from-subagent"})]),
        Turn(text="It printed from-subagent."),
        api="anthropic", when=_subagent)
    before = row_ids(agent_daemon)
    out = json.loads(claude(home, "Use a subagent to run an echo.", CLAUDE_CODE_OAUTH_TOKEN=token).stdout)
    assert out["result"] == "The subagent printed from-subagent."
    calls = standin.calls()
    classes = [c.headers.get("x-claude-code-request-class") for c in calls]
    assert classes == ["main", "subagent", "subagent", "main"], classes
    rows = new_rows(agent_daemon, before, len(calls))
    parent, sub_first, sub_second, main_end = calls
    by_rid = check_calls(agent_daemon, calls, rows, Expect(
        client="Claude Code", provider="anthropic", provider_name="anthropic", credential_kind="oauth",
        secret=token, session_id=out["session_id"],
        prompts={parent.response_id: "Use a subagent to run an echo.", sub_first.response_id: TASK}))
    # `usage` covers the main thread's calls, `modelUsage` every call (the subagent's too).
    usage_matches(out, [by_rid[c.response_id] for c in (parent, main_end)], rows)
    # The subagent's thread hangs off the call whose Agent tool use launched it; its prompt is the task the model
    # wrote, marked as such.
    launched, sub = by_rid[parent.response_id], by_rid[sub_first.response_id]
    assert sub["thread_parent_id"] == launched["id"]
    assert sub["thread_root_id"] == launched["id"]
    assert sub["metadata"]["prompt_author"] == "model"
    assert launched["metadata"].get("prompt_author") is None
    assert by_rid[sub_second.response_id]["thread_root_id"] == launched["id"]
    assert by_rid[main_end.response_id]["thread_parent_id"] == launched["id"]
    check_secret_absent(agent_daemon, [token])
    check_stayed_local(agent_daemon)
