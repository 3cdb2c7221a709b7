"""Who is behind a tunnel: the proxy token in `Proxy-Authorization: Basic base64(<anything>:<token>)`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage.schema.tables import api_tokens, users
from aigw_proxy.storage.users import hash_token

if TYPE_CHECKING:
    from aigw_proxy.storage.database import FileGuard

log = logging.getLogger("aigw_proxy.identity")

REALM = 'Basic realm="aigw-proxy"'


def token_from_proxy_authorization(value: str | None) -> str | None:
    """The password part of a Basic credential, or None. Tokens may contain ':' (split on the first one only)."""
    if not value:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, sep, token = decoded.partition(":")
    return token if sep and token else None


class SQLiteTokenLookup:
    """The token lookup as one synchronous indexed read on a read-only SQLite connection of its own, for the
    event loop itself: the same answer as `UserStore.authenticate` (tests/unit/test_identity.py compares them)
    without the async path's hops to the driver's thread and back. Those hops are most of a lookup's cost
    (~1 ms of CPU) and, on a busy machine, of a new tunnel's latency tail (each hop waits for a thread to be
    scheduled). No caching: every CONNECT reads the database, so revocation (by any process) is immediate.

    WAL readers are not blocked by writers; with a busy timeout of 0 any lock (a checkpoint resetting the WAL,
    recovery) raises at once instead of stalling the loop, and the caller falls back to the async lookup.
    """

    _SQL = (
        f"SELECT t.id, u.id, u.username FROM {api_tokens.name} AS t JOIN {users.name} AS u ON u.id = t.user_id "
        "WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.deleted_at IS NULL"
    )

    def __init__(self, database_path: Path, guard: FileGuard | None = None) -> None:
        self._path = database_path
        self._conn: sqlite3.Connection | None = None
        # The database's file guard: while the file at the path is not the one opened (deleted or replaced, until
        # the record writer has reopened it) a lookup raises (the caller falls back); once reopened, the
        # connection is made again on the file the path names now.
        self._guard = guard
        self._opened_on: object = None

    def __call__(self, token: str) -> Initiator | None:
        if self._guard is not None:
            self._guard.check()
            if self._conn is not None and self._opened_on != self._guard.identity:
                self.close()
        if self._conn is None:
            self._opened_on = self._guard.identity if self._guard is not None else None
            self._conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=0)
        try:
            row = self._conn.execute(self._SQL, (hash_token(token),)).fetchone()
        except sqlite3.Error:
            self.close()  # reopened on the next lookup
            raise
        return Initiator(user_id=row[1], username=row[2], token_id=row[0]) if row is not None else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class TokenAuthenticator:
    """Checks every token against the database, so a new user works and a revoked token fails at once.

    The lookup is one indexed read (WAL: never blocked by the record writer): `quick_lookup`, a synchronous one
    on the loop (SQLite), when given and it can answer at once, else `lookup` on the reader connection. If the
    database cannot answer within `timeout`, the last answer seen for that token is used instead, so a locked
    or dead database does not lock users out of a tunnel they were using a moment ago.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Initiator | None]],
        *,
        quick_lookup: Callable[[str], Initiator | None] | None = None,
        timeout: float = 1.0,
        fallback_ttl: float = 3600.0,
    ) -> None:
        self._lookup = lookup
        self._quick = quick_lookup
        self._timeout = timeout
        self._fallback_ttl = fallback_ttl
        self._last: dict[str, tuple[float, Initiator | None]] = {}

    async def authenticate(self, token: str) -> Initiator | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # never keep plaintext tokens around
        if self._quick is not None:
            try:
                who = self._quick(token)
            except Exception as exc:  # locked for a moment, or unreadable: the async lookup decides
                log.debug("quick token lookup failed (%s); asking the reader connection", type(exc).__name__)
            else:
                self._remember(key, who)
                return who
        try:
            who = await asyncio.wait_for(self._lookup(token), self._timeout)
        except Exception as exc:  # locked, dead or slow database
            seen = self._last.get(key)
            if seen and time.monotonic() - seen[0] < self._fallback_ttl:
                log.warning("token lookup failed (%s); using the last known answer", type(exc).__name__)
                return seen[1]
            log.error("token lookup failed and no earlier answer is known: %s", exc)
            return None
        self._remember(key, who)
        return who

    def _remember(self, key: str, who: Initiator | None) -> None:
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (time.monotonic(), who)
