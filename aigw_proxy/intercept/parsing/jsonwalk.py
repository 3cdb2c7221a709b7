"""Small, forgiving accessors over decoded JSON, shared by the API parsers. Provider bodies are untrusted:
every accessor returns a default instead of raising on a missing key or a value of the wrong type."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from aigw_proxy.recording.records import RequestFacts, ResponseFacts


def loads_object(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a JSON object body. Returns (object, None) or (None, why it is not one)."""
    if not body or not body.strip():
        return None, "empty body"
    try:
        obj = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return None, f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"JSON body is a {type(obj).__name__}, not an object"
    return obj, None


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def arr(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def nonempty(value: Any) -> str | None:
    """A string that is not blank, stripped; None otherwise."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def count(value: Any) -> int:
    """A token count: ints (and integral floats) as they are; anything else is 0. Never negative."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def sent_figures(usage: dict[str, Any], fields: Mapping[str, tuple[str | None, str]]) -> dict[str, int]:
    """The extra token figures a usage object carries, as metadata: key → count for each `(section, field)` (section
    None: the usage object itself) the provider sent. A figure it did not send, absent or null, is not made a 0."""
    figures = {}
    for key, (section, name) in fields.items():
        value = (obj(usage.get(section)) if section else usage).get(name)
        if value is not None:
            figures[key] = count(value)
    return figures


def error_text(body: Any) -> str | None:
    """The human-readable message of a provider error object, in any of the providers' shapes."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = nonempty(err.get("message"))
            kind = nonempty(err.get("type")) or nonempty(err.get("code"))
            if msg and kind:
                return f"{kind}: {msg}"
            return msg or kind or json.dumps(err)[:1024]
        if isinstance(err, str) and err.strip():
            return err.strip()
        msg = nonempty(body.get("message"))
        if msg:
            return msg
    return None


def compact_json(raw: str) -> str:
    """Compact JSON text, so streamed (concatenated) and whole tool inputs compare equal. Text that is not JSON
    (models do emit invalid arguments) is kept exactly as sent."""
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return raw


def request_guard(parse: Callable[[bytes], RequestFacts]) -> Callable[[bytes], RequestFacts]:
    """Untrusted bodies must never raise into the proxy: any failure becomes `RequestFacts.error`."""

    @functools.wraps(parse)
    def guarded(body: bytes) -> RequestFacts:
        try:
            return parse(body)
        except Exception as exc:  # e.g. RecursionError on absurdly nested JSON
            return RequestFacts(error=f"unreadable request body: {exc!r}")

    return guarded


def response_guard(parse: Callable[[bytes], ResponseFacts]) -> Callable[[bytes], ResponseFacts]:
    """Like `request_guard`, for whole response bodies."""

    @functools.wraps(parse)
    def guarded(body: bytes) -> ResponseFacts:
        try:
            return parse(body)
        except Exception as exc:
            return ResponseFacts(error=f"unreadable response body: {exc!r}", parse_errors=1)

    return guarded


def json_text(value: Any) -> str:
    """Serialise a tool input compactly; strings that already hold JSON are kept as they are."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

