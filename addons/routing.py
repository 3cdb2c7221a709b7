"""CONNECT routing: decrypt provider hosts, tunnel everything else untouched, refuse what policy forbids.

Registered before mitmproxy's default addons so our `next_layer` decision is made before the built-in one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.layers.http import HttpStream

from aigw_proxy.config.settings import FileConfig
from aigw_proxy.policy.network import DestinationRefused, resolve_allowed
from aigw_proxy.policy.providers import Provider, ProviderTable

log = logging.getLogger("aigw_proxy.routing")

PROVIDER = "aigw.provider"
CONNECT_TARGET = "aigw.connect_target"


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    host: str  # what the client asked for, lower-cased
    port: int
    provider: Provider | None  # None: a raw tunnel


def _refuse(status: int, reason: str) -> http.Response:
    return http.Response.make(status, f"aigw-proxy: {reason}\n".encode(), {"Content-Type": "text/plain"})


class ProviderRouter:
    def __init__(self, cfg: FileConfig) -> None:
        self.apply(cfg)
        self._targets: dict[str, ConnectTarget] = {}

    def apply(self, cfg: FileConfig) -> None:
        """Swap in a new routing snapshot; open tunnels keep the decision they were made with."""
        self.table: ProviderTable = cfg.provider_table()
        self.cfg = cfg

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:  # refused by authentication
            return
        host, port = flow.request.host.lower().rstrip("."), flow.request.port
        if port not in self.cfg.allowed_ports:
            flow.response = _refuse(403, f"CONNECT to port {port} is not allowed")
            return
        provider = self.table.for_host(host)
        if provider is not None:
            if provider.upstream is not None:
                # Dial the override instead; the client still gets a certificate for `host` (its SNI) and the
                # request keeps its Host header. Rewriting here, before the eager dial, means the real host is
                # never contacted.
                flow.request.host, flow.request.port = provider.upstream.host, provider.upstream.port
        else:
            try:
                flow.request.host = await resolve_allowed(host, port, self.cfg.allowed_private_cidrs)
            except DestinationRefused as exc:
                flow.response = _refuse(403, f"tunnel refused: {exc}")
                return
            except LookupError as exc:
                flow.response = _refuse(502, str(exc))
                return
        target = ConnectTarget(host, port, provider)
        self._targets[flow.client_conn.id] = target
        flow.metadata[CONNECT_TARGET] = target

    def target_for(self, client_id: str) -> ConnectTarget | None:
        """The CONNECT target of this client connection's tunnel (None: no tunnel, or not yet routed)."""
        return self._targets.get(client_id)

    def next_layer(self, nl: layer.NextLayer) -> None:
        if nl.layer is not None:
            return
        target = self._targets.get(nl.context.client.id)
        if target is None or target.provider is not None:
            return
        # First decision inside a tunnel we do not decrypt: the stack is [HttpProxy, HttpLayer, HttpStream].
        if isinstance(nl.context.layers[-1], HttpStream):
            nl.layer = layers.TCPLayer(nl.context, ignore=True)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        target = self._targets.get(flow.client_conn.id)
        if target is not None and target.provider is not None and flow.request.method != "CONNECT":
            flow.metadata[PROVIDER] = target.provider
            flow.metadata[CONNECT_TARGET] = target

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Sync on the hot path (requests inside a tunnel); only plain proxied requests get a coroutine.
        if flow.response is not None or flow.client_conn.id in self._targets or flow.request.method == "CONNECT":
            return None
        return self._check_plain_request(flow)

    async def _check_plain_request(self, flow: http.HTTPFlow) -> None:
        """Plain (absolute-form) proxied requests outside any CONNECT get the same destination policy."""
        if flow.request.port not in self.cfg.allowed_ports:
            flow.response = _refuse(403, f"requests to port {flow.request.port} are not allowed")
            return
        host_header = flow.request.host_header
        try:
            ip = await resolve_allowed(flow.request.host, flow.request.port, self.cfg.allowed_private_cidrs)
        except DestinationRefused as exc:
            flow.response = _refuse(403, f"request refused: {exc}")
            return
        except LookupError as exc:
            flow.response = _refuse(502, str(exc))
            return
        flow.request.host = ip
        flow.request.host_header = host_header

    def client_disconnected(self, client: connection.Client) -> None:
        self._targets.pop(client.id, None)
