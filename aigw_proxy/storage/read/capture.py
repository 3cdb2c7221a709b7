"""One interception's raw capture (`--capture-bodies`), as the REST API, the CLI and the console show it.

A member sees only the captures of their own interceptions: another's answers None, exactly like a missing one.
Bodies come back as text (the stored bytes decompressed; undecodable bytes as U+FFFD), with the size each had as
relayed, the bytes kept and whether it was cut.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from aigw_proxy.capture.stored import decompress
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.schema.tables import captures, interceptions
from aigw_proxy.storage.timefmt import rfc3339

_c = captures.c
_QUERY = sa.select(captures, interceptions.c.initiator_id).join(
    interceptions, interceptions.c.id == _c.interception_id
).where(_c.interception_id == sa.bindparam("id"))


async def get_capture(db: Database, interception_id: str, *, visible_to: str | None = None) -> dict[str, Any] | None:
    """The capture of `interception_id`, or None (none stored, no such interception, or not `visible_to`'s)."""
    if "\x00" in interception_id:  # no id holds one (PostgreSQL refuses it in a query)
        return None
    async with db.reader.connect() as conn:
        await conn.execution_options(**db.backend.read_only)
        row = (await conn.execute(_QUERY, {"id": interception_id})).mappings().first()
    if row is None or (visible_to is not None and row["initiator_id"] != visible_to):
        return None
    return capture_view(row)


def _body(row: Any, part: str) -> dict[str, Any]:
    data = row[f"{part}_body"] or b""
    return {
        "body": decompress(data, row["encoding"]).decode("utf-8", "replace"),
        "size": int(row[f"{part}_size"]),
        "stored_bytes": int(row[f"{part}_stored"]),
        "compressed_bytes": len(data),
        "truncated": bool(row[f"{part}_truncated"]),
    }


def capture_view(row: Any) -> dict[str, Any]:
    """A capture row as the API returns it."""
    request = {"method": row["method"], "route": row["route"], "headers": row["request_headers"] or {},
               **_body(row, "request")}
    response = {"status": row["response_status"], "headers": row["response_headers"] or {},
                "streamed": bool(row["streamed"]), **_body(row, "response")}
    return {
        "interception_id": row["interception_id"],
        "created_at": rfc3339(row["created_at"]),
        "transport": row["transport"],
        "request": request,
        "response": response,
        "redactions": row["redactions"] or {},
        "encoding": row["encoding"],
    }
