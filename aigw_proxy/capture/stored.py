"""What the capture table stores for one interception (`SealedCapture`), and its compression. Light to import
(no redaction rules): the storage layer and the readers use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import zstandard

ENCODING: Final = "zstd"
ZSTD_LEVEL: Final = 3  # ~10x on JSON and SSE text at a few hundred MB/s; higher levels gain little on these


def compress(data: bytes) -> bytes:
    # A compressor per call: zstd contexts are not safe to share between threads, and making one costs µs.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def decompress(data: bytes, encoding: str = ENCODING) -> bytes:
    if encoding != ENCODING:
        raise ValueError(f"unknown capture encoding {encoding!r}")
    return zstandard.ZstdDecompressor().decompress(data) if data else b""


@dataclass(slots=True)
class SealedBody:
    data: bytes  # compressed (zstd)
    size: int  # the body's size as relayed (decoded), in bytes
    stored: int  # bytes kept after redaction and the cut, before compression
    truncated: bool  # cut at max_bytes

    def text(self) -> str:
        """The stored body as text (undecodable bytes shown as U+FFFD)."""
        return decompress(self.data).decode("utf-8", "replace")


@dataclass(slots=True)
class SealedCapture:
    """What the capture table stores for one interception."""

    method: str
    route: str
    transport: str
    request_headers: dict[str, str]
    request: SealedBody
    response_status: int | None
    response_headers: dict[str, str]
    response: SealedBody
    streamed: bool
    redactions: dict[str, int] = field(default_factory=dict)
    encoding: str = ENCODING
