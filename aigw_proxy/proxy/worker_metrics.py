"""The daemon's `/metrics` under `--workers N`: each worker's scrape parsed, then merged into one set of families
(counters, histograms and the in-flight/queue gauges summed; every other gauge, such as info series and states read
from the shared database, takes the largest value so it appears once), served by a collector on the supervisor's
registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from aigw_proxy.telemetry.metrics import GATEWAY, OWN, PROXY, legacy_name

_SUMMED_GAUGES = {PROXY + "inflight_mitm_requests", GATEWAY + "interceptions_inflight",
                  OWN + "recorder_queue_depth", OWN + "recorder_spooled", OWN + "limited_requests_inflight"}
SUMMED_GAUGES = frozenset(_SUMMED_GAUGES | {n for n in map(legacy_name, _SUMMED_GAUGES) if n})
_SUMMED_TYPES = ("counter", "histogram", "summary", "gaugehistogram")

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class Family:
    name: str
    documentation: str
    type: str
    unit: str
    samples: dict[SampleKey, float] = field(default_factory=dict)

    @property
    def summed(self) -> bool:
        return self.type in _SUMMED_TYPES or self.name in SUMMED_GAUGES

    def metric(self) -> Metric:
        out = Metric(self.name, self.documentation, self.type, self.unit)
        for (name, labels), value in self.samples.items():
            out.add_sample(name, dict(labels), value)
        return out


def parse_scrape(text: str) -> dict[str, Family]:
    families: dict[str, Family] = {}
    for fam in text_string_to_metric_families(text):
        f = families.setdefault(fam.name, Family(fam.name, fam.documentation, fam.type, fam.unit))
        for s in fam.samples:
            f.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families


def merge_scrapes(scrapes: Sequence[dict[str, Family]]) -> dict[str, Family]:
    """The daemon's figures from each worker's: summed families add up, the other gauges take the largest."""
    out: dict[str, Family] = {}
    for families in scrapes:
        for name, fam in families.items():
            mine = out.get(name)
            if mine is None:
                out[name] = Family(fam.name, fam.documentation, fam.type, fam.unit, dict(fam.samples))
                continue
            for key, value in fam.samples.items():
                old = mine.samples.get(key)
                if old is None:
                    mine.samples[key] = value
                elif mine.summed:
                    mine.samples[key] = old + value
                elif not math.isnan(value):
                    mine.samples[key] = value if math.isnan(old) else max(old, value)
    return out


def counters_only(families: dict[str, Family]) -> dict[str, Family]:
    """What of a dead worker's last scrape is kept (its counters and histograms), so the sums never decrease."""
    return {n: f for n, f in families.items() if f.type in _SUMMED_TYPES}


class MergedCollector(Collector):
    def __init__(self, families: Callable[[], Iterator[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()
