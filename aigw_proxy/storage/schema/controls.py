"""Spend controls' tables (schema v6): groups of users and the budgets set at run time (CLI, REST API), and a change
counter.

`aigw_groups` and `aigw_group_members`: users belong to groups (a user may be in several). `aigw_budgets`: one
row per scope, the scope by id (`default`, `user:<user id>`, `group:<group id>`) so a rename never loses it;
amounts in micro-dollars, NULL = no limit in that window. Budgets from the config file are not stored: the
daemon merges them with these rows, a row replacing the file's budget of the same scope.

v6 also widens the interceptions' `error_type` check for the two refusals the proxy records itself
(`budget_exceeded`, `model_denied`). On SQLite a CHECK constraint cannot be altered; the documented way to
loosen one without rewriting the table is to edit the table's stored definition in one transaction
(https://www.sqlite.org/lang_altertable.html#otheralter): the old values stay valid, so no row is touched.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from aigw_proxy.storage.errors import StorageError
from aigw_proxy.storage.schema.tables import ERROR_TYPES, ERROR_TYPES_V1, UTCDateTime, users

log = logging.getLogger("aigw_proxy.storage")

controls_metadata = sa.MetaData()
GROUP_NAME_MAX = 64

groups = sa.Table(
    "aigw_groups",
    controls_metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(GROUP_NAME_MAX), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

group_members = sa.Table(
    "aigw_group_members",
    controls_metadata,
    sa.Column("group_id", sa.String(36), sa.ForeignKey("aigw_groups.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey(users.c.id, ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("idx_aigw_group_members_user_id", "user_id"),
)

budgets = sa.Table(
    "aigw_budgets",
    controls_metadata,
    sa.Column("scope", sa.String(48), primary_key=True),  # default | user:<id> | group:<id>
    sa.Column("daily_micros", sa.BigInteger, nullable=True),
    sa.Column("monthly_micros", sa.BigInteger, nullable=True),
    sa.Column("soft_fraction", sa.Float, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("daily_micros IS NOT NULL OR monthly_micros IS NOT NULL", name="ck_aigw_budgets_limit"),
)


# One row: a counter every change to the tables above adds one to, in the same transaction (storage/controls.py),
# so a proxy notices a change with one tiny read a second instead of re-reading them all.
controls_version = sa.Table(
    "aigw_controls_version",
    controls_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)


def _error_type_check(values: tuple[str, ...]) -> str:
    return f"error_type IS NULL OR error_type IN ({', '.join(repr(v) for v in values)})"


def _widen_error_types(conn: sa.Connection) -> None:
    old, new = _error_type_check(ERROR_TYPES_V1), _error_type_check(ERROR_TYPES)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE aibridge_interceptions DROP CONSTRAINT IF EXISTS ck_interceptions_error_type")
        conn.exec_driver_sql(f"ALTER TABLE aibridge_interceptions ADD CONSTRAINT ck_interceptions_error_type "
                             f"CHECK ({new})")
        return
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'aibridge_interceptions'").scalar()
    if sql is None or new in sql:
        return  # a database made by this version's v1 already allows them
    if old not in sql:
        raise StorageError("schema v8: the interceptions table's error_type check is not the one v1 made")
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        conn.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'aibridge_interceptions'",
            (sql.replace(old, new),),
        )
        conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
    if problems != ["ok"]:
        raise StorageError(f"schema v8: integrity check failed after widening error_type: {problems[:3]}")


def upgrade_v8(conn: sa.Connection) -> None:
    """Schema v8: groups, group members and budgets; interceptions may record `budget_exceeded` and
    `model_denied`."""
    controls_metadata.create_all(conn, checkfirst=True)
    if conn.execute(sa.select(controls_version.c.id)).first() is None:
        conn.execute(sa.insert(controls_version).values(id=1, version=0))
    _widen_error_types(conn)
