"""Price one token-usage row: our recorded figures → micro-dollars, from the bundled genai-prices data or an
operator override. Pure: no I/O, no network, no mitmproxy, no database.

Our figures, as the parsers record them (aigw_proxy/intercept/parsing):
- `input_tokens` is the UNCACHED input. OpenAI's `prompt_tokens` / Responses' `input_tokens` and Gemini's
  `promptTokenCount` include the cached tokens, so the parsers subtract them; Anthropic reports uncached input.
  genai-prices wants the TOTAL input (uncached + cache reads + cache writes): see `_Mix.total_input`, which also
  picks the long-context tier (e.g. Anthropic's > 200k input tokens), as the provider does.
- `output_tokens` includes reasoning (OpenAI counts it in; the Gemini parser adds `thoughtsTokenCount`, billed as
  output). The reasoning share (`metadata` `output_reasoning` or `completion_reasoning`) only matters when a
  price sets a separate reasoning rate.
- `cache_write_input_tokens` (Anthropic) is billed by TTL: `metadata` `cache_ephemeral_1h_input` at the 1 h rate,
  the rest (`cache_ephemeral_5m_input`, and any write the split does not cover: the default TTL) at the 5 m rate.
- `metadata` `web_search_requests` (Anthropic server tool) at the per-search rate; Gemini's `tool_use_prompt`
  tokens (not in `promptTokenCount`) as uncached input.

Money: each component is computed exactly (Decimal: tokens × USD per million = micro-dollars), the discount
applied, then rounded half-to-even to whole micro-dollars; `cost_micros` is the sum of the rounded components,
so the columns always add up (within 3 µ$ of the exact total).

A model with no price is UNPRICED (`None`), never $0. An explicit zero price (an override for a self-hosted
model, or a model the price data lists as free) is priced at $0.

genai-prices ships its data in the package. Its opt-in `UpdatePrices` downloads newer data from GitHub; we never
start it, and we price from our own snapshot of the bundled data (never the library's process-global one, which
another library could swap), so the same package version always gives the same prices and no request leaves the
machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from aigw_proxy.spend.overrides import OverrideRates, PriceOverride

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

__all__ = ("LIBRARY_SOURCE", "Figures", "Price", "Pricer", "UsageFigures", "is_api_equivalent", "library_version")

LIBRARY_SOURCE = "genai-prices"
CONFIG_SOURCE = "config"

# Our provider types → the price data's provider ids.
_LIBRARY_PROVIDER = {"anthropic": "anthropic", "openai": "openai", "gemini": "google", "copilot": "github-copilot"}
# A model the serving provider has no price for is priced at its vendor's list price (Copilot serves Claude, GPT
# and Gemini models; an OpenAI-compatible gateway may serve Claude): the API-equivalent value.
_VENDORS = ("anthropic", "openai", "google")
_LOOKUP_CACHE_MAX = 4096  # model names come from clients: bound the cache

_ZERO = Decimal(0)
_MILLE = Decimal(1000)  # USD per 1000 (searches, requests) → micro-dollars per one


class UsageFigures(Protocol):
    """A token-usage row as we record it (aigw_proxy.recording.records.TokenUsage fits, as do database rows)."""

    @property
    def input_tokens(self) -> int: ...  # uncached input
    @property
    def output_tokens(self) -> int: ...  # reasoning included
    @property
    def cache_read_input_tokens(self) -> int: ...
    @property
    def cache_write_input_tokens(self) -> int: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Figures:
    """A plain UsageFigures, for callers that hold the numbers loose (reprice, tests)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """One row's price in micro-dollars (1 USD = 1,000,000). `cost_micros` = the sum of the components."""

    input_price_micros: int  # uncached input
    output_price_micros: int  # output, reasoning included
    cache_read_price_micros: int
    cache_write_price_micros: int  # both TTLs
    other_price_micros: int  # per-search and per-request fees (Anthropic web search)
    cost_micros: int
    source: str  # "genai-prices" | "config"
    version: str  # the genai-prices version (its data ships with it), or the override's identity
    model_ref: str  # the price entry used: "anthropic/claude-sonnet-4-5", or the override's "provider/model" glob


def is_api_equivalent(credential_kind: str | None) -> bool:
    """A subscription call (OAuth: Claude plan, ChatGPT-plan Codex, Copilot) is priced at the API list price,
    but the company pays a seat, not per token: its cost is "API-equivalent value", to be reported apart."""
    return credential_kind == "oauth"


def library_version() -> str:
    return _catalog().version


@dataclass(frozen=True, slots=True)
class _Mix:
    """A row's token mix as the price book bills it; every figure >= 0 and consistent."""

    uncached_input: int
    tool_prompt: int  # Gemini tool-use prompt tokens: input, not in promptTokenCount
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    output: int  # reasoning included
    reasoning: int
    web_searches: int

    @property
    def total_input(self) -> int:
        return self.uncached_input + self.tool_prompt + self.cache_read + self.cache_write_5m + self.cache_write_1h

    @classmethod
    def of(cls, usage: UsageFigures) -> _Mix:
        meta = usage.metadata or {}
        write = _count(usage.cache_write_input_tokens)
        write_1h = _count(meta.get("cache_ephemeral_1h_input"))
        write = max(write, write_1h + _count(meta.get("cache_ephemeral_5m_input")))
        output = _count(usage.output_tokens)
        reasoning = _count(meta.get("output_reasoning")) or _count(meta.get("completion_reasoning"))
        return cls(
            uncached_input=_count(usage.input_tokens),
            tool_prompt=_count(meta.get("tool_use_prompt")),
            cache_read=_count(usage.cache_read_input_tokens),
            cache_write_5m=write - write_1h,
            cache_write_1h=write_1h,
            output=output,
            reasoning=min(reasoning, output),
            web_searches=_count(meta.get("web_search_requests")),
        )


@dataclass(frozen=True, slots=True)
class _Rates:
    """Resolved rates for one row: USD per million tokens; `web_search` and `request` USD per 1000."""

    input: Decimal
    tool_prompt: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal
    web_search: Decimal
    request: Decimal

    @classmethod
    def from_override(cls, r: OverrideRates) -> _Rates:
        return cls(
            input=r.input,
            tool_prompt=r.input,
            cache_read=r.cache_read,
            cache_write_5m=r.cache_write_5m,
            cache_write_1h=r.cache_write_1h,
            output=r.output,
            reasoning=r.reasoning,
            web_search=r.web_search,
            request=_ZERO,
        )


# Our rate fields → genai-prices price keys, most specific first: a unit the model has no rate for is priced at its
# nearest priced parent's (a cache read with no cache-read rate costs input; a 1 h write with no 1 h rate costs
# the cache-write rate), as the library does.
_LIBRARY_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("input_mtok",),
    "tool_prompt": ("input_tool_mtok", "input_mtok"),
    "cache_read": ("cache_read_mtok", "input_mtok"),
    "cache_write_5m": ("cache_write_5m_mtok", "cache_write_mtok", "input_mtok"),
    "cache_write_1h": ("cache_write_1h_mtok", "cache_write_mtok", "input_mtok"),
    "output": ("output_mtok",),
    "reasoning": ("output_reasoning_mtok", "output_mtok"),
    "web_search": ("web_searches_kcount",),
    "request": ("requests_kcount",),
}


class _RateTable:
    """One genai-prices ModelPrice, read once: per field its rate or tiered rates. Tiers are "cliffs" on the
    TOTAL input: the whole call pays the rate of the highest threshold its total input exceeds, as providers bill
    long context (Anthropic > 200k, OpenAI > 272k)."""

    def __init__(self, mp: ModelPrice) -> None:
        self.fields: dict[str, Decimal | TieredPrices] = {}
        for name, keys in _LIBRARY_KEYS.items():
            value = next((v for v in (getattr(mp, k, None) for k in keys) if v is not None), None)
            self.fields[name] = _ZERO if value is None else value
        starts = {t.start for v in self.fields.values() if not isinstance(v, Decimal) for t in v.tiers}
        self.thresholds = sorted(starts)
        self._by_level: dict[int, _Rates] = {}

    def at(self, total_input: int) -> _Rates:
        level = sum(1 for start in self.thresholds if total_input > start)
        rates = self._by_level.get(level)
        if rates is None:
            rates = self._by_level[level] = _Rates(**{k: _tiered(v, total_input) for k, v in self.fields.items()})
        return rates


def _tiered(value: Decimal | TieredPrices, total_input: int) -> Decimal:
    if isinstance(value, Decimal):
        return value
    for tier in reversed(value.tiers):  # sorted by start (TieredPrices sorts them)
        if total_input > tier.start:
            return tier.price
    return value.base


@dataclass(frozen=True, slots=True)
class _Entry:
    """What prices a (provider type, provider name, model): an override and/or a price-data model."""

    override: PriceOverride | None
    provider: Provider | None  # the price data's provider and model, None when an override's rates price it
    model: ModelInfo | None
    rates: _Rates | None = None  # the override's rates, when it sets them

    @property
    def native(self) -> bool:  # the model is the provider's own, not a fallback's: its tier variants apply
        return self.provider is not None and any(m is self.model for m in self.provider.models)


class Pricer:
    """Prices token-usage rows with the operator's overrides (first match wins) over the bundled price data.
    Build one per config (overrides are fixed); the model lookup is cached, so a row costs microseconds."""

    def __init__(self, overrides: Sequence[PriceOverride] = ()) -> None:
        self._overrides = tuple(overrides)
        self._entries: dict[tuple[str, str, str], _Entry | None] = {}
        self._tables: dict[int, tuple[ModelPrice, _RateTable]] = {}

    def price(
        self,
        usage: UsageFigures,
        *,
        provider_type: str,
        provider_name: str = "",
        model: str | None,
        at: datetime,
        price_context: Mapping[str, str] | None = None,
    ) -> Price | None:
        """The row's price, or None when nothing prices its model (UNPRICED, never $0).

        `at` is the call's time (prices by date; a naive time is UTC). `price_context` selects the price data's
        request variants when the response says which applied, e.g. {"service_tier": "flex"} (OpenAI),
        {"speed": "fast"} (Anthropic), {"processing": "batch"}; omitted = standard prices."""
        entry = self._entry(provider_type, provider_name, model or "")
        if entry is None:
            return None
        mix = _Mix.of(usage)
        override = entry.override
        discount = override.discount if override is not None else _ZERO
        if entry.rates is not None:
            assert override is not None
            rates = entry.rates
            source, version, ref = CONFIG_SOURCE, override.identity, f"{override.provider}/{override.model}"
        else:
            assert entry.provider is not None and entry.model is not None
            when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
            mp = entry.model.get_prices(when, dict(price_context) if price_context and entry.native else None)
            rates = self._table(mp, cacheable=not price_context).at(mix.total_input)
            source, version = LIBRARY_SOURCE, _catalog().version
            ref = f"{entry.provider.id}/{entry.model.id}"
            if override is not None:  # a discount on the list price
                source, version = CONFIG_SOURCE, f"{override.identity}+{LIBRARY_SOURCE}-{version}"
        return _compute(mix, rates, discount, source, version, ref)

    def _table(self, mp: ModelPrice, *, cacheable: bool) -> _RateTable:
        # Standard prices are the price data's own objects, stable for the process: read each one once. A price
        # with a request context is a fresh merged copy every call: read it afresh.
        if not cacheable:
            return _RateTable(mp)
        hit = self._tables.get(id(mp))
        if hit is not None and hit[0] is mp:
            return hit[1]
        table = _RateTable(mp)
        if len(self._tables) >= _LOOKUP_CACHE_MAX:
            self._tables.clear()
        self._tables[id(mp)] = (mp, table)
        return table

    def _entry(self, provider_type: str, provider_name: str, model: str) -> _Entry | None:
        key = (provider_type, provider_name, model)
        try:
            return self._entries[key]
        except KeyError:
            pass
        entry = self._lookup(provider_type, provider_name, model.strip().lower())
        if len(self._entries) >= _LOOKUP_CACHE_MAX:
            self._entries.clear()
        self._entries[key] = entry
        return entry

    def _lookup(self, provider_type: str, provider_name: str, model: str) -> _Entry | None:
        override = next((o for o in self._overrides if o.matches(provider_type, provider_name, model)), None)
        if override is not None and override.rates is not None:
            return _Entry(override, None, None, _Rates.from_override(override.rates))
        found = _catalog().find(provider_type, provider_name, model) if model else None
        if found is None:
            return None  # a discount on an unknown list price is still unknown
        return _Entry(override, *found)


def _compute(mix: _Mix, r: _Rates, discount: Decimal, source: str, version: str, ref: str) -> Price:
    keep = 1 - discount
    parts = [
        mix.uncached_input * r.input + mix.tool_prompt * r.tool_prompt,
        (mix.output - mix.reasoning) * r.output + mix.reasoning * r.reasoning,
        mix.cache_read * r.cache_read,
        mix.cache_write_5m * r.cache_write_5m + mix.cache_write_1h * r.cache_write_1h,
        (mix.web_searches * r.web_search + r.request) * _MILLE,
    ]
    micros = [_round(p * keep) for p in parts]
    return Price(
        input_price_micros=micros[0],
        output_price_micros=micros[1],
        cache_read_price_micros=micros[2],
        cache_write_price_micros=micros[3],
        other_price_micros=micros[4],
        cost_micros=sum(micros),
        source=source,
        version=version,
        model_ref=ref,
    )


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def _count(value: Any) -> int:
    if type(value) is int:
        return value if value > 0 else 0
    if value is None or isinstance(value, bool):
        return 0
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


class _Catalog:
    """Our snapshot of genai-prices' bundled data, and the lookup of a row's model in it."""

    def __init__(self) -> None:
        import genai_prices
        from genai_prices.data import providers

        self.version: str = genai_prices.__version__
        self.providers: list[Provider] = list(providers)
        self._by_id = {p.id: p for p in self.providers}

    def find(self, provider_type: str, provider_name: str, model: str) -> tuple[Provider, ModelInfo] | None:
        """The serving provider's own price (by its name if the price data knows it, e.g. "azure" or "groq", then
        by its type), else the model's vendor's list price. Copilot is a subscription: its calls are valued at the
        vendor's API list price first (Copilot lists the models it includes in the seat at $0), then at Copilot's
        own published rate for models no vendor in the data sells."""
        own = [self._by_id.get(pid) for pid in (provider_name.lower(), _LIBRARY_PROVIDER.get(provider_type, ""))]
        vendors = [self._by_id[vid] for vid in _VENDORS]
        vendors = [v for v in vendors if v.model_match is not None and v.model_match.is_match(model)]
        order = [*vendors, *own] if provider_type == "copilot" else [*own, *vendors]
        seen: list[Provider] = []
        for p in order:
            if p is None or p in seen:
                continue
            seen.append(p)
            # all_providers: a provider's declared fallbacks (Google's Vertex → Anthropic for Claude models).
            m = p.find_model(model, all_providers=self.providers)
            if m is not None and _has_prices(m):
                return p, m
        return None


def _has_prices(model: ModelInfo) -> bool:
    # An empty price list = listed without a published rate (Copilot's gpt-4o): no price.
    return not isinstance(model.prices, list) or bool(model.prices)


@cache
def _catalog() -> _Catalog:
    return _Catalog()
