"""The pure mapping from record events to table rows: an `InterceptionStarted` becomes an interception row, an
`InterceptionEnded` the parameters of the UPDATE that ends it plus its child rows (prompt, token usages, tool
calls, thoughts). Text that has a column limit is clipped here. No I/O: the statements that take these rows are
defined beside them (so the row keys and the bound parameter names are kept together) and executed by batch.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import (
    CHILD_TABLES,
    CLIENT_MAX,
    CLIENT_SESSION_ID_MAX,
    CREDENTIAL_HINT_MAX,
    ERROR_MESSAGE_MAX,
    error_type_for_status,
    interceptions,
    model_thoughts,
    token_usages,
    tool_usages,
    user_prompts,
)

Row = dict[str, Any]


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
    }


def end_error_type(ev: InterceptionEnded) -> str | None:
    """The error type stored for an ended call: the proxy's own refusal's, else derived from the upstream status
    of a failed one."""
    if ev.status != "failed":
        return None
    return ev.error_type or error_type_for_status(ev.upstream_status)


def end_params(ev: InterceptionEnded, *, ended_at: datetime, start_metadata: dict[str, Any]) -> Row:
    """The parameters of `END_INTERCEPTION` for an ended call; its metadata is merged over the start's."""
    return {
        "b_id": ev.id,
        "b_ended_at": ended_at,
        "b_status": ev.status,
        "b_upstream_status": ev.upstream_status,
        "b_error_type": end_error_type(ev),
        "b_error_message": clip(ev.error, ERROR_MESSAGE_MAX),
        "b_metadata": {**start_metadata, **ev.metadata},
        "b_model": ev.model or None,
        "b_last_prompt_at": ended_at if ev.prompt else None,  # the prompt row's created_at
    }


def child_rows(ev: InterceptionEnded, created_at: datetime) -> dict[str, list[Row]]:
    """The child rows of an ended call by table name (every child table present, possibly with no rows).

    Ids are time-ordered and increasing, so rows with the same `created_at` keep this order."""
    rows: dict[str, list[Row]] = {t.name: [] for t in CHILD_TABLES}
    if ev.prompt:
        rows[user_prompts.name].append(
            {
                "id": new_id(),
                "interception_id": ev.id,
                "provider_response_id": ev.prompt_response_id or "",
                "prompt": ev.prompt,
                "metadata": {},
                "created_at": created_at,
            }
        )
    rows[token_usages.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "provider_response_id": u.provider_response_id or "",
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_write_input_tokens": u.cache_write_input_tokens,
            "metadata": dict(u.metadata),
            "created_at": created_at,
        }
        for u in ev.token_usages
    )
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
    .where(_i.id == sa.bindparam("b_id", type_=_i.id.type), _i.ended_at.is_(None))
    .values(
        ended_at=sa.bindparam("b_ended_at", type_=_i.ended_at.type),
        status=sa.bindparam("b_status", type_=_i.status.type),
        upstream_status=sa.bindparam("b_upstream_status", type_=_i.upstream_status.type),
        error_type=sa.bindparam("b_error_type", type_=_i.error_type.type),
        error_message=sa.bindparam("b_error_message", type_=_i.error_message.type),
        metadata=sa.bindparam("b_metadata", type_=_i.metadata.type),
        model=sa.func.coalesce(sa.bindparam("b_model", type_=_i.model.type), _i.model),
        last_prompt_at=sa.bindparam("b_last_prompt_at", type_=_i.last_prompt_at.type),
    )
)
