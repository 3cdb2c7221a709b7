"""Reading stored values without SQLAlchemy's per-row processing.

An API page is 1000 interceptions and several thousand child rows. SQLAlchemy's per-row work (Row objects, the
UTCDateTime and JSON result processors, then rfc3339 on each datetime) was most of its time, so such rows are
read as the driver returns them and the few typed columns converted here: to exactly what the column types and
rfc3339 give (tests/storage/test_interception_page_rows.py). SQLite returns the stored text (timestamps, JSON);
asyncpg returns datetimes and, through SQLAlchemy's codec, decoded JSON: both forms are read here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.storage.database import json_loads
from aigw_proxy.storage.dialects import IN_VALUES, backend_of
from aigw_proxy.storage.schema.tables import UTCDateTime
from aigw_proxy.storage.timefmt import rfc3339

# What UTCDateTime stores on SQLite: naive UTC text, always with microseconds. Strict, because other ISO forms
# of the same length (`...05.123+00`, week dates) parse to different instants.
_STORED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}").fullmatch
_SQLITE = sqlite.dialect()


def _sqlite_reader(type_: sa.types.TypeEngine[Any]) -> Callable[[Any], Any]:
    """How the column type reads a stored value on SQLite (as stored if it has no result processor)."""
    process = type_.dialect_impl(_SQLITE).result_processor(_SQLITE, None)
    return process if process is not None else lambda value: value


# The column type's own reading, for anything else (not written by this schema; read exactly as before).
_utc_datetime = _sqlite_reader(UTCDateTime())


@functools.lru_cache(maxsize=8192)  # a call's children all carry its end time: most lookups on a page are repeats
def time_json(value: Any) -> str | None:
    """`rfc3339()` of a stored UTCDateTime: `2025-01-02 03:04:05.123456` → `2025-01-02T03:04:05.123456Z`
    (SQLite's text), or of the timezone-aware datetime asyncpg returns."""
    if value.__class__ is str and _STORED_TIME(value):
        return f"{value[:10]}T{value[11:]}Z"  # the same digits: no need for a datetime in between
    if isinstance(value, datetime) and value.tzinfo is not None:
        return rfc3339(value)
    return rfc3339(_utc_datetime(value))


def metadata_json(value: Any) -> Any:
    """A JSON column as SQLAlchemy's JSON type reads it, then `or {}`."""
    if value is None or value == "{}":  # most child rows: no parse needed
        return {}
    if isinstance(value, dict | list):  # decoded by the driver (PostgreSQL)
        return value or {}
    # JSON columns have NUMERIC affinity: SQLite returns a stored JSON number as a number, which the type keeps.
    return (value if isinstance(value, int | float) else json_loads(value)) or {}


def untyped(*columns: sa.Column[Any]) -> tuple[sa.ColumnElement[Any], ...]:
    """The columns without a result type, so SQLAlchemy returns the stored values as they are."""
    return tuple(sa.type_coerce(c, sa.types.NullType()).label(c.name) for c in columns)


async def driver_rows(conn: AsyncConnection, sql: str, values: list[Any],
                      bounds: tuple[datetime, datetime] | None = None) -> list[tuple[Any, ...]]:
    """Plain tuples straight from the driver, in `conn`'s transaction (the snapshot of the statements around it).
    `sql` says `column IN_VALUES` once: the column is one of `values`; `BOUNDS[column]` after a condition adds
    `AND column BETWEEN bounds` where that skips partitions (Backend.driver_rows)."""
    if IN_VALUES not in sql:
        raise ValueError("driver_rows needs `column IN_VALUES` in its SQL")
    return await backend_of(conn).driver_rows(conn, sql, values, bounds)
