"""CircuitBreaker and ProxyMetrics on mitmproxy's own test flows: after the failure threshold the breaker answers
503 in the API's own error shape without the upstream; proxy metrics count CONNECTs, requests and responses."""

from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.test import taddons, tutils

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.circuit_breaker import REJECTED, CircuitBreaker
from aigw_proxy.addons.intercept import Interceptor
from aigw_proxy.addons.proxy_metrics import ProxyMetrics
from aigw_proxy.addons.routing import ProviderRouter
from aigw_proxy.config.settings import FileConfig
from aigw_proxy.policy.circuit import BreakerConfig
from aigw_proxy.telemetry.metrics import Metrics
from tests.support.flows import ALICE, connect, model_call


def call_through(breaker: CircuitBreaker, interceptor: Interceptor, status: int | None) -> http.HTTPFlow:
    flow = model_call()
    interceptor.requestheaders(flow)
    breaker.request(flow)
    if flow.response is None and status is not None:
        flow.response = tutils.tresp(status_code=status)
        breaker.response(flow)
    return flow


async def test_the_breaker_opens_after_the_threshold_and_answers_in_the_apis_shape() -> None:
    metrics = Metrics()
    breaker = CircuitBreaker(BreakerConfig(enabled=True, failure_threshold=2, timeout=30), metrics)
    interceptor = Interceptor(lambda event: None)
    with taddons.context(breaker, interceptor):
        call_through(breaker, interceptor, 200)
        call_through(breaker, interceptor, 529)  # Anthropic's overloaded status counts for Anthropic-type hosts
        call_through(breaker, interceptor, 529)
        rejected = call_through(breaker, interceptor, None)
        assert rejected.metadata.get(REJECTED) is True
        assert rejected.response is not None and rejected.response.status_code == 503
        assert rejected.response.headers["Retry-After"] == "30"
        assert json.loads(rejected.response.content or b"") == {
            "type": "error", "error": {"type": "overloaded_error", "message": "circuit breaker is open"}}
    text = metrics.render().decode()
    assert 'coder_ai_gateway_circuit_breaker_trips_total{endpoint="/v1/messages",model="claude-sonnet-4-5",' \
           'provider="anthropic"} 1.0' in text


async def test_proxy_metrics_count_connects_requests_and_responses() -> None:
    metrics = Metrics()
    router = ProviderRouter(FileConfig())
    counting = ProxyMetrics(metrics, router)
    with taddons.context(router, counting):
        tunnel = connect("api.anthropic.com")
        tunnel.metadata[INITIATOR] = ALICE  # authenticated (a refused CONNECT is no session)
        await router.http_connect(tunnel)
        counting.http_connect(tunnel)
        flow = model_call()
        counting.requestheaders(flow)
        flow.response = tutils.tresp(status_code=200)
        counting.responseheaders(flow)
        counting.response(flow)
    text = metrics.render().decode()
    assert 'coder_ai_gateway_proxy_connect_sessions_total{type="mitm"} 1.0' in text
    assert 'coder_ai_gateway_proxy_mitm_requests_total{provider="anthropic"} 1.0' in text
    assert 'coder_ai_gateway_proxy_mitm_responses_total{code="200",provider="anthropic"} 1.0' in text
    assert 'coder_ai_gateway_proxy_inflight_mitm_requests{provider="anthropic"} 0.0' in text
