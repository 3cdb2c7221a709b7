"""Whatever bytes arrive, no parser raises into the proxy: every entry point returns facts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat
from aigw_proxy.recording.records import RequestFacts, ResponseFacts
from tests.parsers.chunking import StreamParser, feed_in_chunks

# openai_responses has its own version of this test, which also feeds random bytes after a valid stream prefix.
CASES: list[tuple[object, list[Callable[[], StreamParser]]]] = [
    (anthropic_messages, [anthropic_messages.stream_parser]),
    (openai_chat, [openai_chat.stream_parser]),
    (gemini, [gemini.stream_parser, gemini.json_stream_parser]),
]


@pytest.mark.parametrize(("module", "stream_parsers"), CASES, ids=["anthropic", "chat", "gemini"])
@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_raise(module: object, stream_parsers: list[Callable[[], StreamParser]],
                                  raw: bytes) -> None:
    assert isinstance(module.parse_request(raw), RequestFacts)  # type: ignore[attr-defined]
    assert isinstance(module.parse_response(raw), ResponseFacts)  # type: ignore[attr-defined]
    for make in stream_parsers:
        assert isinstance(feed_in_chunks(make, raw), ResponseFacts)
