from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    TokenUsage,
    ToolCall,
)
from aigw_proxy.storage import Database, RecordWriter, UserStore, open_database

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "aigw.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = await open_database(db_path)
    yield database
    await database.close()


@pytest.fixture
async def alice(db: Database) -> Initiator:
    _, token = await UserStore(db).create_user("alice")
    who = await UserStore(db).authenticate(token)
    assert who is not None
    return who


@pytest.fixture
async def bob(db: Database) -> Initiator:
    _, token = await UserStore(db).create_user("bob", role="admin")
    who = await UserStore(db).authenticate(token)
    assert who is not None
    return who


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[RecordWriter]:
    w = RecordWriter(db, flush_interval=0.005)
    w.start()
    yield w
    await w.close(timeout=10)
