"""A new data dir gets an ECDSA P-256 CA, so every decrypted connection is served an EC leaf: the agents' TLS
stacks must accept it. Node's (Claude Code, Gemini CLI, Copilot CLI), Python's ssl (the SDKs) and curl's are
driven through the proxy here, each verifying the leaf against the exported CA and making a real model call that
is recorded. The real agents (Codex's Rust stack and OpenCode's Bun among them) run through a daemon with a
generated, hence EC, CA in tests/agents/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.test_proxy_behaviour import connect, tls_peer
from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn

BODY = {"model": "claude-ec", "max_tokens": 5, "messages": [{"role": "user", "content": "which curve?"}]}

# Node: CONNECT through the proxy (Basic credentials), then TLS with only the exported CA trusted (node's
# default rejectUnauthorized), then POST /v1/messages; prints the status, the leaf's key type and the body.
NODE_CLIENT = r"""
const http = require("http"), tls = require("tls"), fs = require("fs");
const [proxyPort, auth, caFile, body] = process.argv.slice(2);
const req = http.request({host: "127.0.0.1", port: Number(proxyPort), method: "CONNECT",
                          path: "api.anthropic.com:443",
                          headers: {"Proxy-Authorization": "Basic " + Buffer.from(auth).toString("base64")}});
req.on("connect", (res, socket) => {
  if (res.statusCode !== 200) { console.error("CONNECT " + res.statusCode); process.exit(2); }
  const t = tls.connect({socket, servername: "api.anthropic.com", ca: fs.readFileSync(caFile)}, () => {
    const leaf = t.getPeerCertificate();
    t.write("POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Type: application/json\r\n" +
            "User-Agent: claude-cli/2.1.197 (external, cli)\r\nx-api-key: sk-ant-api03-node\r\n" +
            "anthropic-version: 2023-06-01\r\nConnection: close\r\nContent-Length: " + Buffer.byteLength(body) +
            "\r\n\r\n" + body);
    let data = "";
    t.on("data", (d) => { data += d; });
    t.on("end", () => {
      console.log(JSON.stringify({authorized: t.authorized, asn1Curve: leaf.asn1Curve || null,
                                  status: data.split(" ")[1], body: data.split("\r\n\r\n").slice(1).join("")}));
      process.exit(0);
    });
  });
  t.on("error", (e) => { console.error("TLS " + e.message); process.exit(3); });
});
req.end();
"""


def test_a_new_data_dir_serves_ecdsa_p256_leaves(daemon: Daemon) -> None:
    sock, status, _ = connect(daemon, "api.anthropic.com:443", f"x:{daemon.token('alice')}")
    assert status == 200
    key = tls_peer(sock, "api.anthropic.com").public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    ca = x509.load_pem_x509_certificate(daemon.ca_bundle.read_bytes()).public_key()
    assert isinstance(ca, ec.EllipticCurvePublicKey)


def _reply(upstream: StandIn, msg_id: str) -> None:
    upstream.queue(Reply.json(anthropic_message(msg_id, "claude-ec", [{"type": "text", "text": "P-256"}],
                                                anthropic_usage(3, 2))))


def test_python_ssl_strict_client_accepts_the_ec_leaf(proxy_env: Daemon, upstream: StandIn) -> None:
    """The SDKs' stack: Python's ssl with create_default_context() (VERIFY_X509_STRICT on 3.13) via HTTPS_PROXY."""
    import anthropic

    _reply(upstream, "msg_ec_python")
    msg = anthropic.Anthropic(api_key="sk-ant-api03-py", max_retries=0).messages.create(**BODY)  # type: ignore[call-overload]
    assert msg.id == "msg_ec_python"
    assert proxy_env.one(response_id="msg_ec_python")["initiator"]["username"] == "alice"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_accepts_the_ec_leaf(daemon: Daemon, upstream: StandIn) -> None:
    _reply(upstream, "msg_ec_curl")
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--proxy", f"http://{daemon.address}", "--proxy-user",
         f"alice:{daemon.token('alice')}", "--cacert", str(daemon.ca_bundle), "-H", "content-type: application/json",
         "-H", "x-api-key: sk-ant-api03-curl", "-H", "anthropic-version: 2023-06-01", "--data", json.dumps(BODY),
         "https://api.anthropic.com/v1/messages"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["id"] == "msg_ec_curl"
    assert daemon.one(response_id="msg_ec_curl")["initiator"]["username"] == "alice"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_tls_accepts_the_ec_leaf(daemon: Daemon, upstream: StandIn, tmp_path: Path) -> None:
    """The stack of the npm agents (Claude Code, Gemini CLI, Copilot CLI): Node's tls, verifying against the CA."""
    _reply(upstream, "msg_ec_node")
    script = tmp_path / "client.js"
    script.write_text(NODE_CLIENT)
    out = subprocess.run(["node", str(script), str(daemon.port), f"alice:{daemon.token('alice')}",
                          str(daemon.ca_bundle), json.dumps(BODY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["authorized"] is True and res["asn1Curve"] == "prime256v1"
    assert res["status"] == "200"
    assert daemon.one(response_id="msg_ec_node")["initiator"]["username"] == "alice"
