"""`--rate-limit` and `--max-concurrency` (and `[[limits]]` per user) on decrypted provider requests, model calls
and passthrough alike, as the reference gateway applies them (docs/spend.md#rate-limits-and-concurrency).

Checked on the request's headers, before its body is read and before the Interceptor sees it: a refused request
never reaches the upstream and is not recorded as an interception (a burst being limited must not become a burst
of writes); it is counted in `aigw_proxy_limited_requests_total{provider,reason}`. The answer is in the API's own
error shape: 429 with `Retry-After` for the rate limit and for a user's own concurrency cap, 503 "at capacity"
for the proxy-wide cap. Tunnels to hosts that are not providers are not limited (they are not decrypted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmproxy import http

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.policy.provider_errors import api_for_provider_type, provider_error_body
from aigw_proxy.policy.providers import Provider
from aigw_proxy.recording.records import Initiator
from aigw_proxy.spend.limits import RequestLimits, retry_after
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.limits")

_HELD = "aigw.limits.held"  # the username whose in-flight count this flow holds
LIMITED = "aigw.limits.refused"


class LimitsGate:
    def __init__(self, limits: RequestLimits, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.m = metrics
        self._clock = clock

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        limits = self.limits
        if not limits.active or flow.response is not None:
            return
        provider: Provider | None = flow.metadata.get(PROVIDER)
        who: Initiator | None = flow.metadata.get(INITIATOR)
        if provider is None or who is None or flow.request.method == "CONNECT":
            return
        wait = limits.check_rate(who.token_id, who.username, self._clock())
        if wait:
            seconds = retry_after(wait)
            rate = limits.rate_for(who.username)
            self._refuse(flow, provider, "rate_limit", 429,
                         f"rate_limit_exceeded: at most {rate:g} request(s) per second per proxy token; "
                         f"retry after {seconds} s", {"Retry-After": str(seconds)})
            return
        refused = limits.acquire(who.username)
        if refused == "proxy_capacity":
            self._refuse(flow, provider, refused, 503,
                         "at_capacity: aigw-proxy is currently at capacity "
                         f"({limits.max_concurrency} requests in flight). Please try again later.", {})
            return
        if refused == "user_capacity":
            self._refuse(flow, provider, refused, 429,
                         f"concurrency_limit_exceeded: {who.username} already has {limits.user_cap(who.username)} "
                         "request(s) in flight, the most allowed; retry when one finishes", {"Retry-After": "1"})
            return
        flow.metadata[_HELD] = who.username
        if self.m is not None:
            self.m.requests_limited_inflight.set(limits.in_flight)

    def _refuse(self, flow: http.HTTPFlow, provider: Provider, reason: str, status: int, message: str,
                headers: dict[str, str]) -> None:
        api = provider.api_for(flow.request.method, flow.request.path.split("?", 1)[0]) \
            or api_for_provider_type(provider.type)
        code = "rate_limit_exceeded" if status == 429 else "at_capacity"
        flow.metadata[LIMITED] = reason
        flow.response = http.Response.make(status, provider_error_body(api, status, message, code=code),
                                           {"Content-Type": "application/json", **headers})
        if self.m is not None:
            self.m.limited_requests.labels(provider.name, reason).inc()

    def _done(self, flow: http.HTTPFlow) -> None:
        username = flow.metadata.pop(_HELD, None)
        if username is not None:
            self.limits.release(username)
            if self.m is not None:
                self.m.requests_limited_inflight.set(self.limits.in_flight)

    def response(self, flow: http.HTTPFlow) -> None:
        self._done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._done(flow)
