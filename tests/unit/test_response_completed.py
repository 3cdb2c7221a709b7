"""When a model call has completed: once the provider's terminal event arrived, on SSE as on a WebSocket. Codex over
HTTP/SSE stops reading at `response.completed`; the end of the body arrives milliseconds later and mitmproxy
reports the client gone. That call completed — and one broken off before its terminal event did not."""

from __future__ import annotations

import json

from aigw_proxy.intercept import socket_turns
from aigw_proxy.intercept.interception import Interception
from aigw_proxy.intercept.parsing import openai_responses
from aigw_proxy.intercept.socket_turns import SocketTurns
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.records import Initiator, InterceptionEnded, RecordEvent
from tests.support.payloads import (
    anthropic_stream,
    anthropic_usage,
    responses_object,
    responses_stream,
    responses_usage,
)

PROVIDERS = {p.name: p for p in builtin_providers()}
ALICE = Initiator("u1", "alice", "tok1")
CODEX = {"user-agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) dumb (codex_exec; 0.171.0)",
         "authorization": "Bearer sk-proj-" + "c" * 40, "session-id": "s-1"}
RESPONSE = responses_object("resp_1", "gpt-5.1-codex", [
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "done", "annotations": []}]}], responses_usage(120, 8, cached=40))
CLIENT_GONE = "Client disconnected."


def http_call(api: Api, provider: str, body: dict, headers: dict[str, str]) -> tuple[Interception, list]:
    events: list[RecordEvent] = []
    ix = Interception(api=api, provider=PROVIDERS[provider], initiator=ALICE, headers=headers,
                      route="/v1/responses" if api is Api.OPENAI_RESPONSES else "/v1/messages", submit=events.append)
    ix.request_received(json.dumps(body).encode(), None)
    ix.parse_request()
    ix.response_started(200, "text/event-stream", None)
    return ix, events


def sse(reply_chunks: list[bytes]) -> bytes:
    return b"".join(reply_chunks)


def test_sse_response_completed_then_client_gone_is_completed() -> None:
    ix, _ = http_call(Api.OPENAI_RESPONSES, "openai", {"model": "gpt-5.1-codex", "stream": True, "input": "hi"},
                      CODEX)
    ix.response_chunk(sse(responses_stream(RESPONSE).chunks))  # all events, up to response.completed
    end = ix.finish(CLIENT_GONE)  # ... and the body's end never reached a client that had stopped reading
    assert end is not None
    assert (end.status, end.upstream_status, end.error) == ("completed", 200, None)
    assert end.token_usages[0].input_tokens == 80 and end.prompt == "hi"


def test_sse_broken_off_before_the_terminal_event_is_failed() -> None:
    ix, _ = http_call(Api.OPENAI_RESPONSES, "openai", {"model": "gpt-5.1-codex", "stream": True, "input": "hi"},
                      CODEX)
    ix.response_chunk(sse(responses_stream(RESPONSE).chunks[:-1]))  # everything but response.completed
    end = ix.finish(CLIENT_GONE)
    assert end is not None and (end.status, end.error) == ("failed", CLIENT_GONE)


def test_anthropic_message_stop_then_client_gone_is_completed() -> None:
    ix, _ = http_call(Api.ANTHROPIC_MESSAGES, "anthropic",
                      {"model": "claude-x", "stream": True, "max_tokens": 9,
                       "messages": [{"role": "user", "content": "hi"}]},
                      {"user-agent": "claude-cli/2.1.332", "x-api-key": "sk-ant-api03-" + "k" * 40})
    ix.response_chunk(sse(anthropic_stream("msg_1", "claude-x", [{"type": "text", "text": "ok"}],
                                           anthropic_usage(5, 2)).chunks))
    end = ix.finish(CLIENT_GONE)
    assert end is not None and end.status == "completed"


def test_websocket_turns_end_at_the_same_terminal_events() -> None:
    assert socket_turns.END_EVENTS is openai_responses.TERMINAL_EVENTS
    ended: list[InterceptionEnded] = []

    def new() -> Interception:
        return Interception(api=Api.OPENAI_RESPONSES, provider=PROVIDERS["openai"], initiator=ALICE, headers=CODEX,
                            route="/v1/responses", transport="websocket",
                            submit=lambda e: ended.append(e) if isinstance(e, InterceptionEnded) else None)

    turns = SocketTurns(new)
    turns.client_message(json.dumps({"type": "response.create", "model": "gpt-5.1-codex", "input": "hi"}))
    for chunk in responses_stream(RESPONSE).chunks:
        turns.server_message(chunk.split(b"data: ", 1)[1])
    turns.close("websocket connection to the client was lost before the response completed")
    [end] = ended
    assert (end.status, end.upstream_status) == ("completed", 101)
