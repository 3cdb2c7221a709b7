"""Prometheus metrics: one private registry, exposed on the admin listener's `/metrics`.

Names follow Coder's AI Gateway (docs/compatibility.md#metrics), so its dashboards work unchanged: proxy metrics under
`coder_ai_gateway_proxy_*` and gateway metrics under `coder_ai_gateway_*`, each also emitted under its legacy
name (`coder_aibridgeproxyd_*`, `coder_aibridged_*`). Both names come from the *same* samples at scrape time
(`_DualNames`), so canonical and legacy series can never disagree. Our own metrics are `aigw_proxy_*` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROXY = "coder_ai_gateway_proxy_"
GATEWAY = "coder_ai_gateway_"
OWN = "aigw_proxy_"
# Canonical prefix -> legacy prefix. The proxy prefix is longer and starts like the gateway's: match it first.
LEGACY_PREFIXES = (("coder_ai_gateway_proxy_", "coder_aibridgeproxyd_"), ("coder_ai_gateway_", "coder_aibridged_"))

DURATION_BUCKETS = (0.5, 2, 5, 15, 30, 60, 120)  # docs/compatibility.md#gateway-metrics
ENFORCEMENT_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The classic text format every Prometheus version reads (all our names are plain ASCII, so nothing is escaped).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def legacy_name(name: str) -> str | None:
    for canonical, legacy in LEGACY_PREFIXES:
        if name.startswith(canonical):
            return legacy + name[len(canonical):]
    return None


def _copy(family: Metric, name: str, samples: Iterable) -> Metric:
    out = Metric(name, family.documentation, family.type, family.unit)
    out.samples = list(samples)
    return out


class _DualNames(Collector):
    """Yield every family of `inner` under its own name and, for Coder's metrics, again under the legacy name.

    `*_created` samples are left out: they double the series count and no dashboard uses them."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield _copy(family, family.name, samples)
            legacy = legacy_name(family.name)
            if legacy is not None:
                cut = len(family.name)
                yield _copy(family, legacy, (s._replace(name=legacy + s.name[cut:]) for s in samples))


def _cache_children[M: MetricWrapperBase](metric: M) -> M:
    """Make `metric.labels(*values)` a plain dict lookup after the first call for those values.

    prometheus-client validates and locks on every `labels()` call, which showed up in the proxy's per-request
    profile. Only for metrics whose children are never cleared (a cleared child would be kept here)."""
    children: dict[tuple[str, ...], object] = {}
    make = metric.labels

    def labels(*values: str) -> object:
        child = children.get(values)
        if child is None:
            child = children[values] = make(*values)
        return child

    metric.labels = labels  # type: ignore[method-assign,assignment]
    return metric


class WriterStats(Protocol):
    @property
    def queue_depth(self) -> int: ...

    @property
    def written(self) -> int: ...

    @property
    def dropped(self) -> dict[str, int]: ...


class _RecorderCollector(Collector):
    """Recorder figures read from the writer at scrape time (no bookkeeping on the hot path)."""

    def __init__(self) -> None:
        self.writer: WriterStats | None = None

    def collect(self) -> Iterator[Metric]:
        w = self.writer
        if w is None:
            return
        yield GaugeMetricFamily(OWN + "recorder_queue_depth", "Record events queued but not yet written.",
                                value=w.queue_depth)
        yield CounterMetricFamily(OWN + "records_written", "Record events written to the database.",
                                  value=w.written)
        spooled = getattr(w, "spooled", None)
        if spooled is not None:
            yield GaugeMetricFamily(OWN + "recorder_spooled", "Record events kept in the spool file beside the "
                                    "database until it takes writes again.", value=spooled)
        dropped = CounterMetricFamily(OWN + "records_dropped", "Record events dropped, by reason.",
                                      labels=["reason"])
        for reason, n in sorted(dict(w.dropped).items()):
            dropped.add_metric([reason], n)
        yield dropped


class Metrics:
    """Every metric family the daemon exports. `initiator_label=False` drops `initiator_id` (large fleets)."""

    def __init__(self, *, initiator_label: bool = True) -> None:
        self.initiator_label = initiator_label
        self._inner = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_DualNames(self._inner))
        r = self._inner
        user = ["initiator_id"] if initiator_label else []

        # -- proxy (docs/compatibility.md#proxy-metrics)
        self.connect_sessions = Counter(PROXY + "connect_sessions_total", "CONNECT sessions established.",
                                        ["type"], registry=r)
        self.mitm_requests = Counter(PROXY + "mitm_requests_total", "Decrypted requests to provider hosts.",
                                     ["provider"], registry=r)
        self.inflight_mitm = Gauge(PROXY + "inflight_mitm_requests", "Decrypted requests in flight.",
                                   ["provider"], registry=r)
        self.mitm_responses = Counter(PROXY + "mitm_responses_total", "Responses to decrypted requests.",
                                      ["code", "provider"], registry=r)
        # -- gateway (docs/compatibility.md#gateway-metrics)
        self.interceptions = Counter(GATEWAY + "interceptions_total", "Ended interceptions.",
                                     ["provider", "model", "status", "route", "method", *user, "client"],
                                     registry=r)
        self.interceptions_inflight = Gauge(GATEWAY + "interceptions_inflight", "Interceptions in flight.",
                                            ["provider", "model", "route"], registry=r)
        self.interceptions_duration = Histogram(GATEWAY + "interceptions_duration_seconds",
                                                "Interception duration.", ["provider", "model"],
                                                buckets=DURATION_BUCKETS, registry=r)
        self.passthrough = Counter(GATEWAY + "passthrough_total", "Requests on provider hosts relayed untouched.",
                                   ["provider", "route", "method"], registry=r)
        self.prompts = Counter(GATEWAY + "prompts_total", "Interceptions that carried a user prompt.",
                               ["provider", "model", *user, "client"], registry=r)
        self.tokens = Counter(GATEWAY + "tokens_total", "Tokens used, by type.",
                              ["provider", "model", "type", *user, "client"], registry=r)
        self.tool_selections = Counter(GATEWAY + "non_injected_tool_selections_total",
                                       "Client-defined tools the model selected.", ["provider", "model", "name"],
                                       registry=r)
        # Coder's cost-control metric (docs/compatibility.md#gateway-metrics), with a legacy name like the others.
        self.unpriced_records = Counter(GATEWAY + "cost_control_unpriced_token_usage_records_total",
                                        "Token-usage records stored without a price (no price for the model; "
                                        "never counted as $0).", ["model", "provider", "provider_type"], registry=r)
        breaker = ["provider", "endpoint", "model"]
        self.breaker_state = Gauge(GATEWAY + "circuit_breaker_state",
                                   "Circuit breaker state: 0 closed, 0.5 half-open, 1 open.", breaker, registry=r)
        self.breaker_trips = Counter(GATEWAY + "circuit_breaker_trips_total", "Circuit breaker trips to open.",
                                     breaker, registry=r)
        self.breaker_rejects = Counter(GATEWAY + "circuit_breaker_rejects_total",
                                       "Requests rejected by an open circuit breaker.", breaker, registry=r)
        # -- provider status, reported by both the proxy and the gateway side (docs/compatibility.md#provider-reload)
        info_labels = ["provider_name", "provider_type", "status"]
        self.provider_info = [Gauge(p + "provider_info", "Configured providers; the status label carries the signal.",
                                    info_labels, registry=r) for p in (PROXY, GATEWAY)]
        self.reload_attempt = [Gauge(p + "providers_last_reload_timestamp_seconds",
                                     "Unix time of the last provider reload attempt.", registry=r)
                               for p in (PROXY, GATEWAY)]
        self.reload_success = [Gauge(p + "providers_last_reload_success_timestamp_seconds",
                                     "Unix time of the last successful provider reload.", registry=r)
                               for p in (PROXY, GATEWAY)]
        # -- ours
        self.parse_errors = Counter(OWN + "parse_errors_total", "Request or response parts that could not be parsed.",
                                    ["provider", "api"], registry=r)
        self.decompression_limited = Counter(OWN + "decompression_limit_exceeded_total",
                                             "Compressed request or response bodies that decompress to more than "
                                             "the parse limit (decompression bombs): relayed untouched, parsed no "
                                             "further.", ["provider", "api", "body"], registry=r)
        self.ttfb = Histogram(OWN + "time_to_first_byte_seconds",
                              "From a decrypted request's headers to the upstream's response headers.",
                              ["provider"], buckets=TTFB_BUCKETS, registry=r)
        self.connect_timeouts = Counter(OWN + "upstream_connect_timeouts_total",
                                        "Upstream connections not made within --upstream-connect-timeout, by type "
                                        "(mitm: a decrypted provider host, tunneled, plain: a proxied request).",
                                        ["type"], registry=r)
        self.shadow_ai = Counter(OWN + "shadow_ai_connects_total",
                                 "Tunnelled CONNECTs to hosts that look like AI endpoints but are not configured.",
                                 ["host"], registry=r)
        self.redactions = Counter(OWN + "redactions_total",
                                  "Secrets replaced by a placeholder in recorded fields, by kind.", ["kind"],
                                  registry=r)
        self.cost = Counter(OWN + "cost_usd_total",
                            "Stored cost of token usage in USD at list price; kind api: billed per token, "
                            "api_equivalent: subscription calls (OAuth) valued at the API price.",
                            ["provider", "model", "client", *user, "kind"], registry=r)
        self.initiator_info = Gauge(OWN + "initiator_info", "Username of each initiator_id (join on initiator_id).",
                                    ["initiator_id", "username"], registry=r)
        # -- spend controls (docs/spend.md): the contract's cost-control metrics, then ours
        self.cost_blocked_requests = Counter(GATEWAY + "cost_control_blocked_requests_total",
                                             "Model calls refused because a budget's hard limit is used up.",
                                             ["group_id"], registry=r)
        self.cost_blocked_users = Gauge(GATEWAY + "cost_control_blocked_users",
                                        "Users whose model calls are refused now (a hard limit used up), by the "
                                        "group they are charged to.", ["group_id"], registry=r)
        self.cost_enforcement_duration = Histogram(GATEWAY + "cost_control_enforcement_duration_seconds",
                                                   "Time taken to check a model call against its budgets.",
                                                   ["outcome"], buckets=ENFORCEMENT_BUCKETS, registry=r)
        budget = ["scope", "window"]
        self.budget_soft_reached = Gauge(OWN + "budget_soft_limit_reached",
                                         "Users or groups at or over a budget's soft limit now.", budget, registry=r)
        self.budget_hard_reached = Gauge(OWN + "budget_hard_limit_reached",
                                         "Users or groups at or over a budget's hard limit now.", budget, registry=r)
        self.budget_limit = Gauge(OWN + "budget_limit_usd", "The hard limit of each budget in force (USD).", budget,
                                  registry=r)
        self.budget_soft_crossings = Counter(OWN + "budget_soft_limit_crossings_total",
                                             "Times a user or group reached a budget's soft limit (once per "
                                             "window).", budget, registry=r)
        self.limited_requests = Counter(OWN + "limited_requests_total",
                                        "Requests on provider hosts refused by --rate-limit or --max-concurrency.",
                                        ["provider", "reason"], registry=r)
        self.requests_limited_inflight = Gauge(OWN + "limited_requests_inflight",
                                               "Requests on provider hosts counted against --max-concurrency.",
                                               registry=r)
        self.model_denied = Counter(OWN + "model_policy_denied_total", "Model calls refused by the model policy.",
                                    ["provider", "rule"], registry=r)
        hot: MetricWrapperBase
        for hot in (self.connect_sessions, self.mitm_requests, self.inflight_mitm, self.mitm_responses,
                    self.interceptions, self.interceptions_inflight, self.interceptions_duration, self.passthrough,
                    self.prompts, self.tokens, self.tool_selections, self.parse_errors, self.ttfb, self.shadow_ai,
                    self.decompression_limited, self.redactions, self.unpriced_records, self.cost,
                    self.cost_blocked_requests, self.cost_enforcement_duration, self.limited_requests,
                    self.model_denied):
            _cache_children(hot)
        self._recorder = _RecorderCollector()
        r.register(self._recorder)

    def watch_writer(self, writer: WriterStats) -> None:
        self._recorder.writer = writer

    def count_redactions(self, counts: Mapping[str, int]) -> None:
        """Secrets redacted from one record, by kind."""
        for kind, n in counts.items():
            self.redactions.labels(kind).inc(n)

    def set_provider_statuses(self, statuses: Iterable[tuple[str, str, str]]) -> None:
        """Replace the provider_info series with one per (name, type, status)."""
        rows = list(statuses)
        for gauge in self.provider_info:
            gauge.clear()
            for name, ptype, status in rows:
                gauge.labels(name, ptype, status).set(1)

    def stamp_reload(self, *, success: bool, at: float | None = None) -> None:
        at = time.time() if at is None else at
        for gauge in self.reload_attempt:
            gauge.set(at)
        if success:
            for gauge in self.reload_success:
                gauge.set(at)

    def set_budget_limits(self, limits: Iterable[tuple[str, str, float]]) -> None:
        """Replace the budget_limit_usd series with one per (scope, window, USD) in force."""
        self.budget_limit.clear()
        for scope, window, usd in limits:
            self.budget_limit.labels(scope, window).set(usd)

    def set_budget_states(self, soft: dict[tuple[str, str], int], hard: dict[tuple[str, str], int],
                          blocked: dict[str, int]) -> None:
        """Replace the budget gauges: subjects at or over soft/hard limits by (scope, window), blocked users by
        group id ("" = charged to no group)."""
        for gauge, values in ((self.budget_soft_reached, soft), (self.budget_hard_reached, hard)):
            gauge.clear()
            for (scope, window), n in values.items():
                gauge.labels(scope, window).set(n)
        self.cost_blocked_users.clear()
        for group_id, n in blocked.items():
            self.cost_blocked_users.labels(group_id).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
