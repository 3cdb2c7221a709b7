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
