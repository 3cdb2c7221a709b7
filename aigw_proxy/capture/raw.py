"""What the proxy's event loop collects for one captured call, and the event that hands it to the record writer.

Collected where the call's parser already gets its bytes, after they were relayed (the tee's batches for a
streamed response, the request once it went upstream, a WebSocket message after it was forwarded): appending to
a bounded buffer is all the loop does. Each buffer keeps `max_bytes` plus `MARGIN` bytes, so that a secret across
the cut is still recognised whole when the writer redacts, and counts the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from aigw_proxy.redaction.records import REDACT_MARGIN

if TYPE_CHECKING:
    from aigw_proxy.capture.build import CaptureBuilder, SealedCapture

MARGIN: Final = REDACT_MARGIN
DEFAULT_CAPTURE_MAX_BYTES: Final = 1024 * 1024  # --capture-max-bytes
MIN_CAPTURE_MAX_BYTES: Final = 1024


class BodyBuffer:
    """The start of a body (up to `keep` bytes) and its whole size."""

    __slots__ = ("data", "keep", "size")

    def __init__(self, max_bytes: int) -> None:
        self.data = bytearray()
        self.keep = max_bytes + MARGIN
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.keep - len(self.data)
        if room > 0:
            self.data += chunk if len(chunk) <= room else chunk[:room]

    def set(self, body: bytes) -> None:
        self.data = bytearray(body[: self.keep])
        self.size = len(body)


@dataclass(slots=True)
class RawCapture:
    """One call's request and response as relayed (bodies decoded), before redaction."""

    max_bytes: int
    method: str = "POST"
    route: str = ""
    transport: str = "http"
    request_headers: dict[str, str] = field(default_factory=dict)
    response_status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    streamed: bool = False
    request: BodyBuffer = field(init=False)
    response: BodyBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.request = BodyBuffer(self.max_bytes)
        self.response = BodyBuffer(self.max_bytes)


@dataclass(slots=True)
class CaptureRecord:
    """The writer's event for one capture, queued after the interception's end. Sealed (redacted, cut,
    compressed) off the event loop, on first need: by the writer's batch, or by the spool when the database is
    not taking writes (so no unredacted body is ever written to disk)."""

    id: str  # the interception's
    started_at: datetime  # the interception's
    raw: RawCapture | None = None
    sealed: SealedCapture | None = None
    builder: CaptureBuilder | None = field(default=None, repr=False, compare=False)

    def seal(self) -> SealedCapture:
        if self.sealed is None:
            if self.raw is None or self.builder is None:
                raise ValueError(f"capture {self.id} has nothing to seal")
            self.sealed = self.builder.seal(self.raw)
            self.raw = None  # the unredacted bodies go
        return self.sealed


@dataclass(frozen=True, slots=True)
class Capturing:
    """`--capture-bodies` on: what seals the captures and where they go (the record writer's `submit`)."""

    builder: CaptureBuilder
    submit: Callable[[CaptureRecord], object]
