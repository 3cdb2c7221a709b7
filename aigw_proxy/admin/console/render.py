"""The console's Jinja2 environment: autoescape on for every template (prompts and tool inputs are
attacker-controlled), undefined names an error, and the filters the templates format values with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from aigw_proxy.admin.console import columns as cols
from aigw_proxy.spend.budgets import format_usd

HERE = Path(__file__).parent
FOLD = 600  # characters of a prompt or tool input shown before folding it into <details>


def group(value: Any) -> str:
    """A whole number with thin-space thousands separators; anything else as text."""
    try:
        return f"{int(value):,}".replace(",", "\u202f")
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return ""
    ms = (b - a).total_seconds() * 1000
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def utc(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def usd(micros: int | None) -> str:
    """Micro-dollars as `$12.50`; `–` for none."""
    return "–" if micros is None else format_usd(int(micros))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(group=group, pretty=pretty, utc=utc, usd=usd)
    env.globals.update(duration=duration, FOLD=FOLD, TOKEN_KINDS=cols.TOKEN_KINDS,
                       reasoning=cols.reasoning_tokens, cost=cols.cost_text)
    return env
