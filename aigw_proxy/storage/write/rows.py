"""The pure mapping from record events to table rows: an `InterceptionStarted` becomes an interception row and
its prompt row, an `InterceptionUsage` the token rows seen so far (replacing earlier ones), an `InterceptionEnded`
the parameters of the UPDATE that ends it plus its child rows (token usages, tool calls, thoughts; the prompt when
the start did not carry it). Text that has a column limit is clipped here. Token usages are priced here, with the
Pricer the writer holds (spend/: pure, microseconds per row): the price is stored with the row, never recomputed on
read; token rows written while a call is in progress are unpriced and replaced, priced, when it ends. No I/O: the
statements that take these rows are defined beside them (so the row keys and the bound parameter names are kept
together) and executed by batch.py.

Prompt written with the start: its `created_at` (and the interception's `last_prompt_at`) is the start time, its
`provider_response_id` is filled in when the call ends (`SET_PROMPT_RESPONSE_ID`). Token rows written before
the end are deleted (`DELETE_TOKEN_USAGES`) before the ending UPDATE, so the summary triggers, which add a call's
tokens to its session when it ends, count only the final figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aigw_proxy.capture.stored import SealedCapture
from aigw_proxy.recording.commits import SpendKey
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, TokenUsage
from aigw_proxy.spend import Price, Pricer, is_api_equivalent
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import (
    CHILD_TABLES,
    CLIENT_MAX,
    CLIENT_SESSION_ID_MAX,
    CREDENTIAL_HINT_MAX,
    ERROR_MESSAGE_MAX,
    PRICE_COLUMNS,
    captures,
    error_type_for_status,
    interceptions,
    model_thoughts,
    token_usages,
    tool_usages,
    user_prompts,
)

Row = dict[str, Any]
log = logging.getLogger("aigw_proxy.storage")


def clip(value: str | None, limit: int) -> str | None:
    """`value` cut to `limit` characters, the last one an ellipsis when it was longer; None stays None."""
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def start_row(ev: InterceptionStarted, *, started_at: datetime, parent_id: str | None, root_id: str | None) -> Row:
    """The interception row of a started call (not ended yet), in its thread (`parent_id`, `root_id`)."""
    client_session_id = ev.client_session_id.strip() if ev.client_session_id else None
    return {
        "id": ev.id,
        "initiator_id": ev.initiator.user_id,
        "api_key_id": ev.initiator.token_id,
        "provider": ev.provider,
        "provider_name": ev.provider_name or "",
        "model": ev.model or "",
        "client": clip(ev.client, CLIENT_MAX) or "Unknown",
        "client_session_id": clip(client_session_id, CLIENT_SESSION_ID_MAX) or None,
        "thread_parent_id": parent_id,
        "thread_root_id": root_id,
        "correlating_tool_call_id": ev.correlating_tool_call_id or None,
        "previous_response_id": ev.previous_response_id or None,
        "credential_kind": ev.credential_kind,
        "credential_hint": clip(ev.credential_hint, CREDENTIAL_HINT_MAX) or "",
        "started_at": started_at,
        "ended_at": None,
        "metadata": dict(ev.metadata),
        "last_prompt_at": started_at if ev.prompt else None,  # the prompt row's created_at
    }


def prompt_row(interception_id: str, prompt: str, created_at: datetime, provider_response_id: str = "") -> Row:
    return {
        "id": new_id(),
        "interception_id": interception_id,
        "provider_response_id": provider_response_id,
        "prompt": prompt,
        "metadata": {},
        "created_at": created_at,
    }


def start_children(ev: InterceptionStarted, started_at: datetime) -> list[Row]:
    """The prompt row written with the start (none when the request carried no prompt)."""
    return [prompt_row(ev.id, ev.prompt, started_at)] if ev.prompt else []


def token_rows(interception_id: str, usages: list[TokenUsage], created_at: datetime, *,
               prices: Sequence[Price | None] = (), api_equivalent: bool = False,
               effective_group_id: str | None = None) -> list[Row]:
    """Token-usage rows; `prices` are theirs in order (`usage_prices`), missing ones unpriced (NULL, never 0);
    `effective_group_id`: the group whose budget the call is charged to (spend/budgets.py), None for none."""
    return [
        {
            "id": new_id(),
            "interception_id": interception_id,
            "provider_response_id": u.provider_response_id or "",
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_write_input_tokens": u.cache_write_input_tokens,
            "metadata": dict(u.metadata),
            "created_at": created_at,
            **price_columns(prices[n] if n < len(prices) else None, api_equivalent=api_equivalent,
                            effective_group_id=effective_group_id),
        }
        for n, u in enumerate(usages)
    ]


def spend_key(row: Mapping[str, Any]) -> SpendKey:
    """What prices and reports an interception's token usage, from its stored start row (`start_row` or the
    columns read back); `model` is the start's until the end names one (`ended_model`)."""
    return SpendKey(
        provider=row["provider"],
        provider_name=row["provider_name"],
        model=row["model"],
        client=row["client"] or "Unknown",
        initiator_id=row["initiator_id"],
        api_equivalent=is_api_equivalent(row["credential_kind"]),
    )


def ended_model(key: SpendKey, ev: InterceptionEnded) -> SpendKey:
    """The key with the model as END_INTERCEPTION stores it: the end's model when it names one."""
    if not ev.model or ev.model == key.model:
        return key
    return SpendKey(key.provider, key.provider_name, ev.model, key.client, key.initiator_id, key.api_equivalent)


def usage_prices(pricer: Pricer, key: SpendKey, ev: InterceptionEnded, at: datetime) -> tuple[Price | None, ...]:
    """The price of each token usage of an ended call (None: unpriced), at `at` (the rows' created_at). A pricing
    failure (a bug) leaves the rows unpriced: it never costs the record."""
    try:
        return tuple(
            pricer.price(u, provider_type=key.provider, provider_name=key.provider_name, model=key.model, at=at)
            for u in ev.token_usages
        )
    except Exception:
        log.exception("pricing the token usage of interception %s failed; stored unpriced", ev.id)
        return ()


_UNPRICED: Row = {**dict.fromkeys(PRICE_COLUMNS), "price_source": None, "price_version": None, "price_ref": None}


def price_columns(price: Price | None, *, api_equivalent: bool, effective_group_id: str | None = None) -> Row:
    """A token-usage row's price columns; an unpriced row keeps them NULL (never 0)."""
    if price is None:
        return {**_UNPRICED, "effective_group_id": effective_group_id, "api_equivalent": api_equivalent}
    return {
        "input_price_micros": price.input_price_micros,
        "output_price_micros": price.output_price_micros,
        "cache_read_price_micros": price.cache_read_price_micros,
        "cache_write_price_micros": price.cache_write_price_micros,
        "other_price_micros": price.other_price_micros,
        "cost_micros": price.cost_micros,
        "price_source": price.source,
        "price_version": price.version,
        "price_ref": price.model_ref,
        "effective_group_id": effective_group_id,
        "api_equivalent": api_equivalent,
    }


def end_error_type(ev: InterceptionEnded) -> str | None:
    """The error type stored for an ended call: the proxy's own refusal's, or the cause the transport reported
    for a failed one, else derived from its upstream status."""
    if ev.status != "failed":
        return None
    return ev.error_type or error_type_for_status(ev.upstream_status)


def end_params(
    ev: InterceptionEnded, *, started_at: datetime | None, ended_at: datetime, start_metadata: dict[str, Any],
    prompt_written: bool = False
) -> Row:
    """The parameters of `END_INTERCEPTION` for an ended call started at `started_at`; its metadata is merged
    over the start's. `prompt_written`: the start stored the prompt (and `last_prompt_at`), which the end leaves
    as it is."""
    return {
        "b_id": ev.id,
        "b_started_at": started_at,
        "b_ended_at": ended_at,
        "b_status": ev.status,
        "b_upstream_status": ev.upstream_status,
        "b_error_type": end_error_type(ev),
        "b_error_message": clip(ev.error, ERROR_MESSAGE_MAX),
        "b_metadata": {**start_metadata, **ev.metadata},
        "b_model": ev.model or None,
        # The prompt row's created_at; None keeps the start's (COALESCE in END_INTERCEPTION).
        "b_last_prompt_at": ended_at if ev.prompt and not prompt_written else None,
    }


def child_rows(
    ev: InterceptionEnded,
    created_at: datetime,
    *,
    prompt_written: bool = False,
    prices: Sequence[Price | None] = (),
    api_equivalent: bool = False,
    effective_group_id: str | None = None,
) -> dict[str, list[Row]]:
    """The child rows of an ended call by table name (every child table present, possibly with no rows); the
    prompt only when the start did not store it (`prompt_written`). `prices` are the token usages' (`usage_prices`),
    in their order; missing ones are unpriced.

    Ids are time-ordered and increasing, so rows with the same `created_at` keep this order."""
    rows: dict[str, list[Row]] = {t.name: [] for t in CHILD_TABLES}
    if ev.prompt and not prompt_written:
        rows[user_prompts.name].append(prompt_row(ev.id, ev.prompt, created_at, ev.prompt_response_id or ""))
    rows[token_usages.name].extend(token_rows(ev.id, ev.token_usages, created_at, prices=prices,
                                              api_equivalent=api_equivalent, effective_group_id=effective_group_id))
    rows[tool_usages.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "provider_response_id": t.provider_response_id or "",
            "provider_tool_call_id": t.call_id or None,
            "provider_item_id": t.item_id or None,
            "tool": t.name,
            "input": t.input,
            "server_url": None,
            "injected": False,
            "invocation_error": None,
            "metadata": {},
            "created_at": created_at,
        }
        for t in ev.tool_calls
    )
    rows[model_thoughts.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "content": th.content,
            "metadata": {"source": th.source},
            "created_at": created_at,
        }
        for th in ev.thoughts
    )
    return rows


# Statements are built once: executing a constant statement skips SQLAlchemy's per-call compile/cache-key work.
_i = interceptions.c
INSERT_INTERCEPTION = sa.insert(interceptions)  # start_row()s
INSERT_CHILD = {t.name: sa.insert(t) for t in CHILD_TABLES}  # child_rows(), by table name
END_INTERCEPTION = (  # end_params()s; an interception already ended is left as it is
    sa.update(interceptions)
    # The start time too: the partition key on PostgreSQL (one partition looked at, not all of them).
    .where(_i.id == sa.bindparam("b_id", type_=_i.id.type),
           _i.started_at == sa.bindparam("b_started_at", type_=_i.started_at.type), _i.ended_at.is_(None))
    .values(
        ended_at=sa.bindparam("b_ended_at", type_=_i.ended_at.type),
        status=sa.bindparam("b_status", type_=_i.status.type),
        upstream_status=sa.bindparam("b_upstream_status", type_=_i.upstream_status.type),
        error_type=sa.bindparam("b_error_type", type_=_i.error_type.type),
        error_message=sa.bindparam("b_error_message", type_=_i.error_message.type),
        metadata=sa.bindparam("b_metadata", type_=_i.metadata.type),
        model=sa.func.coalesce(sa.bindparam("b_model", type_=_i.model.type), _i.model),
        last_prompt_at=sa.func.coalesce(sa.bindparam("b_last_prompt_at", type_=_i.last_prompt_at.type),
                                        _i.last_prompt_at),
    )
)


def _of_start(column: sa.Column[Any]) -> sa.ColumnElement[bool]:
    """Child rows of the interception started at `:b_started_at` (PostgreSQL looks in its partition only); NULL on
    SQLite rows written before schema v10."""
    return sa.or_(column == sa.bindparam("b_started_at", type_=column.type), column.is_(None))


# {"b_id", "b_rid", "b_started_at"}: the response id of a prompt written with the start, once the call ended.
_p = user_prompts.c
SET_PROMPT_RESPONSE_ID = (
    sa.update(user_prompts)
    .where(_p.interception_id == sa.bindparam("b_id", type_=_p.interception_id.type), _p.provider_response_id == "",
           _of_start(_p.interception_started_at))
    .values(provider_response_id=sa.bindparam("b_rid", type_=_p.provider_response_id.type))
)
# {"b_id", "b_started_at"}: the token rows written while the call was in progress.
DELETE_TOKEN_USAGES = sa.delete(token_usages).where(
    token_usages.c.interception_id == sa.bindparam("b_id", type_=token_usages.c.interception_id.type),
    _of_start(token_usages.c.interception_started_at),
)


def capture_row(interception_id: str, started_at: datetime, sealed: SealedCapture, created_at: datetime) -> Row:
    """The capture table's row of a sealed raw capture."""
    return {
        "interception_id": interception_id,
        "interception_started_at": started_at,
        "created_at": created_at,
        "method": sealed.method[:16],
        "route": sealed.route,
        "transport": sealed.transport[:16],
        "response_status": sealed.response_status,
        "streamed": sealed.streamed,
        "request_headers": sealed.request_headers,
        "response_headers": sealed.response_headers,
        "request_body": sealed.request.data,
        "request_size": sealed.request.size,
        "request_stored": sealed.request.stored,
        "request_truncated": sealed.request.truncated,
        "response_body": sealed.response.data,
        "response_size": sealed.response.size,
        "response_stored": sealed.response.stored,
        "response_truncated": sealed.response.truncated,
        "encoding": sealed.encoding,
        "redactions": sealed.redactions or None,
    }


INSERT_CAPTURE = sa.insert(captures)
