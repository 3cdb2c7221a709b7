"""Read the daemon's `/metrics` the way Prometheus does (the official text parser) and look samples up by labels."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    content_type: str
    families: dict[str, list[tuple[str, dict[str, str], float]]]  # family name -> (sample name, labels, value)

    def samples(self, metric: str, /, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Samples called `metric` whose labels include `labels`."""
        out = []
        for samples in self.families.values():
            for sample_name, sample_labels, value in samples:
                if sample_name == metric and all(sample_labels.get(k) == v for k, v in labels.items()):
                    out.append((sample_labels, value))
        return out

    def value(self, metric: str, /, **labels: str) -> float:
        """The sum over matching samples (0 when there are none)."""
        return sum(v for _, v in self.samples(metric, **labels))


def scrape(admin_port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
        ctype = r.headers.get("Content-Type", "")
    families: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        families.setdefault(fam.name, []).extend((s.name, dict(s.labels), s.value) for s in fam.samples)
    return Scrape(ctype, families)


def wait_for(admin_port: int, ready: Callable[[Scrape], bool], timeout: float = 15.0) -> Scrape:
    """Scrape until `ready(scrape)` holds (record events reach the metrics right after the proxy hands them over,
    but the test's client may return before the proxy's `response` hook ran)."""
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(admin_port)
        if ready(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.1)
