"""What the proxy does with connections: authentication, selective decryption, refusals, the upstream override."""

from __future__ import annotations

import base64
import socket
import ssl

import anthropic
import pytest
from cryptography import x509

from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn


def connect(daemon: Daemon, target: str, auth: str | None) -> tuple[socket.socket, int, bytes]:
    """Send a raw CONNECT; returns the socket, the status code and the response head."""
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if auth is not None:
        head += f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
    s.sendall((head + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    status = int(buf.split(b" ", 2)[1]) if buf else 0
    reply_head, _, body = buf.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in reply_head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while status != 200 and len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return s, status, buf if status == 200 else reply_head + b"\r\n\r\n" + body


def tls_peer(sock: socket.socket, server_name: str) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(sock, server_hostname=server_name) as t:
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def issuer_cn(cert: x509.Certificate) -> str:
    return cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value  # type: ignore[return-value]


@pytest.mark.parametrize("auth", [None, "alice:wrong-token", "alice:", "garbage-without-colon"])
def test_connect_without_valid_token_gets_407(daemon: Daemon, auth: str | None) -> None:
    daemon.token("alice")
    sock, status, head = connect(daemon, "api.anthropic.com:443", auth)
    sock.close()
    assert status == 407
    assert b'Proxy-Authenticate: Basic realm="aigw-proxy"' in head


def test_sdk_with_bad_credentials_gets_a_clear_proxy_error(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://alice:not-a-token@{daemon.address}")
    monkeypatch.setenv("SSL_CERT_FILE", str(daemon.ca_bundle))
    c = anthropic.Anthropic(api_key="sk-ant-api03-x", max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        c.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])


def test_provider_host_is_decrypted_with_our_ca(daemon: Daemon) -> None:
    sock, status, _ = connect(daemon, "api.anthropic.com:443", f"x:{daemon.token('alice')}")
    assert status == 200
    cert = tls_peer(sock, "api.anthropic.com")
    assert issuer_cn(cert) == "aigw-proxy CA"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.anthropic.com" in names.get_values_for_type(x509.DNSName)


def test_other_hosts_are_tunnelled_untouched(daemon: Daemon, origin_server: StandIn) -> None:
    """The client sees the origin's own certificate: the proxy never decrypts a host that is not a provider."""
    sock, status, _ = connect(daemon, f"127.0.0.1:{origin_server.port}", f"x:{daemon.token('alice')}")
    assert status == 200
    assert issuer_cn(tls_peer(sock, "origin.test")) == "Stand-in Upstream CA"


def test_connect_to_a_port_outside_allowed_ports_is_refused(daemon: Daemon) -> None:
    sock, status, head = connect(daemon, f"127.0.0.1:{daemon.admin_port}", f"x:{daemon.token('alice')}")
    sock.close()
    assert status == 403
    assert b"port" in head


@pytest.mark.parametrize("target", ["127.0.0.2:443", "0.0.0.0:443", "[::1]:443", "[::ffff:127.0.0.2]:443"])
def test_tunnels_to_private_addresses_are_refused(daemon: Daemon, target: str) -> None:
    """Only 127.0.0.1/32 is exempted in the test config: other loopback addresses count as private."""
    sock, status, head = connect(daemon, target, f"x:{daemon.token('alice')}")
    sock.close()
    assert status == 403
    assert b"private or reserved" in head


def test_user_added_while_running_connects_at_once_and_revocation_is_immediate(daemon: Daemon) -> None:
    token = daemon.cli("users", "add", "bob").stdout.strip()
    sock, status, _ = connect(daemon, "api.anthropic.com:443", f"bob:{token}")
    sock.close()
    assert status == 200
    daemon.cli("users", "revoke", "bob")
    sock, status, _ = connect(daemon, "api.anthropic.com:443", f"bob:{token}")
    sock.close()
    assert status == 407


def test_upstream_override_never_dials_the_real_host(proxy_env: Daemon, upstream: StandIn) -> None:
    """api.anthropic.com is configured with an upstream override: the request reaches the stand-in, with the
    original Host header, and the answer the client sees is the stand-in's (there is no network here, so a
    dial to the real host could not have answered)."""
    upstream.queue(Reply.json(anthropic_message("msg_override", "claude-x", [{"type": "text", "text": "local"}],
                                                anthropic_usage(1, 1))))
    msg = anthropic.Anthropic(api_key="sk-ant-api03-o", max_retries=0).messages.create(
        model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "where are you?"}])
    assert msg.id == "msg_override"
    assert upstream.requests[-1].headers["host"] == "api.anthropic.com"
    assert proxy_env.one(response_id="msg_override")["initiator"]["username"] == "alice"


def plain_request(daemon: Daemon, url: str, auth: str | None) -> tuple[int, bytes]:
    """A plain-HTTP (absolute-form) proxy request, no CONNECT."""
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    head = f"GET {url} HTTP/1.1\r\nHost: {url.split('/')[2]}\r\nConnection: close\r\n"
    if auth is not None:
        head += f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
    s.sendall((head + "\r\n").encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return int(data.split(b" ", 2)[1]), data


def test_plain_http_proxy_requests_get_the_same_auth_and_policy(daemon: Daemon) -> None:
    token = daemon.token("alice")
    status, data = plain_request(daemon, "http://127.0.0.2/x", None)
    assert status == 407 and b'realm="aigw-proxy"' in data
    status, data = plain_request(daemon, "http://127.0.0.2/x", f"a:{token}")
    assert status == 403 and b"private or reserved" in data
    status, data = plain_request(daemon, f"http://127.0.0.1:{daemon.admin_port}/healthz", f"a:{token}")
    assert status == 403 and b"not allowed" in data
