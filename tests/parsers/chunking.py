"""Feeding a stream parser the way the proxy does: in arbitrary chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aigw_proxy.recording.records import ResponseFacts


class StreamParser(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> ResponseFacts: ...


def feed_in_chunks(make_parser: Callable[[], StreamParser], data: bytes, step: int | None = None) -> ResponseFacts:
    """Feed `data` `step` bytes at a time (all at once by default) and return the facts."""
    parser = make_parser()
    step = step or max(len(data), 1)
    for i in range(0, len(data), step):
        parser.feed(data[i:i + step])
    return parser.finish()
