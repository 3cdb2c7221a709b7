"""Column specs of the console's tables: adding a column (cost, say) to a page is one entry here.

A `Column` names its header, how to get the cell's value from a row (a JSON-ready dict as the storage read layer
returns it), and how the template formats it (`kind`: text, number, time, status, code, user, excerpt, link).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigw_proxy.storage.read.costs import cost_of_rows

TOKEN_KINDS = (
    ("input_tokens", "Input"),
    ("output_tokens", "Output"),
    ("cache_read_input_tokens", "Cache read"),
    ("cache_write_input_tokens", "Cache write"),
)


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    value: Callable[[dict[str, Any]], Any]
    kind: str = "text"  # text | number | time | status | code | excerpt | link
    numeric: bool = False  # right-aligned
    title: str | None = None  # the header's tooltip


def _get(*path: str) -> Callable[[dict[str, Any]], Any]:
    def get(row: dict[str, Any]) -> Any:
        value: Any = row
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value
    return get


def _tokens_of(kind: str) -> Callable[[dict[str, Any]], int]:
    def total(row: dict[str, Any]) -> int:
        return sum(int(t.get(kind) or 0) for t in row.get("token_usages") or [])
    return total


def _reasoning(row: dict[str, Any]) -> int:
    return sum(int((t.get("metadata") or {}).get("reasoning_tokens") or 0) for t in row.get("token_usages") or [])


def _prompt(row: dict[str, Any]) -> str:
    prompts = row.get("user_prompts") or []
    return str(prompts[-1]["prompt"]) if prompts else ""


def cost_text(row: dict[str, Any]) -> str:
    """A record's stored `cost` (an interception's, a thread's, a session's, a spend group's): USD at list price;
    subscription calls (OAuth) as their API-equivalent value apart; never $0 for what has no price."""
    cost = row.get("cost") or {}
    parts = []
    billed, plan = cost.get("cost_usd"), cost.get("api_equivalent_usd")
    # Each kind only where it has a value: an API call is not "≈$0 plan", a subscription call not "$0".
    if billed is not None and (billed or not (plan or cost.get("unpriced_records"))):
        parts.append(f"${billed:,.4f}")
    if plan:
        parts.append(f"≈${plan:,.4f} plan")
    if cost.get("unpriced_records"):
        parts.append("unpriced" if not parts else f"+{cost['unpriced_records']} unpriced")
    return " ".join(parts) or "–"


# The Cost column of what sums many calls (a session, a spend group).
COST = Column("Cost", cost_text, "text", True, "USD at list price; ≈ plan: subscription calls' API-equivalent value")


def _status(row: dict[str, Any]) -> str:
    return str(row.get("status") or "")


INTERCEPTION_COLUMNS: tuple[Column, ...] = (
    Column("Time", _get("started_at"), "time"),
    Column("User", _get("initiator", "username"), "user"),
    Column("Client", _get("client")),
    Column("Provider", _get("provider_name")),
    Column("Model", _get("model"), "code"),
    Column("Prompt", _prompt, "excerpt"),
    Column("In", _tokens_of("input_tokens"), "number", True, "input tokens"),
    Column("Out", _tokens_of("output_tokens"), "number", True, "output tokens"),
    Column("Cache r", _tokens_of("cache_read_input_tokens"), "number", True, "cache-read input tokens"),
    Column("Cost", cost_text, "text", True, "USD at list price; ≈ plan: a subscription call's API-equivalent value"),
    Column("Status", _status, "status"),
)


def _session_tokens(kind: str) -> Callable[[dict[str, Any]], int]:
    return lambda row: int((row.get("token_usage_summary") or {}).get(kind) or 0)


SESSION_COLUMNS: tuple[Column, ...] = (
    Column("Last active", _get("last_active_at"), "time"),
    Column("User", _get("initiator", "username"), "user"),
    Column("Client", _get("client")),
    Column("Models", lambda r: ", ".join(r.get("models") or []), "code"),
    Column("Prompt", _get("last_prompt"), "excerpt"),
    Column("Threads", _get("threads"), "number", True),
    Column("In", _session_tokens("input_tokens"), "number", True, "input tokens"),
    Column("Out", _session_tokens("output_tokens"), "number", True, "output tokens"),
    Column("Cache r", _session_tokens("cache_read_input_tokens"), "number", True, "cache-read input tokens"),
    COST,
)

LEADERBOARD_COLUMNS: tuple[Column, ...] = (
    Column("User", _get("username"), "user"),
    Column("Sessions", _get("sessions"), "number", True),
    Column("Input", _get("input_tokens"), "number", True),
    Column("Output", _get("output_tokens"), "number", True),
    Column("Cache read", _get("cache_read_input_tokens"), "number", True),
    Column("Total", _get("total"), "number", True),
)

# The Overview's spend tables: groups of the spend report (a group's `cost` has the fields an interception's has).
SPEND_BY_USER_COLUMNS: tuple[Column, ...] = (
    Column("User", _get("key"), "user"),
    Column("Input", _get("input_tokens"), "number", True),
    Column("Output", _get("output_tokens"), "number", True),
    COST,
)
SPEND_BY_MODEL_COLUMNS: tuple[Column, ...] = (
    Column("Model", _get("key"), "code"),
    Column("Input", _get("input_tokens"), "number", True),
    Column("Output", _get("output_tokens"), "number", True),
    COST,
)

def _token_row_cost(row: dict[str, Any]) -> str:
    return cost_text({"cost": cost_of_rows([row])})


CALL_TOKEN_COLUMNS: tuple[Column, ...] = (
    *(Column(label, _get(kind), "number", True) for kind, label in TOKEN_KINDS),
    Column("Reasoning", _get("metadata", "reasoning_tokens"), "number", True),
    Column("Cost", _token_row_cost, "text", True, "USD at list price; ≈ plan: a subscription call's API-equivalent "
           "value"),
)


def reasoning_tokens(row: dict[str, Any]) -> int:
    return _reasoning(row)
