"""The cost counters from committed records: the stored price summed in USD by provider, model, client, initiator
(when the label is on) and kind; unpriced rows counted under the gateway's canonical and legacy names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aigw_proxy.recording.commits import CommitInfo, Spend, SpendKey
from aigw_proxy.recording.records import InterceptionEnded, TokenUsage
from aigw_proxy.spend import Price
from aigw_proxy.telemetry.cost_metrics import CostMetrics
from aigw_proxy.telemetry.metrics import Metrics

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def price(micros: int) -> Price:
    return Price(micros, 0, 0, 0, 0, micros, "genai-prices", "0.2.3", "anthropic/claude-sonnet-4-5")


def end(n: int) -> InterceptionEnded:
    return InterceptionEnded(id="i", ended_at=NOW, status="completed",
                             token_usages=[TokenUsage(f"r{k}", 1, 1) for k in range(n)])


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("initiator_label", [True, False])
def test_cost_by_kind_and_unpriced_rows(initiator_label: bool) -> None:
    m = Metrics(initiator_label=initiator_label)
    counters = CostMetrics(m)
    api = SpendKey("anthropic", "corp-anthropic", "claude-sonnet-4-5", "Claude Code", "u-1", api_equivalent=False)
    plan = SpendKey("anthropic", "corp-anthropic", "claude-sonnet-4-5", "Claude Code", "u-1", api_equivalent=True)
    counters.on_commit(end(3), CommitInfo(spend=Spend(api, (price(1_500_000), None, price(250_000)))))
    counters.on_commit(end(1), CommitInfo(spend=Spend(plan, (price(40_000),))))
    counters.on_commit(end(0), CommitInfo())  # no token usage: nothing
    user = {"initiator_id": "u-1"} if initiator_label else {}
    labels = {"provider": "corp-anthropic", "model": "claude-sonnet-4-5", "client": "Claude Code", **user}
    assert sample(m, "aigw_proxy_cost_usd_total", **labels, kind="api") == pytest.approx(1.75)
    assert sample(m, "aigw_proxy_cost_usd_total", **labels, kind="api_equivalent") == pytest.approx(0.04)
    unpriced = {"model": "claude-sonnet-4-5", "provider": "corp-anthropic", "provider_type": "anthropic"}
    assert sample(m, "coder_ai_gateway_cost_control_unpriced_token_usage_records_total", **unpriced) == 1
    assert sample(m, "coder_aibridged_cost_control_unpriced_token_usage_records_total", **unpriced) == 1
