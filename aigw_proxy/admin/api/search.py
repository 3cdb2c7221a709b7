"""The `q` search grammar (docs/compatibility.md#search-query-grammar): space-separated `key:value` terms, double
quotes keep spaces, a bare word means `initiator`. Bad input raises `SearchError` with a message that names the
term and the problem."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

KEYS = ("initiator", "provider", "provider_name", "model", "client", "session_id", "started_after", "started_before")
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
MAX_QUERY = 4096


class SearchError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Search:
    terms: dict[str, str]
    started_after: datetime | None = None
    started_before: datetime | None = None


def parse_time(value: str, what: str) -> datetime:
    """An RFC 3339 time with an offset; fractions beyond microseconds (Go's nanoseconds) are cut."""
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise SearchError(f"{what}: {value!r} is not an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)")
    date, clock, fraction, offset = m.groups()
    text = f"{date}T{clock}" + (f".{fraction[:6].ljust(6, '0')}" if fraction else "")
    text += "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise SearchError(f"{what}: {value!r} is not a valid time") from None


def _split(query: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in query:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch.isspace() and not quoted:
            if current:
                terms.append("".join(current))
                current = []
        else:
            current.append(ch)
    if quoted:
        raise SearchError("search query has an unterminated quote")
    if current:
        terms.append("".join(current))
    return terms


def parse_search(query: str) -> Search:
    if len(query) > MAX_QUERY:
        raise SearchError(f"search query is longer than {MAX_QUERY} characters")
    terms: dict[str, str] = {}
    bare: list[str] = []
    for term in _split(query):
        if ":" not in term.replace('"', "") or term.startswith('"'):
            bare.append(term.replace('"', ""))
            continue
        if term.startswith(":") or term.endswith(":"):
            raise SearchError(f"search term {term!r} is not key:value")
        key, _, value = term.partition(":")
        key, value = key.lower(), value.replace('"', "")
        if key not in KEYS:
            raise SearchError(f"unknown search key {key!r} (use one of {', '.join(KEYS)})")
        if not value:
            raise SearchError(f"search key {key!r} has no value")
        if key in terms:
            raise SearchError(f"search key {key!r} is given more than once")
        terms[key] = value
    if bare:
        if "initiator" in terms:
            raise SearchError("search key 'initiator' is given more than once (a bare word means initiator)")
        terms["initiator"] = " ".join(bare)
    after = parse_time(terms.pop("started_after"), "started_after") if "started_after" in terms else None
    before = parse_time(terms.pop("started_before"), "started_before") if "started_before" in terms else None
    if after is not None and before is not None and before < after:
        raise SearchError("started_before must be after started_after")
    return Search(terms, after, before)
