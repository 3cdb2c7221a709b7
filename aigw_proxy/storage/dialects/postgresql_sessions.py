"""PostgreSQL building a sessions page's JSON (`Backend.session_page_json`): one statement reads the page's sessions'
calls, newest prompts and token rows and aggregates them per session in the database, returning each session's
JSON text around its cost (which the read layer formats: costs.py), instead of shipping every call, prompt and
cost row to Python to be grouped there (session_list._session_details, the reference it is tested against:
tests/storage/test_sessions_json.py).

A 1000-session page is ~3,000 calls on the bench database: decoding their rows and grouping them in Python was
most of the page's time, with the GIL held.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aigw_proxy.storage.dialects.postgresql_json import value_text
from aigw_proxy.storage.schema.summaries import sessions as summary
from aigw_proxy.storage.schema.tables import interceptions, token_usages, user_prompts, users

# One page row: (session id, initiator id, started_at, ended_at, threads, interceptions, last_active_at), the
# per-session columns of the listed (maybe filtered) interceptions; the rest describes the whole session.
PageRow = tuple[str, str, datetime, datetime, int, int, datetime]

_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


def _head(listed: str) -> str:
    """The session's JSON text up to its cost; the listed columns (started_at … interceptions) from alias `listed`."""
    return " || ".join((
        """'{"id":'""", value_text("p.sid", "value"),
        """',"initiator":{"id":'""", value_text("p.uid", "value"),
        """',"username":'""", value_text("u.username", "value"),
        """'},"providers":'""", "COALESCE(CAST(to_json(f.providers) AS TEXT), '[]')",
        """',"models":'""", "COALESCE(CAST(to_json(f.models) AS TEXT), '[]')",
        """',"client":'""", value_text("fc.client", "value"),
        """',"metadata":'""", value_text("fc.metadata", "metadata"),
        """',"started_at":'""", value_text(f"{listed}.started_at", "time"),
        """',"ended_at":'""", value_text(f"{listed}.ended_at", "time"),
        """',"threads":'""", f"CAST({listed}.threads AS TEXT)", """',"interceptions":'""", f"CAST({listed}.n AS TEXT)",
        """',"token_usage_summary":{'""",
        " || ',' || ".join(f"""'"{t}":' || CAST(COALESCE(w.{t}, 0) AS TEXT)""" for t in _TOKENS),
        """'},"cost":'""",
    ))


def _tail(listed: str) -> str:
    """The rest of the session's JSON text, after its cost."""
    return " || ".join((
        """',"last_prompt":'""", value_text("pr.prompt", "value"),
        """',"last_active_at":'""", value_text(f"{listed}.last_active_at", "time"),
        "'}'",
    ))


_COST_SUMS = ", ".join(
    f"count(*) FILTER (WHERE {kind}) AS {name}_n, "
    f"count(*) FILTER (WHERE {kind} AND t.cost_micros IS NULL) AS {name}_u, "
    f"CAST(COALESCE(sum(t.cost_micros) FILTER (WHERE {kind}), 0) AS BIGINT) AS {name}_m"
    for name, kind in (("api", "NOT t.api_equivalent"), ("eq", "t.api_equivalent")))

_WHOLE_TOKENS = ", ".join(f"s.{t}" for t in _TOKENS)
# The page: `page` its keys in order (and the listed columns, PageRow: $1..$7), `whole` the sessions' summary rows
# (and, where the page rows are summary rows, the listed columns: only their keys are sent, $1 and $2).
_LISTED = f"""
    page AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[],
                             $6::bigint[], $7::timestamptz[])
            WITH ORDINALITY AS p(sid, uid, started_at, ended_at, threads, n, last_active_at, ord)),
    whole AS MATERIALIZED (
        SELECT p.ord, s.session_id, s.initiator_id, s.started_at, s.ended_at, {_WHOLE_TOKENS}
        FROM page p JOIN {summary.name} s ON s.session_id = p.sid AND s.initiator_id = p.uid)"""
_WHOLE = f"""
    page AS (SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(sid, uid, ord)),
    whole AS MATERIALIZED (
        SELECT p.ord, s.session_id, s.initiator_id, s.started_at, s.ended_at, s.threads, s.interceptions AS n,
               s.last_active_at, {_WHOLE_TOKENS}
        FROM page p JOIN {summary.name} s ON s.session_id = p.sid AND s.initiator_id = p.uid)"""

# After the page: `LO AND HI`, the first start and last end of the page's whole sessions: the partitions their
# calls and child rows are in. Each session's calls are looked up within its own span (the session summary's):
# they all started in it. The first call is the one with the smallest (started_at, id), as in Python; providers
# and models sort as Python's sorted() does (the columns' collation is "C": code points).
_FACTS = f"""
    calls AS MATERIALIZED (
        SELECT i.id, i.session_id, i.initiator_id, i.provider, i.model, i.client, i.started_at, i.metadata
        FROM whole w JOIN {interceptions.name} i ON i.session_id = w.session_id AND i.initiator_id = w.initiator_id
             AND i.started_at BETWEEN w.started_at AND w.ended_at
        WHERE i.ended_at IS NOT NULL AND i.started_at BETWEEN LO AND HI),
    facts AS (
        SELECT session_id, initiator_id,
               array_agg(DISTINCT provider ORDER BY provider) AS providers,
               array_agg(DISTINCT model ORDER BY model) AS models
        FROM calls GROUP BY session_id, initiator_id),
    firsts AS (
        SELECT DISTINCT ON (session_id, initiator_id) session_id, initiator_id,
               COALESCE(NULLIF(client, ''), 'Unknown') AS client, metadata
        FROM calls ORDER BY session_id, initiator_id, started_at, id),
    prompts AS (
        SELECT DISTINCT ON (c.session_id, c.initiator_id) c.session_id, c.initiator_id, p.prompt
        FROM calls c JOIN {user_prompts.name} p
             ON p.interception_id = c.id AND p.interception_started_at = c.started_at
        WHERE p.interception_started_at BETWEEN LO AND HI
        ORDER BY c.session_id, c.initiator_id, p.created_at DESC, p.id DESC),
    costs AS (
        SELECT c.session_id, c.initiator_id, {_COST_SUMS}
        FROM calls c JOIN {token_usages.name} t
             ON t.interception_id = c.id AND t.interception_started_at = c.started_at
        WHERE t.interception_started_at BETWEEN LO AND HI
        GROUP BY c.session_id, c.initiator_id)
    SELECT HEAD_JSON,
           COALESCE(k.api_n, 0), COALESCE(k.api_u, 0), COALESCE(k.api_m, 0),
           COALESCE(k.eq_n, 0), COALESCE(k.eq_u, 0), COALESCE(k.eq_m, 0),
           TAIL_JSON
    FROM page p LEFT JOIN whole w ON w.ord = p.ord LEFT JOIN {users.name} u ON u.id = p.uid
         LEFT JOIN facts f ON f.session_id = p.sid AND f.initiator_id = p.uid
         LEFT JOIN firsts fc ON fc.session_id = p.sid AND fc.initiator_id = p.uid
         LEFT JOIN prompts pr ON pr.session_id = p.sid AND pr.initiator_id = p.uid
         LEFT JOIN costs k ON k.session_id = p.sid AND k.initiator_id = p.uid
    ORDER BY p.ord"""


def _sql(page: str, listed: str, lo: str, hi: str) -> str:
    return (f"WITH {page}, " + _FACTS.replace("LO AND HI", f"{lo} AND {hi}")
            .replace("HEAD_JSON", _head(listed)).replace("TAIL_JSON", _tail(listed)))


_SQL = {True: _sql(_WHOLE, "w", "$3", "$4"), False: _sql(_LISTED, "p", "$8", "$9")}

# The span of the page's whole sessions, where the caller does not know it (its rows cover matching calls only).
_SPAN_SQL = f"""
    SELECT min(s.started_at), max(s.ended_at)
    FROM unnest($1::text[], $2::text[]) AS p(sid, uid)
    JOIN {summary.name} s ON s.session_id = p.sid AND s.initiator_id = p.uid"""


async def page_json(driver: Any, page: Sequence[PageRow], span: tuple[datetime, datetime] | None
                    ) -> list[tuple[Any, ...]]:
    """Per page row, in order: (the session's JSON text up to `"cost":`, its CostSums' six sums, the rest of its
    JSON text). `driver`: an asyncpg connection in the read's transaction; `span`: where the rows are the sessions'
    summary rows, the first start and last end of the page's sessions, else None (looked up)."""
    if not page:
        return []
    columns: list[list[Any]] = [list(c) for c in zip(*page, strict=True)]
    if span is not None:
        return [tuple(r) for r in await driver.fetch(_SQL[True], columns[0], columns[1], *span)]
    lo, hi = await driver.fetchrow(_SPAN_SQL, columns[0], columns[1])
    if lo is None:  # none of them has a summary row any more (a purge between the statements): no calls either
        lo = hi = min(columns[2])
    return [tuple(r) for r in await driver.fetch(_SQL[False], *columns, lo, hi)]
