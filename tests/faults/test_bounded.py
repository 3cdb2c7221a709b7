"""Bounded inputs: a 50 MB request body is relayed to the provider byte for byte, while its record keeps only the
first 256 KiB of the prompt (and of a huge tool-call input) with a truncation marker and the original size; the
database grows by kilobytes, not by the body's size. The cap is configurable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import anthropic
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn

MODEL = "claude-sonnet-4-5-20250929"
API_KEY = "sk-ant-api03-" + "k" * 80
KIB = 1024


def use_proxy(d: Daemon, monkeypatch: pytest.MonkeyPatch) -> anthropic.Anthropic:
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return anthropic.Anthropic(api_key=API_KEY, max_retries=0, timeout=120)


def database_bytes(d: Daemon) -> int:
    return sum(f.stat().st_size for f in d.data_dir.glob("aigw-proxy.db*"))


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
           upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("capped")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file))
    yield d
    stop_daemon(d)


def test_a_50_mb_prompt_is_relayed_whole_and_stored_capped(capped: Daemon, upstream: StandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    claude = use_proxy(capped, monkeypatch)
    prompt = "Summarise this log:\n" + "2026-12-01 09:00:00 INFO request served in 12 ms\n" * 1_040_000
    assert len(prompt) > 50_000_000
    tool_input = {"file_path": "/tmp/out.txt", "content": "y" * 1_000_000}
    upstream.queue(Reply.json(anthropic_message("msg_BIG", MODEL, [
        {"type": "tool_use", "id": "toolu_BIG", "name": "Write", "input": tool_input}],
        anthropic_usage(12_500_000, 250_000), stop_reason="tool_use")))
    db_before = database_bytes(capped)

    reply = claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": prompt}])

    assert reply.content[0].input == tool_input  # type: ignore[union-attr]  # the client got the response whole
    [seen] = upstream.requests
    sent = seen.json()["messages"][0]["content"]
    assert hashlib.sha256(sent.encode()).digest() == hashlib.sha256(prompt.encode()).digest()  # relayed intact

    ix = capped.one(response_id="msg_BIG", timeout=30)
    [stored] = [p["prompt"] for p in ix["user_prompts"]]
    size = len(prompt.encode())
    assert stored == prompt[: 256 * KIB] + f"…[truncated: {size} bytes]"
    [tool] = ix["tool_usages"]
    recorded_input = json.dumps(tool_input, separators=(",", ":"))  # tool inputs are recorded as compact JSON
    input_size = len(recorded_input)
    assert tool["input"] == recorded_input[: 256 * KIB] + f"…[truncated: {input_size} bytes]"
    assert ix["metadata"]["truncated"] == {"prompt": size, "tool_calls[0].input": input_size}
    [usage] = ix["token_usages"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (12_500_000, 250_000)  # the rest is recorded as usual
    assert ix["status"] == "completed"
    assert database_bytes(capped) - db_before < 5_000_000  # not +100 MB


def test_the_cap_is_configurable(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
                                 upstream_pki: UpstreamPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path_factory.mktemp("small-cap")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--max-field-bytes", "4096"))
    try:
        claude = use_proxy(d, monkeypatch)
        standin_server.queue(Reply.json(anthropic_message("msg_SMALL", MODEL, [{"type": "text", "text": "ok"}],
                                                          anthropic_usage(5, 1))))
        prompt = "é" * 3000  # 6000 bytes of UTF-8: the cut falls on a character boundary
        claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": prompt}])
        ix = d.one(response_id="msg_SMALL")
        assert ix["user_prompts"][0]["prompt"] == "é" * 2048 + "…[truncated: 6000 bytes]"
        assert ix["metadata"]["truncated"] == {"prompt": 6000}
    finally:
        stop_daemon(d)
