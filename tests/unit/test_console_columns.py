"""The console's cost column: list-price cost, a subscription's API-equivalent value apart, and unpriced usage
shown as such (never $0)."""

from __future__ import annotations

from aigw_proxy.admin.console.columns import INTERCEPTION_COLUMNS, SESSION_COLUMNS


def cost_cell(row: dict) -> str:
    column = next(c for c in INTERCEPTION_COLUMNS if c.header == "Cost")
    return str(column.value(row))


def test_priced_calls_show_dollars() -> None:
    assert cost_cell({"cost": {"cost_usd": 0.048073, "api_equivalent_usd": None, "unpriced_records": 0}}) == \
        "$0.0481"


def test_subscription_value_is_kept_apart() -> None:
    assert cost_cell({"cost": {"cost_usd": None, "api_equivalent_usd": 1.5, "unpriced_records": 0}}) == \
        "≈$1.5000 plan"


def test_unpriced_usage_is_never_zero() -> None:
    assert cost_cell({"cost": {"cost_usd": None, "api_equivalent_usd": None, "unpriced_records": 2}}) == "unpriced"
    assert cost_cell({"cost": {"cost_usd": 0.01, "api_equivalent_usd": None, "unpriced_records": 1}}) == \
        "$0.0100 +1 unpriced"
    assert cost_cell({}) == "–"


def test_sessions_show_cost_too() -> None:
    assert any(c.header == "Cost" for c in SESSION_COLUMNS)


def test_the_stored_shapes_show_only_the_kinds_they_have() -> None:
    """What the read layer really gives (costs.py): 0, not null, for the kind a call does not have."""
    from aigw_proxy.storage.read.costs import CostSums

    def shown(*rows: tuple[int | None, bool]) -> str:
        sums = CostSums()
        for micros, subscription in rows:
            sums.add_row(micros, subscription)
        return cost_cell({"cost": sums.json()})

    assert shown((48073, False)) == "$0.0481"  # an API call: no "≈$0.0000 plan"
    assert shown((1_500_000, True)) == "≈$1.5000 plan"  # a subscription call: no "$0.0000"
    assert shown((48073, False), (1_500_000, True)) == "$0.0481 ≈$1.5000 plan"
    assert shown((0, False)) == "$0.0000"  # priced at nothing is $0, not blank
    assert shown((None, True)) == "unpriced"
