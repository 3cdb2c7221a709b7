"""Circuit breaking on model routes (docs/compatibility.md#circuit-breaker): registered before the Interceptor,
only when enabled.

The breaker is keyed by the request's model, so the request is parsed here, before it is forwarded (the only
place the proxy parses before relaying, and only with breaking enabled). While a breaker is open the client gets
a 503 with `Retry-After` and its API's own error shape; the Interceptor records that call as failed (503).
The outcome counted is the HTTP status the client received; a stream that breaks after its headers is not a
breaker failure.
"""

from __future__ import annotations

import logging
import math

from mitmproxy import http

from aigw_proxy.addons.intercept import INTERCEPTION
from aigw_proxy.intercept.interception import Interception
from aigw_proxy.policy.circuit import BreakerConfig, Breakers, Key, State, is_failure
from aigw_proxy.policy.provider_errors import provider_error_body
from aigw_proxy.policy.providers import Api
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.circuit")

REJECTED = "aigw.breaker.rejected"
_TICKET = "aigw.breaker.ticket"
MESSAGE = "circuit breaker is open"


def open_circuit_body(api: Api | str) -> bytes:
    """The 503 body the client's own SDK understands (see `provider_error_body`)."""
    return provider_error_body(api, 503, MESSAGE)


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, metrics: Metrics, breakers: Breakers | None = None) -> None:
        self.config = config
        self.m = metrics
        self.breakers = breakers or Breakers(config, on_change=self._changed, on_create=self._created)
        self._retry_after = str(math.ceil(config.timeout))

    def _created(self, key: Key) -> None:
        self.m.breaker_state.labels(*key).set(State.CLOSED.value)

    def _changed(self, key: Key, before: State, after: State) -> None:
        provider, endpoint, model = key
        log.warning("circuit breaker state change: provider=%s endpoint=%s model=%s from=%s to=%s",
                    provider, endpoint, model, before.name.lower(), after.name.lower())
        self.m.breaker_state.labels(*key).set(after.value)
        if after is State.OPEN:
            self.m.breaker_trips.labels(*key).inc()

    def request(self, flow: http.HTTPFlow) -> None:
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or flow.response is not None:
            return
        ix.request_received(flow.request.raw_content or b"", flow.request.headers.get("content-encoding"))
        ix.parse_request()  # never raises; also records the start
        model = (ix.request.model if ix.request else None) or "unknown"
        key: Key = (ix.provider.name, ix.route, model)
        generation = self.breakers.get(key).admit()
        if generation is None:
            self.m.breaker_rejects.labels(*key).inc()
            flow.metadata[REJECTED] = True
            flow.response = http.Response.make(
                503, open_circuit_body(ix.api),
                {"Content-Type": "application/json", "Retry-After": self._retry_after},
            )
            return
        flow.metadata[_TICKET] = (key, generation, ix.provider.type)

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def _done(self, flow: http.HTTPFlow) -> None:
        ticket = flow.metadata.pop(_TICKET, None)
        if ticket is None:
            return
        key, generation, provider_type = ticket
        # No response at all: mitmproxy answers the client with a 502, which is not a breaker failure.
        status = flow.response.status_code if flow.response is not None else 502
        self.breakers.get(key).record(generation, is_failure(provider_type, status))
