"""Structured record logs (docs/compatibility.md#structured-logs): each committed record also goes out as one
`interception log` line.

Lines are emitted from the writer's commit listener, so the thread lineage the writer resolved is in them and a
line never describes a record that is not in the database. Fields per `record_type`, as in Coder's gateway, plus
ours: `provider_name` on `interception_start`; `status`, `upstream_status`, `error_type`, `error_message` on
`interception_end`; on `token_usage` the row's stored price (Coder's price columns in micro-dollars,
`cost_usd`, `priced` — false with null figures when the model has no price, never 0 —, `price_source`,
`price_version`, `api_equivalent` for subscription calls); `trace_id` and `span_id` (the record's span) when
tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span

from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.spend import Price
from aigw_proxy.storage import rfc3339

LOGGER_NAME: Final = "aigw_proxy.interceptions"
MESSAGE: Final = "interception log"

INTERCEPTION_START: Final = "interception_start"
INTERCEPTION_END: Final = "interception_end"
TOKEN_USAGE: Final = "token_usage"
PROMPT_USAGE: Final = "prompt_usage"
TOOL_USAGE: Final = "tool_usage"
MODEL_THOUGHT: Final = "model_thought"

Fields = dict[str, Any]
SpanLookup = Callable[[str, str, int], Span | None]  # (interception id, record type, index) → the record's span


def _time(value: datetime) -> str:
    """RFC 3339 UTC, as stored (the writer takes a naive time as UTC)."""
    return rfc3339(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def _start_line(ev: InterceptionStarted, info: CommitInfo) -> Fields:
    return {
        "interception_id": ev.id,
        "initiator_id": ev.initiator.user_id,
        "api_key_id": ev.initiator.token_id,
        "provider": ev.provider,
        "provider_name": ev.provider_name,
        "model": ev.model,
        "client": ev.client,
        "client_session_id": ev.client_session_id or None,
        "started_at": _time(ev.started_at),
        "metadata": dict(ev.metadata),
        "correlating_tool_call_id": ev.correlating_tool_call_id or None,
        "thread_parent_id": info.thread_parent_id,
        "thread_root_id": info.thread_root_id,
    }


def _price_fields(price: Price | None, api_equivalent: bool) -> Fields:
    """A token-usage row's price as the writer stored it (storage/write/rows.py `price_columns`)."""
    if price is None:
        return {"input_price_micros": None, "output_price_micros": None, "cache_read_price_micros": None,
                "cache_write_price_micros": None, "other_price_micros": None, "cost_micros": None, "cost_usd": None,
                "priced": False, "price_source": None, "price_version": None, "api_equivalent": api_equivalent,
                "effective_group_id": None}
    return {
        "input_price_micros": price.input_price_micros,
        "output_price_micros": price.output_price_micros,
        "cache_read_price_micros": price.cache_read_price_micros,
        "cache_write_price_micros": price.cache_write_price_micros,
        "other_price_micros": price.other_price_micros,
        "cost_micros": price.cost_micros,
        "cost_usd": round(price.cost_micros / 1_000_000, 6),
        "priced": True,
        "price_source": price.source,
        "price_version": price.version,
        "api_equivalent": api_equivalent,
        "effective_group_id": None,
    }


def _end_lines(ev: InterceptionEnded, info: CommitInfo) -> list[tuple[str, Fields]]:
    created_at = _time(ev.ended_at)  # the writer stamps every child row with the end time
    lines: list[tuple[str, Fields]] = []
    if ev.prompt:
        lines.append((PROMPT_USAGE, {
            "interception_id": ev.id,
            "msg_id": ev.prompt_response_id,
            "prompt": ev.prompt,
            "created_at": created_at,
            "metadata": {},
        }))
    spend = info.spend
    for n, u in enumerate(ev.token_usages):
        price = spend.price(n) if spend is not None else None
        lines.append((TOKEN_USAGE, {
            "interception_id": ev.id,
            "msg_id": u.provider_response_id,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_write_input_tokens": u.cache_write_input_tokens,
            "created_at": created_at,
            "metadata": dict(u.metadata),
            **_price_fields(price, spend is not None and spend.key.api_equivalent),
        }))
    for t in ev.tool_calls:
        lines.append((TOOL_USAGE, {
            "interception_id": ev.id,
            "msg_id": t.provider_response_id,
            "tool_call_id": t.call_id or None,
            "item_id": t.item_id or None,
            "tool": t.name,
            "input": t.input,
            "server_url": None,
            "injected": False,
            "invocation_error": None,
            "created_at": created_at,
            "metadata": {},
        }))
    for th in ev.thoughts:
        lines.append((MODEL_THOUGHT, {
            "interception_id": ev.id,
            "content": th.content,
            "created_at": created_at,
            "metadata": {"source": th.source},
        }))
    lines.append((INTERCEPTION_END, {
        "interception_id": ev.id,
        "ended_at": created_at,
        "status": ev.status,
        "upstream_status": ev.upstream_status,
        "error_type": info.error_type,
        "error_message": ev.error,
    }))
    return lines


def record_lines(event: RecordEvent, info: CommitInfo) -> list[tuple[str, Fields]]:
    """The (record_type, fields) lines one committed event makes, in the order the records were written."""
    if isinstance(event, InterceptionStarted):
        return [(INTERCEPTION_START, _start_line(event, info))]
    if isinstance(event, InterceptionEnded):
        return _end_lines(event, info)
    return []  # in-progress usage updates are not records of their own


class StructuredLog:
    """The writer listener that logs each committed record on the `aigw_proxy.interceptions` logger."""

    def __init__(self, spans: SpanLookup | None = None, logger: logging.Logger | None = None) -> None:
        self._spans = spans
        self._log = logger or logging.getLogger(LOGGER_NAME)
        self._log.setLevel(logging.INFO)  # asked for explicitly: not hidden by --log-level warning

    def on_commit(self, event: RecordEvent, info: CommitInfo) -> None:
        seen: dict[str, int] = {}
        for record_type, fields in record_lines(event, info):
            index = seen.get(record_type, 0)
            seen[record_type] = index + 1
            span = self._spans(event.id, record_type, index) if self._spans is not None else None
            if span is None:
                self._log.info(MESSAGE, extra={"record_type": record_type, **fields})
                continue
            ctx = span.get_span_context()
            fields["trace_id"] = trace.format_trace_id(ctx.trace_id)
            fields["span_id"] = trace.format_span_id(ctx.span_id)
            # Active for this one call only (it is synchronous): --trace-logs attaches the line to the span.
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                self._log.info(MESSAGE, extra={"record_type": record_type, **fields})
