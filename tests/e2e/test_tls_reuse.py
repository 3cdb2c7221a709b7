"""TLS work the daemon reuses across new connections (addons/tls_reuse.py), seen from both ends: the upstream sees
its TLS session resumed by the proxy's next connection, an agent gets the same leaf for the same host (and the
right one for another host), and an agent that resumes its own session with the proxy is resumed."""

from __future__ import annotations

import json
import ssl

from cryptography import x509

from tests.e2e.test_proxy_behaviour import connect
from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn


def _tls(daemon: Daemon, host: str, ctx: ssl.SSLContext | None = None,
         session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    sock, status, _ = connect(daemon, f"{host}:443", f"x:{daemon.token('alice')}")
    assert status == 200
    ctx = ctx or ssl.create_default_context(cafile=str(daemon.ca_bundle))
    return ctx.wrap_socket(sock, server_hostname=host, session=session)


def _call(t: ssl.SSLSocket, upstream: StandIn, msg_id: str) -> tuple[int, ssl.SSLSession | None]:
    """One model call on t (its own Connection: close): the HTTP status, and t's TLS session at the end (once the
    proxy's session tickets have been read)."""
    upstream.queue(Reply.json(anthropic_message(msg_id, "claude-tls", [{"type": "text", "text": "hi"}],
                                                anthropic_usage(3, 1))))
    body = json.dumps({"model": "claude-tls", "max_tokens": 5,
                       "messages": [{"role": "user", "content": f"call {msg_id}"}]}).encode()
    t.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Type: application/json\r\n"
              b"x-api-key: sk-ant-api03-tls\r\nanthropic-version: 2023-06-01\r\nConnection: close\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = b""
    while chunk := t.recv(65536):
        data += chunk
    session = t.session
    t.close()
    return int(data.split(b" ", 2)[1]), session


def _leaf(t: ssl.SSLSocket) -> x509.Certificate:
    der = t.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_next_connection_to_a_provider_resumes_the_upstream_tls_session(daemon: Daemon,
                                                                            upstream: StandIn) -> None:
    for n in range(4):
        assert _call(_tls(daemon, "api.anthropic.com"), upstream, f"msg_tls_up_{n}")[0] == 200
    seen = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert len(seen) == 4 and all(r.tls_resumed is not None for r in seen)
    # A session from a full handshake is resumed by the next connection; one that a resumed connection ends with
    # is not always accepted by this stand-in (Python's ssl), so not every connection resumes.
    assert any(r.tls_resumed for r in seen[1:])
    for n in range(4):  # and each call is recorded as usual
        assert daemon.one(response_id=f"msg_tls_up_{n}")["initiator"]["username"] == "alice"


def test_an_agent_gets_the_same_leaf_per_host_and_one_naming_another_host_there(daemon: Daemon) -> None:
    first, again, other = (_tls(daemon, h) for h in ("api.anthropic.com", "api.anthropic.com", "api.openai.com"))
    try:
        a, b, c = _leaf(first), _leaf(again), _leaf(other)
    finally:
        for t in (first, again, other):
            t.close()
    assert a == b  # verified by the client against the exported CA (create_default_context)
    names = {san.value for san in c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert "api.openai.com" in names  # (the stand-in's own certificate names every provider host: mitmproxy
    # copies them, so here both hosts may get one leaf, as they do without the reuse)


def test_an_agent_that_resumes_its_tls_session_with_the_proxy_is_resumed(daemon: Daemon, upstream: StandIn) -> None:
    ctx = ssl.create_default_context(cafile=str(daemon.ca_bundle))  # a client's: one context, its sessions kept
    status, session = _call(_tls(daemon, "api.anthropic.com", ctx), upstream, "msg_tls_client_1")
    assert status == 200 and session is not None
    second = _tls(daemon, "api.anthropic.com", ctx, session)
    assert second.session_reused
    assert _call(second, upstream, "msg_tls_client_2")[0] == 200
    assert daemon.one(response_id="msg_tls_client_2")["initiator"]["username"] == "alice"

