"""Incremental content decoding (gzip, deflate, br, zstd) of a copy of a body, for the parsers only: the client
always receives the original bytes. A decoder that fails stops decoding and reports it; it never raises."""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard


class _Decoder(Protocol):
    def decompress(self, data: bytes) -> bytes: ...


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._raw_fallback = wbits == zlib.MAX_WBITS  # "deflate" is sometimes raw deflate, not zlib

    def decompress(self, data: bytes) -> bytes:
        try:
            return self._d.decompress(data)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._d.decompress(data)


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._d.process(data)


class _Zstd:
    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return self._d.decompress(data)


def _make(encoding: str) -> _Decoder:
    enc = encoding.strip().lower()
    if enc in ("", "identity", "none"):
        return _Identity()
    if enc in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if enc == "br":
        return _Brotli()
    if enc == "zstd":
        return _Zstd()
    raise ValueError(f"unsupported content-encoding {encoding!r}")


class StreamDecoder:
    """Decode a body as it arrives. `Content-Encoding: gzip, br` lists codings in the order applied."""

    __slots__ = ("_chain", "error")

    def __init__(self, content_encoding: str | None) -> None:
        self.error: str | None = None
        codings = [c for c in (content_encoding or "").split(",") if c.strip()]
        try:
            self._chain = [_make(c) for c in reversed(codings)]
        except ValueError as exc:
            self._chain = []
            self.error = str(exc)

    def decode(self, chunk: bytes) -> bytes:
        if self.error is not None:
            return b""
        try:
            for d in self._chain:
                chunk = d.decompress(chunk)
            return chunk
        except Exception as exc:
            self.error = f"cannot decode body: {exc}"
            return b""


def decode_body(body: bytes, content_encoding: str | None) -> tuple[bytes, str | None]:
    """Decode a whole body. Returns the decoded bytes and an error text (None when it decoded cleanly)."""
    d = StreamDecoder(content_encoding)
    out = d.decode(body)
    return out, d.error
