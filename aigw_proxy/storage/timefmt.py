"""RFC 3339 formatting of stored times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

_ZERO = timedelta(0)


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
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    # isoformat is ~2.5x faster than strftime (thousands of calls per API page) and zero-pads years < 1000.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
