"""Wiring of the optional record logs and traces to the record writer (`--structured-logging`, `--trace`,
`--trace-logs`). With all of them off nothing is registered and no OpenTelemetry SDK is loaded."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aigw_proxy.config.settings import Settings
from aigw_proxy.storage import RecordWriter

if TYPE_CHECKING:
    from aigw_proxy.telemetry.tracing import Tracer

log = logging.getLogger("aigw_proxy.observability")


@dataclass(slots=True)
class Observability:
    tracer: Tracer | None = None
    log_handler: logging.Handler | None = None

    async def close(self) -> None:
        """After the writer closed (its last commits end their record spans): export every span still queued."""
        if self.log_handler is not None:
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler = None
        if self.tracer is not None:
            tracer, self.tracer = self.tracer, None
            await asyncio.to_thread(tracer.shutdown)  # blocks on the exporter: off the event loop


def setup(settings: Settings, writer: RecordWriter, tracer: Tracer | None = None) -> Observability:
    """Register what the settings ask for; `tracer` replaces the OTLP one built from the environment (tests)."""
    obs = Observability()
    if settings.trace:
        from aigw_proxy.telemetry.tracing import SpanEventHandler, tracer_from_env

        obs.tracer = tracer or tracer_from_env()
        if settings.trace_logs:
            obs.log_handler = SpanEventHandler(obs.tracer)
            logging.getLogger().addHandler(obs.log_handler)
    elif settings.trace_logs:
        log.warning("--trace-logs has no effect without --trace")
    if settings.structured_logging:
        from aigw_proxy.telemetry.structured_log import StructuredLog

        spans = obs.tracer.record_span if obs.tracer is not None else None
        writer.add_listener(StructuredLog(spans).on_commit)
    if obs.tracer is not None:
        # After the log listener: a record's line is logged while its span is still open (--trace-logs).
        writer.add_listener(obs.tracer.committed)
    return obs
