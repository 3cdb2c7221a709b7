"""Proxy credentials: parsing Proxy-Authorization, the quick lookup on the loop, and answers when the database
cannot."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import pytest

from aigw_proxy.policy.identity import SQLiteTokenLookup, TokenAuthenticator, token_from_proxy_authorization
from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import open_database
from aigw_proxy.storage.users import UserStore


def basic(s: str) -> str:
    return "Basic " + base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize(("header", "token"), [
    (basic("alice:tok"), "tok"),
    (basic("anything:tok:with:colons"), "tok:with:colons"),
    (basic(":tok"), "tok"),
    ("basic " + base64.b64encode(b"a:b").decode(), "b"),
    (basic("alice:"), None),
    (basic("no-colon"), None),
    ("Bearer tok", None),
    ("Basic !!!notbase64", None),
    ("Basic", None),
    ("", None),
    (None, None),
])
def test_token_from_proxy_authorization(header: str | None, token: str | None) -> None:
    assert token_from_proxy_authorization(header) == token


ALICE = Initiator("u1", "alice", "t1")


async def test_database_failure_falls_back_to_the_last_answer() -> None:
    calls = {"n": 0}

    async def lookup(token: str) -> Initiator | None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("database is locked")
        return ALICE if token == "good" else None

    auth = TokenAuthenticator(lookup)
    assert await auth.authenticate("good") == ALICE
    assert await auth.authenticate("good") == ALICE  # DB down: last known answer
    assert await auth.authenticate("never-seen") is None  # DB down and no earlier answer: refuse


async def test_slow_database_times_out_to_the_fallback() -> None:
    async def slow(token: str) -> Initiator | None:
        await asyncio.sleep(5)
        return ALICE

    auth = TokenAuthenticator(slow, timeout=0.05)
    assert await auth.authenticate("x") is None


async def test_revocation_is_seen_on_the_next_lookup() -> None:
    revoked = {"now": False}

    async def lookup(token: str) -> Initiator | None:
        return None if revoked["now"] else ALICE

    auth = TokenAuthenticator(lookup)
    assert await auth.authenticate("t") == ALICE
    revoked["now"] = True
    assert await auth.authenticate("t") is None


async def test_the_quick_sqlite_lookup_answers_as_the_user_store_does(tmp_path: Path) -> None:
    """Valid, revoked, deleted-user and unknown tokens: the synchronous lookup on the proxy's loop and the
    user store's agree, and a revocation is seen by the very next lookup (no caching)."""
    db = await open_database(tmp_path / "aigw.db")
    try:
        store = UserStore(db)
        _alice, alice_tok = await store.create_user("alice")
        _bob, bob_tok = await store.create_user("bob")
        quick = SQLiteTokenLookup(tmp_path / "aigw.db")
        for token in (alice_tok, bob_tok, "aigw_not_a_token", "", alice_tok + "x"):
            assert quick(token) == await store.authenticate(token)
        assert quick(alice_tok) is not None and quick(alice_tok).username == "alice"  # type: ignore[union-attr]

        assert await store.revoke_user_tokens("alice") == 1
        assert quick(alice_tok) is None and await store.authenticate(alice_tok) is None
        await store.delete_user("bob")
        assert quick(bob_tok) is None and await store.authenticate(bob_tok) is None
        quick.close()
    finally:
        await db.close()


async def test_a_failing_quick_lookup_falls_back_to_the_async_one() -> None:
    def locked(token: str) -> Initiator | None:
        raise sqlite3.OperationalError("database is locked")

    async def lookup(token: str) -> Initiator | None:
        return ALICE if token == "good" else None

    auth = TokenAuthenticator(lookup, quick_lookup=locked)
    assert await auth.authenticate("good") == ALICE
    assert await auth.authenticate("bad") is None


async def test_the_quick_lookup_answers_without_the_async_one() -> None:
    async def lookup(token: str) -> Initiator | None:
        raise AssertionError("not asked")

    auth = TokenAuthenticator(lookup, quick_lookup=lambda t: ALICE if t == "good" else None)
    assert await auth.authenticate("good") == ALICE
    assert await auth.authenticate("bad") is None
