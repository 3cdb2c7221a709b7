"""The audit log's storage (the People page writes it): rows newest first with keyset pages, a structured log
record per action, role changes, and a console session's token check by token id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aigw_proxy.storage import UserStore, open_database
from aigw_proxy.storage.audit import list_actions, live_token, record_action, set_role


async def test_audit_rows_roles_and_token_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = await open_database(tmp_path / "a.db")
    try:
        users = UserStore(db)
        admin, _ = await users.create_user("root", "admin")
        carol, _ = await users.create_user("carol")
        token_id = carol["tokens"][0]["id"]
        assert await live_token(db, token_id) == (carol["id"], "carol", "member")
        with caplog.at_level(logging.INFO, logger="aigw_proxy.audit"):
            for n in range(5):
                await record_action(db, actor_id=admin["id"], actor="root", action="token.issue",
                                    target_user_id=carol["id"], target="carol", detail={"n": n}, source="127.0.0.1")
        assert [r.audit_action for r in caplog.records] == ["token.issue"] * 5  # type: ignore[attr-defined]
        first = await list_actions(db, limit=3)
        assert [r["detail"]["n"] for r in first] == [4, 3, 2]
        rest = await list_actions(db, limit=3, before=(first[-1]["at"], first[-1]["id"]))
        assert [r["detail"]["n"] for r in rest] == [1, 0]
        assert first[0]["actor"] == "root" and first[0]["target"] == "carol" and first[0]["at"].endswith("Z")
        assert await set_role(db, carol["id"], "admin") == "member"
        assert await live_token(db, token_id) == (carol["id"], "carol", "admin")
        await users.revoke_token(token_id)
        assert await live_token(db, token_id) is None  # a revoked token ends the console session
    finally:
        await db.close()
