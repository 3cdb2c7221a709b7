"""Gateway metrics (docs/compatibility.md#gateway-metrics) from the record stream: a Recorder observer, so the
numbers are exactly what was recorded. Runs on the event loop per record event: dictionary updates only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.metrics")

# Starts kept until their end arrives. Every interception ends (response, error or shutdown), so this only
# bounds memory against a bug; beyond it the oldest start is forgotten.
_OPEN_CAP = 100_000


@dataclass(frozen=True, slots=True)
class _Open:
    provider: str  # provider name: the label Coder's dashboards group by
    model: str
    route: str
    method: str
    initiator_id: str
    client: str
    api: str
    started: float  # seconds since the epoch


class GatewayMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self._open: dict[str, _Open] = {}
        self._usernames: dict[str, str] = {}

    def on_record(self, event: RecordEvent) -> None:
        if isinstance(event, InterceptionStarted):
            self._started(event)
        elif isinstance(event, InterceptionEnded):
            self._ended(event)

    def _started(self, ev: InterceptionStarted) -> None:
        route = str(ev.metadata.get("route", ""))
        # Model routes are POSTs; a WebSocket transport opens with a GET.
        method = "GET" if ev.metadata.get("transport") == "websocket" else "POST"
        if len(self._open) >= _OPEN_CAP:
            self._forget(next(iter(self._open)))
        o = _Open(ev.provider_name, ev.model, route, method, ev.initiator.user_id, ev.client, ev.api,
                  ev.started_at.timestamp())
        self._open[ev.id] = o
        self.m.interceptions_inflight.labels(o.provider, o.model, o.route).inc()
        if self.m.initiator_label:
            self._name_initiator(ev.initiator.user_id, ev.initiator.username)

    def _forget(self, interception_id: str) -> _Open | None:
        o = self._open.pop(interception_id, None)
        if o is not None:
            self.m.interceptions_inflight.labels(o.provider, o.model, o.route).dec()
        return o

    def _ended(self, ev: InterceptionEnded) -> None:
        o = self._forget(ev.id)
        if o is None:
            log.debug("interception %s ended without a start seen by metrics", ev.id)
            return
        m = self.m
        model = ev.model or o.model
        user = (o.initiator_id,) if m.initiator_label else ()
        m.interceptions.labels(o.provider, model, ev.status, o.route, o.method, *user, o.client).inc()
        m.interceptions_duration.labels(o.provider, model).observe(max(0.0, ev.ended_at.timestamp() - o.started))
        if ev.prompt:
            m.prompts.labels(o.provider, model, *user, o.client).inc()
        for usage in ev.token_usages:
            figures = {
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_write_input_tokens": usage.cache_write_input_tokens,
                **usage.metadata,
            }
            for kind, n in figures.items():
                if isinstance(n, int | float) and n >= 0:
                    m.tokens.labels(o.provider, model, kind, *user, o.client).inc(n)
        for call in ev.tool_calls:
            m.tool_selections.labels(o.provider, model, call.name).inc()
        if ev.parse_errors:
            m.parse_errors.labels(o.provider, o.api).inc(ev.parse_errors)
        limited = ev.metadata.get("decompression_limit")
        if isinstance(limited, dict):
            for body in limited:
                m.decompression_limited.labels(o.provider, o.api, str(body)).inc()

    def _name_initiator(self, user_id: str, username: str) -> None:
        """One `initiator_info` series per initiator, so a join on initiator_id stays one-to-one on a rename."""
        old = self._usernames.get(user_id)
        if old == username:
            return
        if old is not None:
            self.m.initiator_info.remove(user_id, old)
        self._usernames[user_id] = username
        self.m.initiator_info.labels(user_id, username).set(1)
