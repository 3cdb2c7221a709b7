"""Cost metrics from what the record writer stored: `aigw_proxy_cost_usd_total` and Coder's unpriced-record
counter (`coder_ai_gateway_cost_control_unpriced_token_usage_records_total`, legacy name too).

Counted on commit (a writer listener), unlike the token counters (a Recorder observer, before the write): the
price is computed once, by the writer, with the prices in force when the row was written, so the counters are
exactly the stored `cost_micros` summed — a scrape and the spend report can never disagree by a repricing, a
reload between observing and writing, or a record the database refused. The cost of that: the counters move
when the batch commits (tens of milliseconds later), and a daemon without a database writer counts nothing.
"""

from __future__ import annotations

from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import InterceptionEnded, RecordEvent
from aigw_proxy.telemetry.metrics import Metrics

MICROS_PER_USD = 1_000_000


class CostMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def on_commit(self, event: RecordEvent, info: CommitInfo) -> None:
        spend = info.spend
        if spend is None or not isinstance(event, InterceptionEnded):
            return
        k = spend.key
        m = self.m
        user = (k.initiator_id,) if m.initiator_label else ()
        kind = "api_equivalent" if k.api_equivalent else "api"
        for index in range(len(event.token_usages)):
            price = spend.price(index)
            if price is None:
                m.unpriced_records.labels(k.model, k.provider_name, k.provider).inc()
            else:
                m.cost.labels(k.provider_name, k.model, k.client, *user, kind).inc(price.cost_micros / MICROS_PER_USD)
