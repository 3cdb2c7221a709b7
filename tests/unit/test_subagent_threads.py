"""Claude Code subagents (the `Agent` tool): the subagent's first call carries no tool result, only the task the
model wrote. It must join the thread of the call whose `Agent` tool use launched it, with its prompt marked as
written by the model — in the same client session only."""

from __future__ import annotations

import json

from aigw_proxy.intercept.interception import Interception, SubagentTasks
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, RecordEvent
from tests.support.payloads import anthropic_stream

ANTHROPIC = builtin_providers()[0]
ALICE = Initiator("u1", "alice", "tok1")
BOB = Initiator("u2", "bob", "tok2")
TASK = "Run the command `echo from-subagent` and report its output."
USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def headers(session: str, **extra: str) -> dict[str, str]:
    return {"user-agent": "claude-cli/2.1.332 (external, sdk-cli)", "x-claude-code-session-id": session,
            "x-api-key": "sk-ant-api03-" + "k" * 40, **extra}


def request(text_blocks: list[str]) -> bytes:
    return json.dumps({"model": "claude-x", "stream": True, "max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "text", "text": t} for t in text_blocks]}]}).encode()


def run(tasks: SubagentTasks, who: Initiator, hdrs: dict[str, str], body: bytes, blocks: list[dict],
        msg_id: str) -> list[RecordEvent]:
    events: list[RecordEvent] = []
    ix = Interception(api=Api.ANTHROPIC_MESSAGES, provider=ANTHROPIC, initiator=who, headers=hdrs,
                      route="/v1/messages", submit=events.append, subagent_tasks=tasks)
    ix.request_received(body, None)
    ix.parse_request()
    ix.response_started(200, "text/event-stream", None)
    ix.response_chunk(b"".join(anthropic_stream(msg_id, "claude-x", blocks, USAGE).chunks))
    ix.finish()
    return events


def launch(tasks: SubagentTasks, who: Initiator = ALICE, session: str = "s-1") -> None:
    run(tasks, who, headers(session), request(["delegate an echo"]),
        [{"type": "tool_use", "id": "toolu_agent1", "name": "Agent",
          "input": {"description": "Echo", "prompt": TASK, "subagent_type": "general-purpose"}}], "msg_parent")


def subagent(tasks: SubagentTasks, who: Initiator = ALICE, session: str = "s-1") -> InterceptionStarted:
    reminder = "<system-reminder>\nContext the user did not type.\n</system-reminder>"
    events = run(tasks, who, headers(session, **{"x-claude-code-request-class": "subagent",
                                                "x-claude-code-agent-id": "a16a2dfb1fd44d4db"}),
                 request([reminder, TASK]), [{"type": "text", "text": "from-subagent"}], "msg_sub")
    start, end = events
    assert isinstance(start, InterceptionStarted) and isinstance(end, InterceptionEnded)
    assert end.prompt == TASK  # the task is the subagent's prompt
    return start


def test_subagent_first_call_joins_the_launching_calls_thread() -> None:
    tasks = SubagentTasks()
    launch(tasks)
    start = subagent(tasks)
    assert start.correlating_tool_call_id == "toolu_agent1"  # the writer links it to the Agent tool use's call
    assert start.metadata["prompt_author"] == "model"


def test_only_the_same_user_and_session_and_only_once() -> None:
    tasks = SubagentTasks()
    launch(tasks)
    other_session = subagent(tasks, session="s-2")
    other_user = subagent(tasks, who=BOB)
    assert other_session.correlating_tool_call_id is None and "prompt_author" not in other_session.metadata
    assert other_user.correlating_tool_call_id is None
    assert subagent(tasks).correlating_tool_call_id == "toolu_agent1"
    again = subagent(tasks)  # the same text typed later is the user's own prompt
    assert again.correlating_tool_call_id is None and "prompt_author" not in again.metadata


def test_typed_prompt_without_a_launch_is_the_users() -> None:
    start = subagent(SubagentTasks())
    assert start.correlating_tool_call_id is None and "prompt_author" not in start.metadata


def test_bounded() -> None:
    tasks = SubagentTasks(limit=2)
    for n in range(3):
        run(tasks, ALICE, headers("s-1"), request(["go"]),
            [{"type": "tool_use", "id": f"toolu_{n}", "name": "Agent", "input": {"prompt": f"task {n}"}}], f"m{n}")
    assert tasks.claim("u1", "s-1", "task 0") is None
    assert tasks.claim("u1", "s-1", "task 2") == "toolu_2"
