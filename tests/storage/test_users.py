from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import (
    Database,
    InvalidUsernameError,
    StorageError,
    TokenNotFoundError,
    UserExistsError,
    UserNotFoundError,
    UserStore,
    open_database,
)


async def test_create_user_returns_user_and_token(db: Database) -> None:
    user, token = await UserStore(db).create_user("alice")
    assert token.startswith("aigw_") and len(token) > 40
    assert set(user) == {"id", "username", "role", "created_at", "tokens"}
    assert user["username"] == "alice" and user["role"] == "member"
    assert user["created_at"].endswith("Z")
    [tok] = user["tokens"]
    assert tok["hint"] == f"{token[:9]}…{token[-4:]}"
    assert tok["revoked_at"] is None


async def test_duplicate_and_invalid_usernames(db: Database) -> None:
    store = UserStore(db)
    await store.create_user("alice")
    with pytest.raises(UserExistsError, match="user 'alice' already exists"):
        await store.create_user("alice", role="admin")
    for bad in ("", "-alice", "a b", "x" * 65, "alice\n", "ä"):
        with pytest.raises(InvalidUsernameError):
            await store.create_user(bad)
    with pytest.raises(StorageError, match="invalid role"):
        await store.create_user("carol", role="owner")
    await store.create_user("a" * 64)
    await store.create_user("Bob.o_k-1", role="admin")


async def test_list_users_never_shows_secrets(db: Database) -> None:
    store = UserStore(db)
    _, t1 = await store.create_user("alice")
    _, t2 = await store.create_user("bob", role="admin")
    tid, t3 = await store.create_token("alice", name="laptop")
    users = await store.list_users()
    text = json.dumps(users)  # JSON-ready
    for secret in (t1, t2, t3):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
    assert [u["username"] for u in users] == ["alice", "bob"]
    assert [u["role"] for u in users] == ["member", "admin"]
    alice_tokens = users[0]["tokens"]
    assert [t["name"] for t in alice_tokens] == [None, "laptop"]
    assert alice_tokens[1]["id"] == tid
    assert set(alice_tokens[0]) == {"id", "name", "hint", "created_at", "revoked_at"}


async def test_get_user_by_id_or_username(db: Database) -> None:
    store = UserStore(db)
    user, _ = await store.create_user("alice")
    assert await store.get_user("alice") == user
    assert await store.get_user(user["id"]) == user
    assert await store.get_user("nobody") is None


async def test_authenticate(db: Database) -> None:
    store = UserStore(db)
    user, token = await store.create_user("alice")
    who = await store.authenticate(token)
    assert who == Initiator(user_id=user["id"], username="alice", token_id=user["tokens"][0]["id"])
    assert await store.authenticate(token + "x") is None
    assert await store.authenticate("aigw_wrong") is None
    assert await store.authenticate("") is None
    assert await store.authenticate("Bearer " + token) is None


async def test_revoked_token_is_refused(db: Database) -> None:
    store = UserStore(db)
    _, token = await store.create_user("alice")
    tid, second = await store.create_token("alice")
    assert await store.revoke_token(tid) is True
    assert await store.revoke_token(tid) is False
    assert await store.authenticate(second) is None
    assert await store.authenticate(token) is not None
    with pytest.raises(TokenNotFoundError):
        await store.revoke_token("no-such-token")
    assert await store.revoke_user_tokens("alice") == 1
    assert await store.revoke_user_tokens("alice") == 0
    assert await store.authenticate(token) is None
    [u] = await store.list_users()
    assert all(t["revoked_at"] and t["revoked_at"].endswith("Z") for t in u["tokens"])


async def test_deleted_user_is_refused(db: Database) -> None:
    store = UserStore(db)
    _, token = await store.create_user("alice")
    await store.delete_user("alice")
    assert await store.authenticate(token) is None
    assert await store.list_users() == []
    assert await store.get_user("alice") is None
    with pytest.raises(UserNotFoundError):
        await store.create_token("alice")


async def test_revocation_is_seen_at_once_by_another_database(db: Database, db_target: str | Path) -> None:
    """The CLI (one Database) revokes while the daemon (another Database on the same file or server)
    authenticates."""
    cli = UserStore(db)
    daemon_db = await open_database(db_target)
    try:
        daemon = UserStore(daemon_db)
        _, token = await cli.create_user("alice")
        tid, token2 = await cli.create_token("alice")
        assert await daemon.authenticate(token) is not None
        assert await daemon.authenticate(token2) is not None
        await cli.revoke_token(tid)
        assert await daemon.authenticate(token2) is None
        assert await daemon.authenticate(token) is not None
        await cli.delete_user("alice")
        assert await daemon.authenticate(token) is None
    finally:
        await daemon_db.close()


async def test_unknown_user(db: Database) -> None:
    store = UserStore(db)
    with pytest.raises(UserNotFoundError, match="user 'ghost' not found"):
        await store.create_token("ghost")
    with pytest.raises(UserNotFoundError):
        await store.revoke_user_tokens("ghost")
