"""The one place record events go: the batched database writer first, then any observers (metrics, logs,
traces). Called on the proxy's event loop, so observers must be cheap and must not block; a failing observer is
logged and never affects the others or the traffic."""

from __future__ import annotations

import logging
from typing import Protocol

from aigw_proxy.recording.records import RecordEvent

log = logging.getLogger("aigw_proxy.recorder")


class Sink(Protocol):
    def submit(self, event: RecordEvent) -> bool: ...


class Observer(Protocol):
    def on_record(self, event: RecordEvent) -> None: ...


class Recorder:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._observers: list[Observer] = []

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def submit(self, event: RecordEvent) -> bool:
        accepted = self._sink.submit(event)
        for observer in self._observers:
            try:
                observer.on_record(event)
            except Exception:
                log.exception("record observer %r failed", observer)
        return accepted
