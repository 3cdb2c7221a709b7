"""Spend: what model calls cost. `pricing` prices token-usage rows; `overrides` parses the config's `[[prices]]`."""

from aigw_proxy.spend.overrides import PriceConfigError, PriceOverride, parse_price_overrides
from aigw_proxy.spend.pricing import Figures, Price, Pricer, UsageFigures, is_api_equivalent, library_version

__all__ = (
    "Figures",
    "Price",
    "PriceConfigError",
    "PriceOverride",
    "Pricer",
    "UsageFigures",
    "is_api_equivalent",
    "library_version",
    "parse_price_overrides",
)
