"""The daily spend summaries (schema v7; the fleet's since v9), kept by triggers like the other summaries
(summaries.py; PostgreSQL's are in dialects/postgresql_triggers.py), so the spend report answers from small tables
instead of summing a million token-usage rows per request.

The token-usage rows of *ended* interceptions are summed per UTC day of the interception's start and (provider,
provider_name, model, client, effective group, api_equivalent): how many rows, how many of them unpriced, the four
token figures, the price components and the cost (micro-dollars; an unpriced row adds its tokens and counts in
`unpriced_records`, never a cost). `effective_group_id` is '' until groups exist. Three tables:
* `aigw_spend_days`: per user as well (`initiator_id`): a user's spend, members' own reports, grouping by user;
* `aigw_spend_fleet_days`: everyone's together: the reports that neither group nor filter by user read a few
  thousand rows for 90 days where the per-user table has tens of thousands;
* `aigw_spend_user_months`: per user and UTC month, without the call's attributes: the leaderboard over months.

Every way a row can change keeps both exact, whoever writes: a token row inserted, deleted or repriced (its price
or its tokens updated); an interception ended, inserted already ended, deleted (its remaining rows taken out
first: a cascade would otherwise delete them after the interception is gone), or moved to another day, user,
provider, model or client. A key whose rows are all gone is deleted, so retention keeps the tables small.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.schema.tables import PRICE_COLUMNS

spend_metadata = sa.MetaData()

TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
SUM_COLUMNS = ("records", "unpriced_records", *TOKEN_COLUMNS, *PRICE_COLUMNS)
_ATTRIBUTES = ("provider", "provider_name", "model", "client", "effective_group_id", "api_equivalent")


def _summary_table(name: str, *, per_user: bool) -> sa.Table:
    who = ("initiator_id",) if per_user else ()
    return sa.Table(
        name,
        spend_metadata,
        sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD (UTC) of the interception's started_at
        *(sa.Column("initiator_id", sa.String(36), nullable=False) for _ in who),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("provider_name", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("client", sa.Text, nullable=False),  # COALESCE(client, 'Unknown')
        sa.Column("effective_group_id", sa.String(36), nullable=False),  # COALESCE(effective_group_id, '')
        sa.Column("api_equivalent", sa.Boolean, nullable=False),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default=sa.text("0")) for c in SUM_COLUMNS),
        # Clustered (SQLite: WITHOUT ROWID, one b-tree) by user then day: a user's days are one range (members,
        # budgets) and everyone grouped by user is one ordered pass; the fleet's by day: a window is one range.
        sa.PrimaryKeyConstraint(*who, "day", *_ATTRIBUTES, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


spend_days = _summary_table("aigw_spend_days", per_user=True)
fleet_days = _summary_table("aigw_spend_fleet_days", per_user=False)
sa.Index("idx_aigw_spend_days_day", spend_days.c.day)  # everyone's days in a window, grouped by user

# Each user's months, without the call's attributes: the leaderboard (by user, no provider/model/client filter)
# reads ~5 rows per user and month instead of one per day and model; a budget's month is one row per user.
user_months = sa.Table(
    "aigw_spend_user_months",
    spend_metadata,
    sa.Column("initiator_id", sa.String(36), nullable=False),
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM (UTC) of the interception's started_at
    sa.Column("effective_group_id", sa.String(36), nullable=False),
    sa.Column("api_equivalent", sa.Boolean, nullable=False),
    *(sa.Column(c, sa.BigInteger, nullable=False, server_default=sa.text("0")) for c in SUM_COLUMNS),
    sa.PrimaryKeyConstraint("initiator_id", "month", "effective_group_id", "api_equivalent",
                            name="pk_aigw_spend_user_months"),
    sqlite_with_rowid=False,
)

# The interception's UTC day and month as stored (SQLite keeps fixed-width UTC text), as summaries.py counts days.
DAY_OF = "substr({i}.started_at, 1, 10)"
MONTH_OF = "substr({i}.started_at, 1, 7)"


def key_sql(table: sa.Table, i: str, t: str, *, day_of: str = DAY_OF, month_of: str = MONTH_OF) -> str:
    """`table`'s key of token row `t` (a table alias, NEW or OLD) of interception `i` (`day_of`, `month_of`: the
    dialect's UTC day and month of `{i}.started_at`)."""
    values = {"day": day_of.format(i=i), "month": month_of.format(i=i), "initiator_id": f"{i}.initiator_id",
              "provider": f"{i}.provider", "provider_name": f"{i}.provider_name", "model": f"{i}.model",
              "client": f"COALESCE({i}.client, 'Unknown')",
              "effective_group_id": f"COALESCE({t}.effective_group_id, '')", "api_equivalent": f"{t}.api_equivalent"}
    return ", ".join(values[c] for c in key_columns(table))


def key_columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


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


def _insert(table: sa.Table) -> str:
    return f"INSERT INTO {table.name} ({', '.join(key_columns(table))}, {', '.join(SUM_COLUMNS)})"


def _upsert(table: sa.Table) -> str:
    return (f"ON CONFLICT ({', '.join(key_columns(table))}) DO UPDATE SET "
            + ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in SUM_COLUMNS))


TABLES = (spend_days, fleet_days, user_months)
V7_TABLES = (spend_days,)


def _row_change(token: str, sign: str, tables: tuple[sa.Table, ...] = TABLES) -> str:
    """Add (`sign` '') or take out ('-') one token row (`token` = NEW or OLD) under its interception's keys.
    Only a row whose interception is ended counts (the report lists ended interceptions)."""
    return " ".join(
        f"{_insert(t)} SELECT {key_sql(t, 'i', token)}, {_one_row(token, sign)} FROM aibridge_interceptions i "
        f"WHERE i.id = {token}.interception_id AND i.ended_at IS NOT NULL {_upsert(t)};"
        for t in tables)


def _interception_change(row: str, sign: str, tables: tuple[sa.Table, ...] = TABLES) -> str:
    """Add or take out every token row of one interception (`row` = NEW or OLD), under `row`'s keys."""
    return " ".join(
        f"{_insert(t)} SELECT {key_sql(t, row, 't')}, {_sums(sign)} FROM aibridge_token_usages t "
        f"WHERE t.interception_id = {row}.id GROUP BY t.effective_group_id, t.api_equivalent {_upsert(t)};"
        for t in tables)


def _tidy(i: str, where: str, tables: tuple[sa.Table, ...]) -> str:
    """Delete the keys left with no rows, among those of one interception's (user, day), day and (user, month)
    (key prefixes): `i` names the interception (NEW, OLD, or the alias of the lookup `where` adds)."""
    day, month = DAY_OF.format(i=i), MONTH_OF.format(i=i)
    out = (f"DELETE FROM {spend_days.name} WHERE records <= 0 AND (initiator_id, day) IN "
           f"(SELECT {i}.initiator_id, {day}{where});")
    if fleet_days in tables:
        out += f" DELETE FROM {fleet_days.name} WHERE records <= 0 AND day IN (SELECT {day}{where});"
    if user_months in tables:
        out += (f" DELETE FROM {user_months.name} WHERE records <= 0 AND (initiator_id, month) IN "
                f"(SELECT {i}.initiator_id, {month}{where});")
    return out


def _tidy_interception(row: str, tables: tuple[sa.Table, ...] = TABLES) -> str:
    return _tidy(row, "", tables)


def _tidy_after_row(token: str, tables: tuple[sa.Table, ...] = TABLES) -> str:
    return _tidy("i", f" FROM aibridge_interceptions i WHERE i.id = {token}.interception_id", tables)


_WATCHED_TOKEN_COLUMNS = ", ".join(("interception_id", *TOKEN_COLUMNS, *PRICE_COLUMNS, "effective_group_id",
                                    "api_equivalent"))


def _triggers(tables: tuple[sa.Table, ...]) -> dict[str, str]:
    return {
        "aigw_spend_on_token_usage_inserted": f"""
            AFTER INSERT ON aibridge_token_usages
            BEGIN {_row_change("NEW", "", tables)} END""",
        "aigw_spend_on_token_usage_deleted": f"""
            AFTER DELETE ON aibridge_token_usages
            BEGIN {_row_change("OLD", "-", tables)} {_tidy_after_row("OLD", tables)} END""",
        # `aigw-proxy reprice`, the budgets' effective group, any correction of a stored row.
        "aigw_spend_on_token_usage_updated": f"""
            AFTER UPDATE OF {_WATCHED_TOKEN_COLUMNS} ON aibridge_token_usages
            BEGIN {_row_change("OLD", "-", tables)} {_row_change("NEW", "", tables)}
                  {_tidy_after_row("OLD", tables)} END""",
        # Token rows written before their interception ended (bulk loads; the writer ends it first).
        "aigw_spend_on_interception_ended": f"""
            AFTER UPDATE OF ended_at ON aibridge_interceptions
            WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
            BEGIN {_interception_change("NEW", "", tables)} END""",
        "aigw_spend_on_ended_interception_inserted": f"""
            AFTER INSERT ON aibridge_interceptions WHEN NEW.ended_at IS NOT NULL
            BEGIN {_interception_change("NEW", "", tables)} END""",
        # BEFORE: its token rows are still there to take out (retention deletes them first: then nothing is left).
        "aigw_spend_on_ended_interception_deleted": f"""
            BEFORE DELETE ON aibridge_interceptions WHEN OLD.ended_at IS NOT NULL
            BEGIN {_interception_change("OLD", "-", tables)} {_tidy_interception("OLD", tables)} END""",
        "aigw_spend_on_ended_interception_moved": f"""
            AFTER UPDATE OF started_at, initiator_id, provider, provider_name, model, client
            ON aibridge_interceptions
            WHEN OLD.ended_at IS NOT NULL AND NEW.ended_at IS NOT NULL
            BEGIN {_interception_change("OLD", "-", tables)} {_interception_change("NEW", "", tables)}
                  {_tidy_interception("OLD", tables)} END""",
    }


TRIGGERS = _triggers(TABLES)  # since v9
V7_TRIGGERS = _triggers(V7_TABLES)  # frozen: what v7 installed


def rebuild(conn: sa.Connection, tables: tuple[sa.Table, ...] = TABLES) -> None:
    """Recompute the spend summaries from the token-usage rows (migration back-fill; bulk loads)."""
    backend = backend_of(conn)
    day_of = backend.day_of("{i}.started_at")
    for table in tables:
        conn.exec_driver_sql(f"DELETE FROM {table.name}")
        key = key_sql(table, "i", "t", day_of=day_of, month_of=f"substr({day_of}, 1, 7)")
        conn.exec_driver_sql(
            f"{_insert(table)} SELECT {key}, {_sums('')} "
            f"FROM aibridge_token_usages t JOIN aibridge_interceptions i ON {backend.child_join('t', 'i')} "
            f"WHERE i.ended_at IS NOT NULL GROUP BY {key}"
        )


def upgrade_v7(conn: sa.Connection) -> None:
    """Schema v7: the price columns on the token-usage rows (left NULL on existing rows: unpriced until
    `aigw-proxy reprice` prices them), the per-user daily spend summary, its triggers and back-fill (tokens and
    counts)."""
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
    backend = backend_of(conn)
    backend.create_tables(conn, [spend_days])
    backend.install_triggers(conn, "spend_v7")
    rebuild(conn, V7_TABLES)


def upgrade_v9(conn: sa.Connection) -> None:
    """Schema v9: the fleet's daily spend summary and each user's months beside the per-user days; the triggers
    keep all three. Safe to apply again (a database whose later steps are re-applied)."""
    backend = backend_of(conn)
    backend.drop_triggers(conn, "spend_v7")  # the same names as "spend"
    backend.create_tables(conn, [fleet_days, user_months], checkfirst=True)
    backend.install_triggers(conn, "spend")
    rebuild(conn, (fleet_days, user_months))


