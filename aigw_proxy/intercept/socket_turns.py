"""The turns of one Responses WebSocket: client messages in, one Interception per generated response out.

Transport-neutral (no mitmproxy imports); the WebSocket addon feeds it each message after it has been relayed.

The protocol (OpenAI "WebSocket mode"): every turn starts with a client `response.create` message carrying the
same fields as a `POST /v1/responses` body; the server answers with the same JSON events as the SSE stream, ending
with `response.completed` / `response.incomplete` / `response.failed`, or an `error` event. Responses run one
after another per lane: a request's optional `stream_id` names its lane, requests of one lane are answered in
order, and the server echoes the `stream_id` on the events. So each lane is a queue of turns and a server event
belongs to the oldest unfinished turn of its lane.

- `"generate": false` is a warm-up: the server answers it (with an empty response) but it is not a model turn, so
  it holds its place in the queue without being recorded.
- A `response.created` with no turn waiting is a response the server started on its own (the successor of a
  steered response): it is recorded too, continuing the lane's previous response with the steering input.
- A socket that ends while turns are unfinished records them as failed, with whatever events had arrived.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aigw_proxy.intercept.interception import Interception
from aigw_proxy.intercept.parsing.openai_responses import TERMINAL_EVENTS

log = logging.getLogger("aigw_proxy.socket_turns")

# Terminal server events: the turn they belong to is over (the same definition as over SSE).
END_EVENTS = TERMINAL_EVENTS
# Client messages that make the server generate a response (`response.append` is the first protocol version's
# continuation of the lane's previous response).
CREATE_MESSAGES = frozenset({"response.create", "response.append"})
# Bounds per socket, whatever a client or server sends: unanswered turns, lanes remembered, queued steering inputs.
MAX_PENDING_TURNS = 256
MAX_LANES = 256
MAX_STEERS = 64

NewInterception = Callable[[], Interception]


class _WarmUp:
    """A `"generate": false` request: answered by the server like any other, never recorded."""

    __slots__ = ()


_WARM_UP = _WarmUp()
Turn = Interception | _WarmUp


class _Lane:
    __slots__ = ("last_response_id", "turns")

    def __init__(self) -> None:
        self.turns: deque[Turn] = deque()
        self.last_response_id: str | None = None  # the lane's newest response: what a successor continues


def _decode(data: bytes | str) -> dict | None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return obj if isinstance(obj, dict) else None


def _lane_key(obj: dict) -> str | None:
    value = obj.get("stream_id")
    return value if isinstance(value, str) and value else None


def _response_id(event: dict) -> str | None:
    resp = event.get("response")
    rid = resp.get("id") if isinstance(resp, dict) else None
    return rid if isinstance(rid, str) and rid else None


class SocketTurns:
    """Demultiplex one socket's messages into Interceptions. Never raises for anything the peers send."""

    def __init__(self, new_interception: NewInterception) -> None:
        self._new = new_interception
        self._lanes: dict[str | None, _Lane] = {}
        self._pending = 0
        self._steers: deque[dict] = deque(maxlen=MAX_STEERS)  # steering inputs not yet taken by a successor
        self.closed = False

    # -- client → server ---------------------------------------------------------------------------------------
    def client_message(self, data: bytes | str) -> None:
        if self.closed:
            return
        msg = _decode(data)
        kind = msg.get("type") if msg is not None else None
        if msg is None or kind not in CREATE_MESSAGES:
            if kind == "response.steer":
                self._steers.append(msg)  # type: ignore[arg-type]  # msg is a dict here
            return  # anything else (steering, cancels, unknown or unreadable messages) is relayed, not a turn
        lane = self._lane(_lane_key(msg))
        if msg.get("generate") is False:
            self._enqueue(lane, _WARM_UP)
            return
        if kind == "response.append" and "previous_response_id" not in msg and lane.last_response_id:
            msg = {**msg, "previous_response_id": lane.last_response_id}
        ix = self._new()
        ix.note_request_message(data)
        ix.request_object(msg)
        self._enqueue(lane, ix)

    # -- server → client ---------------------------------------------------------------------------------------
    def server_message(self, data: bytes | str) -> None:
        if self.closed:
            return
        event = _decode(data)
        if event is None:
            # Unreadable: counted against the turn it interrupts (an event without a type is unparseable).
            lane = self._busy_lane()
            if lane is not None and isinstance(lane.turns[0], Interception):
                lane.turns[0].note_response_message(data)
                self._feed(lane.turns[0], {})
            return
        key = _lane_key(event)
        lane = self._lanes.get(key)
        if (lane is None or not lane.turns) and key is None:
            lane = self._busy_lane() or lane  # a server that does not echo stream_id
        kind = event.get("type")
        if lane is None or not lane.turns:
            if kind != "response.created":
                return  # between turns: keep-alives, rate-limit notices and the like
            lane = lane or self._lane(key)
            self._enqueue(lane, self._successor(lane, event))
        turn = lane.turns[0]
        if isinstance(turn, Interception):
            turn.note_response_message(data)
            self._feed(turn, event)
        if kind in END_EVENTS:
            lane.turns.popleft()
            self._pending -= 1
            lane.last_response_id = _response_id(event) or lane.last_response_id
            if isinstance(turn, Interception):
                turn.finish(None)

    def close(self, reason: str) -> None:
        """The socket ended: every unfinished turn is recorded as failed with what it saw."""
        if self.closed:
            return
        self.closed = True
        for lane in self._lanes.values():
            while lane.turns:
                turn = lane.turns.popleft()
                if isinstance(turn, Interception):
                    turn.finish(reason)
        self._pending = 0

    @property
    def pending(self) -> int:
        """Turns sent and not yet answered in full (warm-ups included)."""
        return self._pending

    # -- helpers -----------------------------------------------------------------------------------------------
    def _lane(self, key: str | None) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= MAX_LANES:
                self._forget_idle_lane()
            lane = self._lanes[key] = _Lane()
        return lane

    def _forget_idle_lane(self) -> None:
        for key, lane in self._lanes.items():
            if not lane.turns:
                del self._lanes[key]
                return

    def _busy_lane(self) -> _Lane | None:
        return next((lane for lane in self._lanes.values() if lane.turns), None)

    def _enqueue(self, lane: _Lane, turn: Turn) -> None:
        if self._pending >= MAX_PENDING_TURNS:
            # A peer that never answers must not grow memory: give up on the oldest turn, recorded as failed.
            oldest = self._busy_lane()
            if oldest is not None:
                dropped = oldest.turns.popleft()
                self._pending -= 1
                if isinstance(dropped, Interception):
                    dropped.finish(f"more than {MAX_PENDING_TURNS} responses unanswered on one socket")
        lane.turns.append(turn)
        self._pending += 1

    def _successor(self, lane: _Lane, event: dict) -> Interception:
        """A response the server started without a `response.create`: it continues the lane's last response."""
        steer = self._steers.popleft() if self._steers else {}
        request: dict[str, Any] = {"input": steer.get("input")}
        previous = steer.get("previous_response_id") or lane.last_response_id
        if previous:
            request["previous_response_id"] = previous
        resp = event.get("response")
        if isinstance(resp, dict) and isinstance(resp.get("model"), str):
            request["model"] = resp["model"]
        ix = self._new()
        ix.request_object(request)
        return ix

    @staticmethod
    def _feed(ix: Interception, event: dict) -> None:
        if ix.status_code is None:
            ix.events_started()
        ix.response_event(event)
