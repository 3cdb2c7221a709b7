"""Model policy: which models a user may call, per provider, by role or by user (config `[[model_policy]]`).
Pure: no I/O.

A rule: `provider` (a provider type or name, or a list; omitted = every provider), who it is for (`user` = a
username, or `role` = member | admin; neither = everyone), and `allow` and/or `deny` lists of model-name patterns
(shell-style: `*`, `?`, `[...]`; matched case-insensitively on the model the request names).

Deciding a call (docs/spend.md#model-policy): the rules that apply to the call's provider and user are taken by
how specific their subject is, user rules first, then role rules, then everyone's. At the first level that says
anything about the model the decision is made:
- a `deny` pattern of one of its rules matches → refused (the first such rule, in file order);
- else an `allow` pattern matches → allowed (so a user rule can make an exception to a role's deny);
- else, if the level has `allow` lists → refused (the first rule with one).
A level with neither a matching pattern nor an allow list says nothing: the next level decides; no level
deciding allows the call. A request whose model cannot be read is checked as model "unknown".
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

ROLES = ("member", "admin")
_RULE_KEYS = {"name", "provider", "user", "role", "allow", "deny"}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PolicyRule:
    name: str
    providers: tuple[str, ...] = ()  # provider types or names, lower-case; () = every provider
    user: str | None = None
    role: str | None = None
    allow: tuple[str, ...] = ()  # lower-case patterns
    deny: tuple[str, ...] = ()

    @property
    def level(self) -> int:
        """0: a user's rule, 1: a role's, 2: everyone's."""
        return 0 if self.user is not None else 1 if self.role is not None else 2

    def subject(self) -> str:
        if self.user is not None:
            return f"user {self.user}"
        return f"role {self.role}" if self.role is not None else "everyone"

    def applies(self, provider_type: str, provider_name: str, username: str, role: str | None) -> bool:
        if self.providers and provider_type.lower() not in self.providers \
                and provider_name.lower() not in self.providers:
            return False
        if self.user is not None:
            return username == self.user
        return self.role is None or role == self.role


@dataclass(frozen=True, slots=True)
class Denial:
    rule: PolicyRule
    model: str
    reason: Literal["denied", "not_allowed"]
    pattern: str | None = None  # the deny pattern that matched

    def message(self) -> str:
        """The 403's message: which rule refused the model, and why."""
        if self.reason == "denied":
            why = f"denies {self.pattern} for {self.rule.subject()}"
        else:
            why = f"allows only {', '.join(self.rule.allow)} for {self.rule.subject()}"
        return f"model_denied: model {self.model!r} is not allowed: model_policy rule {self.rule.name!r} {why}"


def _patterns(value: Any, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(p, str) and p.strip() for p in items):
        raise PolicyError(f"{where}: {key} must be a model-name pattern or a non-empty list of them")
    return tuple(p.strip().lower() for p in items)


def parse_model_policy(entries: Any) -> tuple[PolicyRule, ...]:
    """The config's `[[model_policy]]` array (see the module doc)."""
    if not isinstance(entries, list):
        raise PolicyError("model_policy must be an array of tables ([[model_policy]])")
    rules: list[PolicyRule] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"model_policy[{i}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{where} must be a table")
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = entry.get("name", where)
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}: name must be a non-empty string")
        if name in names:
            raise PolicyError(f"{where}: rule name {name!r} is used twice")
        names.add(name)
        user, role = entry.get("user"), entry.get("role")
        if user is not None and role is not None:
            raise PolicyError(f"{where}: give user or role, not both")
        if user is not None and (not isinstance(user, str) or not user):
            raise PolicyError(f"{where}: user must be a username")
        if role is not None and role not in ROLES:
            raise PolicyError(f"{where}: role must be one of {', '.join(ROLES)}")
        providers = _patterns(entry.get("provider"), where, "provider")
        allow = _patterns(entry.get("allow"), where, "allow")
        deny = _patterns(entry.get("deny"), where, "deny")
        if not allow and not deny:
            raise PolicyError(f"{where}: set allow, deny or both")
        rules.append(PolicyRule(name, providers, user, role, allow, deny))
    return tuple(rules)


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled regex for a rule's patterns (what fnmatchcase would do for each, in one match)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)").match


class ModelPolicy:
    def __init__(self, rules: Iterable[PolicyRule] = ()) -> None:
        self.rules = tuple(sorted(rules, key=lambda r: r.level))  # stable: file order within a level
        self.uses_roles = any(r.role is not None for r in self.rules)
        self._allow = {r.name: _matcher(r.allow) for r in self.rules}
        self._deny = {r.name: _matcher(r.deny) for r in self.rules}
        self._levels: dict[tuple[str, str, str, str | None], tuple[tuple[PolicyRule, ...], ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def may_refuse(self, provider_type: str, provider_name: str, username: str) -> bool:
        """Whether any rule could apply to this provider and user, whatever their role (when none can, the
        request need not be parsed for its model)."""
        return any(r.applies(provider_type, provider_name, username, r.role) for r in self.rules)

    def _applicable(self, provider_type: str, provider_name: str, username: str,
                    role: str | None) -> tuple[tuple[PolicyRule, ...], ...]:
        """The rules that apply to this provider and user, by level (remembered: few combinations recur)."""
        key = (provider_type, provider_name, username, role)
        found = self._levels.get(key)
        if found is None:
            applicable = [r for r in self.rules if r.applies(provider_type, provider_name, username, role)]
            found = tuple(tuple(r for r in applicable if r.level == level) for level in (0, 1, 2))
            if len(self._levels) >= 10_000:
                self._levels.clear()
            self._levels[key] = found
        return found

    def check(self, *, provider_type: str, provider_name: str, model: str | None, username: str,
              role: str | None) -> Denial | None:
        """None if the call may go ahead, else the rule that refuses it (see the module doc)."""
        name = (model or "").strip() or "unknown"
        lowered = name.lower()
        for rules in self._applicable(provider_type, provider_name, username, role):
            for rule in rules:
                if rule.deny and self._deny[rule.name](lowered):
                    denied = next(p for p in rule.deny if fnmatchcase(lowered, p))  # which one, for the message
                    return Denial(rule, name, "denied", denied)
            if any(rule.allow and self._allow[rule.name](lowered) for rule in rules):
                return None
            allow_rule = next((r for r in rules if r.allow), None)
            if allow_rule is not None:
                return Denial(allow_rule, name, "not_allowed")
        return None
