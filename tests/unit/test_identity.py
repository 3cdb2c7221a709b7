"""Proxy credentials: parsing Proxy-Authorization, and answers when the database cannot."""

from __future__ import annotations

import asyncio
import base64

import pytest

from aigw_proxy.policy.identity import TokenAuthenticator, token_from_proxy_authorization
from aigw_proxy.recording.records import Initiator


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
