"""Comparing JSON answers as a client reads them: the same values of the same JSON types in the same key order
(for answers the database writes as JSON text and Python splices in unread, against the Python-built ones)."""

from __future__ import annotations

from typing import Any

import orjson

# Text that JSON must escape, or that must come through unescaped, in every way a column can hold it.
ODD_TEXT = 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f ü 日本 🙂 \u2028 </script>'


def strict(value: Any) -> Any:
    """`value` with every JSON type and every object's key order made part of what `==` compares (1 != 1.0,
    True != 1, {"a", "b"} != {"b", "a"})."""
    if isinstance(value, dict):
        return ("object", [(k, strict(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [strict(v) for v in value])
    return (type(value).__name__, value)


def as_read(page: list[Any]) -> Any:
    """The page as the API's client reads it (orjson writes `orjson.Fragment`s as they are), strictly."""
    return strict(orjson.loads(orjson.dumps(page)))
