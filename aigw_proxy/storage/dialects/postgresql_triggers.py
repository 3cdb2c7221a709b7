"""The summary tables on PostgreSQL (schema/summaries.py, schema/session_slices.py), kept by PL/pgSQL triggers
inside the writer's own transactions, exactly as SQLite's triggers keep them: the same rows, the same rules.

Differences from the SQLite bodies, none in what they compute:
* a child row names its interception by (id, start time), the interceptions' partition key, so each lookup
  touches one day's partition instead of probing every partition's index;
* `GREATEST`/`LEAST` (which skip NULLs) stand for SQLite's two-argument `max`/`min` and its NULL-handling CASEs;
* the five slices of an interception are upserted or rebuilt by one statement each, not five;
* bulk loads (`aigw.bulk` = on for the transaction, see PostgresBackend.bulk_load) skip them and rebuild after.
"""

from __future__ import annotations

import sqlalchemy as sa

from aigw_proxy.storage.schema.spend_days import SUM_COLUMNS as SPEND_SUMS
from aigw_proxy.storage.schema.spend_days import TABLES as SPEND_TABLES
from aigw_proxy.storage.schema.spend_days import TOKEN_COLUMNS as SPEND_TOKENS
from aigw_proxy.storage.schema.spend_days import V7_TABLES, fleet_days, key_columns, spend_days, user_months
from aigw_proxy.storage.schema.tables import CHILD_TABLES
from aigw_proxy.storage.schema.tables import PRICE_COLUMNS as SPEND_PRICES

_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
_BULK = "IF current_setting('aigw.bulk', true) = 'on' THEN RETURN NULL; END IF;"
# In the row-level INSERT and DELETE triggers of the interceptions: a row an UPDATE moves to another partition
# (FOLLOW_FUNCTIONS) is counted by the UPDATE's triggers instead.
_MOVING = "IF current_setting('aigw.moving', true) = 'on' THEN RETURN {row}; END IF;"
_CLIENT = "COALESCE({r}.client, 'Unknown')"
_SESSION_COLUMNS = ("session_id, initiator_id, started_at, ended_at, last_prompt_at, interceptions, threads, "
                    + ", ".join(_TOKENS))
_SLICE_COLUMNS = ("kind, value, session_id, initiator_id, started_at, last_started_at, ended_at, last_prompt_at, "
                  "interceptions, threads, only_provider, only_provider_name, only_model, only_client")


def _kinds(r: str) -> str:
    """The five (kind, value) slices row `r` belongs to, as a VALUES list."""
    return (f"(VALUES ('all', ''), ('provider', {r}.provider), ('provider_name', {r}.provider_name), "
            f"('model', {r}.model), ('client', {_CLIENT.format(r=r)})) AS k(kind, value)")


def _slice_value(r: str) -> str:
    """The value of slice kind `k.kind` for interception `r`."""
    return (f"CASE k.kind WHEN 'all' THEN '' WHEN 'provider' THEN {r}.provider "
            f"WHEN 'provider_name' THEN {r}.provider_name WHEN 'model' THEN {r}.model "
            f"ELSE {_CLIENT.format(r=r)} END")


def _only(r: str) -> str:
    """The `only_*` aggregates over grouped interceptions `r`."""
    exprs = (f"{r}.provider", f"{r}.provider_name", f"{r}.model", _CLIENT.format(r=r))
    return ", ".join(f"CASE WHEN min({e}) = max({e}) THEN min({e}) END" for e in exprs)


_THREAD = "CASE WHEN {r}.thread_root_id IS NULL THEN 1 ELSE 0 END"
_DAY_KEY = ("to_char({r}.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, {r}.provider, {r}.provider_name, "
            "{r}.model, COALESCE({r}.client, 'Unknown') AS client")
# An UPDATE statement's rows, before (o) and after (n): the calls it ended; the ended calls whose counted or
# sliced attributes it changed.
_PAIRS = "new_rows n JOIN old_rows o ON o.id = n.id"  # by id alone: a start the UPDATE changed differs
_ENDED = f"{_PAIRS} WHERE o.ended_at IS NULL AND n.ended_at IS NOT NULL"
_RECOUNTED = (f"{_PAIRS} WHERE o.ended_at IS NOT NULL AND n.ended_at IS NOT NULL AND (o.started_at, o.provider, "
              "o.provider_name, o.model, o.client) IS DISTINCT FROM (n.started_at, n.provider, n.provider_name, "
              "n.model, n.client)")
_RESLICED = (f"{_PAIRS} WHERE o.ended_at IS NOT NULL AND n.ended_at IS NOT NULL AND (o.started_at, o.provider, "
             "o.provider_name, o.model, o.client, o.last_prompt_at, o.thread_root_id) IS DISTINCT FROM "
             "(n.started_at, n.provider, n.provider_name, n.model, n.client, n.last_prompt_at, n.thread_root_id)")


# A statement's child rows `n` joined to their interception `i` (followed by ` AND <condition on i>`): one primary
# key probe per row, in its day's partition (the LIMIT keeps the planner from turning it into a join that reads
# whole partitions, which it did wherever a day's statistics were older than its rows: every batch then read the
# day so far, twice for token rows, once for prompts).
_INTERCEPTION_OF_ROW = ("JOIN LATERAL (SELECT * FROM aibridge_interceptions i0 WHERE i0.id = n.interception_id "
                        "AND i0.started_at = n.interception_started_at LIMIT 1) i ON true")


def _day_upsert(r: str, delta: int) -> str:
    return f"""
    INSERT INTO aigw_interception_days AS d (day, provider, provider_name, model, client, interceptions)
    VALUES (to_char({r}.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), {r}.provider, {r}.provider_name, {r}.model,
            {_CLIENT.format(r=r)}, {delta})
    ON CONFLICT (day, provider, provider_name, model, client)
    DO UPDATE SET interceptions = d.interceptions + ({delta});"""


# Sessions and daily counts (schema v2).
SUMMARY_FUNCTIONS: dict[str, str] = {
    # An ended interception joins its session and its day.
    "aigw_summaries_add": f"""
BEGIN
    {_BULK}
    {_MOVING.format(row="NULL")}
    INSERT INTO aigw_sessions AS s ({_SESSION_COLUMNS})
    SELECT NEW.session_id, NEW.initiator_id, NEW.started_at, NEW.ended_at,
           (SELECT max(p.created_at) FROM aibridge_user_prompts p
            WHERE p.interception_id = NEW.id AND p.interception_started_at = NEW.started_at),
           1, {_THREAD.format(r="NEW")}, {", ".join(f"COALESCE(sum(t.{c}), 0)" for c in _TOKENS)}
    FROM aibridge_token_usages t WHERE t.interception_id = NEW.id AND t.interception_started_at = NEW.started_at
    ON CONFLICT (session_id, initiator_id) DO UPDATE SET
        started_at = LEAST(s.started_at, excluded.started_at),
        ended_at = GREATEST(s.ended_at, excluded.ended_at),
        last_prompt_at = GREATEST(s.last_prompt_at, excluded.last_prompt_at),
        interceptions = s.interceptions + 1,
        threads = s.threads + excluded.threads,
        {", ".join(f"{c} = s.{c} + excluded.{c}" for c in _TOKENS)};
    {_day_upsert("NEW", 1)}
    RETURN NULL;
END""",
    # A deleted ended interception: its session rebuilt from what is left of it, its day counted down.
    "aigw_summaries_remove": f"""
BEGIN
    {_BULK}
    {_MOVING.format(row="NULL")}
    PERFORM aigw_session_rebuild(OLD.session_id, OLD.initiator_id);
    {_day_upsert("OLD", -1)}
    RETURN NULL;
END""",
    # Statement-level over an UPDATE's rows (the writer ends a batch of calls in one statement): the calls it
    # ended join their sessions and days, grouped; counted calls whose attributes it changed move their counts.
    "aigw_summaries_updated": f"""
BEGIN
    {_BULK}
    INSERT INTO aigw_sessions AS s ({_SESSION_COLUMNS})
    SELECT n.session_id, n.initiator_id, min(n.started_at), max(n.ended_at), max(pr.last_at), count(*),
           sum({_THREAD.format(r="n")}), {", ".join(f"COALESCE(sum(tk.{c}), 0)" for c in _TOKENS)}
    FROM {_PAIRS}
    LEFT JOIN LATERAL (SELECT max(p.created_at) AS last_at FROM aibridge_user_prompts p
                       WHERE p.interception_id = n.id AND p.interception_started_at = n.started_at) pr ON true
    LEFT JOIN LATERAL (SELECT {", ".join(f"sum(t.{c}) AS {c}" for c in _TOKENS)} FROM aibridge_token_usages t
                       WHERE t.interception_id = n.id AND t.interception_started_at = n.started_at) tk ON true
    WHERE o.ended_at IS NULL AND n.ended_at IS NOT NULL
    GROUP BY n.session_id, n.initiator_id
    ON CONFLICT (session_id, initiator_id) DO UPDATE SET
        started_at = LEAST(s.started_at, excluded.started_at),
        ended_at = GREATEST(s.ended_at, excluded.ended_at),
        last_prompt_at = GREATEST(s.last_prompt_at, excluded.last_prompt_at),
        interceptions = s.interceptions + excluded.interceptions,
        threads = s.threads + excluded.threads,
        {", ".join(f"{c} = s.{c} + excluded.{c}" for c in _TOKENS)};
    INSERT INTO aigw_interception_days AS d (day, provider, provider_name, model, client, interceptions)
    SELECT day, provider, provider_name, model, client, sum(delta) FROM (
        SELECT {_DAY_KEY.format(r="n")}, 1 AS delta FROM {_ENDED}
        UNION ALL SELECT {_DAY_KEY.format(r="o")}, -1 FROM {_RECOUNTED}
        UNION ALL SELECT {_DAY_KEY.format(r="n")}, 1 FROM {_RECOUNTED}
    ) AS changes GROUP BY day, provider, provider_name, model, client HAVING sum(delta) <> 0
    ON CONFLICT (day, provider, provider_name, model, client)
    DO UPDATE SET interceptions = d.interceptions + excluded.interceptions;
    RETURN NULL;
END""",
    # Statement-level, over the statement's new rows (`added`): a batch of prompts or token usages (one multi-row
    # INSERT from the writer) updates each session once. Children of calls not ended yet change nothing: their
    # interception's end adds them.
    "aigw_summaries_prompt": f"""
BEGIN
    {_BULK}
    UPDATE aigw_sessions s SET last_prompt_at = GREATEST(s.last_prompt_at, a.last_at)
    FROM (SELECT i.session_id, i.initiator_id, max(n.created_at) AS last_at
          FROM added n {_INTERCEPTION_OF_ROW} AND i.ended_at IS NOT NULL
          GROUP BY i.session_id, i.initiator_id) a
    WHERE s.session_id = a.session_id AND s.initiator_id = a.initiator_id;
    RETURN NULL;
END""",
    "aigw_summaries_tokens": f"""
BEGIN
    {_BULK}
    UPDATE aigw_sessions s SET {", ".join(f"{c} = s.{c} + a.{c}" for c in _TOKENS)}
    FROM (SELECT i.session_id, i.initiator_id, {", ".join(f"sum(n.{c}) AS {c}" for c in _TOKENS)}
          FROM added n {_INTERCEPTION_OF_ROW} AND i.ended_at IS NOT NULL
          GROUP BY i.session_id, i.initiator_id) a
    WHERE s.session_id = a.session_id AND s.initiator_id = a.initiator_id;
    RETURN NULL;
END""",
}

# One session's summary row recomputed from its ended interceptions (none left: no row).
SESSION_REBUILD = f"""
CREATE OR REPLACE FUNCTION aigw_session_rebuild(p_sid text, p_uid text) RETURNS void LANGUAGE sql AS $fn$
    DELETE FROM aigw_sessions WHERE session_id = p_sid AND initiator_id = p_uid;
    WITH mine AS (
        SELECT id, started_at, ended_at, thread_root_id FROM aibridge_interceptions
        WHERE session_id = p_sid AND initiator_id = p_uid AND ended_at IS NOT NULL),
    tokens AS (
        SELECT {", ".join(f"COALESCE(sum(t.{c}), 0) AS {c}" for c in _TOKENS)}
        FROM aibridge_token_usages t
        JOIN mine m ON t.interception_id = m.id AND t.interception_started_at = m.started_at),
    prompts AS (
        SELECT max(p.created_at) AS last_at
        FROM aibridge_user_prompts p
        JOIN mine m ON p.interception_id = m.id AND p.interception_started_at = m.started_at)
    INSERT INTO aigw_sessions ({_SESSION_COLUMNS})
    SELECT p_sid, p_uid, min(m.started_at), max(m.ended_at), (SELECT last_at FROM prompts), count(*),
           sum({_THREAD.format(r="m")}), {", ".join(f"(SELECT {c} FROM tokens)" for c in _TOKENS)}
    FROM mine m HAVING count(*) > 0;
$fn$"""

# (function, trigger name, timing and event, row condition or _STATEMENT)
_STATEMENT = "FOR EACH STATEMENT"
_PLAIN_STATEMENT = "FOR EACH STATEMENT, no transition tables"
SUMMARY_TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    ("aigw_summaries_updated", "aigw_on_interceptions_updated", "AFTER UPDATE ON aibridge_interceptions",
     _STATEMENT),
    ("aigw_summaries_add", "aigw_on_ended_interception_inserted", "AFTER INSERT ON aibridge_interceptions",
     "NEW.ended_at IS NOT NULL"),
    ("aigw_summaries_remove", "aigw_on_ended_interception_deleted", "AFTER DELETE ON aibridge_interceptions",
     "OLD.ended_at IS NOT NULL"),
    ("aigw_summaries_prompt", "aigw_on_prompt_inserted", "AFTER INSERT ON aibridge_user_prompts", _STATEMENT),
    ("aigw_summaries_tokens", "aigw_on_token_usage_inserted", "AFTER INSERT ON aibridge_token_usages", _STATEMENT),
)


# Session slices (schema v4).
_PARAM_KINDS = ("(VALUES ('all', ''), ('provider', p_provider), ('provider_name', p_provider_name), "
                "('model', p_model), ('client', COALESCE(p_client, 'Unknown'))) AS k(kind, value)")
SLICE_REBUILD = f"""
CREATE OR REPLACE FUNCTION aigw_slices_rebuild(p_sid text, p_uid text, p_provider text, p_provider_name text,
                                               p_model text, p_client text) RETURNS void LANGUAGE sql AS $fn$
    DELETE FROM aigw_session_slices s USING {_PARAM_KINDS}
    WHERE s.kind = k.kind AND s.value = k.value AND s.session_id = p_sid AND s.initiator_id = p_uid;
    INSERT INTO aigw_session_slices ({_SLICE_COLUMNS})
    SELECT k.kind, k.value, p_sid, p_uid, min(i.started_at), max(i.started_at), max(i.ended_at), max(i.last_prompt_at),
           count(*), sum({_THREAD.format(r="i")}), {_only("i")}
    FROM {_PARAM_KINDS}
    JOIN aibridge_interceptions i ON i.session_id = p_sid AND i.initiator_id = p_uid AND i.ended_at IS NOT NULL
                                 AND {_slice_value("i")} = k.value
    GROUP BY k.kind, k.value;
$fn$"""


def _rebuild_call(r: str) -> str:
    return (f"PERFORM aigw_slices_rebuild({r}.session_id, {r}.initiator_id, {r}.provider, {r}.provider_name, "
            f"{r}.model, {r}.client);")


SLICE_FUNCTIONS: dict[str, str] = {
    "aigw_slices_add": f"""
BEGIN
    {_BULK}
    {_MOVING.format(row="NULL")}
    INSERT INTO aigw_session_slices AS s ({_SLICE_COLUMNS})
    SELECT k.kind, k.value, NEW.session_id, NEW.initiator_id, NEW.started_at, NEW.started_at, NEW.ended_at,
           NEW.last_prompt_at, 1, {_THREAD.format(r="NEW")}, NEW.provider, NEW.provider_name, NEW.model,
           {_CLIENT.format(r="NEW")}
    FROM {_kinds("NEW")}
    ON CONFLICT (kind, value, session_id, initiator_id) DO UPDATE SET
        started_at = LEAST(s.started_at, excluded.started_at),
        last_started_at = GREATEST(s.last_started_at, excluded.last_started_at),
        ended_at = GREATEST(s.ended_at, excluded.ended_at),
        last_prompt_at = GREATEST(s.last_prompt_at, excluded.last_prompt_at),
        interceptions = s.interceptions + 1,
        threads = s.threads + excluded.threads,
        {", ".join(f"only_{a} = CASE WHEN s.only_{a} = excluded.only_{a} THEN s.only_{a} END"
                   for a in ("provider", "provider_name", "model", "client"))};
    RETURN NULL;
END""",
    "aigw_slices_remove": f"""
BEGIN
    {_BULK}
    {_MOVING.format(row="NULL")}
    {_rebuild_call("OLD")}
    RETURN NULL;
END""",
    # Statement-level over an UPDATE's rows: the calls it ended join their slices, grouped; the old and the new
    # slices of ended calls whose sliced attributes it changed are rebuilt.
    "aigw_slices_updated": f"""
BEGIN
    {_BULK}
    INSERT INTO aigw_session_slices AS s ({_SLICE_COLUMNS})
    SELECT k.kind, k.value, n.session_id, n.initiator_id, min(n.started_at), max(n.started_at), max(n.ended_at),
           max(n.last_prompt_at), count(*), sum({_THREAD.format(r="n")}), {_only("n")}
    FROM {_PAIRS} CROSS JOIN LATERAL {_kinds("n")}
    WHERE o.ended_at IS NULL AND n.ended_at IS NOT NULL
    GROUP BY k.kind, k.value, n.session_id, n.initiator_id
    ON CONFLICT (kind, value, session_id, initiator_id) DO UPDATE SET
        started_at = LEAST(s.started_at, excluded.started_at),
        last_started_at = GREATEST(s.last_started_at, excluded.last_started_at),
        ended_at = GREATEST(s.ended_at, excluded.ended_at),
        last_prompt_at = GREATEST(s.last_prompt_at, excluded.last_prompt_at),
        interceptions = s.interceptions + excluded.interceptions,
        threads = s.threads + excluded.threads,
        {", ".join(f"only_{a} = CASE WHEN s.only_{a} = excluded.only_{a} THEN s.only_{a} END"
                   for a in ("provider", "provider_name", "model", "client"))};
    PERFORM aigw_slices_rebuild(r.session_id, r.initiator_id, r.provider, r.provider_name, r.model, r.client)
    FROM (SELECT o.session_id, o.initiator_id, o.provider, o.provider_name, o.model, o.client FROM {_RESLICED}
          UNION SELECT n.session_id, n.initiator_id, n.provider, n.provider_name, n.model, n.client FROM {_RESLICED}
    ) AS r;
    RETURN NULL;
END""",
    # Statement-level: the slice rows a statement inserted (an upsert's new sessions only: rows it updated are not
    # in its INSERT transition table) or deleted, counted per slice.
    "aigw_slice_counts_add": """
BEGIN
    IF current_setting('aigw.bulk', true) = 'on' THEN RETURN NULL; END IF;
    INSERT INTO aigw_session_slice_counts AS c (kind, value, sessions)
    SELECT kind, value, count(*) FROM added GROUP BY kind, value
    ON CONFLICT (kind, value) DO UPDATE SET sessions = c.sessions + excluded.sessions;
    RETURN NULL;
END""",
    "aigw_slice_counts_remove": """
BEGIN
    IF current_setting('aigw.bulk', true) = 'on' THEN RETURN NULL; END IF;
    UPDATE aigw_session_slice_counts c SET sessions = c.sessions - r.n
    FROM (SELECT kind, value, count(*) AS n FROM removed GROUP BY kind, value) r
    WHERE c.kind = r.kind AND c.value = r.value;
    RETURN NULL;
END""",
}

SLICE_TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    ("aigw_slices_updated", "aigw_slices_on_interceptions_updated", "AFTER UPDATE ON aibridge_interceptions",
     _STATEMENT),
    ("aigw_slices_add", "aigw_slices_on_ended_interception_inserted", "AFTER INSERT ON aibridge_interceptions",
     "NEW.ended_at IS NOT NULL"),
    ("aigw_slices_remove", "aigw_slices_on_ended_interception_deleted", "AFTER DELETE ON aibridge_interceptions",
     "OLD.ended_at IS NOT NULL"),
    ("aigw_slice_counts_add", "aigw_slice_counts_on_insert", "AFTER INSERT ON aigw_session_slices", _STATEMENT),
    ("aigw_slice_counts_remove", "aigw_slice_counts_on_delete", "AFTER DELETE ON aigw_session_slices", _STATEMENT),
)

# Spend (schema/spend_days.py): the token rows of ended interceptions summed per key into the per-user days (v7),
# the fleet's days and each user's months (v9). Each statement's rows are summed by the finest key (the per-user
# day's) once, into `x`, and `x` is added to each table, regrouped by its own key, in one statement
# (data-modifying CTEs). Then the keys left with no rows are deleted, as SQLite's triggers do.
_SPEND_DAY = "to_char({i}.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
_FINE_COLUMNS = ("day", "initiator_id", "provider", "provider_name", "model", "client", "effective_group_id",
                 "api_equivalent")
_FROM_FINE = {"month": "substr(x.day, 1, 7)"}  # a summary column from x's columns (else the same name)


def _fine_key(i: str, t: str) -> str:
    return ", ".join((_SPEND_DAY.format(i=i), f"{i}.initiator_id", f"{i}.provider", f"{i}.provider_name",
                      f"{i}.model", f"COALESCE({i}.client, 'Unknown')", f"COALESCE({t}.effective_group_id, '')",
                      f"{t}.api_equivalent"))


def _spend_sums(t: str, sign: str) -> str:
    values = ("count(*)", f"sum(CASE WHEN {t}.cost_micros IS NULL THEN 1 ELSE 0 END)",
              *(f"sum({t}.{c})" for c in SPEND_TOKENS), *(f"COALESCE(sum({t}.{c}), 0)" for c in SPEND_PRICES))
    return ", ".join(f"{sign}({v})" for v in values)


def _fine(source: str, i: str, t: str, sign: str) -> str:
    """Token rows `t` of interceptions `i` (`source`: FROM … [WHERE …]) summed by the finest key, signed."""
    return f"SELECT {_fine_key(i, t)}, {_spend_sums(t, sign)} {source} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"


def _spend_apply(tables: tuple[sa.Table, ...], *fine: str) -> str:
    """One statement adding the sums of the `fine` selects (UNION ALL) to each of `tables`."""
    inserts = []
    for table in tables:
        columns = key_columns(table)
        exprs = ", ".join(_FROM_FINE.get(c, f"x.{c}") for c in columns)
        inserts.append(
            f"INSERT INTO {table.name} AS s ({', '.join(columns)}, {', '.join(SPEND_SUMS)}) "
            f"SELECT {exprs}, {', '.join(f'sum(x.{c})' for c in SPEND_SUMS)} FROM x GROUP BY {exprs} "
            f"ON CONFLICT ({', '.join(columns)}) DO UPDATE SET "
            + ", ".join(f"{c} = s.{c} + excluded.{c}" for c in SPEND_SUMS))
    ctes = [f"x ({', '.join((*_FINE_COLUMNS, *SPEND_SUMS))}) AS ({' UNION ALL '.join(fine)})",
            *(f"w{n} AS ({sql})" for n, sql in enumerate(inserts[:-1]))]
    return f"WITH {', '.join(ctes)} {inserts[-1]};"


def _spend_tidy(tables: tuple[sa.Table, ...], keys: str) -> str:
    """Delete the keys left with no rows among the (user, day)s `keys` selects (as `uid`, `day`), their days and
    (user, month)s."""
    out = [f"DELETE FROM {spend_days.name} WHERE records <= 0 AND (initiator_id, day) IN "
           f"(SELECT z.uid, z.day FROM ({keys}) z);"]
    if fleet_days in tables:
        out.append(f"DELETE FROM {fleet_days.name} WHERE records <= 0 AND day IN (SELECT z.day FROM ({keys}) z);")
    if user_months in tables:
        out.append(f"DELETE FROM {user_months.name} WHERE records <= 0 AND (initiator_id, month) IN "
                   f"(SELECT z.uid, substr(z.day, 1, 7) FROM ({keys}) z);")
    return "\n    ".join(out)


_OF_ROWS = "FROM {rows} n " + _INTERCEPTION_OF_ROW.replace("{", "{{").replace("}", "}}")


def _keys_of(i: str, source: str) -> str:
    return f"SELECT {i}.initiator_id AS uid, {_SPEND_DAY.format(i=i)} AS day {source}"


_ENDED_NOW = "o.ended_at IS NULL AND n.ended_at IS NOT NULL"
_MOVED_NOW = ("o.ended_at IS NOT NULL AND n.ended_at IS NOT NULL AND (o.started_at, o.initiator_id, o.provider, "
              "o.provider_name, o.model, o.client) IS DISTINCT FROM (n.started_at, n.initiator_id, n.provider, "
              "n.provider_name, n.model, n.client)")


def _calls(condition: str, side: str) -> str:
    """An UPDATE's calls matching `condition` with their token rows: those that point at the `side` (o: before,
    n: after) start (a moved start: the rows follow it afterwards, CHILDREN_FOLLOW)."""
    return (f"FROM {_PAIRS} JOIN aibridge_token_usages t ON t.interception_id = {side}.id "
            f"AND t.interception_started_at = {side}.started_at WHERE {condition}")


def _one_call(i: str) -> str:
    return (f"FROM aibridge_token_usages t WHERE t.interception_id = {i}.id "
            f"AND t.interception_started_at = {i}.started_at")


def spend_functions(tables: tuple[sa.Table, ...]) -> dict[str, str]:
    """The spend trigger functions keeping `tables` (v7: the per-user days; v9: the three)."""
    ended = _OF_ROWS + " AND i.ended_at IS NOT NULL"
    return {
        "aigw_spend_tokens_added": f"""
BEGIN
    {_BULK}
    {_spend_apply(tables, _fine(ended.format(rows="added"), "i", "n", ""))}
    RETURN NULL;
END""",
        "aigw_spend_tokens_removed": f"""
BEGIN
    {_BULK}
    {_spend_apply(tables, _fine(ended.format(rows="removed"), "i", "n", "-"))}
    {_spend_tidy(tables, _keys_of("i", _OF_ROWS.format(rows="removed")))}
    RETURN NULL;
END""",
        # `aigw-proxy reprice`, the budgets' effective group: every updated row out under its old values, in under
        # its new ones.
        "aigw_spend_tokens_updated": f"""
BEGIN
    {_BULK}
    {_spend_apply(tables, _fine(ended.format(rows="old_rows"), "i", "n", "-"),
                  _fine(ended.format(rows="new_rows"), "i", "n", ""))}
    {_spend_tidy(tables, _keys_of("i", _OF_ROWS.format(rows="old_rows")))}
    RETURN NULL;
END""",
        # Calls an UPDATE ended bring their token rows written before (bulk loads; the writer inserts them after);
        # ended calls it moved to another day, user, provider, model or client take theirs along.
        "aigw_spend_interceptions_updated": f"""
BEGIN
    {_BULK}
    {_spend_apply(tables, _fine(_calls(_ENDED_NOW, "n"), "n", "t", ""), _fine(_calls(_MOVED_NOW, "o"), "o", "t", "-"),
                  _fine(_calls(_MOVED_NOW, "n"), "n", "t", ""))}
    {_spend_tidy(tables, _keys_of("o", f"FROM {_PAIRS} WHERE {_MOVED_NOW}"))}
    RETURN NULL;
END""",
        "aigw_spend_interception_inserted": f"""
BEGIN
    {_BULK}
    {_MOVING.format(row="NULL")}
    {_spend_apply(tables, _fine(_one_call("NEW"), "NEW", "t", ""))}
    RETURN NULL;
END""",
        # BEFORE: its token rows are still there to take out (there is no cascade on PostgreSQL; retention deletes
        # them first, then nothing is left).
        "aigw_spend_interception_deleted": f"""
BEGIN
    IF current_setting('aigw.bulk', true) = 'on' THEN RETURN OLD; END IF;
    {_MOVING.format(row="OLD")}
    {_spend_apply(tables, _fine(_one_call("OLD"), "OLD", "t", "-"))}
    {_spend_tidy(tables, _keys_of("OLD", ""))}
    RETURN OLD;
END""",
    }


SPEND_TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    ("aigw_spend_tokens_added", "aigw_spend_on_token_usage_inserted", "AFTER INSERT ON aibridge_token_usages",
     _STATEMENT),
    ("aigw_spend_tokens_removed", "aigw_spend_on_token_usage_deleted", "AFTER DELETE ON aibridge_token_usages",
     _STATEMENT),
    ("aigw_spend_tokens_updated", "aigw_spend_on_token_usage_updated", "AFTER UPDATE ON aibridge_token_usages",
     _STATEMENT),
    ("aigw_spend_interceptions_updated", "aigw_spend_on_interceptions_updated",
     "AFTER UPDATE ON aibridge_interceptions", _STATEMENT),
    ("aigw_spend_interception_inserted", "aigw_spend_on_ended_interception_inserted",
     "AFTER INSERT ON aibridge_interceptions", "NEW.ended_at IS NOT NULL"),
    ("aigw_spend_interception_deleted", "aigw_spend_on_ended_interception_deleted",
     "BEFORE DELETE ON aibridge_interceptions", "OLD.ended_at IS NOT NULL"),
)

# An interception whose start an UPDATE changes moves to another partition: PostgreSQL runs that as a DELETE and
# an INSERT, firing the row-level DELETE and INSERT triggers as well as the UPDATE's own. Before the row moves, its
# child rows are pointed at the new start (they name it by id and start; their own UPDATE takes their spend out
# under the old start) and `aigw.moving` is set for the statement: the row-level DELETE and INSERT triggers of the
# interceptions stand aside, and the statement-level UPDATE triggers count the move as SQLite's UPDATE triggers
# do. The last trigger of the statement (they fire in name order) clears it.
FOLLOW_FUNCTIONS: dict[str, str] = {
    "aigw_children_follow_start": "\nBEGIN\n    PERFORM set_config('aigw.moving', 'on', true);\n    " + "\n    ".join(
        f"UPDATE {table.name} SET interception_started_at = NEW.started_at "
        "WHERE interception_id = OLD.id AND interception_started_at = OLD.started_at;"
        for table in CHILD_TABLES) + "\n    RETURN NEW;\nEND",
    "aigw_moving_done": """
BEGIN
    IF current_setting('aigw.moving', true) = 'on' THEN PERFORM set_config('aigw.moving', 'off', true); END IF;
    RETURN NULL;
END""",
}
FOLLOW_TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    ("aigw_children_follow_start", "aigw_children_follow_start", "BEFORE UPDATE ON aibridge_interceptions",
     "OLD.started_at IS DISTINCT FROM NEW.started_at"),
    ("aigw_moving_done", "aigw_zz_moving_done", "AFTER UPDATE ON aibridge_interceptions", _PLAIN_STATEMENT),
)

GROUPS: dict[str, tuple[tuple[str, ...], dict[str, str], tuple[tuple[str, str, str, str], ...]]] = {
    # group: (helper functions created first, trigger functions, triggers)
    "summaries": ((SESSION_REBUILD,), SUMMARY_FUNCTIONS, SUMMARY_TRIGGERS),
    "slices": ((SLICE_REBUILD,), SLICE_FUNCTIONS, SLICE_TRIGGERS),
    "spend_v7": ((), spend_functions(V7_TABLES), SPEND_TRIGGERS),  # frozen: what v7 installed
    "spend": ((), spend_functions(SPEND_TABLES), SPEND_TRIGGERS),  # since v9
    "children": ((), FOLLOW_FUNCTIONS, FOLLOW_TRIGGERS),  # since v10
}


def create_statements(group: str) -> list[str]:
    helpers, functions, triggers = GROUPS[group]
    out = list(helpers)
    out += [f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn${body}\n$fn$"
            for name, body in functions.items()]
    for function, trigger, event, condition in triggers:
        if condition == _STATEMENT:
            verb = event.split(" ON ")[0]
            tables = ("OLD TABLE AS old_rows NEW TABLE AS new_rows" if "UPDATE" in verb
                      else "OLD TABLE AS removed" if "DELETE" in verb else "NEW TABLE AS added")
            out.append(f"CREATE TRIGGER {trigger} {event} REFERENCING {tables} FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION {function}()")
            continue
        if condition == _PLAIN_STATEMENT:
            out.append(f"CREATE TRIGGER {trigger} {event} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
            continue
        when = f" WHEN ({condition})" if condition else ""
        out.append(f"CREATE TRIGGER {trigger} {event} FOR EACH ROW{when} EXECUTE FUNCTION {function}()")
    return out


def drop_statements(group: str) -> list[str]:
    _helpers, _functions, triggers = GROUPS[group]
    return [f"DROP TRIGGER IF EXISTS {trigger} ON {event.rsplit(' ON ', 1)[1]}" for _f, trigger, event, _c in triggers]
