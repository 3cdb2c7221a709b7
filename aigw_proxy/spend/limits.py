"""Rate limits and concurrency caps on decrypted provider requests (model calls and passthrough alike, as the
reference gateway applies them). Pure: no I/O, no clock of its own (callers pass `now`, monotonic seconds).

- `--rate-limit R`: requests per second per proxy token, a token bucket holding up to max(1, R) requests (a burst
  of one second's worth) refilled at R per second. A request that finds it empty is refused with 429 and
  `Retry-After` = the whole seconds until the bucket holds a request again (at least 1).
- `--max-concurrency N`: requests in flight on this proxy; one more is refused with 503 "at capacity".
- `[[limits]]` per user (by name): `rate_limit` replaces `--rate-limit` for that user's tokens, `max_concurrency`
  caps that user's own requests in flight (on top of the proxy-wide cap). 0 turns the limit off for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

_LIMIT_KEYS = {"user", "rate_limit", "max_concurrency"}
MAX_BUCKETS = 10_000  # idle full buckets are dropped past this many


class LimitsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class UserLimits:
    user: str  # username
    rate_limit: float | None = None  # requests/s per token; None: the proxy's --rate-limit; 0: unlimited
    max_concurrency: int | None = None  # the user's own requests in flight; None or 0: no cap of their own


def parse_limits(entries: Any) -> tuple[UserLimits, ...]:
    """The config's `[[limits]]` array: `user`, and `rate_limit` and/or `max_concurrency`."""
    if not isinstance(entries, list):
        raise LimitsError("limits must be an array of tables ([[limits]])")
    out: list[UserLimits] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"limits[{i}]"
        if not isinstance(entry, dict):
            raise LimitsError(f"{where} must be a table")
        unknown = set(entry) - _LIMIT_KEYS
        if unknown:
            raise LimitsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        user = entry.get("user")
        if not isinstance(user, str) or not user:
            raise LimitsError(f"{where}: user (a username) is required")
        if user in seen:
            raise LimitsError(f"{where}: user {user!r} has two [[limits]] entries")
        seen.add(user)
        rate = entry.get("rate_limit")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0
                                 or not math.isfinite(rate)):
            raise LimitsError(f"{where}: rate_limit must be a number of requests per second >= 0")
        cap = entry.get("max_concurrency")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise LimitsError(f"{where}: max_concurrency must be a whole number >= 0")
        if rate is None and cap is None:
            raise LimitsError(f"{where}: set rate_limit, max_concurrency or both")
        out.append(UserLimits(user, None if rate is None else float(rate), cap))
    return tuple(out)


class TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one request: 0.0 if allowed, else the seconds until one would be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


def retry_after(wait: float) -> int:
    """`Retry-After` in whole seconds, never 0 (a client retrying at once would be refused again)."""
    return max(1, math.ceil(wait))


Refusal = Literal["rate_limit", "proxy_capacity", "user_capacity"]


class RequestLimits:
    """The proxy's rate limiter and concurrency caps, with per-user overrides (`configure` applies new ones and
    keeps the counters)."""

    def __init__(self, rate_limit: float = 0.0, max_concurrency: int = 0,
                 overrides: Iterable[UserLimits] = ()) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self.in_flight = 0
        self._user_in_flight: dict[str, int] = {}
        self.configure(rate_limit, max_concurrency, overrides)

    def configure(self, rate_limit: float, max_concurrency: int, overrides: Iterable[UserLimits]) -> None:
        self.rate_limit = rate_limit
        self.max_concurrency = max_concurrency
        self.overrides = {o.user: o for o in overrides}  # a bucket whose rate changed starts again, full

    @property
    def active(self) -> bool:
        return bool(self.rate_limit or self.max_concurrency or self.overrides)

    def rate_for(self, username: str) -> float:
        o = self.overrides.get(username)
        return self.rate_limit if o is None or o.rate_limit is None else o.rate_limit

    def user_cap(self, username: str) -> int:
        o = self.overrides.get(username)
        return 0 if o is None or o.max_concurrency is None else o.max_concurrency

    def check_rate(self, token_id: str, username: str, now: float) -> float:
        """0.0 if this token may send a request now, else the seconds to wait."""
        rate = self.rate_for(username)
        if rate <= 0:
            return 0.0
        bucket = self._buckets.get(token_id)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[token_id] = TokenBucket(rate, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: start over rather than grow without bound
            self._buckets.clear()

    def acquire(self, username: str) -> Refusal | None:
        """Count a request in flight; a refusal (nothing counted) when a cap is reached."""
        if self.max_concurrency and self.in_flight >= self.max_concurrency:
            return "proxy_capacity"
        cap = self.user_cap(username)
        mine = self._user_in_flight.get(username, 0)
        if cap and mine >= cap:
            return "user_capacity"
        self.in_flight += 1
        self._user_in_flight[username] = mine + 1
        return None

    def release(self, username: str) -> None:
        self.in_flight -= 1
        left = self._user_in_flight.get(username, 1) - 1
        if left > 0:
            self._user_in_flight[username] = left
        else:
            self._user_in_flight.pop(username, None)
