"""`coder_ai_gateway_passthrough_total` counts provider-host requests relayed unrecorded. A Responses WebSocket
upgrade (Codex's default transport) is not one: its turns are recorded as interceptions. An upgrade the upstream
refuses, and sockets on routes that are not recorded, still are."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.test import tflow

from aigw_proxy.addons.proxy_metrics import ProxyMetrics
from aigw_proxy.addons.routing import PROVIDER, ProviderRouter
from aigw_proxy.config.settings import FileConfig
from aigw_proxy.policy.providers import builtin_providers
from aigw_proxy.telemetry.metrics import Metrics

OPENAI = next(p for p in builtin_providers() if p.name == "openai")
CHATGPT = next(p for p in builtin_providers() if p.name == "chatgpt")


def upgrade(path: str, provider: object = OPENAI, status: int = 101) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = "GET"
    flow.request.path = path
    flow.request.headers["upgrade"] = "websocket"
    flow.request.headers["connection"] = "Upgrade"
    flow.metadata[PROVIDER] = provider
    flow.metadata["status"] = status
    return flow


def passthrough(m: Metrics) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for fam in m._inner.collect():  # the registry the counters live in
        for s in fam.samples:
            if s.name == "coder_ai_gateway_passthrough_total":
                out[(s.labels["provider"], s.labels["method"], s.labels["route"])] = s.value
    return out


def run(flow: http.HTTPFlow) -> Metrics:
    m = Metrics()
    addon = ProxyMetrics(m, ProviderRouter(FileConfig()))
    addon.requestheaders(flow)
    flow.response = tflow.tresp(status_code=flow.metadata.get("status", 200))
    addon.responseheaders(flow)
    addon.response(flow)
    return m


def test_recorded_socket_upgrades_are_not_passthrough() -> None:
    assert passthrough(run(upgrade("/v1/responses"))) == {}
    assert passthrough(run(upgrade("/backend-api/codex/responses", CHATGPT))) == {}


def test_refused_upgrade_and_other_sockets_are() -> None:
    assert passthrough(run(upgrade("/v1/responses", status=426))) == {("openai", "GET", "/v1/responses"): 1.0}
    assert passthrough(run(upgrade("/v1/realtime"))) == {("openai", "GET", "/v1/realtime"): 1.0}


def test_plain_gets_on_provider_hosts_still_are() -> None:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "GET", "/v1/models"
    flow.metadata[PROVIDER] = OPENAI
    assert passthrough(run(flow)) == {("openai", "GET", "/v1/models"): 1.0}
