"""A sessions page reads its sessions' calls, newest prompts and costs in one statement (session_list._PAGE_FACTS);
each session on it must say what that session's own detail says (session_detail.get_session, which reads them
its own way), and its last prompt must be the newest one written.

Sessions span several UTC days (PostgreSQL: several partitions, pruned by the page's span), mix providers, models,
clients and API-key with subscription calls, and one session id is used by two users.
"""

from __future__ import annotations

import random
from dataclasses import replace

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, get_session, list_sessions
from tests.support.records import ended, started

DAY = 86400
PROVIDERS = {"anthropic": ("claude-sonnet-4-5", "claude-haiku-4-5"), "openai": ("gpt-5", "o4-mini")}


async def _write_sessions(writer: RecordWriter, people: list[Initiator]) -> dict[tuple[str, str], str | None]:
    """~40 sessions over 4 days; the newest prompt written for each (session id, user)."""
    rng = random.Random(7)
    newest: dict[tuple[str, str], str | None] = {}
    n = 0
    for s in range(40):
        sid = f"page-{s:02d}" if s % 13 else "page-shared"  # 3 users share one id
        who = people[s % len(people)]
        t = rng.uniform(0, 3 * DAY)
        for _ in range(rng.randint(1, 5)):
            provider = rng.choice(list(PROVIDERS))
            iid = f"c{n:04d}"
            n += 1
            call = started(iid, who, t=t, provider=provider, model=rng.choice(PROVIDERS[provider]),
                           client=rng.choice(("Claude Code", "Codex", None)),  # type: ignore[arg-type]
                           client_session_id=sid,
                           metadata={"n": n, "user": who.username})
            if rng.random() < 0.3:
                call = replace(call, credential_kind="oauth")  # priced as API-equivalent value
            writer.submit(call)
            prompt = rng.choice((None, f"prompt {n}"))
            writer.submit(ended(iid, t=t + 5, prompt=prompt, response_id=rng.choice(("", f"r-{iid}"))))
            if prompt is not None:
                newest[(sid, who.user_id)] = prompt
            else:
                newest.setdefault((sid, who.user_id), None)
            t += rng.uniform(60, DAY / 2)  # minutes to half a day apart: some sessions cross midnight
    await writer.flush(timeout=20)
    return newest


async def test_sessions_page_equals_each_sessions_detail(
    db: Database, writer: RecordWriter, alice: Initiator, bob: Initiator
) -> None:
    newest = await _write_sessions(writer, [alice, bob])
    page = await list_sessions(db, limit=1000)
    assert {(s["id"], s["initiator"]["id"]) for s in page} == set(newest)
    assert sum(s["id"] == "page-shared" for s in page) == 2
    assert any(s["cost"]["api_equivalent_micros"] for s in page)  # some subscription calls are priced
    for listed in page:
        detail = await get_session(db, listed["id"], visible_to=listed["initiator"]["id"])
        assert detail is not None
        for key in ("initiator", "providers", "models", "client", "metadata", "started_at", "ended_at", "cost"):
            assert listed[key] == detail[key], (listed["id"], key)
        assert listed["threads"] == detail["threads_total"]
        assert listed["token_usage_summary"] == {k: v for k, v in detail["token_usage_summary"].items()
                                                 if k != "metadata"}
        assert listed["last_prompt"] == newest[(listed["id"], listed["initiator"]["id"])]
