"""PostgreSQL building JSON text for the REST API (`Backend.json_object`, `Backend.json_objects_agg`): one row as
a JSON object, or an aggregate that writes a group's rows as one JSON array of objects, the same JSON the read
layer builds in Python (stored_values.py), so that the API can splice it into its answer unread
(tests/storage/test_children_json.py compares the two)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aigw_proxy.storage.dialects import JsonKind

# rfc3339's form: always six fraction digits, a zero-padded four-digit year, Z.
_RFC3339 = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
# What `metadata_json` turns into {}: SQL NULL and every falsy JSON value (jsonb compares numbers by value: 0.0 = 0).
_FALSY_JSON = """('null', 'false', '0', '""', '[]', '{}')"""
_JSON_KEY = re.compile(r"[a-z_]+").fullmatch  # needs no escaping, in JSON or in SQL


def value_text(column: str, kind: JsonKind) -> str:
    """SQL for the JSON text of one value (never NULL). Written out by hand rather than with json_build_object,
    which looks up the output function of every argument again for every row (PostgreSQL 15: ~0.8 us a value,
    ~20% more database time for a 1000-row page's children)."""
    if kind == "time":  # the session's TimeZone is UTC, but AT TIME ZONE does not depend on it
        return f"""COALESCE('"' || to_char({column} AT TIME ZONE 'UTC', '{_RFC3339}') || '"', 'null')"""
    if kind == "metadata":
        return f"CASE WHEN {column} IS NULL OR {column} IN {_FALSY_JSON} THEN '{{}}' ELSE CAST({column} AS TEXT) END"
    if kind == "bool":  # NULL as false: bool(None) in Python
        return f"CASE WHEN {column} THEN 'true' ELSE 'false' END"
    if kind == "int":  # an integer's text is its JSON
        return f"COALESCE(CAST({column} AS TEXT), 'null')"
    if kind == "json":
        return column
    return f"COALESCE(CAST(to_json({column}) AS TEXT), 'null')"


def object_text(fields: Sequence[tuple[str, str, JsonKind]]) -> str:
    """SQL for one row's JSON object: `fields` (key, column or expression, kind) in that key order. Text, not json:
    the driver returns it undecoded (SQLAlchemy's codec would decode a json value) and the API splices it into its
    answer as it is. One concat() call rather than a chain of `||`, each of which copies the text so far: an object
    holding long values (a tool call's input, a page item's child arrays) was copied some twenty times over."""
    if any(not _JSON_KEY(key) for key, _column, _kind in fields):
        raise ValueError(f"JSON keys must be plain names: {[f[0] for f in fields]}")
    members = ", ".join(f"""'{"," if n else "{"}"{key}":', {value_text(column, kind)}"""
                        for n, (key, column, kind) in enumerate(fields))
    return f"concat({members}, '}}')" if fields else "'{}'"


def objects_agg(fields: Sequence[tuple[str, str, JsonKind]], order_by: str | None) -> str:
    """The aggregate's SQL: `object_text(fields)` of each row, rows in `order_by` order, as one JSON array (text).
    `order_by` None: the rows' order as they come, from a subquery sorted by the group key, then the wanted order
    (PostgreSQL aggregates the rows of a sorted input in that order, as its manual has it: "supplying the input
    values from a sorted subquery will usually work"; the group key's order lets the grouping take them as they
    are, and a hashed grouping too keeps each group's rows in their order). An aggregate's own ORDER BY sorts each
    group apart: PostgreSQL 15 sets up a sort per group, ~25-30% of a page's child JSON time."""
    order = f" ORDER BY {order_by}" if order_by is not None else ""
    return f"'[' || string_agg({object_text(fields)}, ','{order}) || ']'"
