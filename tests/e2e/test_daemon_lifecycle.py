"""Start-up failures are loud and immediate; SIGTERM lets streams finish and flushes every record."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path

import anthropic
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.payloads import anthropic_stream, anthropic_usage
from tests.support.standin import StandIn


def run_to_exit(d: Daemon, timeout: float = 30) -> tuple[int, str]:
    assert d.proc is not None
    try:
        code = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        raise AssertionError(f"daemon did not exit:\n{d.log()}") from None
    return code, d.log()


def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = start_daemon(tmp_path, "", extra_args=("--listen", f"127.0.0.1:{port}"), wait=False)
        code, log = run_to_exit(d)
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in log


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("allowed_ports = [443, 'x']", "allowed_ports must be a list of port numbers"),
        ('[[providers]]\nname = "Bad Name"\ntype = "openai"\nhosts = ["x.test"]', "provider name 'Bad Name'"),
        ('[[providers]]\nname = "acme"\ntype = "gopher"\nhosts = ["x.test"]', "unknown type 'gopher'"),
        ('[[providers]]\nname = "anthropic"\nupstream = "http://127.0.0.1:1"', "must be an https:// URL"),
        ('[[providers]]\nname = "dup"\ntype = "openai"\nhosts = ["api.anthropic.com"]', "is claimed by providers"),
        ("this is not toml", "invalid TOML"),
        ("allowed_private_cidrs = ['10.0.0.0/33']", "is not a valid CIDR"),
        ("surprise = 1", "unknown setting(s) surprise"),
    ],
)
def test_invalid_config_fails_fast(tmp_path: Path, config: str, message: str) -> None:
    code, log = run_to_exit(start_daemon(tmp_path, config, wait=False))
    assert code != 0
    assert message in log


def test_unusable_ca_fails_fast(tmp_path: Path) -> None:
    ca = tmp_path / "data" / "ca"
    ca.mkdir(parents=True)
    (ca / "mitmproxy-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n")
    code, log = run_to_exit(start_daemon(tmp_path, "", wait=False))
    assert code != 0
    assert "cannot load the CA" in log


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_sigterm_lets_the_stream_finish_and_flushes_records(tmp_path: Path, standin_server: StandIn,
                                                           upstream_pki: UpstreamPKI, event_loop: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--event-loop", event_loop))
    assert f"event loop {event_loop}" in d.log()
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("carol"))
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    standin_server.reset()
    # 25 events 80 ms apart: the stream is still running when SIGTERM arrives.
    text = " ".join(f"w{i}" for i in range(20))
    standin_server.queue(anthropic_stream("msg_sigterm", "claude-x", [{"type": "text", "text": text}],
                                          anthropic_usage(3, 21), delay=0.08))
    got: dict[str, str] = {}

    def call() -> None:
        c = anthropic.Anthropic(api_key="sk-ant-api03-s", max_retries=0)
        with c.messages.stream(model="claude-x", max_tokens=50,
                               messages=[{"role": "user", "content": "long answer please"}]) as s:
            got["text"] = s.get_final_text()

    t = threading.Thread(target=call)
    t.start()
    while not standin_server.requests:
        t.join(0.02)
    t.join(0.5)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert got.get("text") == text  # the in-flight stream completed
    assert stop_daemon(d) == 0
    [ix] = d.interceptions()
    assert ix["status"] == "completed"
    assert ix["token_usages"][0]["output_tokens"] == 21
    assert ix["initiator"]["username"] == "carol"
