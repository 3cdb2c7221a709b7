"""A Gemini CLI prompt that makes tool calls is one thread and one session, from request bytes to stored rows:
the model's id-less `functionCall`s and the ids Gemini CLI invents for its answers meet in the writer's lineage."""

from __future__ import annotations

import json

import pytest

from aigw_proxy.intercept.interception import Interception
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, list_interceptions, list_sessions

GEMINI = next(p for p in builtin_providers() if p.type == "gemini")
HEADERS = {"user-agent": "GeminiCLI/0.61.0/gemini-2.5-flash (linux; x64)",
           "x-goog-api-key": "AIzaSyA-test-key-0123456789"}
ROUTE = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
TYPED = "count the files in src, then the lines of each"
SESSION_CONTEXT = ("<session_context>\nThis is the Gemini CLI. We are setting up the context for our chat.\n"
                   "</session_context>")


def call_part(command: str, call_id: str | None) -> dict:
    call: dict = {"name": "run_shell_command", "args": {"command": command}}
    if call_id:
        call["id"] = call_id
    return {"functionCall": call}


def answer(call_id: str | None, output: str) -> dict:
    response: dict = {"name": "run_shell_command", "response": {"output": output}}
    if call_id:
        response["id"] = call_id
    return {"role": "user", "parts": [{"functionResponse": response}]}


def sse(parts: list[dict], response_id: str) -> bytes:
    chunk = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0, "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 10, "totalTokenCount": 1010},
             "modelVersion": "gemini-2.5-flash", "responseId": response_id}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def turn(writer: RecordWriter, who: Initiator, contents: list[dict], response: bytes) -> str:
    ix = Interception(api=Api.GEMINI_GENERATE, provider=GEMINI, initiator=who, headers=HEADERS, route=ROUTE,
                      submit=writer.submit)
    ix.request_received(json.dumps({"contents": contents}).encode(), None)
    ix.parse_request()
    ix.response_started(200, "text/event-stream", None)
    ix.response_chunk(response)
    ix.finish()
    return ix.id


@pytest.mark.parametrize(
    ("model_ids", "answered_ids"),
    [
        ((None, None), ("run_shell_command_1796113769368_0", "run_shell_command_1796113771002_1")),  # CLI 0.61
        ((None, None), ("run_shell_command-1763800000123-5f3a9c", "run_shell_command-1763800001456-0b7e")),
        ((None, None), ("run_shell_command__run_shell_command_1796113769368_0",
                        "run_shell_command__run_shell_command_1796113771002_1")),
        (("k3v9a1", "p0q2z8"), ("k3v9a1", "p0q2z8")),  # the model sent ids: echoed
    ],
    ids=["cli-0.61", "cli-old", "cli-new", "model-ids"],
)
async def test_gemini_cli_tool_turns_are_one_thread_and_one_session(
    db: Database, alice: Initiator, writer: RecordWriter, model_ids: tuple, answered_ids: tuple
) -> None:
    first, second = model_ids
    history: list[dict] = [{"role": "user", "parts": [{"text": SESSION_CONTEXT}, {"text": TYPED}]}]
    a = turn(writer, alice, history, sse([call_part("ls src", first)], "r-a"))
    history += [{"role": "model", "parts": [call_part("ls src", first)]}, answer(answered_ids[0], "a.py\nb.py")]
    b = turn(writer, alice, history, sse([call_part("wc -l src/*", second)], "r-b"))
    history += [{"role": "model", "parts": [call_part("wc -l src/*", second)]}, answer(answered_ids[1], "3 a.py")]
    c = turn(writer, alice, history, sse([{"text": "2 files: a.py (3 lines), b.py (0 lines)."}], "r-c"))
    await writer.flush(timeout=5)

    rows = {r["id"]: r for r in await list_interceptions(db, limit=10)}
    assert [(rows[i]["thread_parent_id"], rows[i]["thread_root_id"]) for i in (a, b, c)] == [
        (None, None), (a, a), (b, a)]
    assert {rows[i]["session_id"] for i in (a, b, c)} == {a}
    assert [p["prompt"] for p in rows[a]["user_prompts"]] == [TYPED]
    assert rows[b]["user_prompts"] == rows[c]["user_prompts"] == []
    [session] = await list_sessions(db)
    assert (session["id"], session["threads"], session["interceptions"], session["last_prompt"]) == (a, 1, 3, TYPED)
