"""The circuit breaker state machine (gobreaker semantics, docs/compatibility.md#circuit-breaker), on an injected
clock."""

from __future__ import annotations

import pytest

from aigw_proxy.policy.circuit import BreakerConfig, Breakers, State, is_failure

KEY = ("anthropic", "/v1/messages", "claude-sonnet-4-5")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: object) -> tuple[Breakers, Clock, list[tuple[State, State]]]:
    clock = Clock()
    changes: list[tuple[State, State]] = []
    cfg = BreakerConfig(enabled=True, **kw)  # type: ignore[arg-type]
    return Breakers(cfg, clock=clock, on_change=lambda k, a, b: changes.append((a, b))), clock, changes


def fail(breakers: Breakers, n: int = 1) -> None:
    b = breakers.get(KEY)
    for _ in range(n):
        gen = b.admit()
        assert gen is not None
        b.record(gen, failure=True)


def test_defaults_match_the_contract() -> None:
    cfg = BreakerConfig()
    assert (cfg.enabled, cfg.failure_threshold, cfg.interval, cfg.timeout, cfg.max_requests) == (False, 5, 10, 30, 3)


@pytest.mark.parametrize(("ptype", "status", "expected"), [
    ("openai", 429, True), ("openai", 503, True), ("openai", 504, True), ("openai", 529, False),
    ("anthropic", 529, True), ("anthropic", 500, False), ("copilot", 502, False), ("openai", 200, False),
])
def test_failure_statuses(ptype: str, status: int, expected: bool) -> None:
    assert is_failure(ptype, status) is expected


def test_trips_after_threshold_consecutive_failures_and_rejects_while_open() -> None:
    breakers, _, changes = make()
    fail(breakers, 4)
    assert breakers.get(KEY).state is State.CLOSED
    fail(breakers)
    b = breakers.get(KEY)
    assert b.state is State.OPEN and changes == [(State.CLOSED, State.OPEN)]
    assert b.admit() is None


def test_a_success_resets_the_consecutive_count() -> None:
    breakers, _, _ = make()
    fail(breakers, 4)
    b = breakers.get(KEY)
    gen = b.admit()
    assert gen is not None
    b.record(gen, failure=False)
    fail(breakers, 4)
    assert b.state is State.CLOSED


def test_counts_reset_every_interval_while_closed() -> None:
    breakers, clock, _ = make(interval=10)
    fail(breakers, 4)
    clock.now += 10.5
    fail(breakers, 4)
    assert breakers.get(KEY).state is State.CLOSED
    fail(breakers)
    assert breakers.get(KEY).state is State.OPEN


def test_half_open_after_timeout_lets_max_requests_through_and_closes_on_their_success() -> None:
    breakers, clock, changes = make(timeout=30, max_requests=3)
    fail(breakers, 5)
    b = breakers.get(KEY)
    clock.now += 29
    assert b.admit() is None
    clock.now += 1.5
    assert b.state is State.HALF_OPEN
    gens = [b.admit() for _ in range(3)]
    assert None not in gens
    assert b.admit() is None  # half-open and saturated
    for g in gens:
        b.record(g, failure=False)  # type: ignore[arg-type]
    assert b.state is State.CLOSED
    assert changes == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_a_failure_while_half_open_reopens() -> None:
    breakers, clock, changes = make(timeout=30)
    fail(breakers, 5)
    clock.now += 31
    fail(breakers)
    b = breakers.get(KEY)
    assert b.state is State.OPEN and b.admit() is None
    assert changes[-1] == (State.HALF_OPEN, State.OPEN)
    clock.now += 31
    assert b.state is State.HALF_OPEN  # the timeout starts again from the re-open


def test_a_result_from_an_older_generation_is_ignored() -> None:
    breakers, clock, _ = make(timeout=30, max_requests=1)
    b = breakers.get(KEY)
    slow = b.admit()  # admitted while closed, finishes after the trip
    fail(breakers, 5)
    clock.now += 31
    assert b.state is State.HALF_OPEN
    b.record(slow, failure=False)  # type: ignore[arg-type]
    assert b.state is State.HALF_OPEN


def test_breakers_are_per_provider_endpoint_and_model() -> None:
    breakers, _, _ = make(failure_threshold=1)
    fail(breakers)
    other_model = breakers.get(("anthropic", "/v1/messages", "claude-haiku-4-5"))
    other_endpoint = breakers.get(("copilot", "/v1/messages", KEY[2]))
    assert breakers.get(KEY).state is State.OPEN
    assert other_model.state is State.CLOSED and other_endpoint.state is State.CLOSED
    assert other_model.admit() is not None


def test_the_number_of_breakers_is_bounded() -> None:
    breakers = Breakers(BreakerConfig(enabled=True), max_breakers=3)
    for i in range(10):
        breakers.get(("p", "/e", f"model-{i}"))
    assert len(breakers) == 3


@pytest.mark.parametrize("kw", [{"failure_threshold": 0}, {"max_requests": 0}, {"timeout": 0}, {"interval": -1}])
def test_invalid_settings_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError, match="circuit breaker"):
        BreakerConfig(**kw)
