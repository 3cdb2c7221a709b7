"""One Responses WebSocket from messages to records, without a proxy: which turns are recorded, how server events
find their turn, and what an early end leaves."""

from __future__ import annotations

import json

from aigw_proxy.intercept.interception import Interception
from aigw_proxy.intercept.socket_turns import MAX_PENDING_TURNS, SocketTurns
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, RecordEvent
from tests.support.payloads import responses_object, responses_usage
from tests.support.ws_standin import responses_events

OPENAI = next(p for p in builtin_providers() if p.name == "openai")
ALICE = Initiator("u1", "alice", "tok1")
MODEL = "gpt-5.1-codex"


def socket() -> tuple[SocketTurns, list[RecordEvent]]:
    records: list[RecordEvent] = []

    def new() -> Interception:
        return Interception(api=Api.OPENAI_RESPONSES, provider=OPENAI, initiator=ALICE,
                            headers={"user-agent": "codex_exec/0.169.0", "authorization": "Bearer sk-" + "k" * 40},
                            route="/v1/responses", submit=records.append, transport="websocket")

    return SocketTurns(new), records


def create(prompt: str, **fields: object) -> str:
    return json.dumps({"type": "response.create", "model": MODEL, "input": prompt, **fields})


def events(rid: str, text: str = "ok", **fields: object) -> list[str]:
    resp = responses_object(rid, MODEL, [{"type": "message", "id": f"m_{rid}", "role": "assistant",
                                          "status": "completed",
                                          "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                            responses_usage(10, 2))
    return [json.dumps({**e, **fields}) for e in responses_events(resp)]


def ended(records: list[RecordEvent]) -> dict[str, InterceptionEnded]:
    """Ended interceptions by the provider response id they recorded."""
    return {r.token_usages[0].provider_response_id if r.token_usages else r.prompt or "": r
            for r in records if isinstance(r, InterceptionEnded)}


def test_lanes_are_answered_independently() -> None:
    turns, records = socket()
    turns.client_message(create("on lane a", stream_id="a"))
    turns.client_message(create("on lane b", stream_id="b"))
    a, b = events("resp_a", stream_id="a"), events("resp_b", stream_id="b")
    for ea, eb in zip(a, b, strict=True):  # the server interleaves the two lanes' events
        turns.server_message(eb)
        turns.server_message(ea)
    done = ended(records)
    assert (done["resp_a"].prompt, done["resp_b"].prompt) == ("on lane a", "on lane b")
    assert done["resp_a"].status == done["resp_b"].status == "completed"
    assert turns.pending == 0


def test_a_server_that_does_not_echo_stream_id_still_reaches_the_turn() -> None:
    turns, records = socket()
    turns.client_message(create("hello", stream_id="lane-1"))
    for e in events("resp_1"):
        turns.server_message(e)
    assert ended(records)["resp_1"].prompt == "hello"


def test_a_pipelined_warm_up_keeps_its_place_and_is_not_recorded() -> None:
    turns, records = socket()
    turns.client_message(create("", generate=False))
    turns.client_message(create("real prompt", previous_response_id="resp_warm"))
    warm = [json.dumps({"type": "response.created", "response": {"id": "resp_warm", "status": "in_progress"}}),
            json.dumps({"type": "response.completed", "response": {"id": "resp_warm", "status": "completed",
                                                                    "output": [], "usage": None}})]
    for e in warm + events("resp_real"):
        turns.server_message(e)
    starts = [r for r in records if isinstance(r, InterceptionStarted)]
    assert len(starts) == 1 and starts[0].previous_response_id == "resp_warm"
    assert starts[0].metadata["transport"] == "websocket"
    assert list(ended(records)) == ["resp_real"]


def test_a_response_the_server_starts_after_steering_is_recorded_as_a_continuation() -> None:
    turns, records = socket()
    turns.client_message(create("write the parser"))
    first = events("resp_1")
    for e in first[:-1]:
        turns.server_message(e)
    turns.client_message(json.dumps({"type": "response.steer", "previous_response_id": "resp_1",
                                     "input": [{"type": "message", "role": "user",
                                                "content": [{"type": "input_text", "text": "use a regex"}]}]}))
    for e in [first[-1], *events("resp_2")]:  # resp_2 follows without a response.create
        turns.server_message(e)
    starts = [r for r in records if isinstance(r, InterceptionStarted)]
    assert [s.previous_response_id for s in starts] == [None, "resp_1"]
    assert starts[1].model == MODEL
    assert ended(records)["resp_2"].prompt == "use a regex"


def test_unreadable_messages_never_break_the_socket() -> None:
    turns, records = socket()
    turns.client_message(b"\xff\xfe not json")
    turns.client_message("[1, 2]")
    turns.client_message(create("still fine"))
    evs = events("resp_1")
    for e in [*evs[:2], "{not json", *evs[2:]]:
        turns.server_message(e)
    done = ended(records)["resp_1"]
    assert (done.prompt, done.status) == ("still fine", "completed")


def test_a_socket_that_ends_early_records_every_unfinished_turn_as_failed() -> None:
    turns, records = socket()
    turns.client_message(create("answered in part"))
    turns.client_message(create("never answered"))
    evs = events("resp_1")
    for e in evs[:3]:  # created, in_progress, output_item.added
        turns.server_message(e)
    turns.close("websocket closed by the client (code 1000) before the response completed")
    turns.server_message(evs[3])  # late events after the end change nothing
    by_prompt = {r.prompt: r for r in records if isinstance(r, InterceptionEnded)}
    partial, silent = by_prompt["answered in part"], by_prompt["never answered"]
    assert partial.status == silent.status == "failed"
    assert partial.error == "websocket closed by the client (code 1000) before the response completed"
    assert (partial.upstream_status, partial.prompt_response_id) == (101, "resp_1")
    assert (silent.upstream_status, silent.token_usages) == (None, [])
    assert len([r for r in records if isinstance(r, InterceptionEnded)]) == 2


def test_a_flood_of_unanswered_requests_stays_bounded() -> None:
    turns, records = socket()
    for i in range(MAX_PENDING_TURNS + 10):
        turns.client_message(create(f"p{i}"))
    assert turns.pending == MAX_PENDING_TURNS
    dropped = [r for r in records if isinstance(r, InterceptionEnded)]
    assert [r.prompt for r in dropped] == [f"p{i}" for i in range(10)]
    assert all(r.status == "failed" for r in dropped)


def test_append_continues_the_lanes_previous_response() -> None:
    turns, records = socket()
    turns.client_message(create("first"))
    for e in events("resp_1"):
        turns.server_message(e)
    turns.client_message(json.dumps({"type": "response.append", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and then"}]}]}))
    for e in events("resp_2"):
        turns.server_message(e)
    starts = [r for r in records if isinstance(r, InterceptionStarted)]
    assert [s.previous_response_id for s in starts] == [None, "resp_1"]
    assert ended(records)["resp_2"].prompt == "and then"
