"""The WebSocket addon on mitmproxy's own test flows: which sockets it records, that the hook only queues, that a
long-lived flow does not keep every message, and that shutdown still records unfinished turns."""

from __future__ import annotations

import asyncio
import json

from mitmproxy import http
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.addons.websocket import SOCKET, ResponsesSocket
from aigw_proxy.policy.providers import builtin_providers
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, RecordEvent

OPENAI = next(p for p in builtin_providers() if p.name == "openai")
ALICE = Initiator("u1", "alice", "tok1")


def socket_flow(path: str = "/v1/responses") -> http.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.request.path = path
    flow.request.headers["user-agent"] = "codex_exec/0.169.0"
    flow.metadata[PROVIDER] = OPENAI
    flow.metadata[INITIATOR] = ALICE
    return flow


def say(addon: ResponsesSocket, flow: http.HTTPFlow, obj: dict, from_client: bool) -> None:
    assert flow.websocket is not None
    flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, from_client, json.dumps(obj).encode()))
    addon.websocket_message(flow)


async def test_the_hook_queues_and_parsing_runs_on_the_next_loop_turn() -> None:
    records: list[RecordEvent] = []
    addon = ResponsesSocket(records.append)
    flow = socket_flow()
    addon.websocket_start(flow)
    say(addon, flow, {"type": "response.create", "model": "gpt-5", "input": "hi"}, from_client=True)
    assert records == []  # nothing parsed inside the hook: the message is relayed first
    await asyncio.sleep(0)
    assert [type(r) for r in records] == [InterceptionStarted]
    started = records[0]
    assert isinstance(started, InterceptionStarted)
    assert started.metadata["transport"] == "websocket" and started.initiator == ALICE


async def test_a_flow_keeps_only_its_newest_message() -> None:
    addon = ResponsesSocket(lambda _: None)
    flow = socket_flow()
    addon.websocket_start(flow)
    for i in range(50):
        say(addon, flow, {"type": "noise", "i": i}, from_client=i % 2 == 0)
    assert flow.websocket is not None
    assert [json.loads(m.content)["i"] for m in flow.websocket.messages] == [49]


async def test_only_responses_routes_are_recorded() -> None:
    addon = ResponsesSocket(lambda _: None)
    other = socket_flow("/v1/realtime")
    addon.websocket_start(other)
    assert SOCKET not in other.metadata
    tunnelled = socket_flow()
    del tunnelled.metadata[PROVIDER]
    addon.websocket_start(tunnelled)
    assert SOCKET not in tunnelled.metadata


async def test_shutdown_records_unfinished_turns_as_failed() -> None:
    records: list[RecordEvent] = []
    addon = ResponsesSocket(records.append)
    flow = socket_flow()
    addon.websocket_start(flow)
    say(addon, flow, {"type": "response.create", "model": "gpt-5", "input": "cut short"}, from_client=True)
    say(addon, flow, {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5"}}, from_client=False)
    addon.done()  # no websocket_end came: the connection was cancelled
    [ended] = [r for r in records if isinstance(r, InterceptionEnded)]
    assert (ended.status, ended.error, ended.prompt) == (
        "failed", "the proxy shut down before the response completed", "cut short")
    addon.websocket_end(flow)  # a late end changes nothing
    assert len([r for r in records if isinstance(r, InterceptionEnded)]) == 1
