"""The Overview page's figures, from the summary tables where they can answer (fast on a million interceptions):
per-day counts from `aigw_interception_days`, tokens and users from `aigw_sessions` (sessions active in the
window); a member's figures come from their own rows (the per-user indexes keep them small)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aigw_proxy.storage import Database
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

    @property
    def failure_rate(self) -> float:
        return self.failed / self.interceptions if self.interceptions else 0.0


def _day(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d")


CACHE_SECONDS = 60.0  # a window's figures are recomputed at most once a minute per (window, grouping, viewer)
_cache: dict[tuple[Any, ...], tuple[float, Overview]] = {}


async def cached_overview(db: Database, window: str, start: datetime, end: datetime, visible_to: str | None,
                          series_by: str = "model") -> Overview:
    """`overview()`, reused for up to CACHE_SECONDS for the same window, grouping and viewer: a 30-day window on
    a million interceptions groups ~130k session rows (~0.3 s), and the figures need not be newer than a minute.
    A custom window (fixed dates) is cached the same way."""
    key = (id(db), window, series_by, visible_to, start.date() if window == "custom" else None,
           end.date() if window == "custom" else None)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = await overview(db, start, end, visible_to, series_by)
    if len(_cache) > 512:
        _cache.clear()
    _cache[key] = (now, value)
    return value


async def overview(db: Database, start: datetime, end: datetime, visible_to: str | None,
                   series_by: str = "model") -> Overview:
    out = Overview(start, end, series_by=series_by if series_by in ("model", "client") else "model")
    i, s = interceptions.c, sessions.c
    by = out.series_by
    async with db.reader.connect() as conn:
        if visible_to is None:
            d = interception_days.c
            rows = (await conn.execute(
                sa.select(d.day, getattr(d, by).label("k"), sa.func.sum(d.interceptions).label("n"))
                .where(d.day >= _day(start), d.day <= _day(end)).group_by(d.day, "k"))).all()
            per_model = (await conn.execute(
                sa.select(d.model, sa.func.sum(d.interceptions).label("n")).where(d.day >= _day(start),
                                                                                  d.day <= _day(end))
                .group_by(d.model).order_by(sa.desc("n")).limit(TOP))).all()
            per_client = (await conn.execute(
                sa.select(d.client, sa.func.sum(d.interceptions).label("n")).where(d.day >= _day(start),
                                                                                   d.day <= _day(end))
                .group_by(d.client).order_by(sa.desc("n")).limit(TOP))).all()
        else:
            mine = [i.initiator_id == visible_to, i.ended_at.is_not(None), i.started_at >= start, i.started_at <= end]
            day = sa.func.substr(sa.cast(i.started_at, sa.String), 1, 10) if db.writer.dialect.name == "sqlite" \
                else sa.func.to_char(i.started_at, "YYYY-MM-DD")
            key = i.model if by == "model" else sa.func.coalesce(i.client, "Unknown")
            rows = (await conn.execute(sa.select(day.label("day"), key.label("k"), sa.func.count().label("n"))
                                       .where(*mine).group_by("day", "k"))).all()
            per_model = (await conn.execute(sa.select(i.model, sa.func.count().label("n")).where(*mine)
                                            .group_by(i.model).order_by(sa.desc("n")).limit(TOP))).all()
            client = sa.func.coalesce(i.client, "Unknown").label("client")
            per_client = (await conn.execute(sa.select(client, sa.func.count().label("n")).where(*mine)
                                             .group_by(client).order_by(sa.desc("n")).limit(TOP))).all()
        # `'failed'` literally: SQLite uses the partial index of failed interceptions only for a literal term.
        fail = [i.status == sa.literal_column("'failed'"), i.started_at >= start, i.started_at <= end,
                i.ended_at.is_not(None)]
        if visible_to is not None:
            fail.append(i.initiator_id == visible_to)
        out.failed = int((await conn.execute(sa.select(sa.func.count()).where(*fail))).scalar() or 0)
        active = [s.last_active_at >= start, s.started_at <= end]
        if visible_to is not None:
            active.append(s.initiator_id == visible_to)
        sums = [sa.func.sum(getattr(s, t)).label(t) for t in TOKENS]
        board = (await conn.execute(
            sa.select(s.initiator_id, users.c.username, sa.func.count().label("sessions"), *sums)
            .select_from(sessions.outerjoin(users, users.c.id == s.initiator_id))
            .where(*active).group_by(s.initiator_id, users.c.username))).all()
    days: dict[str, dict[str, int]] = {}
    for r in rows:
        days.setdefault(str(r.day), {})[str(r.k)] = days.get(str(r.day), {}).get(str(r.k), 0) + int(r.n)
    out.interceptions = sum(sum(v.values()) for v in days.values())
    first = start.astimezone(UTC).date()
    for n in range((end.astimezone(UTC).date() - first).days + 1):
        label = (first + timedelta(days=n)).isoformat()
        parts = sorted(days.get(label, {}).items(), key=lambda kv: -kv[1])
        out.series.append({"label": label, "total": sum(v for _, v in parts), "parts": parts})
    out.top_models = [(str(r[0]), int(r.n)) for r in per_model]
    out.top_clients = [(str(r[0]), int(r.n)) for r in per_client]
    leaders = []
    for r in board:
        row = {"user_id": r.initiator_id, "username": r.username or r.initiator_id, "sessions": int(r.sessions),
               **{t: int(getattr(r, t) or 0) for t in TOKENS}}
        row["total"] = sum(row[t] for t in TOKENS)
        leaders.append(row)
    leaders.sort(key=lambda x: -x["total"])
    out.leaderboard = leaders[:20]
    out.active_users = len(leaders)
    out.sessions = sum(x["sessions"] for x in leaders)
    out.tokens = {t: sum(x[t] for x in leaders) for t in TOKENS}
    return out


def metric_samples(registry: Any, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric family in a prometheus_client registry (empty if it has none)."""
    found: list[tuple[dict[str, str], float]] = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found
