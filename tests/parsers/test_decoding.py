"""Content decoding for the parsers: every coding round-trips in any chunking, and decoding is bounded — a
decompression bomb (a few KB that inflate to hundreds of MB) stops at the limit in bounded steps, keeping what
decoded up to it, instead of inflating into memory."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard

from aigw_proxy.intercept.parsing.decoding import StreamDecoder, decode_body

BODY = b'{"model": "claude-x", "messages": [{"role": "user", "content": "hello"}]}' * 200
MIB = 1024 * 1024

CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gzip.compress(b, 6),
    "deflate": zlib.compress,
    "br": lambda b: brotli.compress(b, quality=5),
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "gzip, br": lambda b: brotli.compress(gzip.compress(b), quality=5),  # applied in this order
}


@pytest.mark.parametrize("coding", CODINGS)
def test_each_coding_round_trips_in_small_chunks(coding: str) -> None:
    data = CODINGS[coding](BODY)
    d = StreamDecoder(coding, max_decoded=len(BODY))  # exactly at the limit is not past it
    out = b"".join(d.decode(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out == BODY
    assert (d.error, d.exceeded, d.decoded) == (None, False, len(BODY))


def test_raw_deflate_is_decoded_too() -> None:
    raw = zlib.compress(BODY)[2:-4]
    assert decode_body(raw, "deflate") == (BODY, None)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """256 MiB of zeros in each coding (gzip ~260 KB, br and zstd a few KB)."""
    zeros = b"\0" * (256 * MIB)
    return {coding: make(zeros) for coding, make in CODINGS.items()}


@pytest.mark.parametrize("coding", CODINGS)
def test_a_bomb_stops_at_the_limit_in_bounded_steps(coding: str, bombs: dict[str, bytes]) -> None:
    bomb = bombs[coding]
    limit = 4 * MIB
    d = StreamDecoder(coding, max_decoded=limit)
    tracemalloc.start()
    try:
        outputs = [len(d.decode(bomb[i:i + 64 * 1024])) for i in range(0, len(bomb), 64 * 1024)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.exceeded and d.error is None
    assert sum(outputs) == d.decoded == limit  # what decoded up to the limit was handed on, nothing past it
    assert d.decode(bomb[-16:]) == b""  # once past the limit, nothing more is decoded
    assert peak < 4 * limit, f"decoding held {peak} bytes at once"  # not 256 MiB


@pytest.mark.parametrize("coding", CODINGS)
def test_a_whole_body_bomb_is_reported(coding: str, bombs: dict[str, bytes]) -> None:
    out, err = decode_body(bombs[coding], coding, max_decoded=MIB)
    assert len(out) == MIB
    assert err == f"body decompresses to more than {MIB} bytes: not parsed (decompression limit)"


def test_an_identity_body_is_not_bounded() -> None:
    d = StreamDecoder(None, max_decoded=10)
    assert d.decode(BODY) == BODY and not d.exceeded


def test_a_corrupt_body_is_an_error_not_an_exception() -> None:
    out, err = decode_body(b"not gzip at all", "gzip")
    assert out == b"" and err is not None and err.startswith("cannot decode body")
    assert decode_body(b"x", "compress")[1] == "unsupported content-encoding 'compress'"
