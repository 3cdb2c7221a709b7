"""Who is behind a tunnel: the proxy token in `Proxy-Authorization: Basic base64(<anything>:<token>)`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from aigw_proxy.recording.records import Initiator

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


class TokenAuthenticator:
    """Checks every token against the database, so a new user works and a revoked token fails at once.

    The lookup is one indexed read on the reader connection (WAL: never blocked by the record writer). If the
    database cannot answer within `timeout`, the last answer seen for that token is used instead, so a locked
    or dead database does not lock users out of a tunnel they were using a moment ago.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[Initiator | None]],
        *,
        timeout: float = 1.0,
        fallback_ttl: float = 3600.0,
    ) -> None:
        self._lookup = lookup
        self._timeout = timeout
        self._fallback_ttl = fallback_ttl
        self._last: dict[str, tuple[float, Initiator | None]] = {}

    async def authenticate(self, token: str) -> Initiator | None:
        key = hashlib.sha256(token.encode()).hexdigest()  # never keep plaintext tokens around
        try:
            who = await asyncio.wait_for(self._lookup(token), self._timeout)
        except Exception as exc:  # locked, dead or slow database
            seen = self._last.get(key)
            if seen and time.monotonic() - seen[0] < self._fallback_ttl:
                log.warning("token lookup failed (%s); using the last known answer", type(exc).__name__)
                return seen[1]
            log.error("token lookup failed and no earlier answer is known: %s", exc)
            return None
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (time.monotonic(), who)
        return who
