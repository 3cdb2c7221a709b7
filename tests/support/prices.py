"""The price data's own rates, for tests that hand-compute a stored cost: read straight from genai-prices' bundled
data (never from aigw_proxy.spend), so a test states its expectation independently of the pricer.

A rate is USD per million tokens, so `tokens × rate` is micro-dollars; `micros()` rounds it as the pricer rounds
each component (half to even)."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal

import genai_prices
from genai_prices import data_snapshot
from genai_prices.data import providers as library_providers
from genai_prices.types import ModelPrice, TieredPrices

VERSION = genai_prices.__version__
_SNAPSHOT = data_snapshot.DataSnapshot(providers=library_providers, from_auto_update=False)


def rates(provider_id: str, model: str, at: dt.datetime | None = None) -> ModelPrice:
    """genai-prices' rates for `model` of `provider_id` ("anthropic", "openai", "google") on that date."""
    _, info = _SNAPSHOT.find_provider_model(model, None, provider_id, None)
    return info.get_prices(at or dt.datetime.now(dt.UTC))


def base(rate: Decimal | TieredPrices | None) -> Decimal:
    """The rate below any long-context tier (0 when the model has none)."""
    if rate is None:
        return Decimal(0)
    return rate.base if isinstance(rate, TieredPrices) else rate


def micros(exact: Decimal | int) -> int:
    return int(Decimal(exact).to_integral_value(rounding=ROUND_HALF_EVEN))


def model_id(provider_id: str, model: str) -> str:
    """The price entry's id, as stored in `price_ref` (`<provider>/<id>`)."""
    _, info = _SNAPSHOT.find_provider_model(model, None, provider_id, None)
    return f"{provider_id}/{info.id}"
