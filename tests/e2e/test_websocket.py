"""Responses over WebSocket (Codex's default transport) through the running proxy: the official openai SDK's
`responses.connect()` client (HTTPS_PROXY with credentials, our CA trusted), against a WebSocket stand-in."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, cast

import openai
import pytest
import websockets.sync.client
from openai.types.responses import ResponseInputParam
from websockets.exceptions import ConnectionClosed

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.payloads import responses_object, responses_usage
from tests.support.ws_standin import Script, WsStandIn, responses_events

MODEL = "gpt-5.1-codex"
API_KEY = "sk-proj-" + "w" * 60
CODEX_HEADERS = {
    "User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)",
    "originator": "codex_exec",
    "session-id": "0199a0b3-ws-session",
}
CODEX_SOCKET_HEADERS = {"openai-beta": "responses_websockets=2026-02-06"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}
MAX_EVENTS = 500  # bound on any read loop


def client(**kw: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, max_retries=0, default_headers=CODEX_HEADERS, **kw)  # type: ignore[arg-type]


def read_turn(conn: openai.resources.responses.responses.ResponsesConnection) -> list[dict]:
    """The server events of one response, as the client received them, up to its terminal event."""
    events = []
    for _ in range(MAX_EVENTS):
        events.append(json.loads(conn.recv_bytes()))
        if events[-1]["type"] in TERMINAL:
            return events
    raise AssertionError(f"no terminal event in {MAX_EVENTS} events")


def codex_input(prompt: str) -> ResponseInputParam:
    items: list[dict] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>\n  <cwd>/work</cwd>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
        {"type": "configuration_update", "reasoning_effort": "medium"},
    ]
    return cast("ResponseInputParam", items)  # Codex's wire items: the SDK's input types lack configuration_update


def message(text: str, item_id: str = "msg_1") -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call(call_id: str, name: str, args: dict, item_id: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "status": "completed",
            "arguments": json.dumps(args)}


def test_codex_tool_loop_on_one_socket(ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    """Warm-up, then three turns on one permessage-deflate socket; turns 2 and 3 send only the tool output."""
    t1 = responses_object("resp_T1", MODEL, [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Run the tests first."}]},
        call("call_1", "shell", {"command": ["pytest", "-q"]}, "fc_1"),
    ], responses_usage(6000, 120, cached=4096, reasoning=64))
    t2 = responses_object("resp_T2", MODEL, [
        call("call_2", "apply_patch", {"patch": "*** fix ***"}, "fc_2"),
    ], responses_usage(6400, 80, cached=6000))
    t3 = responses_object("resp_T3", MODEL, [message("Fixed: the test passes now.")], responses_usage(6600, 12,
                                                                                                     cached=6400))
    scripts = [Script(responses_events(r)) for r in (t1, t2, t3)]
    ws_upstream.queue(*scripts)
    before = len(ws_proxy_env.interceptions())
    sent: list[dict] = []
    received: list[list[dict]] = []
    with client().responses.connect(extra_headers=CODEX_SOCKET_HEADERS,
                                    websocket_connection_options={"compression": "deflate"}) as conn:
        handshake = conn._connection.response  # the SDK's socket
        assert handshake is not None
        client_extensions = handshake.headers.get("Sec-WebSocket-Extensions", "")
        turns: list[dict[str, Any]] = [  # Codex's turns as JSON
            {"model": MODEL, "input": [], "generate": False, "store": False},  # Codex's warm-up
            {"model": MODEL, "input": codex_input("make the failing test pass"), "store": False},
            {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "call_1", "output": "1 failed"}],
             "previous_response_id": "resp_T1", "store": False},
            {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "call_2", "output": "Done!"}],
             "previous_response_id": "resp_T2", "store": False},
        ]
        for i, turn in enumerate(turns):
            if i == 1:
                turn["previous_response_id"] = received[0][-1]["response"]["id"]  # chains on the warm-up, as Codex
            conn.response.create(**turn)
            sent.append({"type": "response.create", **turn})
            received.append(read_turn(conn))

    # Relayed untouched, both ways, over permessage-deflate negotiated with both peers.
    [sock] = ws_upstream.sockets
    assert sock.messages == sent
    assert received[1:] == [s.events for s in scripts]
    assert "permessage-deflate" in sock.handshake.extensions and "permessage-deflate" in client_extensions
    assert sock.handshake.headers["openai-beta"] == "responses_websockets=2026-02-06"

    rows = ws_proxy_env.interceptions(expect=before + 3)
    assert len(rows) == before + 3  # the warm-up is not a model turn
    a, b, c = (ws_proxy_env.one(response_id=rid) for rid in ("resp_T1", "resp_T2", "resp_T3"))
    for ix in (a, b, c):
        assert ix["initiator"]["username"] == "alice"
        assert (ix["provider"], ix["provider_name"], ix["model"]) == ("openai", "openai", MODEL)
        assert (ix["client"], ix["client_session_id"]) == ("Codex", "0199a0b3-ws-session")
        assert ix["metadata"]["transport"] == "websocket" and ix["metadata"]["route"] == "/v1/responses"
        assert (ix["status"], ix["upstream_status"], ix["error_message"]) == ("completed", 101, None)
        assert (ix["credential_kind"], ix["credential_hint"]) == ("api_key", "sk-p...wwww")
    assert [p["prompt"] for p in a["user_prompts"]] == ["make the failing test pass"]
    assert (a["thread_parent_id"], a["thread_root_id"]) == (None, None)
    [tu] = a["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"], tu["cache_read_input_tokens"]) == (1904, 120, 4096)
    assert tu["metadata"] == {"input_cached": 4096, "output_reasoning": 64, "total_tokens": 6120}
    assert [(t["content"], t["metadata"]["source"]) for t in a["model_thoughts"]] == [
        ("Run the tests first.", "reasoning_summary")]
    assert [(t["tool"], t["provider_tool_call_id"], t["provider_item_id"], json.loads(t["input"]))
            for t in a["tool_usages"]] == [("shell", "call_1", "fc_1", {"command": ["pytest", "-q"]})]
    assert b["user_prompts"] == [] and c["user_prompts"] == []
    assert (b["thread_parent_id"], b["thread_root_id"]) == (a["id"], a["id"])
    assert (c["thread_parent_id"], c["thread_root_id"]) == (b["id"], a["id"])
    assert [t["tool"] for t in b["tool_usages"]] == ["apply_patch"] and c["tool_usages"] == []
    assert [(u["input_tokens"], u["output_tokens"]) for u in b["token_usages"] + c["token_usages"]] == [
        (400, 80), (200, 12)]


def test_socket_cut_mid_response_is_a_failed_interception_with_what_was_seen(
        ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    resp = responses_object("resp_CUT", MODEL, [
        {"type": "reasoning", "id": "rs_c", "summary": [{"type": "summary_text", "text": "Look at the logs."}]},
        call("call_C", "shell", {"command": ["tail", "app.log"]}, "fc_c"),
        message("The log says...", "msg_c"),
    ], responses_usage(900, 50))
    events = responses_events(resp)
    # Cut right after the tool call's arguments are complete, before the message and the final event.
    cut = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done"
               and e["item"]["type"] == "function_call") + 1
    ws_upstream.queue(Script(events, cut_after=cut))
    got: list[dict] = []
    with client().responses.connect() as conn:
        conn.response.create(model=MODEL, input=codex_input("why does the app crash?"))
        # mitmproxy closes the client's side with a close frame (1000): a dropped peer cannot be relayed as such.
        with pytest.raises(ConnectionClosed):
            for _ in range(MAX_EVENTS):
                got.append(json.loads(conn.recv_bytes()))
    assert got == events[:cut]  # everything the upstream sent before the cut reached the client
    ix = ws_proxy_env.one(prompt="why does the app crash?")
    assert ix["status"] == "failed" and ix["metadata"]["transport"] == "websocket"
    assert ix["error_message"] == "websocket connection to the upstream was lost before the response completed"
    assert [(t["tool"], t["provider_tool_call_id"], t["provider_response_id"]) for t in ix["tool_usages"]] == [
        ("shell", "call_C", "resp_CUT")]
    assert [t["content"] for t in ix["model_thoughts"]] == ["Look at the logs."]
    assert ix["token_usages"] == []  # usage only comes with the final event: none is invented
    assert ix["model"] == MODEL


def test_error_event_fails_the_turn_and_the_socket_goes_on(ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    limit = {"type": "error", "status": 429, "error": {"type": "usage_limit_reached",
                                                       "message": "The usage limit has been reached"}}
    ok = responses_object("resp_AFTER", MODEL, [message("ok")], responses_usage(30, 2))
    ws_upstream.queue(Script([limit]), Script(responses_events(ok)))
    with client().responses.connect() as conn:
        conn.response.create(model=MODEL, input="first, rate limited")
        assert read_turn(conn) == [limit]
        conn.response.create(model=MODEL, input="second, fine")
        assert read_turn(conn)[-1]["type"] == "response.completed"
    failed = ws_proxy_env.one(prompt="first, rate limited")
    assert (failed["status"], failed["upstream_status"], failed["error_type"]) == ("failed", 429, "rate_limited")
    assert "The usage limit has been reached" in failed["error_message"]
    assert ws_proxy_env.one(response_id="resp_AFTER")["status"] == "completed"


def test_concurrent_sockets_are_attributed_to_their_tunnels_users(
        ws_proxy_env: Daemon, ws_upstream: WsStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sockets for alice and one for bob, open at once, turns interleaved: each record has its own user."""
    ids = ["resp_A1", "resp_A2", "resp_B1"]
    ws_upstream.queue(*(Script(responses_events(responses_object(rid, MODEL, [message(rid)], responses_usage(5, 1))))
                        for rid in ids))
    conns = []
    for user in ("alice", "alice", "bob"):
        monkeypatch.setenv("HTTPS_PROXY", ws_proxy_env.proxy_url(user))  # read when the socket is opened
        conns.append(client().responses.connect().enter())
    try:
        for conn, rid in zip(conns, ids, strict=True):
            conn.response.create(model=MODEL, input=f"prompt for {rid}")
            # The stand-in answers in arrival order: read each answer before the next socket asks.
            assert read_turn(conn)[-1]["response"]["id"] == rid
    finally:
        for conn in conns:
            conn.close()
    users = {rid: ws_proxy_env.one(response_id=rid)["initiator"]["username"] for rid in ids}
    assert users == {"resp_A1": "alice", "resp_A2": "alice", "resp_B1": "bob"}
    assert len(ws_upstream.sockets) == 3


def test_chatgpt_plan_codex_socket_is_recorded_as_chatgpt(ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    ws_upstream.queue(Script(responses_events(responses_object("resp_CGW", MODEL, [message("hi")],
                                                               responses_usage(40, 3)))))
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3cy11c2VyIn0.d3Mtc2lnbmF0dXJlLXNpZ25hdHVyZQ"
    c = openai.OpenAI(api_key=jwt, base_url="https://chatgpt.com/backend-api/codex", max_retries=0,
                      default_headers=CODEX_HEADERS)
    with c.responses.connect(extra_headers=CODEX_SOCKET_HEADERS) as conn:
        conn.response.create(model=MODEL, input=codex_input("plan user over a socket"))
        read_turn(conn)
    assert ws_upstream.sockets[0].handshake.path == "/backend-api/codex/responses"
    ix = ws_proxy_env.one(response_id="resp_CGW")
    assert (ix["provider"], ix["provider_name"]) == ("openai", "chatgpt")
    assert ix["metadata"]["route"] == "/backend-api/codex/responses"
    assert ix["metadata"]["transport"] == "websocket"
    assert [p["prompt"] for p in ix["user_prompts"]] == ["plan user over a socket"]


def test_other_sockets_on_a_provider_host_pass_through_unrecorded(
        ws_proxy_env: Daemon, ws_upstream: WsStandIn) -> None:
    events = responses_events(responses_object("resp_OTHER", MODEL, [message("x")], responses_usage(1, 1)))
    recorded = responses_object("resp_REC", MODEL, [message("y")], responses_usage(1, 1))
    ws_upstream.queue(Script(events), Script(responses_events(recorded)))
    before = len(ws_proxy_env.interceptions())
    # Some other socket on chatgpt.com (not the Codex route): decrypted, relayed untouched, never recorded.
    with websockets.sync.client.connect("wss://chatgpt.com/backend-api/other/socket") as ws:
        ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "not a model route"}))
        got = [json.loads(ws.recv(timeout=10)) for _ in itertools.repeat(None, len(events))]
    assert got == events
    assert ws_upstream.sockets[0].handshake.path == "/backend-api/other/socket"
    # A recorded turn afterwards: once it is in, anything the other socket had recorded would be in too.
    with client().responses.connect() as conn:
        conn.response.create(model=MODEL, input="a real turn")
        read_turn(conn)
    ws_proxy_env.one(response_id="resp_REC")
    assert len(ws_proxy_env.interceptions()) == before + 1


@pytest.mark.parametrize("grace", ["10", "0"])
def test_sigterm_mid_turn_gives_the_turn_its_grace_then_records_it(
        tmp_path: Path, ws_standin_server: WsStandIn, upstream_pki: UpstreamPKI,
        monkeypatch: pytest.MonkeyPatch, grace: str) -> None:
    """SIGTERM while a socket is mid-response: like an HTTP stream, the turn gets the shutdown grace period to
    finish and is recorded completed; with no grace it is cut, and still written (failed) before the daemon
    exits 0."""
    ws_standin_server.reset()
    resp = responses_object("resp_SHUT", MODEL, [message("word " * 200)], responses_usage(10, 200))
    events = responses_events(resp)
    d = start_daemon(tmp_path, provider_config(ws_standin_server, upstream_pki.ca_file),
                     extra_args=("--shutdown-grace", grace))
    try:
        monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("alice"))
        monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
        ws_standin_server.queue(Script(events, delay=0.05))  # ~0.3 s of events: the stop lands in the middle
        with client().responses.connect() as conn:
            conn.response.create(model=MODEL, input="interrupted by a restart")
            first = json.loads(conn.recv_bytes())
            assert first["type"] == "response.created"
            assert stop_daemon(d) == 0
    finally:
        stop_daemon(d)
        ws_standin_server.reset()
    ix = d.one(prompt="interrupted by a restart")
    assert ix["metadata"]["transport"] == "websocket"
    if grace == "0":
        assert ix["status"] == "failed"
        # Shutdown drops the client connection (mitmproxy ends the socket as lost); a socket it never ended would
        # be closed by the addon's `done` hook instead. Either way the turn is written before the daemon exits.
        assert ix["error_message"].endswith("before the response completed")
        assert (ix["model"], ix["upstream_status"], ix["token_usages"]) == (MODEL, 101, [])
    else:
        assert ix["status"] == "completed"
        assert ix["token_usages"][0]["output_tokens"] == 200
