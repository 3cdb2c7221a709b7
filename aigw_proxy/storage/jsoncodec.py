"""How JSON columns are encoded and decoded, on both dialects (the engines' json_serializer/json_deserializer)."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import orjson

# Metadata comes from the proxy: anything that json cannot encode is stored as its str() rather than failing.
json_dumps = functools.partial(json.dumps, default=str, ensure_ascii=False, separators=(",", ":"))


def json_loads(text: str | bytes) -> Any:
    """JSON columns are read by the thousand on API pages: orjson is several times faster. It rejects the NaN
    and Infinity that `json.dumps` may have written; the standard parser reads those."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _storable(value: Any) -> Any:
    """`value` with what PostgreSQL's jsonb cannot hold replaced: NaN and infinities (not JSON) by null, NUL
    characters (no text type holds them) by U+FFFD."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k) if isinstance(k, str) else k: _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def jsonb_dumps(value: Any) -> str:
    """`json_dumps` for PostgreSQL's jsonb, which refuses NaN, Infinity and \\u0000 (see `_storable`)."""
    try:
        text = json_dumps(value, allow_nan=False)
    except ValueError:
        return json_dumps(_storable(value))
    return json_dumps(_storable(value)) if "\\u0000" in text else text
