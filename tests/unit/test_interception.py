"""One model call from bytes to records, without a proxy: what ends up completed, failed or partial."""

from __future__ import annotations

import gzip
import json
import zlib

from aigw_proxy.intercept.interception import MAX_PARSED_BODY, Interception
from aigw_proxy.policy.providers import Api, builtin_providers
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, RecordEvent
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage

ANTHROPIC = builtin_providers()[0]
ALICE = Initiator("u1", "alice", "tok1")
REQUEST = json.dumps({"model": "claude-x", "stream": True, "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hello"}]}).encode()


def call(headers: dict[str, str] | None = None) -> tuple[Interception, list[RecordEvent]]:
    events: list[RecordEvent] = []
    ix = Interception(api=Api.ANTHROPIC_MESSAGES, provider=ANTHROPIC, initiator=ALICE,
                      headers=headers or {"user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
                                          "x-api-key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"},
                      route="/v1/messages", submit=events.append)
    return ix, events


def stream_bytes() -> bytes:
    return b"".join(anthropic_stream("msg_1", "claude-x", [{"type": "text", "text": "hi there"}],
                                     anthropic_usage(3, 4)).chunks)


def test_streamed_call_records_start_then_end() -> None:
    ix, events = call()
    ix.request_received(REQUEST, None)
    ix.parse_request()
    ix.response_started(200, "text/event-stream; charset=utf-8", None)
    data = stream_bytes()
    for i in range(0, len(data), 13):
        ix.response_chunk(data[i:i + 13])
    ended = ix.finish()
    start, end = events
    assert isinstance(start, InterceptionStarted) and isinstance(end, InterceptionEnded)
    assert (start.model, start.client, start.credential_kind) == ("claude-x", "Claude Code", "api_key")
    assert "abcdefghijklmnop" not in start.credential_hint
    assert start.metadata["streaming"] is True and start.metadata["transport"] == "http"
    assert end is ended and end.status == "completed" and end.prompt == "hello"
    assert end.token_usages[0].output_tokens == 4 and end.prompt_response_id == "msg_1"
    assert ix.finish() is None  # finishing twice records nothing more


def test_finish_before_the_parse_callback_still_records_the_request() -> None:
    ix, events = call()
    ix.request_received(REQUEST, None)
    ix.response_started(200, "application/json", None)
    ix.response_chunk(json.dumps(anthropic_message("msg_2", "claude-x", [], anthropic_usage(1, 1))).encode())
    ix.finish()
    assert isinstance(events[0], InterceptionStarted) and events[0].model == "claude-x"
    assert isinstance(events[1], InterceptionEnded) and events[1].prompt == "hello"


def test_truncated_stream_is_failed_but_keeps_what_arrived() -> None:
    ix, _events = call()
    ix.request_received(REQUEST, None)
    ix.response_started(200, "text/event-stream", None)
    data = stream_bytes()
    ix.response_chunk(data[: len(data) // 2])
    end = ix.finish("client disconnected")
    assert end is not None and end.status == "failed" and end.error == "client disconnected"
    assert end.token_usages and end.token_usages[0].input_tokens == 3


def test_upstream_error_status() -> None:
    ix, _ = call()
    ix.request_received(REQUEST, None)
    ix.response_started(429, "application/json", None)
    ix.response_chunk(b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}')
    end = ix.finish()
    assert end is not None and (end.status, end.upstream_status) == ("failed", 429)
    assert end.error is not None and "slow down" in end.error


def test_connection_failure_before_any_response() -> None:
    ix, events = call()
    ix.request_received(REQUEST, None)
    end = ix.finish("Connection refused")
    assert end is not None and end.status == "failed" and end.upstream_status is None
    assert len(events) == 2


def test_gzip_request_and_response_bodies() -> None:
    ix, _events = call()
    ix.request_received(gzip.compress(REQUEST), "gzip")
    ix.response_started(200, "application/json", "gzip")
    body = gzip.compress(json.dumps(anthropic_message("msg_3", "claude-x", [], anthropic_usage(2, 2))).encode())
    ix.response_chunk(body[:10])
    ix.response_chunk(body[10:])
    end = ix.finish()
    assert end is not None and end.status == "completed" and end.prompt == "hello"


def test_garbage_encoding_is_a_failed_record_not_an_exception() -> None:
    ix, _ = call()
    ix.request_received(b"\x00\x01 not gzip", "gzip")
    ix.response_started(200, "application/json", "br")
    ix.response_chunk(b"definitely not brotli")
    end = ix.finish()
    assert end is not None and end.status == "failed" and "decode" in (end.error or "")


def test_oversized_non_streamed_body_is_not_buffered() -> None:
    ix, _ = call()
    ix.request_received(REQUEST, None)
    ix.response_started(200, "application/json", None)
    chunk = b" " * (1024 * 1024)
    for _ in range(MAX_PARSED_BODY // len(chunk) + 2):
        ix.response_chunk(chunk)
    assert ix._body is not None and len(ix._body) == 0  # memory stays bounded
    end = ix.finish()
    assert end is not None and end.status == "completed"


def gzip_bomb(prefix: bytes, padding_line: bytes, decoded: int) -> bytes:
    """`prefix` then `padding_line` repeated up to `decoded` bytes, gzipped (a few hundred KB)."""
    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(prefix)]
    block = padding_line * (1024 * 1024 // len(padding_line))
    for _ in range(decoded // len(block)):
        out.append(z.compress(block))
    return b"".join([*out, z.flush()])


def test_a_request_that_decompresses_past_the_limit_is_not_parsed() -> None:
    ix, events = call()
    bomb = gzip_bomb(REQUEST[:-1] + b', "pad": "', b" " * 1024, MAX_PARSED_BODY + 16 * 1024 * 1024)
    assert len(bomb) < MAX_PARSED_BODY // 100
    ix.request_received(bomb, "gzip")
    ix.parse_request()
    ix.response_started(200, "application/json", None)
    ix.response_chunk(json.dumps(anthropic_message("msg_rb", "claude-x", [], anthropic_usage(2, 1))).encode())
    end = ix.finish()
    start = events[0]
    assert isinstance(start, InterceptionStarted) and start.model == "unknown"
    assert end is not None and end.status == "completed" and end.parse_errors == 1
    assert end.metadata["decompression_limit"] == {"request_body": MAX_PARSED_BODY}
    assert end.metadata["truncated"] == {"request_body": MAX_PARSED_BODY}
    assert end.token_usages[0].output_tokens == 1  # the response is recorded as usual


def test_a_response_that_decompresses_past_the_limit_is_relayed_not_parsed() -> None:
    ix, _ = call()
    ix.request_received(REQUEST, None)
    bomb = gzip_bomb(b'{"id": "msg_b", "pad": "', b" " * 1024, MAX_PARSED_BODY + 16 * 1024 * 1024)
    ix.response_started(200, "application/json", "gzip")
    for i in range(0, len(bomb), 16 * 1024):
        ix.response_chunk(bomb[i:i + 16 * 1024])
    assert ix._body is not None and len(ix._body) == 0  # nothing decoded is held
    end = ix.finish()
    assert end is not None and end.status == "completed" and end.parse_errors == 1
    assert end.metadata["decompression_limit"] == {"response_body": MAX_PARSED_BODY}
    assert end.metadata["truncated"] == {"response_body": MAX_PARSED_BODY}


def test_a_stream_that_decompresses_past_the_limit_keeps_what_it_showed_first() -> None:
    ix, _ = call()
    ix.request_received(REQUEST, None)
    first = b"".join(anthropic_stream("msg_sb", "claude-x", [], anthropic_usage(7, 1)).chunks[:1])  # message_start
    bomb = gzip_bomb(first, b": " + b"p" * 4093 + b"\n", MAX_PARSED_BODY + 16 * 1024 * 1024)
    ix.response_started(200, "text/event-stream", "gzip")
    for i in range(0, len(bomb), 16 * 1024):
        ix.response_chunk(bomb[i:i + 16 * 1024])
    end = ix.finish()
    assert end is not None and end.status == "completed" and end.error is None
    assert end.token_usages[0].input_tokens == 7  # the usage its first event showed
    assert end.parse_errors == 1
    assert end.metadata["decompression_limit"] == {"response_body": MAX_PARSED_BODY}


def test_a_stream_past_the_limit_whose_connection_broke_is_still_failed() -> None:
    ix, _ = call()
    ix.request_received(REQUEST, None)
    ix.response_started(200, "text/event-stream", "gzip")
    ix.response_chunk(gzip_bomb(b"", b": " + b"p" * 4093 + b"\n", MAX_PARSED_BODY + 1024 * 1024))
    end = ix.finish("server closed connection", "upstream_reset")
    assert end is not None and end.status == "failed" and end.error_type == "upstream_reset"
