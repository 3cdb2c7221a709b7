"""Proxy-level metrics (docs/compatibility.md#proxy-metrics) plus time to first byte, passthrough and shadow-AI counts.

Registered after the router (it reads the router's decision) and after the Interceptor (it only counts). Every
hook is a few dictionary updates; nothing here can delay or break a flow.
"""

from __future__ import annotations

import time

from mitmproxy import http

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.circuit_breaker import REJECTED
from aigw_proxy.addons.intercept import INTERCEPTION
from aigw_proxy.addons.routing import CONNECT_TARGET, PROVIDER, ConnectTarget, ProviderRouter
from aigw_proxy.addons.websocket import is_websocket_upgrade, records_socket
from aigw_proxy.policy.providers import Provider
from aigw_proxy.policy.shadow_ai import ShadowAI
from aigw_proxy.telemetry.metrics import Metrics

_STARTED = "aigw.metrics.started"  # monotonic time of the request headers; set only on counted flows
_SOCKET_ROUTE = "aigw.metrics.socket_route"  # a recorded socket's upgrade: passthrough only if it is refused
_ROUTES_PER_PROVIDER = 50  # passthrough paths are client-chosen: bound the route label's values
_SHADOW_HOSTS = 1000
OTHER = "other"


class ProxyMetrics:
    def __init__(self, metrics: Metrics, router: ProviderRouter) -> None:
        self.m = metrics
        self.router = router
        self._routes: dict[str, set[str]] = {}
        self._shadow_hosts: set[str] = set()
        self._matcher = ShadowAI(router.cfg.shadow_ai_hosts)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(INITIATOR) is None:  # refused by authentication: no session
            return
        target: ConnectTarget | None = flow.metadata.get(CONNECT_TARGET)
        if target is not None and target.provider is not None:
            self.m.connect_sessions.labels("mitm").inc()
            return
        if flow.response is None:
            self.m.connect_sessions.labels("tunneled").inc()
        # Refused tunnels (port, private address, unknown host) count too: the attempt is the signal.
        host = target.host if target is not None else flow.request.host.lower().rstrip(".")
        if self._shadow(host):
            self.m.shadow_ai.labels(self._bounded(self._shadow_hosts, host, _SHADOW_HOSTS)).inc()

    def _shadow(self, host: str) -> bool:
        cfg = self.router.cfg
        if self._matcher.extra != cfg.shadow_ai_hosts:  # the config was reloaded with other patterns
            self._matcher = ShadowAI(cfg.shadow_ai_hosts)
        # A host of a provider the operator configured, even a disabled one, is not shadow AI.
        return self._matcher.matches(host) and not any(host in p.hosts for p in self.router.table.providers)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        provider: Provider | None = flow.metadata.get(PROVIDER)
        if provider is None or flow.response is not None:
            return
        flow.metadata[_STARTED] = time.monotonic()
        self.m.mitm_requests.labels(provider.name).inc()
        self.m.inflight_mitm.labels(provider.name).inc()
        # Registered after the Interceptor, which has already matched the route: no interception means a
        # passthrough path.
        if flow.metadata.get(INTERCEPTION) is None:
            path = flow.request.path.split("?", 1)[0]
            if is_websocket_upgrade(flow) and records_socket(provider, path):
                # A Responses socket: its turns are counted as interceptions once it is up, not as a request.
                flow.metadata[_SOCKET_ROUTE] = path
                return
            self._passthrough(provider, path, flow.request.method)

    def _passthrough(self, provider: Provider, path: str, method: str) -> None:
        route = self._bounded(self._routes.setdefault(provider.name, set()), path, _ROUTES_PER_PROVIDER)
        self.m.passthrough.labels(provider.name, route, method).inc()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        started = flow.metadata.get(_STARTED)
        provider: Provider | None = flow.metadata.get(PROVIDER)
        if started is not None and provider is not None and not flow.metadata.get(REJECTED):
            self.m.ttfb.labels(provider.name).observe(time.monotonic() - started)

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop(_STARTED, None) is None:
            return
        provider: Provider = flow.metadata[PROVIDER]
        self.m.inflight_mitm.labels(provider.name).dec()
        # No response at all: mitmproxy answers the client with a 502.
        code = flow.response.status_code if flow.response is not None else 502
        self.m.mitm_responses.labels(str(code), provider.name).inc()
        socket_route = flow.metadata.pop(_SOCKET_ROUTE, None)
        if socket_route is not None and code != 101:  # the upgrade was refused: a request relayed unrecorded
            self._passthrough(provider, socket_route, flow.request.method)

    @staticmethod
    def _bounded(seen: set[str], value: str, cap: int) -> str:
        if value in seen:
            return value
        if len(seen) >= cap:
            return OTHER
        seen.add(value)
        return value
