"""A deterministic set of interceptions written into a running daemon's database, and the expectations a user
would compute by hand from it (who ran what, when, in which session and thread)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    TokenUsage,
    ToolCall,
)
from aigw_proxy.storage import RecordWriter, UserStore, open_database

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
CALLS = [  # provider type, provider name, model, client
    ("anthropic", "anthropic", "claude-sonnet-4-5", "Claude Code"),
    ("anthropic", "anthropic", "claude-haiku-4-5", "Claude Code"),
    ("openai", "openai", "gpt-5", "Codex"),
    ("openai", "chatgpt", "gpt-5-codex", "Codex"),
    ("copilot", "copilot", "gpt-4.1", "GitHub Copilot (VS Code)"),
    ("gemini", "gemini", "gemini-2.5-pro", "Unknown"),
]


@dataclass
class Seeded:
    id: str
    user: str
    provider: str
    provider_name: str
    model: str
    client: str
    client_session_id: str | None
    started_at: datetime
    ended_at: datetime | None
    parent: str | None = None  # the interception whose tool call this one answers
    root: str | None = None
    prompt: str | None = None
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0)
    tool_call: str | None = None
    thought: str | None = None

    @property
    def session_id(self) -> str:
        return self.client_session_id or self.root or self.id


@dataclass
class Dataset:
    rows: list[Seeded] = field(default_factory=list)
    user_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> list[Seeded]:
        return [r for r in self.rows if r.ended_at is not None]

    def newest_first(self, rows: list[Seeded]) -> list[str]:
        return [r.id for r in sorted(rows, key=lambda r: (r.started_at, r.id), reverse=True)]

    def sessions(self, rows: list[Seeded] | None = None) -> dict[tuple[str, str], list[Seeded]]:
        out: dict[tuple[str, str], list[Seeded]] = {}
        for r in rows if rows is not None else self.ended:
            out.setdefault((r.session_id, self.user_ids[r.user]), []).append(r)
        return out


def build(users: list[str], rng: random.Random, n: int = 150) -> list[Seeded]:
    rows: list[Seeded] = []
    t = T0
    for k in range(n):
        user = users[k % len(users)] if rng.random() < 0.8 else users[0]
        mine = [r for r in rows if r.user == user and r.ended_at is not None and r.tool_call]
        answer = mine[-1] if mine and rng.random() < 0.45 else None
        provider, name, model, client = answer_call = (
            (answer.provider, answer.provider_name, answer.model, answer.client) if answer else rng.choice(CALLS)
        )
        del answer_call
        session = None
        if answer is not None:
            session = answer.client_session_id
        elif client in ("Claude Code", "Codex") and rng.random() < 0.8:
            # A new prompt in a client session: often the same session as this user's last one (a new thread).
            earlier = [r.client_session_id for r in rows if r.user == user and r.client == client
                       and r.client_session_id]
            session = earlier[-1] if earlier and rng.random() < 0.6 else f"sess-{k:03d}"
        t += timedelta(minutes=rng.choice([1, 7, 30, 95, 600]))  # spans several days
        iid = f"0195{k:04d}-0000-7000-8000-{rng.getrandbits(48):012x}"
        in_flight = rng.random() < 0.06
        row = Seeded(
            id=iid, user=user, provider=provider, provider_name=name, model=model, client=client,
            client_session_id=session, started_at=t,
            ended_at=None if in_flight else t + timedelta(seconds=rng.randint(1, 50)),
            parent=answer.id if answer else None,
            root=(answer.root or answer.id) if answer else None,
            prompt=None if answer else f"prompt number {k}",
            tokens=(rng.randint(1, 900), rng.randint(1, 500), rng.randint(0, 3000), rng.randint(0, 50)),
            tool_call=f"toolu_{k:04d}" if rng.random() < 0.55 else None,
            thought=f"thinking about step {k}" if rng.random() < 0.4 else None,
        )
        rows.append(row)
    return rows


async def _write(db_path: Path | str, users: dict[str, str], rows: list[Seeded]) -> None:
    db = await open_database(db_path)
    writer = RecordWriter(db, flush_interval=0.005)
    writer.start()
    who = {name: Initiator(uid, name, f"tok-{name}") for name, uid in users.items()}
    for r in rows:
        writer.submit(InterceptionStarted(
            id=r.id, initiator=who[r.user], provider=r.provider, provider_name=r.provider_name, model=r.model,
            client=r.client, client_session_id=r.client_session_id, started_at=r.started_at,
            metadata={"request_user_agent": "seed/1.0"},
            correlating_tool_call_id=next(x.tool_call for x in rows if x.id == r.parent) if r.parent else None,
            credential_kind="api_key", credential_hint="sk-a...1234",
        ))
        if r.ended_at is None:
            continue
        await writer.flush(10)  # lineage of the next call needs this one's tool call id written
        writer.submit(InterceptionEnded(
            id=r.id, ended_at=r.ended_at, status="completed", upstream_status=200, prompt=r.prompt,
            prompt_response_id=f"msg_{r.id[-6:]}",
            token_usages=[TokenUsage(f"msg_{r.id[-6:]}", *r.tokens, {"web_search_requests": 1})],
            tool_calls=[ToolCall(f"msg_{r.id[-6:]}", r.tool_call, "Bash", '{"command":"ls"}')] if r.tool_call else [],
            thoughts=[ModelThought(r.thought, "thinking")] if r.thought else [],
        ))
    await writer.flush(30)
    await writer.close(30)
    await db.close()


def seed(db_path: Path | str, users: dict[str, str], seed_value: int = 5) -> Dataset:
    rows = build(sorted(u for u in users if u != "root"), random.Random(seed_value))
    asyncio.run(_write(db_path, users, rows))
    return Dataset(rows, dict(users))


async def _user_id(db_path: Path | str, name: str) -> str:
    db = await open_database(db_path)
    try:
        user = await UserStore(db).get_user(name)
        assert user is not None
        return user["id"]
    finally:
        await db.close()


def user_id(db_path: Path | str, name: str) -> str:
    return asyncio.run(_user_id(db_path, name))
