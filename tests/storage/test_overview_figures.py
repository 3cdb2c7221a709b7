"""The console Overview's figures, read from the summary tables, equal what the records themselves say: whole
days of interceptions per model and client (admins), the member's own calls in the window, failures in the window,
and the sessions active in the window (last active at or after its start, started by its end) with their whole
tokens, per user. Sessions that straddle the window's start, a call after a session's last prompt, a failed call
and a member's view included."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aigw_proxy.admin.console.overview import TOKENS, overview
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, Status, TokenUsage
from aigw_proxy.storage import Database, InterceptionFilter, RecordWriter, list_interceptions

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
START = NOW - timedelta(hours=24)


def _call(writer: RecordWriter, iid: str, who: Initiator, at: datetime, session: str, *, prompt: str | None,
          model: str = "claude-sonnet-4-5", client: str = "Claude Code", status: Status = "completed",
          tokens: int = 100) -> None:
    writer.submit(InterceptionStarted(id=iid, initiator=who, provider="anthropic", provider_name="anthropic",
                                      model=model, client=client, client_session_id=session, started_at=at,
                                      metadata={}, prompt=prompt))
    writer.submit(InterceptionEnded(id=iid, ended_at=at + timedelta(seconds=3), status=status, upstream_status=200,
                                    token_usages=[TokenUsage(f"msg_{iid}", tokens, tokens // 10)]))


def _expected(records: list[dict[str, Any]], start: datetime, end: datetime, user: str | None) -> dict[str, Any]:
    def at(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    mine = [r for r in records if user is None or r["initiator"]["id"] == user]
    if user is None:  # whole UTC days from the day summary
        counted = [r for r in mine if start.date() <= at(r["started_at"]).date() <= end.date()]
    else:
        counted = [r for r in mine if start <= at(r["started_at"]) <= end]
    sessions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in mine:
        sessions.setdefault((r["session_id"], r["initiator"]["id"]), []).append(r)
    board: dict[str, dict[str, int]] = {}
    for (_, uid), calls in sessions.items():
        began = min(at(c["started_at"]) for c in calls)
        prompts = [at(p["created_at"]) for c in calls for p in c["user_prompts"]]
        if max(prompts, default=began) >= start and began <= end:
            row = board.setdefault(uid, {"sessions": 0, **dict.fromkeys(TOKENS, 0)})
            row["sessions"] += 1
            for t in TOKENS:
                row[t] += sum(int(u[t] or 0) for c in calls for u in c["token_usages"])
    return {
        "interceptions": len(counted),
        "models": Counter(r["model"] for r in counted),
        "failed": sum(1 for r in mine if r["status"] == "failed" and start <= at(r["started_at"]) <= end),
        "board": board,
    }


async def test_overview_figures_equal_the_records(db: Database, writer: RecordWriter, alice: Initiator,
                                                  bob: Initiator) -> None:
    # alice: a session inside the window, and one whose prompt came before the window with a tool turn inside it
    _call(writer, "a1", alice, NOW - timedelta(hours=3), "s-a-in", prompt="list files", tokens=1000)
    _call(writer, "a2", alice, NOW - timedelta(hours=2), "s-a-in", prompt=None, tokens=2000)
    _call(writer, "a3", alice, START - timedelta(hours=1), "s-a-edge", prompt="old prompt", tokens=400)
    _call(writer, "a4", alice, START + timedelta(minutes=5), "s-a-edge", prompt=None, tokens=500)
    # bob: a session that began before the window and has a prompt inside it (active, its whole tokens count),
    # a failed call, and a session entirely before the window
    _call(writer, "b1", bob, START - timedelta(hours=2), "s-b-straddle", prompt="start", tokens=700,
          model="gpt-5", client="Codex")
    _call(writer, "b2", bob, NOW - timedelta(hours=1), "s-b-straddle", prompt="go on", tokens=800, model="gpt-5",
          client="Codex")
    _call(writer, "b3", bob, NOW - timedelta(minutes=30), "s-b-fail", prompt="again", status="failed", tokens=0)
    _call(writer, "b4", bob, START - timedelta(days=3), "s-b-old", prompt="long ago", tokens=9000)
    await writer.flush(timeout=10)
    records = await list_interceptions(db, InterceptionFilter(), limit=1000)
    assert len(records) == 8

    for user in (None, alice.user_id, bob.user_id):
        got = await overview(db, START, NOW, user)
        want = _expected(records, START, NOW, user)
        assert got.interceptions == want["interceptions"] == sum(p["total"] for p in got.series)
        assert dict(got.top_models) == dict(want["models"])
        assert got.failed == want["failed"]
        board = {r["user_id"]: {k: r[k] for k in ("sessions", *TOKENS)} for r in got.leaderboard}
        assert board == want["board"]
        assert got.active_users == len(want["board"])
        assert got.sessions == sum(r["sessions"] for r in want["board"].values())
        assert got.tokens == {t: sum(r[t] for r in want["board"].values()) for t in TOKENS}
    everyone = await overview(db, START, NOW, None)
    assert {r["username"] for r in everyone.leaderboard} == {"alice", "bob"}
    assert everyone.failed == 1 and everyone.sessions == 3  # s-a-in, s-b-straddle, s-b-fail
