"""Record events at known times for storage tests: `started(...)` / `ended(...)` of one interception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    TokenUsage,
    ToolCall,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(
    iid: str,
    who: Initiator,
    *,
    t: float = 0,
    provider: str = "anthropic",
    provider_name: str = "anthropic",
    model: str = "claude-sonnet-4-5",
    client: str = "Claude Code",
    client_session_id: str | None = None,
    correlating_tool_call_id: str | None = None,
    previous_response_id: str | None = None,
    metadata: dict[str, object] | None = None,
) -> InterceptionStarted:
    return InterceptionStarted(
        id=iid,
        initiator=who,
        provider=provider,
        provider_name=provider_name,
        model=model,
        client=client,
        client_session_id=client_session_id,
        started_at=at(t),
        metadata=metadata if metadata is not None else {},
        correlating_tool_call_id=correlating_tool_call_id,
        previous_response_id=previous_response_id,
    )


def ended(
    iid: str,
    *,
    t: float = 1,
    status: str = "completed",
    upstream_status: int | None = 200,
    error: str | None = None,
    response_id: str = "",
    tool_call_ids: tuple[str, ...] = (),
    prompt: str | None = None,
    model: str | None = None,
    metadata: dict[str, object] | None = None,
    thoughts: tuple[ModelThought, ...] = (),
) -> InterceptionEnded:
    return InterceptionEnded(
        id=iid,
        ended_at=at(t),
        status=status,  # type: ignore[arg-type]
        upstream_status=upstream_status,
        error=error,
        model=model,
        prompt=prompt,
        prompt_response_id=response_id,
        token_usages=[TokenUsage(response_id, 10, 5)] if response_id else [],
        tool_calls=[ToolCall(response_id, c, "Bash", '{"command":"ls"}') for c in tool_call_ids],
        thoughts=list(thoughts),
        metadata=metadata if metadata is not None else {},
    )
