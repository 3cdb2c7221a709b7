"""Operator price overrides: the config's `[[prices]]` tables, parsed and validated (pure; no I/O).

    [[prices]]
    provider = "anthropic"          # provider type or name, a glob; omitted = every provider
    model = "claude-*"              # glob on the model name (case-insensitive)
    input = 3.0                     # USD per million tokens, uncached input
    output = 15.0                   # USD per million tokens, output (reasoning included)
    cache_read = 0.3                # default: the input rate (no cache discount)
    cache_write_5m = 3.75           # or `cache_write` for both TTLs; default: the input rate
    cache_write_1h = 6.0            # default: cache_write, then cache_write_5m, then the input rate
    reasoning = 15.0                # reasoning tokens (inside output), if billed differently; default: output
    web_search = 10.0               # USD per 1000 web searches; default 0
    discount = 0.2                  # fraction taken off every figure (a negotiated discount); default 0

A table with rates replaces the price book for the models it matches; `input` and `output` are then required,
and zero is a real price (a self-hosted model: priced at $0, never "unpriced"). A table with only `discount`
takes that fraction off the price book's list price. The first matching table wins.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Any

__all__ = ("OverrideRates", "PriceConfigError", "PriceOverride", "parse_price_overrides")

_RATE_KEYS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "web_search",
)
_KEYS = frozenset({"provider", "model", "discount", *_RATE_KEYS})


class PriceConfigError(ValueError):
    """A `[[prices]]` table is invalid; the message names the table (`prices[i]`) and the key."""


@dataclass(frozen=True, slots=True)
class OverrideRates:
    """An override's complete rates, defaults filled in: USD per million tokens (`web_search`: per 1000)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal
    web_search: Decimal


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """One `[[prices]]` table. `rates` None = a discount on the price book's list price."""

    index: int  # position in the config, for messages
    provider: str  # glob on the provider type or name, lower case ("*" = any)
    model: str  # glob on the model name, lower case
    rates: OverrideRates | None
    discount: Decimal  # 0 <= discount <= 1
    identity: str  # `prices[i]#<hash of the table's content>`: stored as the price's version

    def matches(self, provider_type: str, provider_name: str, model: str) -> bool:
        """`model` must already be lower case (the pricer normalises it once per row)."""
        if not fnmatchcase(model, self.model):
            return False
        return fnmatchcase(provider_type.lower(), self.provider) or fnmatchcase(provider_name.lower(), self.provider)


def parse_price_overrides(raw: Any) -> tuple[PriceOverride, ...]:
    """The config's `prices` value (a list of tables, `[[prices]]`) → overrides, in order (first match wins).
    Raises PriceConfigError with a message naming the table and key."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PriceConfigError("prices must be an array of tables ([[prices]])")
    return tuple(_parse_one(i, entry) for i, entry in enumerate(raw))


def _parse_one(index: int, entry: Any) -> PriceOverride:
    where = f"prices[{index}]"
    if not isinstance(entry, dict):
        raise PriceConfigError(f"{where} must be a table")
    unknown = set(entry) - _KEYS
    if unknown:
        raise PriceConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})"
        )
    model = entry.get("model")
    if not isinstance(model, str) or not model.strip():
        raise PriceConfigError(f"{where}: model is required (a model name or glob such as \"claude-*\")")
    provider = entry.get("provider", "*")
    if not isinstance(provider, str) or not provider.strip():
        raise PriceConfigError(f"{where}: provider must be a provider type or name (or a glob); omit it for any")

    given = {key: _number(where, key, entry[key]) for key in _RATE_KEYS if key in entry}
    discount = _number(where, "discount", entry["discount"]) if "discount" in entry else Decimal(0)
    if discount > 1:
        raise PriceConfigError(f"{where}: discount is a fraction between 0 and 1 (0.2 = 20% off), got {discount}")

    rates: OverrideRates | None = None
    if given:
        missing = [key for key in ("input", "output") if key not in given]
        if missing:
            raise PriceConfigError(
                f"{where}: {' and '.join(missing)} required when a table sets rates "
                "(USD per million tokens; 0 for a self-hosted model), or give only `discount` "
                "to take a fraction off the list price"
            )
        if "cache_write" in given and "cache_write_5m" in given:
            raise PriceConfigError(f"{where}: give cache_write or cache_write_5m, not both")
        rates = _fill(given)
    elif "discount" not in entry:
        raise PriceConfigError(f"{where}: set rates (input, output, ...) or a discount")

    content = {"provider": provider.strip().lower(), "model": model.strip().lower(), "discount": str(discount)}
    content.update({key: str(value) for key, value in sorted(given.items())})
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return PriceOverride(
        index=index,
        provider=content["provider"],
        model=content["model"],
        rates=rates,
        discount=discount,
        identity=f"{where}#{digest}",
    )


def _fill(given: dict[str, Decimal]) -> OverrideRates:
    inp, out = given["input"], given["output"]
    write = given.get("cache_write", given.get("cache_write_5m"))
    return OverrideRates(
        input=inp,
        output=out,
        cache_read=given.get("cache_read", inp),
        cache_write_5m=write if write is not None else inp,
        cache_write_1h=given.get("cache_write_1h", write if write is not None else inp),
        reasoning=given.get("reasoning", out),
        web_search=given.get("web_search", Decimal(0)),
    )


def _number(where: str, key: str, value: Any) -> Decimal:
    unit = "USD per 1000 searches" if key == "web_search" else "a fraction" if key == "discount" else (
        "USD per million tokens"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceConfigError(f"{where}: {key} must be a non-negative number ({unit}), got {value!r}")
    try:
        # str() first: the float 0.1 means the decimal 0.1, not its binary approximation.
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceConfigError(f"{where}: {key} must be a non-negative number ({unit}), got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise PriceConfigError(f"{where}: {key} must be a non-negative number ({unit}), got {value!r}")
    return number
