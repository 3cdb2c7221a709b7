"""Session slices (schema v4): per session, the aggregates over one slice of its ended interceptions, kept by
triggers like the v2 summaries (SQLite's below, PostgreSQL's in dialects/postgresql_triggers.py).

A slice is `(kind, value)`: all of the session's interceptions (`all`, value ''), or those with one provider,
provider_name, model or client (`COALESCE(client, 'Unknown')`). A row holds what the sessions list shows for the
matching interceptions only — first and last start, last end, last prompt time, `last_active_at`, interception and
thread counts — so a sessions list filtered by one attribute reads its page and count from this table instead of
grouping hundreds of thousands of interceptions (read/sessions_from_slices.py reads it, time windows included).

`last_started_at` exists for time windows: a slice whose first and last start both lie in the window matches as a
whole, with exactly these aggregates. `only_provider`, `only_provider_name`, `only_model`, `only_client` do the
same for a second attribute: the one value all the slice's interceptions share, NULL when they differ. Rules the
triggers rely on are those of summaries.py.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.dialects import backend_of
from aigw_proxy.storage.schema.tables import UTCDateTime

slices_metadata = sa.MetaData()

session_slices = sa.Table(
    "aigw_session_slices",
    slices_metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("initiator_id", sa.String(36), primary_key=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("last_started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=False),
    sa.Column("last_prompt_at", UTCDateTime, nullable=True),
    sa.Column("last_active_at", UTCDateTime, sa.Computed("COALESCE(last_prompt_at, started_at)", persisted=True)),
    sa.Column("interceptions", sa.Integer, nullable=False),
    sa.Column("threads", sa.Integer, nullable=False),
    # The one provider, provider_name, model and client of all the slice's interceptions; NULL where they differ.
    # A filter on two attributes reads one's slice: rows whose `only_<other>` is the other value match whole.
    sa.Column("only_provider", sa.Text, nullable=True),
    sa.Column("only_provider_name", sa.Text, nullable=True),
    sa.Column("only_model", sa.Text, nullable=True),
    sa.Column("only_client", sa.Text, nullable=True),
    sqlite_with_rowid=False,
)
_c = session_slices.c
# Pages: newest activity first within a slice. Windows: the slices whose starts fall in a time range.
PAGE_INDEX = "idx_aigw_session_slices_page"
WINDOW_INDEX = "idx_aigw_session_slices_window"
sa.Index(PAGE_INDEX, _c.kind, _c.value, _c.last_active_at.desc(), _c.session_id.desc())
sa.Index(WINDOW_INDEX, _c.kind, _c.value, _c.last_started_at, _c.started_at)

# Sessions per slice, for the count of a filter over all time (kept by triggers on the table above: an upsert
# that updates fires no INSERT trigger, so a session is counted once per slice).
slice_counts = sa.Table(
    "aigw_session_slice_counts",
    slices_metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("sessions", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# kind -> the interception column expression it slices by ({r} = the row alias).
KINDS: dict[str, str] = {
    "all": "''",
    "provider": "{r}.provider",
    "provider_name": "{r}.provider_name",
    "model": "{r}.model",
    "client": "COALESCE({r}.client, 'Unknown')",
}

ATTRIBUTES = ("provider", "provider_name", "model", "client")
_COLUMNS = ("kind, value, session_id, initiator_id, started_at, last_started_at, ended_at, last_prompt_at, "
            "interceptions, threads, " + ", ".join(f"only_{a}" for a in ATTRIBUTES))


def _only_aggregates(r: str) -> str:
    """The `only_*` columns over grouped interceptions `r`: the value if there is one, else NULL."""
    return ", ".join(f"CASE WHEN min({KINDS[a].format(r=r)}) = max({KINDS[a].format(r=r)}) "
                     f"THEN min({KINDS[a].format(r=r)}) END" for a in ATTRIBUTES)


def _add(kind: str) -> str:
    """NEW (an ended interception) joins its slice of `kind`."""
    value = KINDS[kind].format(r="NEW")
    return f"""
INSERT INTO aigw_session_slices ({_COLUMNS})
VALUES ('{kind}', {value}, NEW.session_id, NEW.initiator_id, NEW.started_at, NEW.started_at, NEW.ended_at,
        NEW.last_prompt_at, 1, NEW.thread_root_id IS NULL, {", ".join(KINDS[a].format(r="NEW") for a in ATTRIBUTES)})
ON CONFLICT (kind, value, session_id, initiator_id) DO UPDATE SET
    started_at = min(started_at, excluded.started_at),
    last_started_at = max(last_started_at, excluded.last_started_at),
    ended_at = max(ended_at, excluded.ended_at),
    last_prompt_at = max(COALESCE(last_prompt_at, excluded.last_prompt_at),
                         COALESCE(excluded.last_prompt_at, last_prompt_at)),
    interceptions = interceptions + 1,
    threads = threads + excluded.threads,
    {", ".join(f"only_{a} = CASE WHEN only_{a} = excluded.only_{a} THEN only_{a} END" for a in ATTRIBUTES)};"""


def _insert_grouped(kind: str, value: str, where: str, group_by: str,
                    threads: str = "sum(i.thread_root_id IS NULL)") -> str:
    """INSERT the slice rows of `kind` grouped from the ended interceptions `i` matching `where`."""
    return f"""
INSERT INTO aigw_session_slices ({_COLUMNS})
SELECT '{kind}', {value}, i.session_id, i.initiator_id, min(i.started_at), max(i.started_at), max(i.ended_at),
       max(i.last_prompt_at), count(*), {threads}, {_only_aggregates("i")}
FROM aibridge_interceptions i
WHERE i.ended_at IS NOT NULL AND {where}
GROUP BY {group_by};"""


def _rebuild(kind: str, row: str) -> str:
    """Recompute the slice of `kind` that `row` (OLD or NEW) belongs to from the interceptions left in it."""
    value = KINDS[kind].format(r=row)
    where = (f"i.session_id = {row}.session_id AND i.initiator_id = {row}.initiator_id "
             f"AND {KINDS[kind].format(r='i')} = {value}")
    return f"""
DELETE FROM aigw_session_slices WHERE kind = '{kind}' AND value = {value}
    AND session_id = {row}.session_id AND initiator_id = {row}.initiator_id;""" + _insert_grouped(
        kind, value, where, "i.session_id, i.initiator_id")


def _each(step: str, *args: str) -> str:
    make = _add if step == "add" else _rebuild
    return "".join(make(kind, *args) for kind in KINDS)


TRIGGERS: dict[str, str] = {
    "aigw_slices_on_interception_ended": f"""
        AFTER UPDATE OF ended_at ON aibridge_interceptions
        WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_each("add")} END""",
    "aigw_slices_on_ended_interception_inserted": f"""
        AFTER INSERT ON aibridge_interceptions WHEN NEW.ended_at IS NOT NULL
        BEGIN {_each("add")} END""",
    "aigw_slices_on_ended_interception_deleted": f"""
        AFTER DELETE ON aibridge_interceptions WHEN OLD.ended_at IS NOT NULL
        BEGIN {_each("rebuild", "OLD")} END""",
    # Rare (the writer sets these when the call ends, in the same UPDATE as ended_at): recompute the old and the
    # new slices of a counted row.
    "aigw_slices_on_ended_interception_changed": f"""
        AFTER UPDATE OF started_at, provider, provider_name, model, client, last_prompt_at, thread_root_id
        ON aibridge_interceptions
        WHEN OLD.ended_at IS NOT NULL AND NEW.ended_at IS NOT NULL
        BEGIN {_each("rebuild", "OLD")} {_each("rebuild", "NEW")} END""",
}


TRIGGERS |= {
    "aigw_slice_counts_on_insert": """
        AFTER INSERT ON aigw_session_slices
        BEGIN INSERT INTO aigw_session_slice_counts (kind, value, sessions) VALUES (NEW.kind, NEW.value, 1)
              ON CONFLICT (kind, value) DO UPDATE SET sessions = sessions + 1; END""",
    "aigw_slice_counts_on_delete": """
        AFTER DELETE ON aigw_session_slices
        BEGIN UPDATE aigw_session_slice_counts SET sessions = sessions - 1
              WHERE kind = OLD.kind AND value = OLD.value; END""",
}


def rebuild(conn: sa.Connection) -> None:
    """Recompute every slice from the interceptions (migration back-fill; bulk loads)."""
    with backend_of(conn).bulk_load(conn):  # the counts are recounted below
        conn.exec_driver_sql("DELETE FROM aigw_session_slices")
        for kind, expr in KINDS.items():
            value = expr.format(r="i")
            keys = "i.session_id, i.initiator_id" if kind == "all" else f"{value}, i.session_id, i.initiator_id"
            conn.exec_driver_sql(_insert_grouped(kind, value, "1 = 1", keys,
                                                 "sum(CASE WHEN i.thread_root_id IS NULL THEN 1 ELSE 0 END)"))
        conn.exec_driver_sql("DELETE FROM aigw_session_slice_counts")  # whatever triggers counted above: recount
        conn.exec_driver_sql("INSERT INTO aigw_session_slice_counts (kind, value, sessions) "
                             "SELECT kind, value, count(*) FROM aigw_session_slices GROUP BY kind, value")


def upgrade_v4(conn: sa.Connection) -> None:
    """Schema v4: the session slices table, its triggers and back-fill; the v2 summary triggers re-created (a
    deleted interception no longer aggregates the whole token table to rebuild its session)."""
    backend = backend_of(conn)
    backend.drop_triggers(conn, "summaries")
    backend.install_triggers(conn, "summaries")
    backend.create_tables(conn, slices_metadata.sorted_tables)
    rebuild(conn)
    backend.install_triggers(conn, "slices")
