"""The pure parts of spend controls: budget scopes, amounts, windows and rules; the token bucket and concurrency
caps; model-policy decisions; the provider-shaped error bodies; the config tables."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from aigw_proxy.config.settings import ConfigError, parse_file_config
from aigw_proxy.policy.provider_errors import api_for_provider_type, provider_error_body
from aigw_proxy.policy.providers import Api
from aigw_proxy.spend.budgets import (
    Budget,
    BudgetError,
    LimitState,
    Scope,
    Spent,
    Window,
    blocking,
    format_usd,
    limit_states,
    parse_budgets,
    refusal_message,
    resolve_budgets,
    usd_to_micros,
    window_reset,
)
from aigw_proxy.spend.limits import LimitsError, RequestLimits, TokenBucket, UserLimits, parse_limits, retry_after
from aigw_proxy.spend.policy import ModelPolicy, PolicyError, parse_model_policy

# -- budgets ----------------------------------------------------------------------------------------------------


def test_scopes_parse_and_print() -> None:
    assert Scope.parse("default") == Scope("default")
    assert Scope.parse(" user:alice ") == Scope("user", "alice")
    assert str(Scope.parse("group:eng")) == "group:eng"
    for bad in ("", "users:alice", "group:", "alice", "team:x"):
        with pytest.raises(BudgetError, match="must be default, user:NAME or group:NAME"):
            Scope.parse(bad)


def test_amounts_are_exact_micro_dollars() -> None:
    assert usd_to_micros("12.5") == 12_500_000
    assert usd_to_micros(0.1) == 100_000  # the float's shortest text, not its binary value
    assert usd_to_micros("$0.0000005") == 0  # half to even
    assert usd_to_micros("0.0000015") == 2
    assert usd_to_micros(0) == 0
    for bad in (-1, "ten", True, None, float("inf")):
        with pytest.raises(BudgetError):
            usd_to_micros(bad)
    assert [format_usd(m) for m in (12_500_000, 300, 0, 4_500, 1)] == ["$12.50", "$0.0003", "$0.00", "$0.0045",
                                                                       "$0.000001"]


def test_config_budgets() -> None:
    budgets = parse_budgets([
        {"scope": "default", "monthly": 100},
        {"scope": "group:eng", "daily": 5, "monthly": "80", "soft_fraction": 0.5},
    ])
    assert budgets == (Budget(Scope("default"), None, 100_000_000, 0.8), Budget(Scope("group", "eng"), 5_000_000,
                                                                                 80_000_000, 0.5))
    for entries, message in (
        ([{"scope": "default"}], "set daily, monthly or both"),
        ([{"daily": 1}], "scope is required"),
        ([{"scope": "default", "daily": 1, "weekly": 2}], "unknown key"),
        ([{"scope": "default", "daily": 1}, {"scope": "default", "monthly": 1}], "has two budgets"),
        ([{"scope": "default", "daily": 1, "soft_fraction": 1.5}], "soft_fraction must be > 0 and <= 1"),
        ({"scope": "default"}, "array of tables"),
    ):
        with pytest.raises(BudgetError, match=message):
            parse_budgets(entries)


def test_windows_reset_at_utc_midnight_and_the_first_of_the_month() -> None:
    assert window_reset(Window.DAILY, date(2026, 12, 31)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert window_reset(Window.MONTHLY, date(2026, 12, 31)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert window_reset(Window.MONTHLY, date(2026, 2, 3)) == datetime(2026, 3, 1, tzinfo=UTC)
    spent = Spent(date(2026, 5, 30), 7, 90)
    assert spent.on(date(2026, 5, 30)) == spent
    assert spent.on(date(2026, 5, 31)) == Spent(date(2026, 5, 31), 0, 90)  # a new day, the same month
    assert spent.on(date(2026, 6, 1)) == Spent(date(2026, 6, 1), 0, 0)


def test_the_effective_group_is_the_most_restrictive_budgeted_one() -> None:
    budgets = [
        Budget.build("group:big", monthly=1000),
        Budget.build("group:daily", daily=10),  # 300 a month: more restrictive than 1000
        Budget.build("group:tie-b", monthly=300),
        Budget.build("group:tie-a", daily=20, monthly=300),  # both: the lower weight, 300; ties go by name
    ]
    ids = {"big": "g1", "daily": "g2", "tie-b": "g3", "tie-a": "g4", "none": "g5"}
    book, unresolved = resolve_budgets(budgets, user_ids={}, group_ids=ids, group_names={v: k for k, v in ids.items()})
    assert unresolved == []
    assert book.effective_group(["g1", "g5"]) == "g1"
    assert book.effective_group(["g1", "g2"]) == "g2"
    assert book.effective_group(["g1", "g2", "g3", "g4"]) == "g2"  # 300 each; "daily" < "tie-a" < "tie-b"
    assert book.effective_group(["g3", "g4"]) == "g4"
    assert book.effective_group(["g5"]) is None
    assert book.effective_group([]) is None


def test_a_user_budget_replaces_the_default_and_later_budgets_win() -> None:
    config = [Budget.build("default", daily=1), Budget.build("user:alice", daily=5),
              Budget.build("user:ghost", daily=1)]
    stored = [Budget.build("user:alice", daily=9, source="database")]
    book, unresolved = resolve_budgets([*config, *stored], user_ids={"alice": "u1", "bob": "u2"}, group_ids={},
                                       group_names={})
    assert book.personal("u1") == stored[0]
    assert book.personal("u2") == config[0]
    assert [str(b.scope) for b in unresolved] == ["user:ghost"]


def test_limits_and_the_refusal_message() -> None:
    day = date(2026, 12, 1)
    budget = Budget.build("user:alice", daily="0.004", monthly="0.01", soft_fraction=0.5)
    states = limit_states(budget, Spent(day, 4_500, 4_500))
    assert [(s.window, s.hard_reached, s.soft_reached) for s in states] == [
        (Window.DAILY, True, True), (Window.MONTHLY, False, False)]
    assert states[0].soft_micros == 2_000
    state = blocking(states)
    assert state is not None and state.window is Window.DAILY
    assert refusal_message(state) == ("budget_exceeded: the daily budget of user alice ($0.004) is used up ($0.0045 "
                                      "spent); new model calls are refused until it resets at 2026-12-02T00:00:00Z")
    # Both used up: the refusal names the one that lasts longer (the month).
    both = limit_states(budget, Spent(day, 20_000, 20_000))
    assert blocking(both) is not None and blocking(both).window is Window.MONTHLY  # type: ignore[union-attr]
    default = LimitState(Budget.build("default", monthly=0), Window.MONTHLY, 0, 0, day)
    assert default.hard_reached  # a zero limit refuses everything
    assert default.describe() == "the default monthly budget ($0.00)"


# -- rate limits and concurrency ---------------------------------------------------------------------------------


def test_the_token_bucket() -> None:
    b = TokenBucket(2.0, now=0.0)  # 2 a second, a burst of 2
    assert [b.take(0.0), b.take(0.0)] == [0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.25) == pytest.approx(0.25)
    assert b.take(0.5) == 0.0
    slow = TokenBucket(0.5, now=0.0)  # one every 2 s, a burst of 1
    assert slow.take(0.0) == 0.0
    assert slow.take(1.0) == pytest.approx(1.0)
    assert [retry_after(w) for w in (0.01, 1.0, 1.2)] == [1, 1, 2]


def test_rate_limits_per_token_with_user_overrides() -> None:
    limits = RequestLimits(1.0, 0, [UserLimits("bot", rate_limit=0), UserLimits("fast", rate_limit=10)])
    assert limits.check_rate("t1", "alice", 0.0) == 0.0
    assert limits.check_rate("t1", "alice", 0.1) > 0  # the same token
    assert limits.check_rate("t2", "alice", 0.1) == 0.0  # another token of the same user: its own bucket
    assert all(limits.check_rate("tb", "bot", 0.0) == 0.0 for _ in range(100))
    assert sum(limits.check_rate("tf", "fast", 0.0) == 0.0 for _ in range(20)) == 10
    limits.configure(5.0, 0, [])  # a reload: a new rate starts a new bucket
    assert limits.rate_for("bot") == 5.0
    assert sum(limits.check_rate("t1", "alice", 0.2) == 0.0 for _ in range(10)) == 5


def test_concurrency_caps() -> None:
    limits = RequestLimits(0, 2, [UserLimits("solo", max_concurrency=1)])
    assert limits.acquire("solo") is None
    assert limits.acquire("solo") == "user_capacity"
    assert limits.acquire("alice") is None
    assert limits.acquire("alice") == "proxy_capacity"
    assert limits.in_flight == 2
    limits.release("solo")
    assert limits.acquire("solo") is None
    limits.release("solo")
    limits.release("alice")
    assert limits.in_flight == 0 and not RequestLimits().active


def test_config_limits() -> None:
    assert parse_limits([{"user": "a", "rate_limit": 2.5}, {"user": "b", "max_concurrency": 3}]) == (
        UserLimits("a", 2.5, None), UserLimits("b", None, 3))
    for entries, message in (
        ([{"rate_limit": 1}], "user .* is required"),
        ([{"user": "a"}], "set rate_limit, max_concurrency or both"),
        ([{"user": "a", "rate_limit": -1}], "rate_limit must be"),
        ([{"user": "a", "max_concurrency": 1.5}], "max_concurrency must be"),
        ([{"user": "a", "rate_limit": 1}, {"user": "a", "max_concurrency": 1}], "two \\[\\[limits\\]\\]"),
    ):
        with pytest.raises(LimitsError, match=message):
            parse_limits(entries)


# -- model policy ------------------------------------------------------------------------------------------------

RULES = parse_model_policy([
    {"name": "no-opus", "provider": "anthropic", "role": "member", "deny": ["claude-opus-*"]},
    {"name": "lead-opus", "user": "lead", "allow": "claude-opus-*"},
    {"name": "lead-no-haiku", "user": "lead", "deny": ["*haiku*"]},
    {"name": "small-openai", "provider": ["openai", "copilot"], "allow": ["gpt-4.1-mini*", "GPT-5-MINI*"]},
    {"provider": "corp-gateway", "deny": "*"},
])


def check(model: str | None, *, user: str = "mia", role: str = "member", provider: str = "anthropic",
          name: str | None = None) -> str | None:
    denial = ModelPolicy(RULES).check(provider_type=provider, provider_name=name or provider, model=model,
                                      username=user, role=role)
    return None if denial is None else denial.rule.name


def test_model_policy_levels_exceptions_and_allow_lists() -> None:
    assert check("claude-opus-4-1-20250805") == "no-opus"
    assert check("Claude-Opus-4-1") == "no-opus"  # patterns match case-insensitively
    assert check("claude-sonnet-4-5") is None
    assert check("claude-opus-4-1", role="admin") is None
    assert check("claude-opus-4-1", user="lead") is None  # the user's own rule decides before the role's
    assert check("claude-haiku-4-5", user="lead") == "lead-no-haiku"  # deny beats allow on the same level
    assert check("claude-sonnet-4-5", user="lead") == "lead-opus"  # the user level has an allow list: only it
    assert check("gpt-4.1", provider="openai") == "small-openai"
    assert check("gpt-5-mini-2025-08-07", provider="openai") is None
    assert check("gpt-4.1", provider="copilot") == "small-openai"
    assert check(None, provider="openai") == "small-openai"  # an unreadable model is "unknown"
    assert check("anything", provider="openai", name="corp-gateway") == "model_policy[4]"  # by provider name
    assert check("gpt-4.1", provider="gemini") is None


def test_denials_say_which_rule() -> None:
    policy = ModelPolicy(RULES)
    denied = policy.check(provider_type="anthropic", provider_name="anthropic", model="claude-opus-4-1",
                          username="mia", role="member")
    assert denied is not None and denied.message() == (
        "model_denied: model 'claude-opus-4-1' is not allowed: model_policy rule 'no-opus' denies claude-opus-* for "
        "role member")
    other = policy.check(provider_type="openai", provider_name="openai", model="o3", username="mia", role="member")
    assert other is not None and other.message() == (
        "model_denied: model 'o3' is not allowed: model_policy rule 'small-openai' allows only gpt-4.1-mini*, "
        "gpt-5-mini* for everyone")
    assert policy.may_refuse("anthropic", "anthropic", "mia") and not policy.may_refuse("gemini", "gemini", "mia")
    assert not ModelPolicy() and ModelPolicy(RULES).uses_roles


def test_config_model_policy_errors() -> None:
    for entries, message in (
        ([{"deny": []}], "deny must be"),
        ([{"name": "x"}], "set allow, deny or both"),
        ([{"user": "a", "role": "member", "deny": "*"}], "user or role, not both"),
        ([{"role": "owner", "deny": "*"}], "role must be one of member, admin"),
        ([{"name": "x", "deny": "*"}, {"name": "x", "deny": "*"}], "used twice"),
        ([{"deny": "*", "models": "*"}], "unknown key"),
    ):
        with pytest.raises(PolicyError, match=message):
            parse_model_policy(entries)


# -- error bodies and the config file ----------------------------------------------------------------------------


def test_error_bodies_in_each_providers_shape() -> None:
    msg = "budget_exceeded: no"
    assert json.loads(provider_error_body(Api.ANTHROPIC_MESSAGES, 429, msg)) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": msg}}
    assert json.loads(provider_error_body(Api.OPENAI_RESPONSES, 429, msg, code="budget_exceeded",
                                          openai_type="insufficient_quota")) == {
        "error": {"message": msg, "type": "insufficient_quota", "code": "budget_exceeded"}}
    assert json.loads(provider_error_body(Api.GEMINI_GENERATE, 429, msg)) == {
        "error": {"code": 429, "message": msg, "status": "RESOURCE_EXHAUSTED"}}
    assert json.loads(provider_error_body(Api.GEMINI_GENERATE, 403, msg)) == {
        "error": {"code": 403, "message": msg, "status": "PERMISSION_DENIED"}}
    assert json.loads(provider_error_body(Api.ANTHROPIC_MESSAGES, 403, msg))["error"]["type"] == "permission_error"
    assert json.loads(provider_error_body(None, 503, msg)) == {"error": msg}
    assert api_for_provider_type("copilot") == Api.OPENAI_CHAT and api_for_provider_type("other") is None


def test_the_config_file_tables() -> None:
    cfg = parse_file_config({
        "budgets": [{"scope": "default", "daily": 2}],
        "limits": [{"user": "ci", "rate_limit": 0}],
        "model_policy": [{"role": "member", "deny": "claude-opus-*"}],
    }, base_dir=Path("."))
    assert [str(b.scope) for b in cfg.budgets] == ["default"]
    assert cfg.limits == (UserLimits("ci", 0.0, None),)
    assert cfg.model_policy[0].deny == ("claude-opus-*",)
    with pytest.raises(ConfigError, match=r"budgets\[0\]: scope"):
        parse_file_config({"budgets": [{"scope": "everyone", "daily": 1}]}, base_dir=Path("."))
