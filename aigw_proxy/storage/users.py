"""Users and their proxy tokens. Tokens are stored only as sha256 hex; the plaintext is returned once."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.errors import (
    InvalidUsernameError,
    StorageError,
    TokenNotFoundError,
    UserExistsError,
    UserNotFoundError,
)
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import ROLES, api_tokens, users
from aigw_proxy.storage.timefmt import rfc3339

TOKEN_PREFIX = "aigw_"
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN_MAX_LEN = 256


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    return f"{token[:9]}…{token[-4:]}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class UserStore:
    """User and token management (CLI) and token authentication (proxy; reader engine, one indexed query)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(self, username: str, role: str = "member") -> tuple[dict[str, Any], str]:
        """Create a user with a first token; return (the user as `get_user` shows it, token plaintext)."""
        if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
            raise InvalidUsernameError(
                f"invalid username {username!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if role not in ROLES:
            raise StorageError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
        user_id = new_id()
        now = datetime.now(UTC)
        try:
            async with self._db.writer.begin() as conn:
                await conn.execute(sa.insert(users).values(id=user_id, username=username, role=role, created_at=now))
                _, plaintext = await _insert_token(conn, user_id, None, now)
        except sa.exc.IntegrityError as exc:
            raise UserExistsError(f"user {username!r} already exists") from exc
        user = await self.get_user(user_id)
        assert user is not None
        return user, plaintext

    async def create_token(self, username_or_id: str, name: str | None = None) -> tuple[str, str]:
        """Issue another token for a user; return (token id, plaintext)."""
        async with self._db.writer.begin() as conn:
            user_id = await _resolve_user(conn, username_or_id)
            return await _insert_token(conn, user_id, name, datetime.now(UTC))

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token. Returns False if it was already revoked; unknown id → TokenNotFoundError."""
        async with self._db.writer.begin() as conn:
            result = await conn.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            if result.rowcount:
                return True
            exists = (await conn.execute(sa.select(api_tokens.c.id).where(api_tokens.c.id == token_id))).first()
        if exists is None:
            raise TokenNotFoundError(f"token {token_id!r} not found")
        return False

    async def revoke_user_tokens(self, username_or_id: str) -> int:
        """Revoke every live token of a user; return how many were revoked."""
        async with self._db.writer.begin() as conn:
            user_id = await _resolve_user(conn, username_or_id)
            result = await conn.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return int(result.rowcount or 0)

    async def delete_user(self, username_or_id: str) -> None:
        """Soft-delete a user (kept for attribution of past interceptions) and revoke their tokens."""
        now = datetime.now(UTC)
        async with self._db.writer.begin() as conn:
            user_id = await _resolve_user(conn, username_or_id)
            await conn.execute(sa.update(users).where(users.c.id == user_id).values(deleted_at=now))
            await conn.execute(
                sa.update(api_tokens)
                .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )

    async def list_users(self) -> list[dict[str, Any]]:
        """Live users, oldest first, JSON-ready; tokens show id, name, hint and times, never hashes."""
        async with self._db.reader.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(users).where(users.c.deleted_at.is_(None)).order_by(users.c.created_at, users.c.id)
                )
            ).all()
            return await _with_tokens(conn, rows)

    async def get_user(self, username_or_id: str) -> dict[str, Any] | None:
        """A live user by id or username (id wins), shaped like a `list_users` item; None if not found."""
        async with self._db.reader.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(users).where(
                        sa.or_(users.c.id == username_or_id, users.c.username == username_or_id),
                        users.c.deleted_at.is_(None),
                    )
                )
            ).all()
            found = await _with_tokens(conn, sorted(rows, key=lambda r: r.id != username_or_id)[:1])
        return found[0] if found else None

    async def authenticate(self, token: str) -> Initiator | None:
        """The user behind an unrevoked token of a live user, or None."""
        found = await self.authenticate_with_role(token)
        return found[0] if found is not None else None

    async def authenticate_with_role(self, token: str) -> tuple[Initiator, str] | None:
        """Like `authenticate`, plus the user's role (`member` or `admin`): proxy tokens double as API tokens."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > _TOKEN_MAX_LEN:
            return None
        query = (
            sa.select(api_tokens.c.id, users.c.id.label("user_id"), users.c.username, users.c.role)
            .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
            .where(
                api_tokens.c.token_hash == hash_token(token),
                api_tokens.c.revoked_at.is_(None),
                users.c.deleted_at.is_(None),
            )
        )
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Initiator(user_id=row.user_id, username=row.username, token_id=row.id), row.role


async def _resolve_user(conn: AsyncConnection, username_or_id: str) -> str:
    rows = (
        await conn.execute(
            sa.select(users.c.id).where(
                sa.or_(users.c.id == username_or_id, users.c.username == username_or_id),
                users.c.deleted_at.is_(None),
            )
        )
    ).all()
    if not rows:
        raise UserNotFoundError(f"user {username_or_id!r} not found")
    ids = [r.id for r in rows]
    return username_or_id if username_or_id in ids else ids[0]


async def _insert_token(conn: AsyncConnection, user_id: str, name: str | None, now: datetime) -> tuple[str, str]:
    token_id = new_id()
    plaintext = new_token()
    await conn.execute(
        sa.insert(api_tokens).values(
            id=token_id,
            user_id=user_id,
            token_hash=hash_token(plaintext),
            hint=token_hint(plaintext),
            name=name,
            created_at=now,
        )
    )
    return token_id, plaintext


async def _with_tokens(conn: AsyncConnection, user_rows: Sequence[sa.Row[Any]]) -> list[dict[str, Any]]:
    if not user_rows:
        return []
    t = api_tokens.c
    token_rows = (
        await conn.execute(
            sa.select(t.id, t.user_id, t.name, t.hint, t.created_at, t.revoked_at)
            .where(t.user_id.in_([u.id for u in user_rows]))
            .order_by(t.created_at, t.id)
        )
    ).all()
    by_user: dict[str, list[dict[str, Any]]] = {u.id: [] for u in user_rows}
    for tok in token_rows:
        by_user[tok.user_id].append(
            {
                "id": tok.id,
                "name": tok.name,
                "hint": tok.hint,
                "created_at": rfc3339(tok.created_at),
                "revoked_at": rfc3339(tok.revoked_at),
            }
        )
    return [
        {
            "id": u.id,
            "username": u.username,
            "role": u.role,
            "created_at": rfc3339(u.created_at),
            "tokens": by_user[u.id],
        }
        for u in user_rows
    ]
