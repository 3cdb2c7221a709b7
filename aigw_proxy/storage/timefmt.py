"""RFC 3339 formatting of stored times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def rfc3339(value: datetime) -> str: ...
@overload
def rfc3339(value: None) -> None: ...
def rfc3339(value: datetime | None) -> str | None:
    """`2025-01-02T03:04:05.123456Z` (UTC, microseconds); None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
