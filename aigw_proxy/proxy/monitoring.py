"""Wiring for metrics, provider reload and circuit breaking: what the daemon adds for operators to watch.

`/metrics` itself is served by the admin listener (admin/app.py), which decides who may scrape it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aigw_proxy.addons.circuit_breaker import CircuitBreaker
from aigw_proxy.addons.proxy_metrics import ProxyMetrics
from aigw_proxy.addons.routing import ProviderRouter
from aigw_proxy.config.reload import Reloader
from aigw_proxy.config.settings import FileConfig, Settings
from aigw_proxy.recording.recorder import Recorder
from aigw_proxy.spend import Pricer
from aigw_proxy.storage import RecordWriter
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

    @property
    def gates(self) -> list[CircuitBreaker]:
        """Addons that may answer a request themselves: register them before the Interceptor."""
        return [self.breaker] if self.breaker is not None else []

    def start(self, settings: Settings) -> None:
        """Once the proxy runs: report the providers it started with and begin watching the config file."""
        self.reloader.initial(settings.file)
        self.reloader.start()

    async def close(self) -> None:
        await self.reloader.close()


def setup_monitoring(settings: Settings, recorder: Recorder, writer: RecordWriter,
                     router: ProviderRouter) -> Monitoring:
    metrics = Metrics(initiator_label=settings.metrics_initiator_label)
    metrics.watch_writer(writer)
    recorder.add_observer(GatewayMetrics(metrics))
    writer.add_listener(CostMetrics(metrics).on_commit)  # cost as stored: see cost_metrics.py
    breaker = CircuitBreaker(settings.circuit_breaker, metrics) if settings.circuit_breaker.enabled else None
    prices = [settings.file.prices]

    def apply(cfg: FileConfig) -> None:
        router.apply(cfg)
        if cfg.prices != prices[0]:  # new `[[prices]]`: they price the rows written from now on
            prices[0] = cfg.prices
            writer.pricer = Pricer(cfg.prices)
            log.info("prices reloaded: %d [[prices]] table(s); stored rows keep their prices", len(cfg.prices))

    reloader = Reloader(settings.config_file, apply, metrics)
    return Monitoring(metrics, reloader, ProxyMetrics(metrics, router), breaker)
