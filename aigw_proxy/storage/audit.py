"""The audit log: who did what to which user or token, and when (the web console's People actions).

A table of its own (`aigw_audit_log`, schema migration "audit log"), plain SQLAlchemy Core working on SQLite and
PostgreSQL. Rows are never updated; retention does not purge them (they are about people, not traffic). Every
row written is also logged as a structured record on the `aigw_proxy.audit` logger (who, what, when, target).
Tokens' plaintexts never reach it: only token ids and hints.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.errors import StorageError, UserNotFoundError
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import ROLES, JSONType, UTCDateTime, api_tokens, users
from aigw_proxy.storage.timefmt import rfc3339

log = logging.getLogger("aigw_proxy.audit")

audit_metadata = sa.MetaData()
audit_log = sa.Table(
    "aigw_audit_log",
    audit_metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor_id", sa.String(36), nullable=True),  # NULL: the CLI or the system
    sa.Column("actor", sa.String(64), nullable=False),  # the actor's username at the time
    sa.Column("action", sa.String(32), nullable=False),  # user.create, token.issue, token.revoke, user.role
    sa.Column("target_user_id", sa.String(36), nullable=True),
    sa.Column("target", sa.String(64), nullable=False, server_default=""),  # the target's username at the time
    sa.Column("detail", JSONType, nullable=True),  # e.g. {"token_id": ..., "hint": ...}, {"from": ..., "to": ...}
    sa.Column("source", sa.String(64), nullable=False, server_default=""),  # e.g. the client's address
)
sa.Index("idx_aigw_audit_log_at", audit_log.c.at.desc(), audit_log.c.id.desc())

ACTIONS = ("user.create", "token.issue", "token.revoke", "user.role", "signin", "signin.failed")


# The console's failure rate counts failed interceptions in a window: a partial index holds only those (the writer
# adds an entry per failed interception, nothing for the rest). Queries must say `status = 'failed'` literally.
# `status` leads so the planner prefers it to the started_at index (measured on 1M rows: 1 s -> ~20 ms for 30 days).
FAILED_INDEX = ("CREATE INDEX IF NOT EXISTS idx_aibridge_interceptions_failed_started ON aibridge_interceptions "
                "(status, started_at, ended_at) WHERE status = 'failed'")


def upgrade_audit_log(conn: sa.Connection) -> None:
    """The migration step: the audit-log table and its index, and the failed-interceptions index."""
    backend_of(conn).create_tables(conn, audit_metadata.sorted_tables, checkfirst=True)
    conn.exec_driver_sql(FAILED_INDEX)


async def record_action(db: Database, *, actor_id: str | None, actor: str, action: str,
                        target_user_id: str | None = None, target: str = "", detail: dict[str, Any] | None = None,
                        source: str = "") -> dict[str, Any]:
    """Write one audit row and its structured log record; return the row JSON-ready."""
    at = datetime.now(UTC)
    row: dict[str, Any] = {"id": new_id(), "at": at, "actor_id": actor_id, "actor": actor, "action": action,
           "target_user_id": target_user_id, "target": target, "detail": detail or {}, "source": source}
    async with db.writer.begin() as conn:
        await conn.execute(sa.insert(audit_log).values(**row))
    out = {**row, "at": rfc3339(at)}
    log.info("audit %s by %s on %s", action, actor, target or "-",
             extra={"event": "audit", "audit_action": action, "actor": actor, "actor_id": actor_id,
                    "target": target, "target_user_id": target_user_id, "detail": detail or {}, "at": out["at"],
                    "source": source})
    return out


async def list_actions(db: Database, *, limit: int = 100, before: tuple[str, str] | None = None
                       ) -> list[dict[str, Any]]:
    """Audit rows newest first; `before` = (at as RFC 3339, id) of the last row of the previous page."""
    c = audit_log.c
    query = sa.select(audit_log).order_by(c.at.desc(), c.id.desc()).limit(limit)
    if before is not None:
        at = datetime.fromisoformat(before[0].replace("Z", "+00:00"))
        query = query.where(sa.or_(c.at < at, sa.and_(c.at == at, c.id < before[1])))
    async with db.reader.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [{**dict(r), "at": rfc3339(r["at"]), "detail": r["detail"] or {}} for r in rows]


async def set_role(db: Database, user_id: str, role: str) -> str:
    """Change a live user's role; return the previous one."""
    if role not in ROLES:
        raise StorageError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    async with db.writer.begin() as conn:
        old = (await conn.execute(sa.select(users.c.role).where(users.c.id == user_id,
                                                                users.c.deleted_at.is_(None)))).scalar()
        if old is None:
            raise UserNotFoundError(f"user {user_id!r} not found")
        await conn.execute(sa.update(users).where(users.c.id == user_id).values(role=role))
    return str(old)


async def live_token(db: Database, token_id: str) -> tuple[str, str, str] | None:
    """(user id, username, role) behind an unrevoked token of a live user, by the token's id (a console session
    holds the id, never the token), or None."""
    query = (sa.select(users.c.id, users.c.username, users.c.role)
             .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
             .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None), users.c.deleted_at.is_(None)))
    async with db.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else (row.id, row.username, row.role)


async def token_owner(db: Database, token_id: str) -> tuple[str, str, str | None] | None:
    """(user id, username, hint-with-revoked) of a token, for the audit record of a revocation."""
    query = (sa.select(users.c.id, users.c.username, api_tokens.c.hint)
             .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
             .where(api_tokens.c.id == token_id))
    async with db.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else (row.id, row.username, row.hint)
