"""Wiring for metrics, provider reload, circuit breaking and spend controls: what the daemon adds for operators to
watch and to hold spend in check.

`/metrics` itself is served by the admin listener (admin/app.py), which decides who may scrape it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aigw_proxy.addons.circuit_breaker import CircuitBreaker
from aigw_proxy.addons.limits_gate import LimitsGate
from aigw_proxy.addons.proxy_metrics import ProxyMetrics
from aigw_proxy.addons.routing import ProviderRouter
from aigw_proxy.addons.spend_gate import SpendGate
from aigw_proxy.config.reload import Reloader
from aigw_proxy.config.settings import FileConfig, Settings
from aigw_proxy.recording.recorder import Recorder
from aigw_proxy.spend import Pricer
from aigw_proxy.spend.enforcer import SpendControls
from aigw_proxy.spend.limits import RequestLimits
from aigw_proxy.storage import Database, RecordWriter
from aigw_proxy.telemetry.cost_metrics import CostMetrics
from aigw_proxy.telemetry.gateway_metrics import GatewayMetrics
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.reload")


@dataclass(slots=True)
class Monitoring:
    metrics: Metrics
    reloader: Reloader
    proxy_metrics: ProxyMetrics  # addon: after the router and the Interceptor
    breaker: CircuitBreaker | None  # addon: before the Interceptor; None when circuit breaking is off
    limits: LimitsGate | None = None  # addon: rate limits and concurrency caps (request headers)
    spend: SpendGate | None = None  # addon: model policy and budgets (request), before the breaker

    @property
    def gates(self) -> list[object]:
        """Addons that may answer a request themselves: register them before the Interceptor."""
        return [g for g in (self.limits, self.spend, self.breaker) if g is not None]

    @property
    def controls(self) -> SpendControls | None:
        return self.spend.controls if self.spend is not None else None

    async def open(self) -> None:
        """Before the proxy takes traffic: read the budgets, groups and roles to enforce."""
        if self.controls is not None:
            await self.controls.start()

    def start(self, settings: Settings) -> None:
        """Once the proxy runs: report the providers it started with and begin watching the config file."""
        self.reloader.initial(settings.file)
        self.reloader.start()

    async def close(self) -> None:
        await self.reloader.close()
        if self.controls is not None:
            await self.controls.close()


def setup_monitoring(settings: Settings, recorder: Recorder, writer: RecordWriter,
                     router: ProviderRouter, db: Database | None = None) -> Monitoring:
    metrics = Metrics(initiator_label=settings.metrics_initiator_label)
    metrics.watch_writer(writer)
    recorder.add_observer(GatewayMetrics(metrics))
    writer.add_listener(CostMetrics(metrics).on_commit)  # cost as stored: see cost_metrics.py
    breaker = CircuitBreaker(settings.circuit_breaker, metrics) if settings.circuit_breaker.enabled else None
    cfg = settings.file
    prices = [cfg.prices]
    limits = RequestLimits(settings.rate_limit, settings.max_concurrency, cfg.limits)
    controls = SpendControls(db, metrics, budgets=cfg.budgets, policy=cfg.model_policy) if db is not None else None

    def apply(new: FileConfig) -> None:
        router.apply(new)
        if new.prices != prices[0]:  # new `[[prices]]`: they price the rows written from now on
            prices[0] = new.prices
            writer.pricer = Pricer(new.prices)
            log.info("prices reloaded: %d [[prices]] table(s); stored rows keep their prices", len(new.prices))
        limits.configure(settings.rate_limit, settings.max_concurrency, new.limits)
        if controls is not None:
            controls.apply(new.budgets, new.model_policy)

    reloader = Reloader(settings.config_file, apply, metrics)
    return Monitoring(metrics, reloader, ProxyMetrics(metrics, router), breaker, LimitsGate(limits, metrics),
                      SpendGate(controls, metrics) if controls is not None else None)
