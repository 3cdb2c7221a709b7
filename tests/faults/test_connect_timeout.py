"""`--upstream-connect-timeout`: an upstream that never answers a SYN (a local stand-in for a host behind a
dropping firewall) fails fast with a clear error instead of holding the client for the kernel's ~2 minutes:
a 502 on the CONNECT of a tunnel (raw or decrypted: the proxy dials at CONNECT time), a 502 whose body says the
connect timed out for a proxied request; each is logged and counted on /metrics by type."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, start_daemon, stop_daemon
from tests.support.metrics import wait_for
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.ports import Blackhole, TurnsDropping
from tests.support.standin import Reply, StandIn

METRIC = "aigw_proxy_upstream_connect_timeouts_total"
CLIENT_WAIT = 30.0  # seconds the test's client waits: far below the kernel's ~127 s, far above the 1 s timeout


@pytest.fixture(scope="module")
def blackhole() -> Iterator[Blackhole]:
    bh = Blackhole()
    yield bh
    bh.close()


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory, blackhole: Blackhole,
             upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("connect-timeout")
    config = "\n".join([
        f'upstream_ca_file = "{upstream_pki.ca_file}"',
        f"allowed_ports = {json.dumps([80, 443, blackhole.port])}",
        'allowed_private_cidrs = ["127.0.0.1/32"]',
        "[[providers]]", 'name = "anthropic"', f'upstream = "https://127.0.0.1:{blackhole.port}"',
    ])
    d = start_daemon(tmp, config, extra_args=("--upstream-connect-timeout", "1s"))
    yield d
    stop_daemon(d)


def ask(d: Daemon, request_line: str) -> tuple[int, str, float]:
    """Send one proxy request (CONNECT or absolute-form) with alice's credentials: status, body, seconds taken."""
    auth = base64.b64encode(f"alice:{d.token('alice')}".encode()).decode()
    host = request_line.split(" ")[1].removeprefix("http://").split("/")[0]
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", d.port), timeout=CLIENT_WAIT) as s:
        s.sendall(f"{request_line} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ")[1]), body.decode(errors="replace"), time.monotonic() - began


def test_a_tunnel_to_a_dropping_host_gets_a_502_on_its_connect(dropping: Daemon, blackhole: Blackhole) -> None:
    status, body, took = ask(dropping, f"CONNECT 127.0.0.1:{blackhole.port}")
    assert status == 502
    assert f"upstream connect timed out: 127.0.0.1:{blackhole.port} did not answer within 1 s" in body
    assert took < CLIENT_WAIT
    s = wait_for(dropping.admin_port, lambda s: s.value(METRIC, type="tunneled") >= 1)
    assert s.value(METRIC, type="tunneled") == 1
    assert f"upstream 127.0.0.1:{blackhole.port} did not answer within 1 s" in dropping.log()


def test_a_provider_whose_upstream_drops_gets_a_502_on_its_connect(dropping: Daemon) -> None:
    status, body, _ = ask(dropping, "CONNECT api.anthropic.com:443")
    assert status == 502 and "upstream connect timed out" in body
    s = wait_for(dropping.admin_port, lambda s: s.value(METRIC, type="mitm") >= 1)
    assert s.value(METRIC, type="mitm") == 1


def test_a_proxied_request_gets_a_502_saying_the_connect_timed_out(dropping: Daemon, blackhole: Blackhole) -> None:
    status, body, _ = ask(dropping, f"GET http://127.0.0.1:{blackhole.port}/v1/models")
    assert status == 502
    assert f"upstream connect timed out: 127.0.0.1:{blackhole.port} did not answer within 1 s" in body
    s = wait_for(dropping.admin_port, lambda s: s.value(METRIC, type="plain") >= 1)
    assert s.value(METRIC, type="plain") == 1


def test_a_model_call_whose_reconnect_times_out_gets_a_502_and_a_timeout_record(
        tmp_path: Path, standin_server: StandIn, upstream: StandIn, upstream_pki: UpstreamPKI) -> None:
    """Inside a decrypted tunnel: the first call goes through, then the upstream connection ends and the host
    starts dropping packets; the next call's reconnect times out: the client gets a 502 whose body says so, and
    the call is recorded failed with `error_type` `timeout`."""
    relay = TurnsDropping(("127.0.0.1", standin_server.port))
    config = "\n".join([
        f'upstream_ca_file = "{upstream_pki.ca_file}"',
        'allowed_private_cidrs = ["127.0.0.1/32"]',
        "[[providers]]", 'name = "anthropic"', f'upstream = "https://127.0.0.1:{relay.port}"',
    ])
    d = start_daemon(tmp_path, config, extra_args=("--upstream-connect-timeout", "1s"))
    try:
        upstream.queue(Reply.json(anthropic_message("msg_FIRST", "claude-x", [{"type": "text", "text": "ok"}],
                                                    anthropic_usage(3, 1))))
        headers = {"x-api-key": "sk-ant-api03-" + "k" * 80, "anthropic-version": "2023-06-01"}
        with httpx2.Client(proxy=d.proxy_url("alice"), verify=ssl.create_default_context(cafile=d.ca_bundle),
                           timeout=CLIENT_WAIT) as c:
            first = c.post("https://api.anthropic.com/v1/messages", headers=headers,
                           json={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]})
            assert first.status_code == 200
            relay.drop()
            time.sleep(0.5)  # the proxy sees its upstream connection end
            second = c.post("https://api.anthropic.com/v1/messages", headers=headers,
                            json={"model": "claude-x", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "second try"}]})
        assert second.status_code == 502
        assert f"upstream connect timed out: 127.0.0.1:{relay.port} did not answer within 1 s" in second.text
        rows = d.interceptions(expect=2, timeout=15)
        assert sorted(r["status"] for r in rows) == ["completed", "failed"]
        [failed] = [r for r in rows if r["status"] == "failed"]
        assert [p["prompt"] for p in failed["user_prompts"]] == ["second try"]
        assert failed["error_type"] == "timeout"
        assert "upstream connect timed out" in failed["error_message"]
        s = wait_for(d.admin_port, lambda s: s.value(METRIC, type="mitm") >= 1)
        assert s.value(METRIC, type="mitm") == 1
    finally:
        stop_daemon(d)
        relay.close()
