"""A spend group's figures, unpacked by position from its sums (storage/read/spend.py): each field takes the sum
of its own name, whatever order the sums' names are in."""

from __future__ import annotations

from aigw_proxy.storage.read import spend


def test_each_figure_is_the_sum_of_its_name() -> None:
    of = {name: 1000 + n for n, name in enumerate(spend._SUMS)}  # distinct values: a swapped field shows
    of["api_unpriced"], of["equivalent_unpriced"] = 1, 2  # some rows priced: the components are reported
    sums = [of[name] for name in spend._SUMS]
    out = spend._figures_json(sums)
    assert out["records"] == of["api_records"] + of["equivalent_records"]
    for token in spend.TOKEN_COLUMNS:
        assert out[token] == of[token]
    assert out["price_components"] == {name: of[column] for column, name in spend._COMPONENTS.items()}
    cost = out["cost"]
    assert cost["unpriced_records"] == of["api_unpriced"] + of["equivalent_unpriced"]
    assert (cost["cost_micros"], cost["api_equivalent_micros"]) == (of["api_micros"], of["equivalent_micros"])
    assert cost["cost_usd"] == round(of["api_micros"] / 1_000_000, 6)
