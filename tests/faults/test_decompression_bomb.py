"""Decompression bombs through a real daemon: a gzip body of about half a megabyte that inflates to 512 MiB, sent
by a client (request) or by the provider (response). The proxy relays it byte for byte, decodes only up to its
parse limit (64 MiB) for the record, says so in the record (a parse error, `metadata.decompression_limit`), logs
it, counts it on /metrics, and its memory stays far below what the bomb inflates to. The daemon runs with
`--redaction block`, so the secrets gate decodes the request body too."""

from __future__ import annotations

import hashlib
import json
import ssl
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import wait_for
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn

MODEL = "claude-sonnet-4-5-20250929"
MIB = 1024 * 1024
LIMIT = 64 * MIB
INFLATED = 512 * MIB
METRIC = "aigw_proxy_decompression_limit_exceeded_total"


def gzip_bomb(prefix: bytes, inflated: int = INFLATED) -> bytes:
    """`prefix` then spaces up to `inflated` bytes, gzipped (~0.5 MB for 512 MiB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MIB
    parts = [z.compress(prefix), *(z.compress(block) for _ in range(inflated // MIB)), z.flush()]
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomber(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
           upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("bomb")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file), extra_args=("--redaction", "block"))
    BASELINE[d.port] = peak_rss(d)
    yield d
    stop_daemon(d)


BASELINE: dict[int, int] = {}  # daemon port -> its peak memory once started (~140 MB)


def grew(d: Daemon) -> int:
    """How far the daemon's peak memory rose above its peak at start: bounded by the parse limit (a few times
    64 MiB while a body decodes), not by the 512 MiB the bomb inflates to (twice that with the secrets gate)."""
    return peak_rss(d) - BASELINE[d.port]


def client(d: Daemon) -> httpx2.Client:
    return httpx2.Client(proxy=d.proxy_url("alice"), verify=ssl.create_default_context(cafile=d.ca_bundle),
                        timeout=60)


def peak_rss(d: Daemon) -> int:
    """The daemon's peak resident memory so far, in bytes (Linux VmHWM)."""
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def ended(d: Daemon, body: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in d.interceptions() if body in (r["metadata"].get("decompression_limit") or {})]
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1, f"expected one interception with a {body} past the limit, found {len(rows)}"
            return rows[0]
        time.sleep(0.1)


def test_a_request_bomb_is_relayed_whole_and_recorded_as_not_parsed(bomber: Daemon, upstream: StandIn) -> None:
    prefix = json.dumps({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "boom"}]})
    bomb = gzip_bomb(prefix[:-1].encode() + b', "padding": "')
    assert len(bomb) < MIB
    upstream.queue(Reply.json(anthropic_message("msg_REQBOMB", MODEL, [{"type": "text", "text": "ok"}],
                                                anthropic_usage(9, 2))))
    with client(bomber) as c:
        r = c.post("https://api.anthropic.com/v1/messages", content=bomb,
                   headers={"content-type": "application/json", "content-encoding": "gzip",
                            "x-api-key": "sk-ant-api03-" + "k" * 80, "anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.json()["id"] == "msg_REQBOMB"
    [seen] = upstream.requests
    assert seen.headers["content-encoding"] == "gzip"
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(bomb).digest()  # relayed byte for byte

    ix = ended(bomber, "request_body")
    assert ix["status"] == "completed"
    assert ix["metadata"]["decompression_limit"] == {"request_body": LIMIT}
    assert ix["metadata"]["truncated"]["request_body"] == LIMIT  # decoded this far, no further
    assert [(u["input_tokens"], u["output_tokens"]) for u in ix["token_usages"]] == [(9, 2)]
    s = wait_for(bomber.admin_port, lambda s: s.value(METRIC, body="request_body") >= 1)
    assert s.value(METRIC, provider="anthropic", api="anthropic.messages", body="request_body") == 1
    assert s.value("aigw_proxy_parse_errors_total", provider="anthropic", api="anthropic.messages") >= 1
    log = bomber.log()
    assert "request body decompresses to more than 67108864 bytes" in log
    assert "cannot be scanned for secrets" in log  # the gate says so too, and relays it
    assert grew(bomber) < 3 * LIMIT, "the daemon's memory grew towards the inflated size"


def test_a_response_bomb_reaches_the_client_untouched(bomber: Daemon, upstream: StandIn) -> None:
    bomb = gzip_bomb(b'{"id": "msg_RESPBOMB", "type": "message", "padding": "')
    upstream.queue(Reply(chunks=[bomb[i:i + 64 * 1024] for i in range(0, len(bomb), 64 * 1024)],
                         headers={"Content-Encoding": "gzip"}))
    request = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "bomb me"}]}
    with client(bomber) as c, c.stream("POST", "https://api.anthropic.com/v1/messages", json=request,
                                       headers={"x-api-key": "sk-ant-api03-" + "k" * 80,
                                                "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())  # the bytes as relayed, not decoded by the client
    assert hashlib.sha256(raw).digest() == hashlib.sha256(bomb).digest()

    ix = ended(bomber, "response_body")
    assert ix["status"] == "completed" and ix["upstream_status"] == 200
    assert [p["prompt"] for p in ix["user_prompts"]] == ["bomb me"]  # the request is parsed as usual
    assert ix["metadata"]["decompression_limit"] == {"response_body": LIMIT}
    assert ix["metadata"]["truncated"]["response_body"] == LIMIT
    s = wait_for(bomber.admin_port, lambda s: s.value(METRIC, body="response_body") >= 1)
    assert s.value(METRIC, provider="anthropic", api="anthropic.messages", body="response_body") == 1
    assert "response decompresses to more than 67108864 bytes" in bomber.log()
    assert grew(bomber) < 3 * LIMIT
