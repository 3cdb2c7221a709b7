"""Proxy authentication: every CONNECT (and every plain proxied request) must carry a valid proxy token.

The identity found on the CONNECT follows every request inside that tunnel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from mitmproxy import connection, http

from aigw_proxy.policy.identity import REALM, TokenAuthenticator, token_from_proxy_authorization
from aigw_proxy.recording.records import Initiator

log = logging.getLogger("aigw_proxy.auth")

INITIATOR = "aigw.initiator"
# The web console's Set-up self-test: a browser fetches this from the proxy's address directly (not through it).
# Answered without credentials and without any upstream connection: it only shows that the port is reachable.
# (A 407 would not do: browsers treat it on a direct connection as a network error.)
SELFTEST_PATH = "/.aigw-proxy/selftest"


def _challenge() -> http.Response:
    return http.Response.make(
        407,
        b"Proxy Authentication Required\n",
        {"Proxy-Authenticate": REALM, "Proxy-Connection": "close", "Content-Type": "text/plain"},
    )


class TokenAuth:
    def __init__(self, authenticator: TokenAuthenticator) -> None:
        self.authenticator = authenticator
        self._by_client: dict[str, Initiator] = {}

    async def _check(self, flow: http.HTTPFlow) -> Initiator | None:
        header = flow.request.headers.get("Proxy-Authorization")
        token = token_from_proxy_authorization(header)
        who = await self.authenticator.authenticate(token) if token else None
        if who is None:
            reason = "missing_credentials" if header is None else "invalid_credentials"
            log.info("proxy authentication failed: %s (client %s)", reason, flow.client_conn.peername)
            flow.response = _challenge()
            return None
        # The upstream must never see the proxy credential.
        flow.request.headers.pop("Proxy-Authorization", None)
        return who

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        who = await self._check(flow)
        if who is not None:
            self._by_client[flow.client_conn.id] = who
            flow.metadata[INITIATOR] = who

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Sync on the hot path (a request inside an authenticated tunnel); mitmproxy awaits what a hook returns,
        # so only a plain proxied request pays for a coroutine.
        if flow.response is not None:
            return None
        who = self._by_client.get(flow.client_conn.id)
        if who is None:
            return self._authenticate_plain_request(flow)
        flow.metadata[INITIATOR] = who
        return None

    async def _authenticate_plain_request(self, flow: http.HTTPFlow) -> None:
        """A plain (absolute-form) proxy request outside any CONNECT: authenticate it on its own."""
        if flow.request.method == "GET" and flow.request.path == SELFTEST_PATH:
            flow.response = http.Response.make(204, b"", {"Access-Control-Allow-Origin": "*",
                                                          "Cache-Control": "no-store"})
            return
        who = await self._check(flow)
        if who is not None:
            flow.metadata[INITIATOR] = who

    def client_disconnected(self, client: connection.Client) -> None:
        self._by_client.pop(client.id, None)
