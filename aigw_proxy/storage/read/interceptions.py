"""The interceptions list: pages of ended interceptions with their child rows (reader engine, one snapshot)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.aio import both
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import Backend, JsonKind, backend_of
from aigw_proxy.storage.errors import InvalidCursor
from aigw_proxy.storage.read.costs import TOKEN_PRICE_FIELDS, CostSums, cost_of_rows, token_price_json
from aigw_proxy.storage.read.filters import DEFAULT_LIMIT, InterceptionFilter, filter_conditions
from aigw_proxy.storage.read.stored_values import driver_rows, metadata_json, time_json, untyped
from aigw_proxy.storage.schema.tables import (
    UTCDateTime,
    interceptions,
    model_thoughts,
    token_usages,
    tool_usages,
    user_prompts,
    users,
)

log = logging.getLogger(__name__)


async def list_interceptions(
    db: Database,
    flt: InterceptionFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    after_id: str | None = None,
    offset: int = 0,
    as_json: bool = False,
) -> list[Any]:
    """Ended interceptions, newest first (`started_at DESC, id DESC`), with their children, JSON-ready dicts.

    Pagination: keyset with `after_id` (the last id of the previous page; unknown → `InvalidCursor`) or
    `offset`, not both. `limit` 0 means the default (100).

    `as_json` (for orjson output only): where the database builds the page's JSON (PostgreSQL), each interception
    is an `orjson.Fragment` of its JSON text, the same JSON as its dict (SQLite: the dicts).
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    if after_id is not None and offset:
        raise ValueError("cannot use both after_id and offset pagination")
    limit = limit or DEFAULT_LIMIT
    i = interceptions.c
    cond = filter_conditions(flt or InterceptionFilter())
    if after_id is not None and "\x00" in after_id:  # no id holds one (PostgreSQL refuses it in a query)
        raise InvalidCursor(f"invalid pagination cursor: no ended interception with id {after_id!r}")
    async with db.reader.connect() as conn:
        # A long page's JSON is built on two connections at once, in one snapshot (`_page_as_json`): taken here,
        # before the first statement.
        snapshot = (await backend_of(conn).export_snapshot(conn)
                    if as_json and limit >= _SPLIT_AT and _spare_reader(db) else None)
        if after_id is not None:
            cursor = (
                await conn.execute(sa.select(i.started_at).where(i.id == after_id, *filter_conditions(
                    InterceptionFilter(visible_to=(flt or InterceptionFilter()).visible_to))))
            ).first()
            if cursor is None:
                raise InvalidCursor(f"invalid pagination cursor: no ended interception with id {after_id!r}")
            # A row-value comparison: SQLite seeks the (started_at, id) index to it; an OR would scan.
            cond.append(sa.tuple_(i.started_at, i.id) < sa.tuple_(
                sa.literal(cursor.started_at, i.started_at.type), sa.literal(after_id, i.id.type)))
        if as_json and (page := await _page_as_json(db, conn, cond, limit, offset, snapshot)) is not None:
            return page
        query = (
            sa.select(*_PAGE_COLUMNS)
            .select_from(interceptions.outerjoin(users, users.c.id == i.initiator_id))
            .where(*cond)
            .order_by(i.started_at.desc(), i.id.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        starts = [r[_STARTED_AT] for r in rows]
        # Where starts come back as datetimes (PostgreSQL) they bound the partitions the children are in.
        bounds = (min(starts), max(starts)) if isinstance(starts[0], datetime) else None
        children = await children_of([r[0] for r in rows], conn, bounds)
    return [_interception_json(r, children[r[0]], cost_of_rows(children[r[0]]["token_usages"])) for r in rows]


async def children_of(ids: list[str], conn: AsyncConnection, bounds: tuple[datetime, datetime] | None = None
                      ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The children of interceptions `ids` (all started within `bounds`, if given), JSON-ready, oldest first, by
    interception id (a defaultdict: empty lists for an id without children)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"token_usages": [], "user_prompts": [], "tool_usages": [], "model_thoughts": []}
    )
    if not ids:
        return out
    for key, table, columns, shape in _CHILDREN:
        # Driver-level SQL and rows: SQLAlchemy spends milliseconds per statement expanding a 1000-value IN list.
        sql = (f"SELECT {columns} FROM {table.name} WHERE interception_id IN_VALUES "
               "BOUNDS[interception_started_at] ORDER BY created_at ASC, id ASC")
        for row in await driver_rows(conn, sql, ids, bounds):
            item = shape(row)
            out[item["interception_id"]][key].append(item)
    return out


_i = interceptions.c
# In the order `_interception_json` unpacks them.
_PAGE_COLUMNS = (*untyped(
    _i.id, _i.initiator_id, users.c.username, _i.api_key_id, _i.provider, _i.provider_name, _i.model, _i.client,
    _i.client_session_id, _i.session_id, _i.thread_parent_id, _i.thread_root_id, _i.status, _i.upstream_status,
    _i.error_type, _i.error_message, _i.credential_kind, _i.credential_hint, _i.started_at, _i.ended_at,
), sa.type_coerce(sa.cast(_i.metadata, sa.Text), sa.types.NullType()).label("metadata"))  # as text: _select_list


_STARTED_AT = [c.name for c in _PAGE_COLUMNS].index("started_at")


def _interception_json(r: Any, kids: dict[str, Any], cost: dict[str, Any]) -> dict[str, Any]:
    (iid, initiator_id, username, api_key_id, provider, provider_name, model, client, client_session_id, session_id,
     thread_parent_id, thread_root_id, status, upstream_status, error_type, error_message, credential_kind,
     credential_hint, started_at, ended_at, metadata) = r
    return {
        "id": iid,
        "initiator": {"id": initiator_id, "username": username},
        "api_key_id": api_key_id,
        "provider": provider,
        "provider_name": provider_name,
        "model": model,
        "client": client or "Unknown",
        "client_session_id": client_session_id,
        "session_id": session_id,
        "thread_parent_id": thread_parent_id,
        "thread_root_id": thread_root_id,
        "status": status,
        "upstream_status": upstream_status,
        "error_type": error_type,
        "error_message": error_message,
        "credential_kind": credential_kind,
        "credential_hint": credential_hint,
        "started_at": time_json(started_at),
        "ended_at": time_json(ended_at),
        "metadata": metadata_json(metadata),
        "token_usages": kids["token_usages"],
        "user_prompts": kids["user_prompts"],
        "tool_usages": kids["tool_usages"],
        "model_thoughts": kids["model_thoughts"],
        "cost": cost,
    }


# Each child shape unpacks its table's columns in the order `_CHILDREN` selects them.
def _token_usage_json(r: tuple[Any, ...]) -> dict[str, Any]:
    (iid, interception_id, response_id, input_tokens, output_tokens, cache_read, cache_write, metadata,
     created_at) = r[:9]
    return {
        "id": iid,
        "interception_id": interception_id,
        "provider_response_id": response_id,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_write_input_tokens": cache_write,
        "metadata": metadata_json(metadata),
        "created_at": time_json(created_at),
        **token_price_json(r[9:]),
    }


def _user_prompt_json(r: tuple[Any, ...]) -> dict[str, Any]:
    iid, interception_id, response_id, prompt, metadata, created_at = r
    return {
        "id": iid,
        "interception_id": interception_id,
        "provider_response_id": response_id,
        "prompt": prompt,
        "metadata": metadata_json(metadata),
        "created_at": time_json(created_at),
    }


def _tool_usage_json(r: tuple[Any, ...]) -> dict[str, Any]:
    (iid, interception_id, response_id, tool_call_id, item_id, tool, tool_input, injected, server_url,
     invocation_error, metadata, created_at) = r
    return {
        "id": iid,
        "interception_id": interception_id,
        "provider_response_id": response_id,
        "provider_tool_call_id": tool_call_id,
        "provider_item_id": item_id,
        "tool": tool,
        "input": tool_input,
        "injected": bool(injected),
        "server_url": server_url,
        "invocation_error": invocation_error,
        "metadata": metadata_json(metadata),
        "created_at": time_json(created_at),
    }


def _model_thought_json(r: tuple[Any, ...]) -> dict[str, Any]:
    interception_id, content, metadata, created_at = r
    return {
        "interception_id": interception_id,
        "content": content,
        "metadata": metadata_json(metadata),
        "created_at": time_json(created_at),
    }


def _select_list(table: sa.Table, *names: str) -> str:
    """The columns (a KeyError at import for a misspelt one), JSON columns as their text: PostgreSQL's jsonb then
    comes as text, as SQLite's does, and `metadata_json` skips the `{}` most child rows hold instead of a decoder
    call per row (the driver's JSON codec runs in Python: ~10 ms of a page's 6,000 values)."""
    return ", ".join(f"CAST({c.name} AS TEXT) AS {c.name}" if isinstance(c.type, sa.JSON) else c.name
                     for c in (table.c[name] for name in names))


_CHILDREN = (
    ("token_usages", token_usages, _select_list(
        token_usages, "id", "interception_id", "provider_response_id", "input_tokens", "output_tokens",
        "cache_read_input_tokens", "cache_write_input_tokens", "metadata", "created_at", *TOKEN_PRICE_FIELDS),
     _token_usage_json),
    ("user_prompts", user_prompts, _select_list(
        user_prompts, "id", "interception_id", "provider_response_id", "prompt", "metadata", "created_at"),
     _user_prompt_json),
    ("tool_usages", tool_usages, _select_list(
        tool_usages, "id", "interception_id", "provider_response_id", "provider_tool_call_id", "provider_item_id",
        "tool", "input", "injected", "server_url", "invocation_error", "metadata", "created_at"), _tool_usage_json),
    ("model_thoughts", model_thoughts, _select_list(
        model_thoughts, "interception_id", "content", "metadata", "created_at"), _model_thought_json),
)


# -- the same page as JSON text the database builds (Backend.json_object, Backend.json_objects_agg) --------------------
# Turning a 1000-row page and its several thousand child rows into Python (driver records, dicts, then orjson) was
# most of the API thread's time for the page on PostgreSQL, with the GIL held. So the database writes each
# interception's JSON object and its children's arrays, and Python only adds the cost and splices the text into
# the answer unread: two statements (the page's ids; their objects with their children, through those ids and the
# partitions of the page's span) instead of five, a page's Python time ~40 → ~25 ms of CPU (bench database,
# 2.8 MB of JSON). The
# fields and their order are those of `_interception_json` and the `_*_json` shapes above, exactly
# (tests/storage/test_children_json.py).

def _json_fields(table: sa.Table, *names: str) -> tuple[tuple[str, str, JsonKind], ...]:
    """(key, column, kind) of the columns `names` (keyed by their names), each column's kind by its type (a
    KeyError at import for a misspelt one)."""
    out: list[tuple[str, str, JsonKind]] = []
    for name in names:
        type_ = table.c[name].type
        kind: JsonKind = ("metadata" if isinstance(type_, sa.JSON) else "time" if isinstance(type_, UTCDateTime)
                          else "bool" if isinstance(type_, sa.Boolean) else "int" if isinstance(type_, sa.Integer)
                          else "value")
        out.append((name, name, kind))
    return tuple(out)


_CHILD_JSON = (
    ("token_usages", token_usages, (*_json_fields(
        token_usages, "id", "interception_id", "provider_response_id", "input_tokens", "output_tokens",
        "cache_read_input_tokens", "cache_write_input_tokens", "metadata", "created_at", *TOKEN_PRICE_FIELDS),
        ("priced", "cost_micros IS NOT NULL", "bool"))),
    ("user_prompts", user_prompts, _json_fields(
        user_prompts, "id", "interception_id", "provider_response_id", "prompt", "metadata", "created_at")),
    ("tool_usages", tool_usages, _json_fields(
        tool_usages, "id", "interception_id", "provider_response_id", "provider_tool_call_id", "provider_item_id",
        "tool", "input", "injected", "server_url", "invocation_error", "metadata", "created_at")),
    ("model_thoughts", model_thoughts, _json_fields(
        model_thoughts, "interception_id", "content", "metadata", "created_at")),
)
# A page's token rows summed per interception as CostSums takes them (API, then API-equivalent rows).
_COST_SUMS = tuple(
    sql for kind in ("NOT api_equivalent", "api_equivalent")
    for sql in (f"count(*) FILTER (WHERE {kind})", f"count(*) FILTER (WHERE {kind} AND cost_micros IS NULL)",
                f"COALESCE(sum(cost_micros) FILTER (WHERE {kind}), 0)"))
# The page's columns (a subquery, `_PAGE`), in `_interception_json`'s order (`_item_fields`).
_PAGE = "page"
_PAGE_JSON_COLUMNS = (
    _i.id, _i.initiator_id, _i.api_key_id, _i.provider, _i.provider_name, _i.model, _i.client, _i.client_session_id,
    _i.session_id, _i.thread_parent_id, _i.thread_root_id, _i.status, _i.upstream_status, _i.error_type,
    _i.error_message, _i.credential_kind, _i.credential_hint, _i.started_at, _i.ended_at, _i.metadata)


def _item_fields(backend: Backend) -> tuple[tuple[str, str, JsonKind], ...]:
    """An interception's own JSON fields (not its children, not its cost), over the page subquery and `users`."""
    initiator = backend.json_object((("id", f"{_PAGE}.initiator_id", "value"),
                                     ("username", f"{users.name}.username", "value")))
    out: list[tuple[str, str, JsonKind]] = []
    for key, column, kind in _json_fields(interceptions, *(c.name for c in _PAGE_JSON_COLUMNS)):
        if key == "initiator_id":
            out.append(("initiator", initiator or "", "json"))  # None: no JSON at all (json_object below)
        elif key == "client":
            out.append((key, f"COALESCE(NULLIF({_PAGE}.{column}, ''), 'Unknown')", kind))  # `client or "Unknown"`
        else:
            out.append((key, f"{_PAGE}.{column}", kind))
    return tuple(out)


_KIDS = tuple(key for key, _table, _fields in _CHILD_JSON)
# Pages of at least _SPLIT_AT interceptions are built by two statements at once, on two connections of the reader
# pool in one snapshot: the objects with these children on the request's connection, the other children on the
# second (the database's time for a 1000-row page on the bench database: ~50 ms on one connection, the two
# halves ~20 ms each). Shorter pages gain less than the second connection's round trips cost.
_SPLIT_AT = 250
_HEAD_KIDS = ("token_usages", "user_prompts")
_TAIL_KIDS = _KIDS[len(_HEAD_KIDS):]


def _spare_reader(db: Database) -> bool:
    """The reader pool can lend a second connection without growing past its size: other requests never wait for
    their first one because of a page's second (a page takes it only while the pool has room)."""
    pool = db.reader.pool
    return isinstance(pool, sa.pool.QueuePool) and pool.checkedout() < pool.size()


async def _page_as_json(db: Database, conn: AsyncConnection, cond: list[sa.ColumnElement[bool]], limit: int,
                        offset: int, snapshot: str | None) -> list[orjson.Fragment] | None:
    """The page's interceptions as JSON text; None where the dialect builds no JSON. Two statements: the page's
    ids and starts, then their JSON objects and their children's arrays through those ids, in the partitions of
    their span (bounds the database prunes by before it starts the statement: as subqueries of one statement
    they would be pruned by only as it runs, after every partition's scan was set up). With `snapshot` (exported
    by `conn`'s transaction), half of the children come from a second connection meanwhile."""
    backend = backend_of(conn)
    if backend.json_object(_item_fields(backend)) is None:
        return None
    page = (sa.select(*untyped(_i.id, _i.started_at)).where(*cond).order_by(_i.started_at.desc(), _i.id.desc())
            .limit(limit).offset(offset))
    if snapshot is None:
        rows = (await conn.execute(page)).all()
        if not rows:
            return []
        head = await _items_json(conn, _KIDS, *_ids_and_bounds(rows))
        tail: dict[str, str] = {}
        empty_tail = ""
    else:
        async with db.reader.connect() as other:
            result, joined = await both(conn.execute(page), _joined(backend, other, snapshot))
            rows = result.all()
            if not rows:
                return []
            ids, bounds = _ids_and_bounds(rows)
            if joined:
                head, tail = await both(_items_json(conn, _HEAD_KIDS, ids, bounds),
                                         _kids_json(other, _TAIL_KIDS, ids, bounds))
                empty_tail = _EMPTY_TAIL
            else:
                head, tail, empty_tail = await _items_json(conn, _KIDS, ids, bounds), {}, ""
    out = []
    for iid, _started_at in cast(Sequence[tuple[str, datetime]], rows):
        if (found := head.get(iid)) is None:
            continue  # deleted since the first statement (outside a shared snapshot): as if listed a moment later
        text, costs = found
        cost = orjson.dumps(costs.json()).decode()
        out.append(orjson.Fragment(f'{text[:-1]}{tail.get(iid, empty_tail)},"cost":{cost}}}'))
    return out


_EMPTY_TAIL = "".join(f',"{key}":[]' for key in _TAIL_KIDS)  # the tail for an interception without such children
assert _KIDS[:len(_HEAD_KIDS)] == _HEAD_KIDS  # the head's children come first in the object


async def _joined(backend: Backend, other: AsyncConnection, snapshot: str) -> bool:
    """Whether `other` joined the exported snapshot. A server or connection pooler that refuses it (e.g. PgBouncer
    handing the statement to another server) costs the page its second connection, not its answer."""
    global _join_refused_logged
    try:
        await backend.import_snapshot(other, snapshot)
    except sa.exc.DBAPIError as exc:
        level = logging.DEBUG if _join_refused_logged else logging.WARNING
        _join_refused_logged = True
        log.log(level, "a second reader connection could not join a page's snapshot (%s): long interceptions "
                "pages are built on one connection", str(exc.orig).splitlines()[0] if exc.orig else exc)
        return False
    return True


_join_refused_logged = False


def _ids_and_bounds(rows: Sequence[Any]) -> tuple[list[str], tuple[datetime, datetime]]:
    """The page's ids and the first and last of their starts (the page's rows: id, started_at)."""
    starts = [r[1] for r in rows]
    return [r[0] for r in rows], (min(starts), max(starts))



def _kids_ctes(backend: Backend, keys: Sequence[str]) -> tuple[list[str], list[str], str]:
    """For the children `keys` of the interceptions `IN_VALUES` (driver_rows): their CTEs `kids_<key>` (an
    interception's array as `j`, the token rows' CostSums as `s0`… if the token usages are among `keys`), the
    JSON fields of an interception's object over them, and the select list of the CostSums (or "")."""
    ctes, fields, sums = [], [], ""
    for key, table, child_fields in _CHILD_JSON:
        if key not in keys:
            continue
        # Each interception's rows oldest first, as the sorted subquery gives them (json_objects_agg).
        agg = backend.json_objects_agg(child_fields, None)
        cost = "".join(f", {sql} AS s{n}" for n, sql in enumerate(_COST_SUMS)) if table is token_usages else ""
        ctes.append(f"kids_{key} AS (SELECT interception_id, {agg} AS j{cost} FROM (SELECT * FROM {table.name} "
                    "WHERE interception_id IN_VALUES BOUNDS[interception_started_at] "
                    "ORDER BY interception_id, created_at ASC, id ASC) AS kids GROUP BY interception_id)")
        fields.append(f"COALESCE(kids_{key}.j, '[]')")
        if cost:
            sums = "".join(f", kids_{key}.s{n}" for n in range(len(_COST_SUMS)))
    return ctes, fields, sums


async def _items_json(conn: AsyncConnection, keys: Sequence[str], ids: list[str],
                      bounds: tuple[datetime, datetime]) -> dict[str, tuple[str, CostSums]]:
    """Interceptions `ids` (started within `bounds`) as JSON objects with their children `keys` (the others and
    the cost left out) and their token rows' CostSums (all zero if the token usages are not among `keys`), by
    id; one statement."""
    backend = backend_of(conn)
    ctes, arrays, sums = _kids_ctes(backend, keys)
    fields = (*_item_fields(backend), *((key, sql, "json") for key, sql in zip(keys, arrays, strict=True)))
    joins = "".join(f" LEFT JOIN kids_{key} ON kids_{key}.interception_id = {_PAGE}.id" for key in keys)
    sql = (f"WITH {', '.join(ctes)} SELECT {_PAGE}.id, {backend.json_object(fields)}{sums} "
           f"FROM {interceptions.name} AS {_PAGE} LEFT JOIN {users.name} ON {users.name}.id = {_PAGE}.initiator_id"
           f"{joins} WHERE {_PAGE}.id IN_VALUES BOUNDS[{_PAGE}.started_at]")
    return {iid: (text, CostSums(*(int(n or 0) for n in row_sums)))
            for iid, text, *row_sums in await driver_rows(conn, sql, ids, bounds)}


async def _kids_json(conn: AsyncConnection, keys: Sequence[str], ids: list[str],
                     bounds: tuple[datetime, datetime]) -> dict[str, str]:
    """The children `keys` of interceptions `ids` (started within `bounds`) as the JSON text of their members of
    an interception's object (`,"<key>":[…]` for each of `keys`, in that order), by interception id (ids without
    any of them left out); one statement."""
    ctes, arrays, _sums = _kids_ctes(backend_of(conn), keys)
    members = ", ".join(f"""',"{key}":', {sql}""" for key, sql in zip(keys, arrays, strict=True))
    joined = " FULL JOIN ".join(f"kids_{key}" + (" USING (interception_id)" if n else "")
                                for n, key in enumerate(keys))
    sql = f"WITH {', '.join(ctes)} SELECT interception_id, concat({members}) FROM {joined}"
    return dict(await driver_rows(conn, sql, ids, bounds))
