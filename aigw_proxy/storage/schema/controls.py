"""Spend controls' tables (schema v8): groups of users, the budgets set at run time (CLI, REST API) and a change
counter.

`aigw_groups` and `aigw_group_members`: users belong to groups (a user may be in several). `aigw_budgets`: one
row per scope, the scope by id (`default`, `user:<user id>`, `group:<group id>`) so a rename never loses it;
amounts in micro-dollars, NULL = no limit in that window. Budgets from the config file are not stored: the
daemon merges them with these rows, a row replacing the file's budget of the same scope. The interceptions may
record the two refusals the proxy makes itself (`budget_exceeded`, `model_denied`) since v5.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.schema.tables import UTCDateTime, users

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


def upgrade_v8(conn: sa.Connection) -> None:
    """Schema v8: groups, group members, budgets and the change counter (the error types `budget_exceeded` and
    `model_denied` are allowed since v5)."""
    backend_of(conn).create_tables(conn, controls_metadata.sorted_tables, checkfirst=True)
    if conn.execute(sa.select(controls_version.c.id)).first() is None:
        conn.execute(sa.insert(controls_version).values(id=1, version=0))
