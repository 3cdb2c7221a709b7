"""SSE framing under input no provider sends on purpose: lines and events far longer than one chunk, or longer
than the bound, arriving in many small chunks. The stream is relayed whatever it holds; what the parser keeps
and how long it works stay bounded, and what it drops is counted."""

from __future__ import annotations

import json

import pytest

from aigw_proxy.intercept.parsing import anthropic_messages as am
from aigw_proxy.intercept.parsing.sse import SSEDecoder, SSEEvent


def feed(decoder: SSEDecoder, data: bytes, step: int) -> list[SSEEvent]:
    events = [ev for i in range(0, len(data), step) for ev in decoder.feed(data[i:i + step])]
    return events + list(decoder.close())


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_line_spanning_many_chunks_is_one_event(newline: bytes) -> None:
    text = "é" * 300_000  # 600 kB of UTF-8, fed 1 kB at a time: the line's bytes are joined once, when it ends
    data = b"event: big" + newline + b"data: " + text.encode() + newline + newline + b"data: after" + newline * 2
    decoder = SSEDecoder()
    assert feed(decoder, data, 1000) == [SSEEvent("big", text), SSEEvent(None, "after")]
    assert decoder.overlong == 0


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("step", [7, 100, 10_000])
def test_an_overlong_line_is_dropped_and_the_stream_goes_on(newline: bytes, step: int) -> None:
    data = (b"data: before" + newline * 2
            + b"event: huge" + newline + b"data: " + b"x" * 5000 + newline + newline
            + b"data: after" + newline * 2)
    decoder = SSEDecoder(max_event=1000)
    assert feed(decoder, data, step) == [SSEEvent(None, "before"), SSEEvent(None, "after")]
    assert decoder.overlong == 1


def test_an_event_of_many_short_lines_is_bounded_too() -> None:
    lines = b"".join(b"data: %04d\n" % i for i in range(1000))  # 9,000 characters of data in one event
    data = b"data: before\n\n" + lines + b"\n" + b"data: after\n\n"
    decoder = SSEDecoder(max_event=1000)
    events = feed(decoder, data, 64)
    assert decoder.overlong == 1
    assert events[0] == SSEEvent(None, "before") and events[-1] == SSEEvent(None, "after")
    assert all(len(ev.data) <= 1000 for ev in events)  # what is left of the dropped event is never the whole of it


def test_an_unended_long_line_at_close_is_still_read() -> None:
    decoder = SSEDecoder()
    data = b'data: {"a": "' + b"y" * 50_000 + b'"}'
    assert [json.loads(ev.data)["a"] for ev in feed(decoder, data, 999)] == ["y" * 50_000]


def test_a_provider_stream_counts_the_dropped_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def event(obj: dict) -> bytes:
        return b"event: " + obj["type"].encode() + b"\ndata: " + json.dumps(obj).encode() + b"\n\n"

    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-sonnet-4-5", "role": "assistant",
                                                  "usage": {"input_tokens": 12, "output_tokens": 1}}}
    huge = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "z" * 3000}}
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
    stream = event(start) + event(huge) + event(end) + event({"type": "message_stop"})
    parser = am.stream_parser()
    parser._decoder.max_event = 1000  # the bound is 16 MiB; a small one keeps the test quick
    for i in range(0, len(stream), 50):
        parser.feed(stream[i:i + 50])
    facts = parser.finish()
    assert facts.parse_errors == 1
    assert (facts.first_response_id, facts.completed) == ("msg_1", True)
    assert sum(u.output_tokens for u in facts.token_usages) == 7
