"""Summary tables the database keeps up to date itself (schema v2), so the REST API answers from small tables
instead of grouping a million interceptions per request.

* `aigw_sessions`: one row per (session_id, initiator_id) over *ended* interceptions: first start, last end, last
  prompt time, `last_active_at` (= last prompt time, else first start), interception and thread counts and token
  sums. The sessions list pages through it by `(last_active_at DESC, session_id DESC)`.
* `aigw_interception_days`: ended interceptions counted per UTC day and (provider, provider_name, model, client).
  Exact `count`s and the model/client lists come from it.

Triggers maintain both, inside the writer's own transactions: nothing in the writer or the retention code has
to remember them, and a row is never counted twice or missed whoever writes it. Rules the triggers rely on (the
writer keeps them): an interception's session, initiator, start and thread root do not change once it ended.
The SQLite triggers are below; PostgreSQL's, the same rules in PL/pgSQL, are in dialects/postgresql_triggers.py.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.schema.tables import UTCDateTime

summary_metadata = sa.MetaData()

sessions = sa.Table(
    "aigw_sessions",
    summary_metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("initiator_id", sa.String(36), primary_key=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=False),
    sa.Column("last_prompt_at", UTCDateTime, nullable=True),
    sa.Column("last_active_at", UTCDateTime, sa.Computed("COALESCE(last_prompt_at, started_at)", persisted=True)),
    sa.Column("interceptions", sa.Integer, nullable=False),
    sa.Column("threads", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cache_read_input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("cache_write_input_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)
_s = sessions.c
sa.Index("idx_aigw_sessions_last_active", _s.last_active_at.desc(), _s.session_id.desc())
sa.Index("idx_aigw_sessions_initiator_last_active", _s.initiator_id, _s.last_active_at.desc(), _s.session_id.desc())

interception_days = sa.Table(
    "aigw_interception_days",
    summary_metadata,
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD (UTC) of started_at
    sa.Column("provider", sa.Text, primary_key=True),
    sa.Column("provider_name", sa.Text, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("client", sa.Text, primary_key=True),  # COALESCE(client, 'Unknown')
    sa.Column("interceptions", sa.Integer, nullable=False),
)

# Interception indexes added in v2: keyset pages per initiator without a sort, and the day-edge counts.
V2_INDEXES = (
    "CREATE INDEX idx_aibridge_interceptions_initiator_started ON aibridge_interceptions "
    "(initiator_id, started_at DESC, id DESC) WHERE ended_at IS NOT NULL",
    "CREATE INDEX idx_aibridge_interceptions_ended_started ON aibridge_interceptions "
    "(started_at DESC, id DESC, provider, provider_name, model, client) WHERE ended_at IS NOT NULL",
)

_DAY_KEY = "substr({r}.started_at, 1, 10), {r}.provider, {r}.provider_name, {r}.model, COALESCE({r}.client, 'Unknown')"


def _count_day(row: str, delta: int) -> str:
    return (
        "INSERT INTO aigw_interception_days (day, provider, provider_name, model, client, interceptions) "
        f"VALUES ({_DAY_KEY.format(r=row)}, {delta}) "
        "ON CONFLICT (day, provider, provider_name, model, client) "
        f"DO UPDATE SET interceptions = interceptions + ({delta});"
    )


_PROMPT_MAX = "(SELECT max(p.created_at) FROM aibridge_user_prompts p WHERE p.interception_id = NEW.id)"


def _token_sum(column: str) -> str:
    return f"(SELECT COALESCE(sum(t.{column}), 0) FROM aibridge_token_usages t WHERE t.interception_id = NEW.id)"


_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")

# One ended interception joins its session (NEW = the interception row).
_ADD_TO_SESSION = f"""
INSERT INTO aigw_sessions (session_id, initiator_id, started_at, ended_at, last_prompt_at, interceptions, threads,
                           {", ".join(_TOKENS)})
VALUES (NEW.session_id, NEW.initiator_id, NEW.started_at, NEW.ended_at, {_PROMPT_MAX}, 1,
        NEW.thread_root_id IS NULL, {", ".join(_token_sum(c) for c in _TOKENS)})
ON CONFLICT (session_id, initiator_id) DO UPDATE SET
    started_at = min(started_at, excluded.started_at),
    ended_at = max(ended_at, excluded.ended_at),
    last_prompt_at = CASE WHEN last_prompt_at IS NULL THEN excluded.last_prompt_at
                          WHEN excluded.last_prompt_at IS NULL THEN last_prompt_at
                          ELSE max(last_prompt_at, excluded.last_prompt_at) END,
    interceptions = interceptions + 1,
    threads = threads + excluded.threads,
    {", ".join(f"{c} = {c} + excluded.{c}" for c in _TOKENS)};
"""

# Rebuild one session from what is left of it (OLD = a deleted interception row); no row if nothing is left.
# Prompts and token sums are read through the session's own interception ids: a join with a grouped token
# subquery would aggregate the whole token table on every deleted row (seconds each on a million rows).
_SESSION_IDS = ("SELECT j.id FROM aibridge_interceptions j WHERE j.session_id = OLD.session_id "
                "AND j.initiator_id = OLD.initiator_id AND j.ended_at IS NOT NULL")


def _session_token_sum(column: str) -> str:
    return (f"(SELECT COALESCE(sum(t.{column}), 0) FROM aibridge_token_usages t "
            f"WHERE t.interception_id IN ({_SESSION_IDS}))")


_REBUILD_SESSION = f"""
DELETE FROM aigw_sessions WHERE session_id = OLD.session_id AND initiator_id = OLD.initiator_id;
INSERT INTO aigw_sessions (session_id, initiator_id, started_at, ended_at, last_prompt_at, interceptions, threads,
                           {", ".join(_TOKENS)})
SELECT i.session_id, i.initiator_id, min(i.started_at), max(i.ended_at),
       (SELECT max(p.created_at) FROM aibridge_user_prompts p WHERE p.interception_id IN ({_SESSION_IDS})),
       count(*), sum(i.thread_root_id IS NULL), {", ".join(_session_token_sum(c) for c in _TOKENS)}
FROM aibridge_interceptions i
WHERE i.session_id = OLD.session_id AND i.initiator_id = OLD.initiator_id AND i.ended_at IS NOT NULL
GROUP BY i.session_id, i.initiator_id;
"""

_SESSION_OF_CHILD = (
    "WHERE session_id = (SELECT session_id FROM aibridge_interceptions WHERE id = NEW.interception_id "
    "AND ended_at IS NOT NULL) AND initiator_id = (SELECT initiator_id FROM aibridge_interceptions "
    "WHERE id = NEW.interception_id AND ended_at IS NOT NULL)"
)

TRIGGERS: dict[str, str] = {
    "aigw_on_interception_ended": f"""
        AFTER UPDATE OF ended_at ON aibridge_interceptions
        WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_ADD_TO_SESSION} {_count_day("NEW", 1)} END""",
    "aigw_on_ended_interception_inserted": f"""
        AFTER INSERT ON aibridge_interceptions WHEN NEW.ended_at IS NOT NULL
        BEGIN {_ADD_TO_SESSION} {_count_day("NEW", 1)} END""",
    "aigw_on_ended_interception_deleted": f"""
        AFTER DELETE ON aibridge_interceptions WHEN OLD.ended_at IS NOT NULL
        BEGIN {_REBUILD_SESSION} {_count_day("OLD", -1)} END""",
    # The writer may correct the model when the call ends; a later change to a counted row moves its count.
    "aigw_on_ended_interception_recounted": f"""
        AFTER UPDATE OF started_at, provider, provider_name, model, client ON aibridge_interceptions
        WHEN OLD.ended_at IS NOT NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_count_day("OLD", -1)} {_count_day("NEW", 1)} END""",
    "aigw_on_prompt_inserted": f"""
        AFTER INSERT ON aibridge_user_prompts
        BEGIN UPDATE aigw_sessions
              SET last_prompt_at = CASE WHEN last_prompt_at IS NULL OR last_prompt_at < NEW.created_at
                                        THEN NEW.created_at ELSE last_prompt_at END
              {_SESSION_OF_CHILD}; END""",
    "aigw_on_token_usage_inserted": f"""
        AFTER INSERT ON aibridge_token_usages
        BEGIN UPDATE aigw_sessions SET {", ".join(f"{c} = {c} + NEW.{c}" for c in _TOKENS)}
              {_SESSION_OF_CHILD}; END""",
}


def rebuild(conn: sa.Connection) -> None:
    """Recompute both summary tables from the interception tables (migration back-fill; bulk loads)."""
    day = backend_of(conn).day_of("i.started_at")
    conn.exec_driver_sql("DELETE FROM aigw_sessions")
    conn.exec_driver_sql("DELETE FROM aigw_interception_days")
    conn.exec_driver_sql(f"""
        INSERT INTO aigw_sessions (session_id, initiator_id, started_at, ended_at, last_prompt_at, interceptions,
                                   threads, {", ".join(_TOKENS)})
        SELECT i.session_id, i.initiator_id, min(i.started_at), max(i.ended_at), max(pr.last_at), count(*),
               sum(CASE WHEN i.thread_root_id IS NULL THEN 1 ELSE 0 END),
               {", ".join(f"COALESCE(sum(tk.{c}), 0)" for c in _TOKENS)}
        FROM aibridge_interceptions i
        LEFT JOIN (SELECT interception_id, {", ".join(f"sum({c}) AS {c}" for c in _TOKENS)}
                   FROM aibridge_token_usages GROUP BY interception_id) tk ON tk.interception_id = i.id
        LEFT JOIN (SELECT interception_id, max(created_at) AS last_at
                   FROM aibridge_user_prompts GROUP BY interception_id) pr ON pr.interception_id = i.id
        WHERE i.ended_at IS NOT NULL
        GROUP BY i.session_id, i.initiator_id""")
    conn.exec_driver_sql(f"""
        INSERT INTO aigw_interception_days (day, provider, provider_name, model, client, interceptions)
        SELECT {day}, i.provider, i.provider_name, i.model, COALESCE(i.client, 'Unknown'), count(*)
        FROM aibridge_interceptions i WHERE i.ended_at IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5""")


def upgrade_v2(conn: sa.Connection) -> None:
    """Schema v2: the summary tables, their triggers and back-fill, and two interception indexes."""
    backend = backend_of(conn)
    backend.create_tables(conn, summary_metadata.sorted_tables)
    for ddl in V2_INDEXES:
        conn.exec_driver_sql(ddl)
    backend.install_triggers(conn, "summaries")
    rebuild(conn)
