"""aigw_proxy.spend: token-usage rows priced in micro-dollars. Rows come from the real parsers (the figures as we
record them: uncached input, reasoning inside output, cache writes split by TTL); every expected cost is computed
by hand here from genai-prices' own per-million rates for the model, read in the test, and cross-checked against
genai-prices' `calc_price`, which takes the TOTAL input."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.data import providers as library_providers
from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices

from aigw_proxy.intercept.parsing import anthropic_messages, gemini, openai_chat, openai_responses
from aigw_proxy.recording.records import TokenUsage
from aigw_proxy.spend import (
    Figures,
    Price,
    PriceConfigError,
    Pricer,
    is_api_equivalent,
    parse_price_overrides,
)

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
SNAPSHOT = data_snapshot.DataSnapshot(providers=library_providers, from_auto_update=False)


def library_prices(provider_id: str, model: str, at: dt.datetime = NOW) -> ModelPrice:
    """genai-prices' rates (USD per million tokens) for the model on that date, straight from the library."""
    _, info = SNAPSHOT.find_provider_model(model, None, provider_id, None)
    return info.get_prices(at)


def base(rate: Decimal | TieredPrices | None) -> Decimal:
    assert rate is not None
    return rate.base if isinstance(rate, TieredPrices) else rate


def tier(rate: Decimal | TieredPrices | None, start: int) -> Decimal:
    assert isinstance(rate, TieredPrices), rate
    return next(t.price for t in rate.tiers if t.start == start)


def flat(rate: Decimal | TieredPrices | None) -> Decimal:
    """A rate the library gives as one figure (no tiers)."""
    assert isinstance(rate, Decimal), rate
    return rate


def micros(exact: Decimal) -> int:
    """Micro-dollars, as the pricer rounds each component: half to even."""
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def library_total_micros(row: TokenUsage | Figures, provider_id: str, model: str, at: dt.datetime = NOW) -> Decimal:
    """genai-prices' own total for the row: it wants the TOTAL input, cache reads and writes included."""
    meta = dict(row.metadata or {})
    total_input = row.input_tokens + row.cache_read_input_tokens + row.cache_write_input_tokens
    usage = Usage(
        input_tokens=total_input + meta.get("tool_use_prompt", 0),
        cache_read_tokens=row.cache_read_input_tokens,
        cache_write_tokens=row.cache_write_input_tokens,
        cache_write_1h_tokens=meta.get("cache_ephemeral_1h_input", 0),
        output_tokens=row.output_tokens,
        web_searches=meta.get("web_search_requests", 0),
    )
    result = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=at)
    return result.total_price * 1_000_000


def one_row(facts: Any) -> TokenUsage:
    assert facts.error is None, facts.error
    assert len(facts.token_usages) == 1
    return facts.token_usages[0]


def body(value: dict) -> bytes:
    return json.dumps(value).encode()


def assert_adds_up(price: Price) -> None:
    assert price.cost_micros == (
        price.input_price_micros
        + price.output_price_micros
        + price.cache_read_price_micros
        + price.cache_write_price_micros
        + price.other_price_micros
    )


# --- Anthropic ---------------------------------------------------------------------------------------------------


def anthropic_row(model: str, usage: dict) -> TokenUsage:
    return one_row(
        anthropic_messages.parse_response(
            body({"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "usage": usage})
        )
    )


def test_anthropic_cache_read_and_writes_billed_by_ttl() -> None:
    model = "claude-sonnet-4-5-20250929"
    row = anthropic_row(
        model,
        {
            "input_tokens": 1_234,  # Anthropic reports uncached input
            "cache_read_input_tokens": 30_001,
            "cache_creation_input_tokens": 5_003,
            "cache_creation": {"ephemeral_5m_input_tokens": 3_001, "ephemeral_1h_input_tokens": 2_002},
            "output_tokens": 807,
        },
    )
    price = Pricer().price(row, provider_type="anthropic", provider_name="anthropic", model=model, at=NOW)
    assert price is not None

    r = library_prices("anthropic", model)
    assert base(r.cache_write_1h_mtok) > base(r.cache_write_mtok)  # the 1 h TTL costs more: the split matters
    # tokens × USD per million tokens = micro-dollars
    assert price == Price(
        input_price_micros=micros(1_234 * base(r.input_mtok)),
        output_price_micros=micros(807 * base(r.output_mtok)),
        cache_read_price_micros=micros(30_001 * base(r.cache_read_mtok)),
        cache_write_price_micros=micros(3_001 * base(r.cache_write_mtok) + 2_002 * base(r.cache_write_1h_mtok)),
        other_price_micros=0,
        cost_micros=price.cost_micros,
        source="genai-prices",
        version=genai_prices.__version__,
        model_ref="anthropic/claude-sonnet-4-5",
    )
    assert_adds_up(price)
    assert abs(price.cost_micros - library_total_micros(row, "anthropic", model)) < 3
    # With Sonnet 4.5's list prices ($3 / $15 / $0.30 read / $3.75 5 m write / $6 1 h write), by hand:
    # 1234×3 + 807×15 + 30001×0.3 + 3001×3.75 + 2002×6 = 3702 + 12105 + 9000.3 + 11253.75 + 12012 µ$
    if (base(r.input_mtok), base(r.output_mtok)) == (Decimal(3), Decimal(15)):
        assert (price.input_price_micros, price.output_price_micros) == (3702, 12105)
        assert (price.cache_read_price_micros, price.cache_write_price_micros) == (9000, 23266)
        assert price.cost_micros == 48073


def test_anthropic_writes_without_a_ttl_split_are_5m_writes_and_web_searches_are_priced_per_search() -> None:
    model = "claude-opus-4-5"
    row = anthropic_row(
        model,
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 4_000,  # no `cache_creation` split: the default TTL, 5 minutes
            "output_tokens": 100,
            "server_tool_use": {"web_search_requests": 3},
        },
    )
    price = Pricer().price(row, provider_type="anthropic", model=model, at=NOW)
    assert price is not None
    r = library_prices("anthropic", model)
    assert price.cache_write_price_micros == micros(4_000 * base(r.cache_write_mtok))
    # USD per 1000 searches × 1000 = micro-dollars per search
    assert price.other_price_micros == micros(3 * flat(r.web_searches_kcount) * 1000)
    assert_adds_up(price)
    assert abs(price.cost_micros - library_total_micros(row, "anthropic", model)) < 3


def test_anthropic_long_context_tier_applies_to_the_whole_call_past_200k_total_input() -> None:
    model = "claude-sonnet-4-5"
    r = library_prices("anthropic", model)
    pricer = Pricer()
    # 150k uncached + 60k cache reads = 210k total input: over the 200k tier, although the uncached part is not.
    long = anthropic_row(model, {"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 2_000})
    price = pricer.price(long, provider_type="anthropic", model=model, at=NOW)
    assert price is not None
    assert price.input_price_micros == micros(150_000 * tier(r.input_mtok, 200_000))
    assert price.cache_read_price_micros == micros(60_000 * tier(r.cache_read_mtok, 200_000))
    assert price.output_price_micros == micros(2_000 * tier(r.output_mtok, 200_000))
    assert tier(r.input_mtok, 200_000) > base(r.input_mtok)
    assert abs(price.cost_micros - library_total_micros(long, "anthropic", model)) < 3

    # Exactly 200k is not over the threshold: base rates.
    edge = anthropic_row(model, {"input_tokens": 140_000, "cache_read_input_tokens": 60_000, "output_tokens": 2_000})
    edge_price = pricer.price(edge, provider_type="anthropic", model=model, at=NOW)
    assert edge_price is not None
    assert edge_price.input_price_micros == micros(140_000 * base(r.input_mtok))
    assert edge_price.output_price_micros == micros(2_000 * base(r.output_mtok))


# --- OpenAI ------------------------------------------------------------------------------------------------------


def test_openai_chat_cached_input_is_stored_uncached_and_priced_at_the_cache_rate() -> None:
    model = "gpt-4o-2024-08-06"
    row = one_row(
        openai_chat.parse_response(
            body(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 10_000,  # includes the 6000 cached
                        "completion_tokens": 500,
                        "prompt_tokens_details": {"cached_tokens": 6_000},
                    },
                }
            )
        )
    )
    assert (row.input_tokens, row.cache_read_input_tokens) == (4_000, 6_000)  # what we record
    price = Pricer().price(row, provider_type="openai", provider_name="openai", model=model, at=NOW)
    r = library_prices("openai", model)
    assert price is not None
    assert price.input_price_micros == micros(4_000 * base(r.input_mtok))
    assert price.cache_read_price_micros == micros(6_000 * base(r.cache_read_mtok))
    assert price.output_price_micros == micros(500 * base(r.output_mtok))
    assert price.cache_write_price_micros == price.other_price_micros == 0
    assert price.model_ref == "openai/gpt-4o"
    assert_adds_up(price)
    assert abs(price.cost_micros - library_total_micros(row, "openai", model)) < 3
    # A cache-blind pricing (all 10000 input at the input rate) would cost more: the discount is kept.
    assert price.cost_micros < micros(10_000 * base(r.input_mtok) + 500 * base(r.output_mtok))


def test_openai_responses_reasoning_inside_output_is_not_billed_twice() -> None:
    model = "gpt-5"
    row = one_row(
        openai_responses.parse_response(
            body(
                {
                    "id": "resp_1",
                    "object": "response",
                    "status": "completed",
                    "model": "gpt-5-2025-08-07",
                    "output": [],
                    "usage": {
                        "input_tokens": 20_000,
                        "input_tokens_details": {"cached_tokens": 12_000},
                        "output_tokens": 3_000,
                        "output_tokens_details": {"reasoning_tokens": 2_000},
                        "total_tokens": 23_000,
                    },
                }
            )
        )
    )
    assert (row.input_tokens, row.output_tokens, row.metadata["output_reasoning"]) == (8_000, 3_000, 2_000)
    price = Pricer().price(row, provider_type="openai", model="gpt-5-2025-08-07", at=NOW)
    r = library_prices("openai", model)
    assert price is not None
    assert price.input_price_micros == micros(8_000 * base(r.input_mtok))
    assert price.cache_read_price_micros == micros(12_000 * base(r.cache_read_mtok))
    assert price.output_price_micros == micros(3_000 * base(r.output_mtok))  # 2000 reasoning are among the 3000
    assert abs(price.cost_micros - library_total_micros(row, "openai", model)) < 3


def test_openai_service_tier_variant_when_the_caller_says_which_applied() -> None:
    model = "gpt-5"
    at = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
    row = Figures(input_tokens=1_000_000, output_tokens=1_000_000)
    standard = Pricer().price(row, provider_type="openai", model=model, at=at)
    flex = Pricer().price(row, provider_type="openai", model=model, at=at, price_context={"service_tier": "flex"})
    expected = calc_price(
        Usage(input_tokens=1_000_000, output_tokens=1_000_000),
        model,
        provider_id="openai",
        genai_request_timestamp=at,
        price_context={"service_tier": "flex"},
    )
    assert standard is not None and flex is not None
    assert flex.cost_micros == micros(expected.total_price * 1_000_000)
    assert flex.cost_micros < standard.cost_micros


# --- Gemini ------------------------------------------------------------------------------------------------------


def gemini_row(model: str, usage: dict) -> TokenUsage:
    return one_row(
        gemini.parse_response(
            body(
                {
                    "responseId": "r1",
                    "modelVersion": model,
                    "candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                    "usageMetadata": usage,
                }
            )
        )
    )


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-2.5-flash"])
def test_gemini_cached_input_and_thinking_billed_as_output(model: str) -> None:
    row = gemini_row(
        model,
        {
            "promptTokenCount": 50_000,  # includes the 20000 cached
            "cachedContentTokenCount": 20_000,
            "candidatesTokenCount": 1_000,
            "thoughtsTokenCount": 4_000,
            "totalTokenCount": 55_000,
        },
    )
    assert (row.input_tokens, row.cache_read_input_tokens, row.output_tokens) == (30_000, 20_000, 5_000)
    price = Pricer().price(row, provider_type="gemini", provider_name="gemini", model=model, at=NOW)
    r = library_prices("google", model)
    assert price is not None
    assert price.input_price_micros == micros(30_000 * base(r.input_mtok))
    assert price.cache_read_price_micros == micros(20_000 * base(r.cache_read_mtok))
    assert price.output_price_micros == micros(5_000 * base(r.output_mtok))  # thinking at the output rate
    assert price.model_ref == f"google/{model}"
    assert abs(price.cost_micros - library_total_micros(row, "google", model)) < 3


def test_gemini_tool_use_prompt_tokens_are_input_and_count_toward_the_long_context_tier() -> None:
    model = "gemini-2.5-pro"
    r = library_prices("google", model)
    row = gemini_row(
        model,
        {"promptTokenCount": 190_000, "toolUsePromptTokenCount": 20_000, "candidatesTokenCount": 100},
    )
    price = Pricer().price(row, provider_type="gemini", model=model, at=NOW)
    assert price is not None
    assert price.input_price_micros == micros(210_000 * tier(r.input_mtok, 200_000))
    assert price.output_price_micros == micros(100 * tier(r.output_mtok, 200_000))
    assert abs(price.cost_micros - library_total_micros(row, "google", model)) < 3


# --- prices by date ----------------------------------------------------------------------------------------------


def test_prices_by_date_the_price_on_the_day_of_the_call() -> None:
    row = Figures(input_tokens=100_000, output_tokens=10_000)
    pricer = Pricer()
    before = dt.datetime(2025, 6, 9, 23, 0, tzinfo=dt.UTC)
    after = dt.datetime(2025, 6, 10, 1, 0, tzinfo=dt.UTC)  # o3's price cut
    old, new = (pricer.price(row, provider_type="openai", model="o3", at=at) for at in (before, after))
    r_old, r_new = library_prices("openai", "o3", before), library_prices("openai", "o3", after)
    assert r_old.input_mtok != r_new.input_mtok
    assert old is not None and new is not None
    assert old.cost_micros == micros(100_000 * flat(r_old.input_mtok) + 10_000 * flat(r_old.output_mtok))
    assert new.cost_micros == micros(100_000 * flat(r_new.input_mtok) + 10_000 * flat(r_new.output_mtok))
    assert new.cost_micros < old.cost_micros


def test_prices_by_date_a_long_context_surcharge_that_was_dropped() -> None:
    # Sonnet 4.6 had a > 200k tier, then one flat price from the date the data gives.
    model = "claude-sonnet-4-6"
    _, info = SNAPSHOT.find_provider_model(model, None, "anthropic", None)
    assert isinstance(info.prices, list)
    constraint = next(c.constraint for c in info.prices if c.constraint is not None)
    assert isinstance(constraint, StartDateConstraint), constraint
    change = constraint.start_date
    day_before = dt.datetime.combine(change - dt.timedelta(days=1), dt.time(12), dt.UTC)
    day_of = dt.datetime.combine(change, dt.time(12), dt.UTC)
    row = anthropic_row(model, {"input_tokens": 300_000, "output_tokens": 1_000})
    pricer = Pricer()
    early, late = (pricer.price(row, provider_type="anthropic", model=model, at=at) for at in (day_before, day_of))
    assert early is not None and late is not None
    early_rates, late_rates = library_prices("anthropic", model, day_before), library_prices("anthropic", model, day_of)
    assert early.input_price_micros == micros(300_000 * tier(early_rates.input_mtok, 200_000))
    assert late.input_price_micros == micros(300_000 * flat(late_rates.input_mtok))
    assert late.cost_micros < early.cost_micros
    # A naive time is UTC.
    naive = pricer.price(row, provider_type="anthropic", model=model, at=day_of.replace(tzinfo=None))
    assert naive == late


# --- Copilot and subscriptions ----------------------------------------------------------------------------------


def test_copilot_calls_are_valued_at_the_vendors_api_list_price() -> None:
    pricer = Pricer()
    row = Figures(input_tokens=10_000, output_tokens=1_000, cache_read_input_tokens=5_000)
    # Copilot lists gpt-4o as included in the seat ($0); its API-equivalent value is OpenAI's list price.
    gpt = pricer.price(row, provider_type="copilot", provider_name="copilot", model="gpt-4o", at=NOW)
    r = library_prices("openai", "gpt-4o")
    assert gpt is not None and gpt.model_ref == "openai/gpt-4o"
    assert gpt.cost_micros == (
        micros(10_000 * flat(r.input_mtok))
        + micros(1_000 * flat(r.output_mtok))
        + micros(5_000 * flat(r.cache_read_mtok))
    )
    # Copilot's dotted Claude names are Anthropic's models.
    claude = pricer.price(row, provider_type="copilot", model="claude-sonnet-4.5", at=NOW)
    assert claude is not None and claude.model_ref == "anthropic/claude-sonnet-4-5"
    # A model no vendor in the data sells: Copilot's own published rate.
    grok = pricer.price(row, provider_type="copilot", model="grok-4.5", at=NOW)
    assert grok is not None and grok.model_ref == "github-copilot/grok-4.5"
    assert grok.input_price_micros == micros(10_000 * base(library_prices("github-copilot", "grok-4.5").input_mtok))


def test_subscription_credentials_are_api_equivalent_value() -> None:
    assert is_api_equivalent("oauth")
    assert not is_api_equivalent("api_key")
    assert not is_api_equivalent("none")
    assert not is_api_equivalent(None)


def test_a_provider_named_as_in_the_price_data_gets_that_providers_prices() -> None:
    # An OpenAI-typed provider the operator named "groq" (Groq's OpenAI-compatible API) serves Groq's models.
    row = Figures(input_tokens=10_000, output_tokens=1_000)
    price = Pricer().price(row, provider_type="openai", provider_name="groq", model="llama-3.3-70b-versatile", at=NOW)
    r = library_prices("groq", "llama-3.3-70b-versatile")
    assert price is not None and price.model_ref == "groq/llama-3.3-70b-versatile"
    assert price.cost_micros == micros(10_000 * base(r.input_mtok)) + micros(1_000 * base(r.output_mtok))
    # Under any other name the model is unknown to OpenAI's price list: unpriced.
    assert Pricer().price(row, provider_type="openai", model="llama-3.3-70b-versatile", at=NOW) is None


# --- unpriced ----------------------------------------------------------------------------------------------------


def test_a_model_without_a_price_is_unpriced_never_zero() -> None:
    pricer = Pricer()
    row = Figures(input_tokens=1_000, output_tokens=100)
    assert pricer.price(row, provider_type="openai", model="my-finetune-xyz", at=NOW) is None
    assert pricer.price(row, provider_type="anthropic", model="claude-nonexistent-9", at=NOW) is None
    assert pricer.price(row, provider_type="gemini", model=None, at=NOW) is None
    assert pricer.price(row, provider_type="openai", model="", at=NOW) is None
    # A discount on an unknown list price is still unknown.
    discounted = Pricer(parse_price_overrides([{"model": "*", "discount": 0.5}]))
    assert discounted.price(row, provider_type="openai", model="my-finetune-xyz", at=NOW) is None


def test_a_model_the_data_lists_as_free_is_priced_at_zero() -> None:
    price = Pricer().price(Figures(1_000, 100), provider_type="gemini", model="gemma-3", at=NOW)
    assert price is not None and price.cost_micros == 0 and price.model_ref == "google/gemma-3"


# --- overrides ---------------------------------------------------------------------------------------------------


def test_override_glob_wins_over_the_price_data_and_defaults_its_cache_rates() -> None:
    overrides = parse_price_overrides(
        [
            {"provider": "anthropic", "model": "claude-sonnet-*", "input": 2.5, "output": 12, "cache_read": 0.25},
            {"provider": "anthropic", "model": "*", "input": 99, "output": 99},  # never reached for Sonnet
        ]
    )
    row = anthropic_row(
        "claude-sonnet-4-5",
        {
            "input_tokens": 1_000,
            "cache_read_input_tokens": 2_000,
            "cache_creation_input_tokens": 3_000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
            "output_tokens": 400,
        },
    )
    price = Pricer(overrides).price(row, provider_type="anthropic", model="Claude-Sonnet-4-5", at=NOW)
    assert price == Price(
        input_price_micros=2_500,  # 1000 × 2.5
        output_price_micros=4_800,  # 400 × 12
        cache_read_price_micros=500,  # 2000 × 0.25
        cache_write_price_micros=7_500,  # no write rates given: the input rate, 3000 × 2.5
        other_price_micros=0,
        cost_micros=15_300,
        source="config",
        version=overrides[0].identity,
        model_ref="anthropic/claude-sonnet-*",
    )
    assert overrides[0].identity.startswith("prices[0]#")
    # A model the first table does not match falls to the next.
    opus = Pricer(overrides).price(Figures(1_000, 0), provider_type="anthropic", model="claude-opus-4-5", at=NOW)
    assert opus is not None and opus.cost_micros == 99_000 and opus.version == overrides[1].identity


def test_override_cache_write_ttls_reasoning_and_web_search_rates() -> None:
    overrides = parse_price_overrides(
        [
            {
                "provider": "openai",
                "model": "gpt-5*",
                "input": 1,
                "output": 8,
                "reasoning": 4,
                "cache_write": 1.5,
                "cache_write_1h": 2,
                "web_search": 5,
            }
        ]
    )
    row = Figures(
        input_tokens=1_000,
        output_tokens=3_000,
        cache_write_input_tokens=3_000,
        metadata={"output_reasoning": 2_000, "cache_ephemeral_1h_input": 1_000, "web_search_requests": 2},
    )
    price = Pricer(overrides).price(row, provider_type="openai", model="gpt-5.1", at=NOW)
    assert price is not None
    assert price.input_price_micros == 1_000
    assert price.output_price_micros == 1_000 * 8 + 2_000 * 4
    assert price.cache_read_price_micros == 0
    assert price.cache_write_price_micros == 2_000 * 1.5 + 1_000 * 2
    assert price.other_price_micros == 2 * 5 * 1000
    assert_adds_up(price)


def test_override_discount_on_the_list_price() -> None:
    overrides = parse_price_overrides([{"provider": "anthropic", "model": "claude-*", "discount": 0.25}])
    row = anthropic_row("claude-haiku-4-5", {"input_tokens": 10_000, "output_tokens": 2_000})
    listed = Pricer().price(row, provider_type="anthropic", model="claude-haiku-4-5", at=NOW)
    discounted = Pricer(overrides).price(row, provider_type="anthropic", model="claude-haiku-4-5", at=NOW)
    r = library_prices("anthropic", "claude-haiku-4-5")
    assert listed is not None and discounted is not None
    assert discounted.input_price_micros == micros(10_000 * base(r.input_mtok) * Decimal("0.75"))
    assert discounted.output_price_micros == micros(2_000 * base(r.output_mtok) * Decimal("0.75"))
    assert discounted.source == "config"
    assert discounted.version == f"{overrides[0].identity}+genai-prices-{genai_prices.__version__}"
    assert discounted.model_ref == listed.model_ref == "anthropic/claude-haiku-4-5"
    # A discount applies to rates given in the same table too.
    both = Pricer(parse_price_overrides([{"model": "m", "input": 10, "output": 10, "discount": 0.1}]))
    both_price = both.price(Figures(1_000, 1_000), provider_type="openai", model="m", at=NOW)
    assert both_price is not None
    assert both_price.cost_micros == 18_000


def test_override_self_hosted_at_zero_is_priced_not_unpriced() -> None:
    overrides = parse_price_overrides([{"provider": "ollama", "model": "*", "input": 0, "output": 0}])
    pricer = Pricer(overrides)
    row = Figures(input_tokens=50_000, output_tokens=5_000, cache_read_input_tokens=1_000)
    # matched by provider NAME (an openai-typed provider called "ollama")
    price = pricer.price(row, provider_type="openai", provider_name="ollama", model="qwen3-coder:30b", at=NOW)
    assert price is not None and price.cost_micros == 0 and price.source == "config"
    # the same model elsewhere is unknown: unpriced
    assert pricer.price(row, provider_type="openai", provider_name="openai", model="qwen3-coder:30b", at=NOW) is None


def test_override_provider_matches_type_or_name() -> None:
    overrides = parse_price_overrides([{"provider": "copilot", "model": "*", "input": 1, "output": 1}])
    pricer = Pricer(overrides)
    row = Figures(1_000, 0)
    assert pricer.price(row, provider_type="copilot", provider_name="copilot-biz", model="x", at=NOW) is not None
    assert pricer.price(row, provider_type="openai", provider_name="copilot", model="x", at=NOW) is not None
    assert pricer.price(row, provider_type="openai", provider_name="openai", model="x", at=NOW) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"prices": 1}, "prices must be an array of tables"),
        ([1], r"prices\[0\] must be a table"),
        ([{"input": 1, "output": 1}], r"prices\[0\]: model is required"),
        ([{"model": "x", "input": 1}], r"prices\[0\]: output required"),
        ([{"model": "x", "cache_read": 1}], r"input and output required"),
        ([{"model": "x"}], r"set rates .* or a discount"),
        ([{"model": "x", "input": -1, "output": 1}], r"input must be a non-negative number \(USD per million"),
        ([{"model": "x", "input": "cheap", "output": 1}], r"input must be a non-negative number"),
        ([{"model": "x", "input": True, "output": 1}], r"input must be a non-negative number"),
        ([{"model": "x", "discount": 1.5}], r"discount is a fraction between 0 and 1"),
        ([{"model": "x", "input": 1, "output": 1, "cache_write": 1, "cache_write_5m": 1}], "not both"),
        ([{"model": "x", "input": 1, "output": 1, "cache_writ": 1}], r"unknown key\(s\) cache_writ"),
        ([{"model": "x", "discount": 0.1}, {"model": "y", "provider": ""}], r"prices\[1\]: provider must be"),
    ],
)
def test_invalid_overrides_are_refused_with_a_clear_message(raw: Any, message: str) -> None:
    if isinstance(raw, dict):
        raw = raw["prices"]
    with pytest.raises(PriceConfigError, match=message):
        parse_price_overrides(raw)


def test_override_numbers_are_exact_decimals_and_the_identity_follows_the_content() -> None:
    (a,) = parse_price_overrides([{"model": "x", "input": 0.1, "output": 0.3}])
    assert a.rates is not None and a.rates.input == Decimal("0.1") and a.rates.output == Decimal("0.3")
    (same,) = parse_price_overrides([{"model": "x", "input": 0.1, "output": 0.3}])
    (changed,) = parse_price_overrides([{"model": "x", "input": 0.1, "output": 0.4}])
    assert a.identity == same.identity != changed.identity
    assert parse_price_overrides(None) == () == parse_price_overrides([])


# --- rounding ----------------------------------------------------------------------------------------------------


def test_each_component_rounds_half_to_even_and_the_cost_is_their_sum() -> None:
    overrides = parse_price_overrides([{"model": "m", "input": 0.5, "output": 0.5, "cache_read": 0.3}])
    pricer = Pricer(overrides)
    # 3 × 0.5 = 1.5 → 2;  5 × 0.5 = 2.5 → 2;  35 × 0.3 = 10.5 → 10
    price = pricer.price(Figures(3, 5, 35), provider_type="openai", model="m", at=NOW)
    assert price is not None
    assert (price.input_price_micros, price.output_price_micros, price.cache_read_price_micros) == (2, 2, 10)
    assert price.cost_micros == 14


# --- agreement with genai-prices, model by model -----------------------------------------------------------------

MIXES = [
    Figures(input_tokens=1_234, output_tokens=567),
    Figures(input_tokens=3_000, output_tokens=900, cache_read_input_tokens=40_000, metadata={"output_reasoning": 300}),
    Figures(
        input_tokens=500,
        output_tokens=2_000,
        cache_read_input_tokens=9_000,
        cache_write_input_tokens=7_000,
        metadata={"cache_ephemeral_5m_input": 4_000, "cache_ephemeral_1h_input": 3_000, "web_search_requests": 2},
    ),
    Figures(input_tokens=180_000, output_tokens=3_000, cache_read_input_tokens=150_000),  # past 200k / 272k tiers
]
TYPES = {"anthropic": "anthropic", "openai": "openai", "google": "gemini", "github-copilot": "copilot"}


def _dates(info: Any) -> list[dt.datetime]:
    dates = [NOW]
    if isinstance(info.prices, list):
        for c in info.prices:
            if c.constraint is not None and hasattr(c.constraint, "start_date"):
                day = dt.datetime.combine(c.constraint.start_date, dt.time(12), dt.UTC)
                dates += [day, day - dt.timedelta(days=1)]
    return dates


def test_every_model_of_our_providers_costs_what_genai_prices_says() -> None:
    pricer = Pricer()
    checked = 0
    for lib_provider in library_providers:
        ptype = TYPES.get(lib_provider.id)
        if ptype is None:
            continue
        for info in lib_provider.models:
            if isinstance(info.prices, list) and not info.prices:
                continue
            for at in _dates(info):
                for row in MIXES:
                    price = pricer.price(row, provider_type=ptype, provider_name=lib_provider.id, model=info.id, at=at)
                    if price is None or price.model_ref != f"{lib_provider.id}/{info.id}":
                        continue  # an id that resolves to another entry (or a vendor's, for Copilot)
                    expected = library_total_micros(row, lib_provider.id, info.id, at)
                    assert abs(price.cost_micros - expected) < 3, (lib_provider.id, info.id, at, row, price, expected)
                    assert_adds_up(price)
                    checked += 1
    assert checked > 500


# --- no network, no auto-update ----------------------------------------------------------------------------------


NO_NETWORK_SCRIPT = """
import datetime as dt, socket, sys

def no_network(*args, **kwargs):
    raise SystemExit("pricing tried to open a connection")

socket.socket.connect = socket.socket.connect_ex = no_network
socket.create_connection = socket.getaddrinfo = no_network

from aigw_proxy.spend import Figures, Pricer, library_version
from genai_prices import update_prices

price = Pricer().price(Figures(1000, 100), provider_type="anthropic", model="claude-sonnet-4-5",
                       at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
assert price is not None and price.cost_micros > 0, price
assert update_prices._shared_updater.thread is None, "UpdatePrices was started"
print(library_version(), price.cost_micros)
"""


def test_prices_come_from_the_bundled_data_without_network_or_auto_update() -> None:
    # A fresh interpreter with every way out closed before genai-prices is even imported.
    done = subprocess.run([sys.executable, "-c", NO_NETWORK_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    version, cost = done.stdout.split()
    assert version == genai_prices.__version__ and int(cost) > 0


def test_the_librarys_process_wide_snapshot_cannot_change_our_prices() -> None:
    row = Figures(1_000, 100)
    before = Pricer().price(row, provider_type="openai", model="gpt-4o", at=NOW)
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        with pytest.raises(LookupError):  # the library's own global now knows nothing...
            calc_price(Usage(input_tokens=1, output_tokens=1), "gpt-4o", provider_id="openai")
        assert Pricer().price(row, provider_type="openai", model="gpt-4o", at=NOW) == before  # ...we are unmoved
    finally:
        data_snapshot.set_custom_snapshot(None)
