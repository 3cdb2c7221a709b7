"""Circuit breakers per provider × endpoint × model, gobreaker's semantics (docs/compatibility.md#circuit-breaker):

* closed: requests pass; `failure_threshold` consecutive failures trip it open. The counts are cleared every
  `interval` seconds (0: never).
* open: requests are rejected; after `timeout` seconds it turns half-open.
* half-open: up to `max_requests` requests pass; one failure re-opens it, `max_requests` consecutive successes
  close it; further requests are rejected meanwhile.

A result is only counted for the state generation its request was admitted in, so a slow request admitted before
a trip cannot close the breaker afterwards. Pure and clock-injected: no I/O, no mitmproxy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

FAILURE_STATUSES = frozenset({429, 503, 504})
ANTHROPIC_OVERLOADED = 529


class State(Enum):
    CLOSED = 0.0
    HALF_OPEN = 0.5
    OPEN = 1.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    enabled: bool = False
    failure_threshold: int = 5
    interval: float = 10.0
    timeout: float = 30.0
    max_requests: int = 3

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.max_requests < 1:
            raise ValueError("circuit breaker failure threshold and max requests must be at least 1")
        if self.interval < 0 or self.timeout <= 0:
            raise ValueError("circuit breaker interval must be >= 0 and timeout > 0")


def is_failure(provider_type: str, status: int) -> bool:
    """Statuses that count against a breaker: 429, 503, 504, and Anthropic's 529 overloaded."""
    return status in FAILURE_STATUSES or (provider_type == "anthropic" and status == ANTHROPIC_OVERLOADED)


Key = tuple[str, str, str]  # (provider name, endpoint, model)
StateChange = Callable[[Key, State, State], None]


class Breaker:
    def __init__(self, key: Key, config: BreakerConfig, clock: Callable[[], float],
                 on_change: StateChange | None = None) -> None:
        self.key = key
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._generation = 0
        self._requests = 0
        self._consecutive_failures = 0
        self._consecutive_successes = 0
        self._expiry = self._closed_expiry(clock())

    def _closed_expiry(self, now: float) -> float:
        return now + self.config.interval if self.config.interval > 0 else float("inf")

    @property
    def state(self) -> State:
        self._current(self._clock())
        return self._state

    def _current(self, now: float) -> None:
        """Apply what time alone changes: the closed-state count reset and open → half-open."""
        if self._state is State.CLOSED and now >= self._expiry:
            self._new_generation(now)
        elif self._state is State.OPEN and now >= self._expiry:
            self._set(State.HALF_OPEN, now)

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self._requests = self._consecutive_failures = self._consecutive_successes = 0
        if self._state is State.CLOSED:
            self._expiry = self._closed_expiry(now)
        elif self._state is State.OPEN:
            self._expiry = now + self.config.timeout
        else:
            self._expiry = float("inf")

    def _set(self, state: State, now: float) -> None:
        if state is self._state:
            return
        before, self._state = self._state, state
        self._new_generation(now)
        if self._on_change is not None:
            self._on_change(self.key, before, state)

    def admit(self) -> int | None:
        """The generation to report the result against, or None: reject the request."""
        now = self._clock()
        self._current(now)
        if self._state is State.OPEN:
            return None
        if self._state is State.HALF_OPEN and self._requests >= self.config.max_requests:
            return None
        self._requests += 1
        return self._generation

    def record(self, generation: int, failure: bool) -> None:
        now = self._clock()
        self._current(now)
        if generation != self._generation:
            return
        if failure:
            self._consecutive_failures += 1
            self._consecutive_successes = 0
            if self._state is State.HALF_OPEN or self._consecutive_failures >= self.config.failure_threshold:
                self._set(State.OPEN, now)
        else:
            self._consecutive_successes += 1
            self._consecutive_failures = 0
            if self._state is State.HALF_OPEN and self._consecutive_successes >= self.config.max_requests:
                self._set(State.CLOSED, now)


class Breakers:
    """The lazily created breakers of one daemon, keyed by (provider, endpoint, model)."""

    def __init__(self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic,
                 on_change: StateChange | None = None, on_create: Callable[[Key], None] | None = None,
                 max_breakers: int = 10_000) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._on_create = on_create
        self._max = max_breakers
        self._breakers: dict[Key, Breaker] = {}

    def get(self, key: Key) -> Breaker:
        b = self._breakers.get(key)
        if b is None:
            if len(self._breakers) >= self._max:
                # Model names are client-chosen: forget the oldest breaker rather than grow without bound.
                self._breakers.pop(next(iter(self._breakers)))
            b = self._breakers[key] = Breaker(key, self.config, self._clock, self._on_change)
            if self._on_create is not None:
                self._on_create(key)
        return b

    def __len__(self) -> int:
        return len(self._breakers)
