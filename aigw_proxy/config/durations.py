"""Durations as operators write them: Go-style (`30s`, `500ms`, `1m30s`, as Coder's flags take) and days for
retention windows (`60d`, `1d12h`). One grammar for every flag and setting that takes a length of time."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, *, bare_seconds: bool = True, whole: bool = False) -> float:
    """Seconds in `text`: a sequence of <number><unit> (units ms, s, m, h, d), or with `bare_seconds` a plain
    number of seconds. `whole` refuses fractions (`1.5d`). Raises ValueError for anything else."""
    value = text.strip().lower()
    if bare_seconds:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if seconds < 0 or seconds != seconds or seconds == float("inf"):
                raise ValueError(f"{text!r} is not a duration")
            return seconds
    parts = _PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value or (whole and any("." in n for n, _ in parts)):
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(n) * _SECONDS[u] for n, u in parts)
