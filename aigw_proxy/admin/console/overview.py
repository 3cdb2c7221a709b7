"""The Overview page's figures, from the summary tables where they can answer (fast on a million interceptions):
per-day counts from `aigw_interception_days` (one grouped read by day, model and client gives the chart and both
top lists), the failures from the partial index of failed interceptions, tokens and users from `aigw_sessions`
(sessions active in the window: last active at or after the start, started by the end; their whole tokens); a
member's counts come from their own rows (the per-user indexes keep them small).

The one read that grows with the data is the sessions': a 30-day window on the 1M-interception bench database sums
~130k session rows per user (~0.2 s; the users' names are read for the 20 leaders only, not joined to every row).
No day summary holds it: `aigw_spend_days` sums tokens by the *calls'* start day, while the overview sums whole
sessions by their *last activity*. The summary that would make it a few thousand rows: per (initiator, UTC day of
last_active_at) the session count and the four token sums, kept by triggers on `aigw_sessions` (a row's old bucket
out, its new one in), read for the window's whole days, with the edge day from `aigw_sessions` itself and, for a
window that ends in the past, the sessions started after its end taken out (`aigw_session_slices`' window index).
A member's per-day counts would likewise want `aigw_interception_days` per initiator.

The spend figures are the spend report's (by user and by model, run together): whole days from the daily spend
summaries, the window's two partial edge days summed from their token rows. On the bench database they add ~0.1 s
to a 24-hour window and ~0.2 s to 7 and 30 days (to 19, 53 and 208 ms); the cache (overview_cache.py) keeps that
off page loads but the first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aigw_proxy.storage import Database, InterceptionFilter, spend_report
from aigw_proxy.storage.schema.summaries import interception_days, sessions
from aigw_proxy.storage.schema.tables import interceptions, users

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
TOP = 8


@dataclass(slots=True)
class Overview:
    start: datetime
    end: datetime
    interceptions: int = 0
    failed: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    active_users: int = 0
    sessions: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)  # [{"label", "total", "parts": [(name, n)]}]
    series_by: str = "model"
    top_models: list[tuple[str, int]] = field(default_factory=list)
    top_clients: list[tuple[str, int]] = field(default_factory=list)
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    # The spend report's (storage/read/spend.py) for the calls started in the window: its total, and its groups by
    # user and by model, most first.
    spend: dict[str, Any] = field(default_factory=dict)
    spend_by_user: list[dict[str, Any]] = field(default_factory=list)
    spend_by_model: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.interceptions if self.interceptions else 0.0


def _day(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d")


async def overview(db: Database, start: datetime, end: datetime, visible_to: str | None,
                   series_by: str = "model") -> Overview:
    out = Overview(start, end, series_by=series_by if series_by in ("model", "client") else "model")
    i, s = interceptions.c, sessions.c
    async with db.reader.connect() as conn:
        # Interceptions per day, model and client: one grouped read gives the chart and both top lists.
        if visible_to is None:
            d = interception_days.c
            cells = (await conn.execute(
                sa.select(d.day, d.model, d.client, sa.func.sum(d.interceptions))
                .where(d.day >= _day(start), d.day <= _day(end)).group_by(d.day, d.model, d.client))).all()
        else:
            mine = [i.initiator_id == visible_to, i.ended_at.is_not(None), i.started_at >= start, i.started_at <= end]
            day = sa.func.substr(sa.cast(i.started_at, sa.String), 1, 10) if db.writer.dialect.name == "sqlite" \
                else sa.func.to_char(i.started_at, "YYYY-MM-DD")
            client = sa.func.coalesce(i.client, "Unknown")
            cells = (await conn.execute(sa.select(day, i.model, client, sa.func.count())
                                        .where(*mine).group_by(day, i.model, client))).all()
        # `'failed'` literally: SQLite uses the partial index of failed interceptions only for a literal term.
        fail = [i.status == sa.literal_column("'failed'"), i.started_at >= start, i.started_at <= end,
                i.ended_at.is_not(None)]
        if visible_to is not None:
            fail.append(i.initiator_id == visible_to)
        out.failed = int((await conn.execute(sa.select(sa.func.count()).where(*fail))).scalar() or 0)
        # The sessions active in the window, summed per user (no join: the names are read for the leaders only).
        active = [s.last_active_at >= start, s.started_at <= end]
        if visible_to is not None:
            active.append(s.initiator_id == visible_to)
        board = (await conn.execute(
            sa.select(s.initiator_id, sa.func.count(), *(sa.func.sum(getattr(s, t)) for t in TOKENS))
            .where(*active).group_by(s.initiator_id))).all()
        leaders = []
        for uid, n, *sums in board:
            row = {"user_id": uid, "sessions": int(n), **{t: int(v or 0) for t, v in zip(TOKENS, sums, strict=True)}}
            row["total"] = sum(row[t] for t in TOKENS)
            leaders.append(row)
        # Ties keep the user id order the grouped read gives them (as the sort below is stable).
        leaders.sort(key=lambda x: -x["total"])
        top = leaders[:20]
        names = dict((await conn.execute(sa.select(users.c.id, users.c.username)
                                         .where(users.c.id.in_([r["user_id"] for r in top])))).all()) if top else {}
    days: dict[str, dict[str, int]] = {}
    per_model: dict[str, int] = {}
    per_client: dict[str, int] = {}
    by_model = out.series_by == "model"
    for day_, model, client_, n in cells:
        n = int(n)
        key = str(model if by_model else client_)
        parts = days.setdefault(str(day_), {})
        parts[key] = parts.get(key, 0) + n
        per_model[str(model)] = per_model.get(str(model), 0) + n
        per_client[str(client_)] = per_client.get(str(client_), 0) + n
    out.interceptions = sum(sum(v.values()) for v in days.values())
    first = start.astimezone(UTC).date()
    for n in range((end.astimezone(UTC).date() - first).days + 1):
        label = (first + timedelta(days=n)).isoformat()
        parts_ = sorted(days.get(label, {}).items(), key=lambda kv: -kv[1])
        out.series.append({"label": label, "total": sum(v for _, v in parts_), "parts": parts_})
    out.top_models = _top(per_model)
    out.top_clients = _top(per_client)
    for r in top:
        r["username"] = names.get(r["user_id"]) or r["user_id"]
    out.leaderboard = top
    out.active_users = len(leaders)
    out.sessions = sum(x["sessions"] for x in leaders)
    out.tokens = {t: sum(x[t] for x in leaders) for t in TOKENS}
    # Money by the calls' start, as the spend report and budgets count it (the token cards above count whole
    # sessions by their last activity): read from the daily spend summaries, plus the window's two partial days.
    # The two reports at once, each on a reader connection of its own (SQLite reads release the GIL).
    flt = InterceptionFilter(started_after=start, started_before=end, visible_to=visible_to)
    users_spend, models_spend = await asyncio.gather(spend_report(db, flt, by="user"),
                                                     spend_report(db, flt, by="model"))
    out.spend = users_spend["total"]
    out.spend_by_user = [g for g in users_spend["groups"] if g["records"]][:TOP]
    out.spend_by_model = [g for g in models_spend["groups"] if g["records"]][:TOP]
    return out


def _top(counts: dict[str, int]) -> list[tuple[str, int]]:
    """The TOP keys by count, most first (ties by key, as the grouped read ordered them)."""
    return sorted(sorted(counts.items()), key=lambda kv: -kv[1])[:TOP]


def metric_samples(registry: Any, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric family in a prometheus_client registry (empty if it has none)."""
    found: list[tuple[dict[str, str], float]] = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found
