"""The daily spend summary (schema v7), kept by triggers like the other summaries (summaries.py), so the spend
report answers from a small table instead of summing a million token-usage rows per request.

`aigw_spend_days`: the token-usage rows of *ended* interceptions summed per UTC day of the interception's start
and (initiator, provider, provider_name, model, client, effective group, api_equivalent): how many rows, how many
of them unpriced, the four token figures, the price components and the cost (micro-dollars; an unpriced row adds
its tokens and counts in `unpriced_records`, never a cost). `effective_group_id` is '' until groups exist.

Every way a row can change keeps it exact, whoever writes: a token row inserted, deleted or repriced (its price
or its tokens updated); an interception ended, inserted already ended, deleted (its remaining rows taken out
first: a cascade would otherwise delete them after the interception is gone), or moved to another day, user,
provider, model or client. A key whose rows are all gone is deleted, so retention keeps the table small.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.dialect import create_triggers
from aigw_proxy.storage.schema.tables import PRICE_COLUMNS

spend_metadata = sa.MetaData()

KEY_COLUMNS = ("day", "initiator_id", "provider", "provider_name", "model", "client", "effective_group_id",
               "api_equivalent")
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
SUM_COLUMNS = ("records", "unpriced_records", *TOKEN_COLUMNS, *PRICE_COLUMNS)

spend_days = sa.Table(
    "aigw_spend_days",
    spend_metadata,
    sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD (UTC) of the interception's started_at
    sa.Column("initiator_id", sa.String(36), nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("provider_name", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("client", sa.Text, nullable=False),  # COALESCE(client, 'Unknown')
    sa.Column("effective_group_id", sa.String(36), nullable=False),  # COALESCE(effective_group_id, '')
    sa.Column("api_equivalent", sa.Boolean, nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0")) for name in SUM_COLUMNS),
    # Clustered by user, then day (SQLite: WITHOUT ROWID, one b-tree): a user's days are one range (members,
    # budgets), and everyone's grouped by user is one ordered pass without a sort.
    sa.PrimaryKeyConstraint("initiator_id", "day", "provider", "provider_name", "model", "client",
                            "effective_group_id", "api_equivalent", name="pk_aigw_spend_days"),
    sqlite_with_rowid=False,
)
# Everyone's days in a window.
sa.Index("idx_aigw_spend_days_day", spend_days.c.day)

# The interception's UTC day as stored (SQLite keeps fixed-width UTC text), as summaries.py counts days.
DAY_OF = "substr({i}.started_at, 1, 10)"


def _key(i: str, t: str) -> str:
    """The summary key of token row `t` (a table alias, NEW or OLD) of interception `i`."""
    return ", ".join((DAY_OF.format(i=i), f"{i}.initiator_id", f"{i}.provider", f"{i}.provider_name", f"{i}.model",
                      f"COALESCE({i}.client, 'Unknown')", f"COALESCE({t}.effective_group_id, '')",
                      f"{t}.api_equivalent"))


def _one_row(t: str, sign: str) -> str:
    """One token row's contribution (`sign` '' adds it, '-' takes it out)."""
    values = ("1", f"CASE WHEN {t}.cost_micros IS NULL THEN 1 ELSE 0 END", *(f"{t}.{c}" for c in TOKEN_COLUMNS),
              *(f"COALESCE({t}.{c}, 0)" for c in PRICE_COLUMNS))
    return ", ".join(f"{sign}({v})" for v in values)


def _sums(sign: str) -> str:
    """The contribution of the token rows `t` grouped together."""
    values = ("count(*)", "sum(CASE WHEN t.cost_micros IS NULL THEN 1 ELSE 0 END)",
              *(f"sum(t.{c})" for c in TOKEN_COLUMNS), *(f"COALESCE(sum(t.{c}), 0)" for c in PRICE_COLUMNS))
    return ", ".join(f"{sign}({v})" for v in values)


_KEY_LIST = ", ".join(KEY_COLUMNS)
_INSERT = f"INSERT INTO aigw_spend_days ({_KEY_LIST}, {', '.join(SUM_COLUMNS)})"
_UPSERT = (f"ON CONFLICT ({_KEY_LIST}) DO UPDATE SET "
           + ", ".join(f"{c} = aigw_spend_days.{c} + excluded.{c}" for c in SUM_COLUMNS))


def _row_change(token: str, sign: str) -> str:
    """Add (`sign` '') or take out ('-') one token row (`token` = NEW or OLD) under its interception's key.
    Only a row whose interception is ended counts (the report lists ended interceptions)."""
    return (f"{_INSERT} SELECT {_key('i', token)}, {_one_row(token, sign)} FROM aibridge_interceptions i "
            f"WHERE i.id = {token}.interception_id AND i.ended_at IS NOT NULL {_UPSERT};")


def _interception_change(row: str, sign: str) -> str:
    """Add or take out every token row of one interception (`row` = NEW or OLD), under `row`'s key."""
    return (f"{_INSERT} SELECT {_key(row, 't')}, {_sums(sign)} FROM aibridge_token_usages t "
            f"WHERE t.interception_id = {row}.id GROUP BY t.effective_group_id, t.api_equivalent {_UPSERT};")


def _tidy(day_and_user: str) -> str:
    """Delete the keys left with no rows, among one (day, initiator)'s (the primary key's prefix)."""
    return f"DELETE FROM aigw_spend_days WHERE records <= 0 AND (day, initiator_id) IN ({day_and_user});"


def _tidy_interception(row: str) -> str:
    return _tidy(f"SELECT {DAY_OF.format(i=row)}, {row}.initiator_id")


def _tidy_after_row(token: str) -> str:
    return _tidy(f"SELECT {DAY_OF.format(i='i')}, i.initiator_id FROM aibridge_interceptions i "
                 f"WHERE i.id = {token}.interception_id")


_WATCHED_TOKEN_COLUMNS = ", ".join(("interception_id", *TOKEN_COLUMNS, *PRICE_COLUMNS, "effective_group_id",
                                    "api_equivalent"))

TRIGGERS: dict[str, str] = {
    "aigw_spend_on_token_usage_inserted": f"""
        AFTER INSERT ON aibridge_token_usages
        BEGIN {_row_change("NEW", "")} END""",
    "aigw_spend_on_token_usage_deleted": f"""
        AFTER DELETE ON aibridge_token_usages
        BEGIN {_row_change("OLD", "-")} {_tidy_after_row("OLD")} END""",
    # `aigw-proxy reprice`, the budgets' effective group, any correction of a stored row.
    "aigw_spend_on_token_usage_updated": f"""
        AFTER UPDATE OF {_WATCHED_TOKEN_COLUMNS} ON aibridge_token_usages
        BEGIN {_row_change("OLD", "-")} {_row_change("NEW", "")} {_tidy_after_row("OLD")} END""",
    # Token rows written before their interception ended (bulk loads; the writer ends it first).
    "aigw_spend_on_interception_ended": f"""
        AFTER UPDATE OF ended_at ON aibridge_interceptions
        WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_interception_change("NEW", "")} END""",
    "aigw_spend_on_ended_interception_inserted": f"""
        AFTER INSERT ON aibridge_interceptions WHEN NEW.ended_at IS NOT NULL
        BEGIN {_interception_change("NEW", "")} END""",
    # BEFORE: its token rows are still there to take out (retention deletes them first: then nothing is left).
    "aigw_spend_on_ended_interception_deleted": f"""
        BEFORE DELETE ON aibridge_interceptions WHEN OLD.ended_at IS NOT NULL
        BEGIN {_interception_change("OLD", "-")} {_tidy_interception("OLD")} END""",
    "aigw_spend_on_ended_interception_moved": f"""
        AFTER UPDATE OF started_at, initiator_id, provider, provider_name, model, client ON aibridge_interceptions
        WHEN OLD.ended_at IS NOT NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_interception_change("OLD", "-")} {_interception_change("NEW", "")} {_tidy_interception("OLD")} END""",
}


def rebuild(conn: sa.Connection) -> None:
    """Recompute the spend summary from the token-usage rows (migration back-fill; bulk loads)."""
    conn.exec_driver_sql("DELETE FROM aigw_spend_days")
    key = _key("i", "t")
    conn.exec_driver_sql(
        f"{_INSERT} SELECT {key}, {_sums('')} "
        "FROM aibridge_token_usages t JOIN aibridge_interceptions i ON i.id = t.interception_id "
        f"WHERE i.ended_at IS NOT NULL GROUP BY {key}"
    )


def upgrade_v7(conn: sa.Connection) -> None:
    """Schema v7: the price columns on the token-usage rows (left NULL on existing rows: unpriced until
    `aigw-proxy reprice` prices them), the daily spend summary, its triggers and back-fill (tokens and counts)."""
    columns = {c["name"]: c for c in sa.inspect(conn).get_columns("aibridge_token_usages")}
    for name, ddl_type in (*((c, "BIGINT") for c in PRICE_COLUMNS), ("effective_group_id", "VARCHAR(36)"),
                           ("price_source", "VARCHAR(32)"), ("price_version", "TEXT"), ("price_ref", "TEXT")):
        if name not in columns:
            conn.exec_driver_sql(f"ALTER TABLE aibridge_token_usages ADD COLUMN {name} {ddl_type}")
    if "api_equivalent" not in columns:
        conn.exec_driver_sql("ALTER TABLE aibridge_token_usages ADD COLUMN api_equivalent BOOLEAN NOT NULL "
                             "DEFAULT false")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS idx_aibridge_token_usages_null_cost ON aibridge_token_usages "
                         "(interception_id) WHERE cost_micros IS NULL")
    spend_metadata.create_all(conn, checkfirst=False)
    create_triggers(conn, TRIGGERS)
    rebuild(conn)


