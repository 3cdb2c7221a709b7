"""TokenAuth on mitmproxy's own test flows: a CONNECT needs a valid proxy token, the identity follows every
request of the tunnel, the credential never travels upstream, and plain proxied requests are checked alone."""

from __future__ import annotations

import base64

from mitmproxy.test import taddons, tflow, tutils

from aigw_proxy.addons.auth import INITIATOR, TokenAuth
from aigw_proxy.policy.identity import TokenAuthenticator
from aigw_proxy.recording.records import Initiator

ALICE = Initiator("u1", "alice", "tok1")


async def lookup(token: str) -> Initiator | None:
    return ALICE if token == "good:token" else None  # tokens may contain ':'


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def connect_flow(auth: str | None) -> tflow.http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="api.anthropic.com", port=443, path=b"",
                                       authority=b"api.anthropic.com:443"))
    if auth is not None:
        flow.request.headers["Proxy-Authorization"] = auth
    return flow


async def test_connect_without_or_with_a_wrong_token_gets_407() -> None:
    addon = TokenAuth(TokenAuthenticator(lookup))
    with taddons.context(addon):
        for auth in (None, basic("alice", "bad"), "Bearer good:token"):
            flow = connect_flow(auth)
            await addon.http_connect(flow)
            assert flow.response is not None and flow.response.status_code == 407
            assert flow.response.headers["Proxy-Authenticate"].startswith("Basic realm=")
            assert INITIATOR not in flow.metadata


async def test_the_identity_follows_the_tunnel_and_the_credential_stays_here() -> None:
    addon = TokenAuth(TokenAuthenticator(lookup))
    with taddons.context(addon):
        connect = connect_flow(basic("anything", "good:token"))
        await addon.http_connect(connect)
        assert connect.response is None
        assert connect.metadata[INITIATOR] == ALICE
        assert "Proxy-Authorization" not in connect.request.headers

        inner = tflow.tflow(client_conn=connect.client_conn)
        assert addon.requestheaders(inner) is None  # sync: no coroutine on the hot path
        assert inner.metadata[INITIATOR] == ALICE

        addon.client_disconnected(connect.client_conn)
        after = tflow.tflow(client_conn=connect.client_conn)
        pending = addon.requestheaders(after)  # forgotten: now checked as a plain request, and refused
        assert pending is not None
        await pending
        assert after.response is not None and after.response.status_code == 407


async def test_plain_proxied_requests_are_authenticated_one_by_one() -> None:
    addon = TokenAuth(TokenAuthenticator(lookup))
    with taddons.context(addon):
        ok = tflow.tflow()
        ok.request.headers["Proxy-Authorization"] = basic("bob", "good:token")
        pending = addon.requestheaders(ok)  # a plain proxied request is checked in a coroutine
        assert pending is not None
        await pending
        assert ok.metadata[INITIATOR] == ALICE and "Proxy-Authorization" not in ok.request.headers
        refused = tflow.tflow()
        pending = addon.requestheaders(refused)
        assert pending is not None
        await pending
        assert refused.response is not None and refused.response.status_code == 407
