"""Our recording loaded into a plain mitmdump (`mitmdump -s addons/standalone.py`): the same proxy-token
authentication, routing and records as the daemon, in the user's own mitmproxy."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.support.daemon import UpstreamPKI, free_port, provider_config, run_cli
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).with_name("mitmdump")


@pytest.fixture
def mitmdump(tmp_path: Path, upstream: StandIn, upstream_pki: UpstreamPKI) -> Iterator[tuple[int, Path, Path]]:
    data_dir, confdir = tmp_path / "data", tmp_path / "mitmproxy"
    cfg = tmp_path / "aigw.toml"
    cfg.write_text(provider_config(upstream, upstream_pki.ca_file))
    port = free_port()
    log = (tmp_path / "mitmdump.log").open("wb")
    proc = subprocess.Popen(
        [str(MITMDUMP), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
         "--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_pki.ca_file}",
         "-s", str(REPO / "addons" / "standalone.py"),
         "--set", f"aigw_data_dir={data_dir}", "--set", f"aigw_config={cfg}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    ca = confdir / "mitmproxy-ca-cert.pem"
    deadline = time.monotonic() + 30
    while not ca.exists() or not (data_dir / "aigw-proxy.db").exists():
        assert proc.poll() is None, (tmp_path / "mitmdump.log").read_text()
        assert time.monotonic() < deadline, "mitmdump did not start"
        time.sleep(0.1)
    yield port, data_dir, ca
    proc.terminate()
    proc.wait(30)


@pytest.mark.skipif(shutil.which(str(MITMDUMP)) is None, reason="mitmdump is installed with mitmproxy")
def test_a_plain_mitmdump_records_with_our_addons(mitmdump: tuple[int, Path, Path], upstream: StandIn,
                                                  tmp_path: Path) -> None:
    port, data_dir, ca = mitmdump
    token = run_cli(data_dir, "users", "add", "carol").stdout.strip()
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + ca.read_text())
    model = "claude-sonnet-4-5-20250929"
    upstream.queue(Reply.json(anthropic_message("msg_standalone1", model, [{"type": "text", "text": "hi"}],
                                                anthropic_usage(7, 3))))

    def call(proxy_token: str) -> anthropic.Anthropic:
        http = anthropic.DefaultHttpxClient(proxy=f"http://carol:{proxy_token}@127.0.0.1:{port}",
                                            verify=ssl.create_default_context(cafile=bundle))
        return anthropic.Anthropic(api_key="sk-ant-api03-" + "s" * 40, max_retries=0, http_client=http)

    reply = call(token).messages.create(model=model, max_tokens=10,
                                        messages=[{"role": "user", "content": "hello from mitmdump"}])
    assert reply.content[0].text == "hi"  # type: ignore[union-attr]
    with pytest.raises(anthropic.APIConnectionError):  # a wrong proxy token gets 407, as with the daemon
        call("not-a-token").messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}])

    deadline = time.monotonic() + 10
    while True:
        rows = json.loads(run_cli(data_dir, "interceptions", "list").stdout)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == 1
    ix = rows[0]
    assert ix["initiator"]["username"] == "carol"
    assert ix["status"] == "completed" and ix["model"] == model
    assert [p["prompt"] for p in ix["user_prompts"]] == ["hello from mitmdump"]
    assert ix["token_usages"][0]["input_tokens"] == 7 and ix["token_usages"][0]["output_tokens"] == 3
