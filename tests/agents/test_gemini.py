"""Gemini CLI (the real `gemini`) through aigw-proxy on the Gemini API with an API key: its routing call
(`generateContent`), tool calls over `streamGenerateContent?alt=sse` with and without `functionCall.id`, thinking,
a resumed session — every model call checked against the stand-in's ledger, and `-o json`'s token stats against
the proxy's sums."""

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

pytestmark = pytest.mark.real_agent("gemini")

PROMPT = "Run `echo one`, then `echo two`, then read notes.txt."
RESUMED = "Now run `echo three`."
# Settings a user turns off to keep Gemini CLI quiet: usage statistics (play.googleapis.com), telemetry, updates.
SETTINGS = {"privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}}


def _main_loop(api: str, req: dict, headers: dict[str, str]) -> bool:
    return "tools" in req  # the routing call asks for a JSON verdict and offers no tools


def gemini(home: AgentHome, key: str, *args: str) -> AgentRun:
    settings = home.home / ".gemini" / "settings.json"
    settings.parent.mkdir(exist_ok=True)
    settings.write_text(json.dumps(SETTINGS))
    # GEMINI_CLI_TRUST_WORKSPACE: `-p` runs refuse an untrusted folder.
    return home.run(["gemini", *args, "-o", "json", "--yolo"],
                    env=home.env(GEMINI_API_KEY=key, GEMINI_CLI_TRUST_WORKSPACE="true")).check()


def three_tools(standin: AgentStandIn, home: AgentHome, *, ids: bool) -> None:
    (home.workspace / "notes.txt").write_text("hello notes\n")
    standin.script(
        Turn(thinking="Two echoes, then the file.", gemini_ids=ids,
             tools=[ToolUse("run_shell_command", {"command": "echo one", "description": "Print one"})]),
        Turn(gemini_ids=ids, tools=[ToolUse("run_shell_command", {"command": "echo two", "description": "Print two"})]),
        Turn(gemini_ids=ids, tools=[ToolUse("read_file", {"file_path": "notes.txt"})]),
        Turn(text="one, two, hello notes"), api="gemini", when=_main_loop)


def check_run(daemon: Daemon, standin: AgentStandIn, run: AgentRun, before: set[str], prompt: str,
              key: str) -> list[dict]:
    out = json.loads(run.stdout)
    calls = standin.calls()
    main = [c for c in calls if "tools" in c.request]
    router = [c for c in calls if "tools" not in c.request]
    assert len(router) == 1 and ":generateContent" in router[0].path
    rows = new_rows(daemon, before, len(calls))
    check_calls(daemon, calls, rows, Expect(
        client="Gemini CLI", provider="gemini", provider_name="gemini", credential_kind="api_key", secret=key,
        session_id=None,  # Gemini CLI sends no session id on the Gemini API: the thread root is the session
        prompts={router[0].response_id: prompt, main[0].response_id: prompt}))
    # Gemini CLI's own token stats, per model, == the proxy's sums over the same calls.
    for model, stats in out["stats"]["models"].items():
        model_rows = [r for r in rows if r["model"] == model]
        s = sums(model_rows)
        tokens = stats["tokens"]
        assert (tokens["prompt"], tokens["cached"], tokens["thoughts"]) == (
            s["input"] + s["cache_read"], s["cache_read"], s["reasoning"]), model
        assert tokens["candidates"] + tokens["thoughts"] == s["output"], model
    assert sorted(out["stats"]["models"]) == sorted({r["model"] for r in rows})
    return rows


def test_tools_with_call_ids_and_resume(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route, direct: Route,
                                        new_home: object) -> None:
    key = "AIza" + secrets.token_urlsafe(26)[:35]
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    three_tools(standin, home, ids=True)
    before = row_ids(agent_daemon)
    run = gemini(home, key, "-p", PROMPT)
    check_run(agent_daemon, standin, run, before, PROMPT, key)

    standin.reset()
    standin.script(Turn(tools=[ToolUse("run_shell_command", {"command": "echo three", "description": "Print"})]),
                   Turn(text="three"), api="gemini", when=_main_loop)
    before = row_ids(agent_daemon)
    check_run(agent_daemon, standin, gemini(home, key, "--resume", "latest", "-p", RESUMED), before, RESUMED, key)
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)

    def session(route: Route, name: str) -> float:
        standin.reset()
        h: AgentHome = new_home(route, name)  # type: ignore[operator]
        three_tools(standin, h, ids=True)
        return gemini(h, key, "-p", PROMPT).seconds

    compare_wall_time("gemini", session, proxied, direct)


def test_tools_without_call_ids(agent_daemon: Daemon, standin: AgentStandIn, proxied: Route,
                                new_home: object) -> None:
    """Gemini 2.x models send `functionCall` without an id; Gemini CLI then invents one for its answer."""
    key = "AIza" + secrets.token_urlsafe(26)[:35]
    home: AgentHome = new_home(proxied)  # type: ignore[operator]
    three_tools(standin, home, ids=False)
    before = row_ids(agent_daemon)
    rows = check_run(agent_daemon, standin, gemini(home, key, "-p", PROMPT), before, PROMPT, key)
    answers = [c for c in standin.calls() if c.request.get("contents")]
    invented = [p["functionResponse"].get("id") for c in answers for p in c.request["contents"][-1]["parts"]
                if "functionResponse" in p]
    assert len(invented) == 3 and all(i and i.startswith(("run_shell_command_", "read_file_")) for i in invented)
    # One thread for the whole prompt: each answer joins the call that asked for it.
    assert len({r["session_id"] for r in rows if r["model"] != "gemini-3.5-flash-lite"}) == 1
    check_secret_absent(agent_daemon, [key])
    check_stayed_local(agent_daemon)

