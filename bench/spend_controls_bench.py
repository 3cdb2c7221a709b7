"""What the spend controls add to each request on the proxy's loop: the rate limiter and concurrency caps, a
model-policy decision over 20 rules, and a budget check from the cached figures (a user with a personal and a
group budget), against no budget at all.

    .venv/bin/python bench/spend_controls_bench.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from aigw_proxy.spend.budgets import Budget
from aigw_proxy.spend.enforcer import SpendControls
from aigw_proxy.spend.limits import RequestLimits, UserLimits
from aigw_proxy.spend.policy import ModelPolicy, parse_model_policy
from aigw_proxy.storage import ControlsStore, UserStore, open_database


def best_us(fn: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def limits_case() -> float:
    limits = RequestLimits(1e9, 10_000, [UserLimits(f"user{i}", rate_limit=5.0) for i in range(100)])
    clock = [0.0]

    def one() -> None:
        clock[0] += 1e-6
        limits.check_rate("token-1", "alice", clock[0])
        limits.acquire("alice")
        limits.release("alice")

    return best_us(one)


def policy_case() -> float:
    rules = parse_model_policy(
        [{"name": f"team{i}", "user": f"user{i}", "allow": ["claude-*", "gpt-*"]} for i in range(10)]
        + [{"name": f"deny{i}", "provider": "anthropic", "role": "member", "deny": [f"claude-opus-{i}*"]}
           for i in range(9)]
        + [{"name": "small-openai", "provider": "openai", "allow": ["gpt-4.1-mini*", "gpt-5-mini*"]}])
    policy = ModelPolicy(rules)
    return best_us(lambda: policy.check(provider_type="anthropic", provider_name="anthropic",
                                        model="claude-sonnet-4-5-20250929", username="alice", role="member"))


async def budget_cases() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = await open_database(Path(tmp) / "bench.db")
        try:
            users = UserStore(db)
            _, token = await users.create_user("alice")
            _, other = await users.create_user("bob")
            alice, bob = await users.authenticate(token), await users.authenticate(other)
            assert alice is not None and bob is not None
            store = ControlsStore(db)
            await store.create_group("eng")
            await store.add_member("eng", "alice")
            await store.set_budget(Budget.build("group:eng", daily=50, monthly=500))
            controls = SpendControls(db, budgets=[Budget.build("user:alice", daily=10)])
            await controls.load_snapshot()
            first = controls.check_budget(alice)
            if asyncio.iscoroutine(first):
                await first  # the one read of her figures
            with_budgets = best_us(lambda: controls.check_budget(alice))
            without = best_us(lambda: controls.check_budget(bob))
            return with_budgets, without
        finally:
            await db.close()


def main() -> None:
    with_budgets, without = asyncio.run(budget_cases())
    results = {
        "rate limit + concurrency caps": limits_case(),
        "model policy (20 rules)": policy_case(),
        "budget check (user + group budget, cached)": with_budgets,
        "budget check (no budget applies)": without,
    }
    for name, us in results.items():
        print(f"{name:45} {us:7.2f} µs per request")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
