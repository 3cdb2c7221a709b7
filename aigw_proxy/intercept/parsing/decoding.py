"""Incremental content decoding (gzip, deflate, br, zstd) of a copy of a body, for the parsers only: the client
always receives the original bytes. A decoder that fails stops decoding and reports it; it never raises.

Decoding is bounded (a decompression bomb — a few MB of gzip that inflate to gigabytes — must not take the
proxy's memory): each coding decompresses with an output limit, so one call never yields much more than what
is left of `max_decoded`, and a body that decodes past it stops decoding there (`exceeded`). The bytes decoded
up to the limit are still handed on; the caller records that the rest was not parsed."""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard

DEFAULT_MAX_DECODED = 64 * 1024 * 1024  # bytes of decoded body, per body (the proxy's parse limit)
_ZSTD_WRITE_SIZE = 64 * 1024  # zstd hands its output on in pieces of this size, each checked against the limit


class _Decoder(Protocol):
    def decompress(self, data: bytes, max_length: int) -> tuple[bytes, bool]:
        """Decode `data`: at most `max_length` bytes, and whether more would have followed (the limit is passed;
        the rest of `data` is dropped)."""
        ...


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._raw_fallback = wbits == zlib.MAX_WBITS  # "deflate" is sometimes raw deflate, not zlib

    def decompress(self, data: bytes, max_length: int) -> tuple[bytes, bool]:
        if max_length <= 0:  # zlib reads 0 as "no limit": only look whether anything would follow
            return b"", bool(data) and bool(self._inflate(data, 1))
        out = self._inflate(data, max_length)
        if len(out) < max_length or self._d.eof:  # all of `data` was decoded
            return out, False
        return out, bool(self._d.decompress(self._d.unconsumed_tail, 1))  # output left inside: past the limit

    def _inflate(self, data: bytes, max_length: int) -> bytes:
        try:
            return self._d.decompress(data, max_length)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._d.decompress(data, max_length)


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decompress(self, data: bytes, max_length: int) -> tuple[bytes, bool]:
        # The output buffer stops growing once it holds `max_length` bytes (it may hold up to about twice that).
        out = self._d.process(data, output_buffer_limit=max(1, max_length))
        if len(out) > max_length:
            return out[:max_length], True
        return out, len(out) == max_length and not self._d.can_accept_more_data()


class _LimitReached(Exception):
    pass


class _Sink:
    """Where zstd writes its output, piece by piece: past `room` bytes it stops the decompression."""

    __slots__ = ("parts", "room")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.room = 0

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            if self.room:
                self.parts.append(bytes(data[:self.room]))
            self.room = 0
            raise _LimitReached
        self.parts.append(bytes(data))
        self.room -= len(data)
        return len(data)


class _Zstd:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._w = zstandard.ZstdDecompressor().stream_writer(
            self._sink,  # type: ignore[arg-type]  # it only calls write(); the stub asks for a whole IO
            write_size=_ZSTD_WRITE_SIZE, write_return_read=True)

    def decompress(self, data: bytes, max_length: int) -> tuple[bytes, bool]:
        sink = self._sink
        sink.room = max_length
        cut = False
        try:
            self._w.write(data)
        except _LimitReached:
            cut = True
        out = sink.parts[0] if len(sink.parts) == 1 else b"".join(sink.parts)
        sink.parts = []
        return out, cut


def _make(encoding: str) -> _Decoder | None:
    enc = encoding.strip().lower()
    if enc in ("", "identity", "none"):
        return None
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
    """Decode a body as it arrives. `Content-Encoding: gzip, br` lists codings in the order applied.

    `decoded` counts the decoded bytes; once a coding's output passes `max_decoded` (only compressed bodies are
    bounded: an identity body is handed on as it comes), `exceeded` is set and nothing more is decoded."""

    __slots__ = ("_chain", "_totals", "decoded", "error", "exceeded", "max_decoded")

    def __init__(self, content_encoding: str | None, max_decoded: int = DEFAULT_MAX_DECODED) -> None:
        self.error: str | None = None
        self.exceeded = False
        self.decoded = 0
        self.max_decoded = max_decoded
        codings = [c for c in (content_encoding or "").split(",") if c.strip()]
        try:
            self._chain = [d for c in reversed(codings) if (d := _make(c)) is not None]
        except ValueError as exc:
            self._chain = []
            self.error = str(exc)
        self._totals = [0] * len(self._chain)  # each coding's output so far

    def decode(self, chunk: bytes) -> bytes:
        if self.error is not None or self.exceeded:
            return b""
        try:
            for i, d in enumerate(self._chain):
                chunk, cut = d.decompress(chunk, self.max_decoded - self._totals[i])
                self._totals[i] += len(chunk)
                if cut:  # more would follow: stop at the limit, hand on what fits
                    self.exceeded = True
        except Exception as exc:
            self.error = f"cannot decode body: {exc}"
            return b""
        self.decoded += len(chunk)
        return chunk


def decode_body(body: bytes, content_encoding: str | None,
                max_decoded: int = DEFAULT_MAX_DECODED) -> tuple[bytes, str | None]:
    """Decode a whole body. Returns the decoded bytes and an error text (None when it decoded cleanly; set too
    when it decodes to more than `max_decoded` bytes, and then the bytes are the first `max_decoded`)."""
    d = StreamDecoder(content_encoding, max_decoded)
    out = d.decode(body)
    if d.exceeded:
        return out, decoding_limit_message("body", max_decoded)
    return out, d.error


def decoding_limit_message(what: str, max_decoded: int) -> str:
    return f"{what} decompresses to more than {max_decoded} bytes: not parsed (decompression limit)"
