"""Budgets: spend limits (USD) per user, per group and a default for everyone, daily and/or monthly, soft and hard.
Pure: the rules and the arithmetic; the database side is storage/controls.py, the enforcement spend/enforcer.py.

The rules (docs/spend.md#budgets):
- Scopes: `default` (every user, each on their own spend), `user:NAME` (that user's own spend; replaces the
  default for them) and `group:NAME` (the group's total: the spend of the calls charged to the group).
- The group a call is charged to (`effective_group_id`, stored on its token-usage rows): of the user's groups
  that have a budget, the most restrictive one, i.e. the lowest hard limit as a monthly figure (a daily limit
  counts 30 times; a budget with both counts the lower of the two), ties broken by group name. A user in no
  budgeted group is charged to no group.
- A call is refused when any hard limit that applies to it is used up: spent >= limit, for the user's own limit
  (their user budget, else the default) and for their effective group's. A limit of 0 refuses every call.
  The soft limit is `soft_fraction` × the hard limit (default 0.8): reaching it only alerts.
- Windows are UTC: daily = the calendar day, monthly = the calendar month; both reset at 00:00 UTC. Spend counts
  in the window the call started in.
- Only money the company pays per token counts: subscription calls (credential kind oauth: Claude plan,
  ChatGPT-plan Codex, Copilot), priced as API-equivalent value, do not; unpriced calls cannot count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal

ScopeKind = Literal["default", "group", "user"]
DEFAULT_SOFT_FRACTION = 0.8
MICROS = Decimal(1_000_000)
DAYS_PER_MONTH = 30  # a daily limit's monthly weight, when comparing groups' budgets
_BUDGET_KEYS = {"scope", "daily", "monthly", "soft_fraction"}


class BudgetError(ValueError):
    """A budget that cannot be used (bad scope, amount or fraction); the message names what is wrong."""


class Window(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    name: str = ""  # the user's or group's name; "" for the default

    @classmethod
    def parse(cls, text: str) -> Scope:
        """`default`, `user:NAME` or `group:NAME`."""
        if not isinstance(text, str):
            raise BudgetError("scope must be a string: default, user:NAME or group:NAME")
        value = text.strip()
        if value == "default":
            return cls("default")
        kind, sep, name = value.partition(":")
        if not sep or kind not in ("user", "group") or not name.strip():
            raise BudgetError(f"scope {text!r} must be default, user:NAME or group:NAME")
        return cls(kind, name.strip())  # type: ignore[arg-type]

    def __str__(self) -> str:
        return "default" if self.kind == "default" else f"{self.kind}:{self.name}"


def usd_to_micros(value: object, what: str = "amount") -> int:
    """A USD amount (number or numeric string, >= 0) in whole micro-dollars, rounded half to even."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise BudgetError(f"{what} must be a number of US dollars")
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        raise BudgetError(f"{what} {value!r} is not a number of US dollars") from None
    if not amount.is_finite() or amount < 0:
        raise BudgetError(f"{what} must be a finite amount >= 0")
    return int((amount * MICROS).to_integral_value(ROUND_HALF_EVEN))


def micros_to_usd(micros: int) -> float:
    return micros / 1_000_000


def format_usd(micros: int) -> str:
    """`$12.50`, `$0.0003`: two decimals at least, more only when the amount needs them (up to 6)."""
    text = f"{Decimal(micros) / MICROS:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def parse_fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BudgetError("soft_fraction must be a number between 0 and 1")
    try:
        fraction = float(value)
    except ValueError:
        raise BudgetError(f"soft_fraction {value!r} is not a number") from None
    if not 0 < fraction <= 1:
        raise BudgetError("soft_fraction must be > 0 and <= 1")
    return fraction


@dataclass(frozen=True, slots=True)
class Budget:
    scope: Scope
    daily_micros: int | None = None
    monthly_micros: int | None = None
    soft_fraction: float = DEFAULT_SOFT_FRACTION
    source: str = "config"  # "config" (the file) or "database" (CLI / API; overrides the file's for its scope)

    @classmethod
    def build(cls, scope: str | Scope, *, daily: object = None, monthly: object = None,
              soft_fraction: object = None, source: str = "config") -> Budget:
        """A validated budget from loose values (USD amounts); at least one of daily and monthly."""
        sc = scope if isinstance(scope, Scope) else Scope.parse(scope)
        if daily is None and monthly is None:
            raise BudgetError(f"budget {sc}: set daily, monthly or both (USD)")
        return cls(
            sc,
            None if daily is None else usd_to_micros(daily, "daily"),
            None if monthly is None else usd_to_micros(monthly, "monthly"),
            DEFAULT_SOFT_FRACTION if soft_fraction is None else parse_fraction(soft_fraction),
            source,
        )

    def limits(self) -> list[tuple[Window, int]]:
        out = []
        if self.daily_micros is not None:
            out.append((Window.DAILY, self.daily_micros))
        if self.monthly_micros is not None:
            out.append((Window.MONTHLY, self.monthly_micros))
        return out

    @property
    def monthly_weight(self) -> float:
        """How restrictive it is, as a monthly figure (lower = more restrictive)."""
        daily = math.inf if self.daily_micros is None else self.daily_micros * DAYS_PER_MONTH
        monthly = math.inf if self.monthly_micros is None else self.monthly_micros
        return min(daily, monthly)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": str(self.scope),
            "daily": None if self.daily_micros is None else micros_to_usd(self.daily_micros),
            "monthly": None if self.monthly_micros is None else micros_to_usd(self.monthly_micros),
            "daily_micros": self.daily_micros,
            "monthly_micros": self.monthly_micros,
            "soft_fraction": self.soft_fraction,
            "source": self.source,
        }


def parse_budgets(entries: Any) -> tuple[Budget, ...]:
    """The config's `[[budgets]]` array: scope, daily and/or monthly (USD), soft_fraction; one per scope."""
    if not isinstance(entries, list):
        raise BudgetError("budgets must be an array of tables ([[budgets]])")
    out: list[Budget] = []
    seen: set[Scope] = set()
    for i, entry in enumerate(entries):
        where = f"budgets[{i}]"
        if not isinstance(entry, dict):
            raise BudgetError(f"{where} must be a table")
        unknown = set(entry) - _BUDGET_KEYS
        if unknown:
            raise BudgetError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if "scope" not in entry:
            raise BudgetError(f"{where}: scope is required (default, user:NAME or group:NAME)")
        try:
            budget = Budget.build(entry["scope"], daily=entry.get("daily"), monthly=entry.get("monthly"),
                                  soft_fraction=entry.get("soft_fraction"))
        except BudgetError as exc:
            raise BudgetError(f"{where}: {exc}") from None
        if budget.scope in seen:
            raise BudgetError(f"{where}: scope {budget.scope} has two budgets")
        seen.add(budget.scope)
        out.append(budget)
    return tuple(out)


# -- windows ----------------------------------------------------------------------------------------------------

def utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def window_start(window: Window, day: date) -> date:
    return day if window is Window.DAILY else month_start(day)


def window_reset(window: Window, day: date) -> datetime:
    """When the window that holds `day` ends (00:00 UTC of the next day or month)."""
    if window is Window.DAILY:
        nxt = day + timedelta(days=1)
    else:
        nxt = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Spent:
    """Spend (micro-dollars) in the day and in the month of `day` (UTC)."""

    day: date
    daily_micros: int = 0
    monthly_micros: int = 0

    def on(self, day: date) -> Spent:
        """The figures as of `day`: a later day starts its daily window at 0, a later month both."""
        if day == self.day:
            return self
        if month_start(day) != month_start(self.day):
            return Spent(day)
        return Spent(day, 0, self.monthly_micros)

    def plus(self, micros: int) -> Spent:
        return Spent(self.day, self.daily_micros + micros, self.monthly_micros + micros)

    def in_window(self, window: Window) -> int:
        return self.daily_micros if window is Window.DAILY else self.monthly_micros


# -- who is limited by what -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BudgetBook:
    """Every budget in force, resolved to ids (config budgets first, database ones replacing them per scope)."""

    default: Budget | None = None
    users: Mapping[str, Budget] = field(default_factory=dict)  # by user id
    groups: Mapping[str, Budget] = field(default_factory=dict)  # by group id
    group_names: Mapping[str, str] = field(default_factory=dict)  # group id → name

    @property
    def empty(self) -> bool:
        return self.default is None and not self.users and not self.groups

    def personal(self, user_id: str) -> Budget | None:
        """The limit on a user's own spend: their user budget, else the default."""
        return self.users.get(user_id) or self.default

    def effective_group(self, group_ids: Iterable[str]) -> str | None:
        """The group a user's calls are charged to: the most restrictive budgeted group (see the module doc)."""
        budgeted = [(self.groups[g].monthly_weight, self.group_names.get(g, g), g) for g in group_ids
                    if g in self.groups]
        return min(budgeted)[2] if budgeted else None


def resolve_budgets(budgets: Iterable[Budget], *, user_ids: Mapping[str, str], group_ids: Mapping[str, str],
                    group_names: Mapping[str, str]) -> tuple[BudgetBook, list[Budget]]:
    """Resolve scopes by name (`user_ids`: username → id, `group_ids`: group name → id) into a BudgetBook; later
    budgets replace earlier ones of the same scope. Also returns the budgets whose user or group does not exist."""
    default: Budget | None = None
    users: dict[str, Budget] = {}
    groups: dict[str, Budget] = {}
    unresolved: list[Budget] = []
    for b in budgets:
        if b.scope.kind == "default":
            default = b
        elif b.scope.kind == "user":
            uid = user_ids.get(b.scope.name)
            if uid is None:
                unresolved.append(b)
            else:
                users[uid] = b
        else:
            gid = group_ids.get(b.scope.name)
            if gid is None:
                unresolved.append(b)
            else:
                groups[gid] = b
    return BudgetBook(default, users, groups, dict(group_names)), unresolved


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit that applies to a call, and how much of it is spent."""

    budget: Budget
    window: Window
    limit_micros: int
    spent_micros: int
    day: date  # the day the figures are for

    @property
    def soft_micros(self) -> int:
        return math.ceil(self.limit_micros * self.budget.soft_fraction)

    @property
    def hard_reached(self) -> bool:
        return self.spent_micros >= self.limit_micros

    @property
    def soft_reached(self) -> bool:
        return self.spent_micros >= self.soft_micros

    @property
    def resets_at(self) -> datetime:
        return window_reset(self.window, self.day)

    def describe(self) -> str:
        """"the daily budget of user alice ($5.00)", "the default monthly budget ($100.00)"."""
        scope = self.budget.scope
        amount = format_usd(self.limit_micros)
        if scope.kind == "default":
            return f"the default {self.window} budget ({amount})"
        return f"the {self.window} budget of {scope.kind} {scope.name} ({amount})"


def limit_states(budget: Budget | None, spent: Spent) -> list[LimitState]:
    if budget is None:
        return []
    return [LimitState(budget, window, limit, spent.in_window(window), spent.day) for window, limit in budget.limits()]


def blocking(states: Iterable[LimitState]) -> LimitState | None:
    """The used-up limit a refusal names: of several, the one that resets last (when calls can resume)."""
    reached = [s for s in states if s.hard_reached]
    return max(reached, key=lambda s: (s.resets_at, s.window is Window.MONTHLY)) if reached else None


def refusal_message(state: LimitState) -> str:
    """The 429's message: which budget, how much is spent, when it resets."""
    reset = state.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"budget_exceeded: {state.describe()} is used up ({format_usd(state.spent_micros)} spent); "
            f"new model calls are refused until it resets at {reset}")
