"""Budgets and model policy at run time, on the proxy's event loop.

Budget state comes from the database, so it survives restarts and holds across workers and replicas: what each
user spent (and each group was charged) today and this month is read with one query for every user seen lately,
once a `refresh` period (1 s), off the hot path; a call is checked against those cached figures with dict
lookups. Only a user's first call after start-up (or after 15 idle minutes) waits for their figures, and never
longer than `lookup_timeout`: if the database cannot answer, the call goes ahead (outcome `error`), so a database
hiccup never locks everyone out. The groups, memberships, roles and the budgets set at run time are re-read every
`snapshot_every` seconds, and at once when the database's change counter moved (read every refresh period): a
CLI or API change takes effect within about a second. `aigw_proxy_budget_limit_usd{scope,window}` shows the
limits in force.

A call that is already running when its user crosses a limit finishes; the next one is refused. What a replica
sees of another's calls lags by the refresh period plus the writer's commit delay.

Soft limits: each subject (a user's own limit, a group's) crossing one is reported once per window: the
`aigw_proxy_budget_soft_limit_crossings_total{scope,window}` counter and a structured log record
(`record_type` `budget_soft_limit`); `aigw_proxy_budget_soft_limit_reached{scope,window}` counts the subjects
at or over it now. Hard limits the same way (`budget_hard_limit`), and the contract's
`cost_control_blocked_users{group_id}` counts the users whose calls are refused now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from aigw_proxy.recording.commits import CommitInfo
from aigw_proxy.recording.records import Initiator, InterceptionEnded, RecordEvent
from aigw_proxy.spend.budgets import (
    Budget,
    BudgetBook,
    LimitState,
    Spent,
    blocking,
    format_usd,
    limit_states,
    micros_to_usd,
    month_start,
    refusal_message,
    resolve_budgets,
    utc_day,
    window_start,
)
from aigw_proxy.spend.policy import Denial, ModelPolicy, PolicyRule
from aigw_proxy.storage.controls import ControlsData, ControlsStore, SpendTotals, spend_totals
from aigw_proxy.storage.database import Database
from aigw_proxy.telemetry.metrics import Metrics

log = logging.getLogger("aigw_proxy.budgets")

SOFT_LIMIT: Final = "budget_soft_limit"
HARD_LIMIT: Final = "budget_hard_limit"
IDLE_AFTER = 900.0  # seconds: a user's figures stop being refreshed this long after their last call


@dataclass(slots=True)
class _Tracked:
    spent: Spent
    last_seen: float  # monotonic


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """A refusal: the used-up limit, its message, the group the user is charged to (metric label)."""

    state: LimitState
    group_id: str

    @property
    def message(self) -> str:
        return refusal_message(self.state)

    def retry_after(self, now: datetime) -> int:
        return max(1, int((self.state.resets_at - now).total_seconds()))


Check = BudgetVerdict | None


async def _read_spend(db: Database, users: Iterable[str], groups: Iterable[str], day: date) -> SpendTotals:
    """The one function budgets read spend through (storage/controls.py `spend_totals`)."""
    return await spend_totals(db, user_ids=users, group_ids=groups, day=day)


class SpendControls:
    def __init__(self, db: Database, metrics: Metrics | None = None, *, budgets: Iterable[Budget] = (),
                 policy: Iterable[PolicyRule] = (), refresh: float = 1.0,
                 snapshot_every: float = 30.0, lookup_timeout: float = 1.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._store = ControlsStore(db)
        self.m = metrics
        self.refresh = refresh
        self.snapshot_every = snapshot_every
        self.lookup_timeout = lookup_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._config_budgets: tuple[Budget, ...] = tuple(budgets)
        self.policy = ModelPolicy(policy)
        self.data = ControlsData()
        self.book = BudgetBook()
        self.unresolved: list[Budget] = []
        self._effective: dict[str, str | None] = {}
        self._users: dict[str, _Tracked] = {}
        self._groups: dict[str, Spent] = {}
        self._reported: set[tuple[str, str, str, str, date]] = set()  # (record, kind, id, scope/window, start)
        self._cold: dict[str, asyncio.Future[None]] = {}  # first reads of a user's figures in progress
        self._commits = 0  # calls with a cost committed in this process (on_commit)
        self._snapshot_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- configuration --------------------------------------------------------------------------------------
    def apply(self, budgets: Iterable[Budget], policy: Iterable[PolicyRule]) -> None:
        """New config-file budgets and model policy (start-up, reload)."""
        self._config_budgets = tuple(budgets)
        self.policy = ModelPolicy(policy)
        self._rebuild()

    def config_budgets(self) -> tuple[Budget, ...]:
        """The config file's budgets in force (a reload replaces them); any thread may call it."""
        return self._config_budgets

    def _rebuild(self) -> None:
        d = self.data
        self.book, self.unresolved = resolve_budgets((*self._config_budgets, *d.budgets), user_ids=d.user_ids,
                                                     group_ids=d.group_ids, group_names=d.groups)
        self._effective = {}
        if self.m is not None:
            b = self.book
            in_force = [*([b.default] if b.default else []), *b.users.values(), *b.groups.values()]
            self.m.set_budget_limits([(str(x.scope), str(w), micros_to_usd(limit)) for x in in_force
                                      for w, limit in x.limits()])

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.load_snapshot()
        for b in self.unresolved:
            log.warning("budget %s names no existing %s; it applies once there is one", b.scope, b.scope.kind)
        self._task = asyncio.create_task(self._loop(), name="spend controls")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def load_snapshot(self) -> None:
        self.data = await self._store.snapshot()
        self._snapshot_at = time.monotonic()
        self._rebuild()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                if time.monotonic() - self._snapshot_at >= self.snapshot_every \
                        or await self._store.version() != self.data.version:
                    await self.load_snapshot()
                await self.refresh_spend()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep the last figures, try again next period
                log.warning("could not refresh budget figures: %s", exc)

    def now(self) -> datetime:
        return self._clock()

    # -- who is who -----------------------------------------------------------------------------------------
    def role_of(self, user_id: str) -> str | None:
        found = self.data.users.get(user_id)
        return found[1] if found is not None else None

    def effective_group_id(self, user_id: str) -> str | None:
        """The group the user's calls are charged to now (stored on their token-usage rows)."""
        if user_id in self._effective:
            return self._effective[user_id]
        gid = self.book.effective_group(self.data.members.get(user_id, ()))
        self._effective[user_id] = gid
        return gid

    async def role_lookup(self, user_id: str) -> str | None:
        """The user's role, reading the snapshot again if the user is newer than it."""
        role = self.role_of(user_id)
        if role is None:
            try:
                await asyncio.wait_for(self.load_snapshot(), self.lookup_timeout)
            except Exception as exc:
                log.warning("could not read the user's role for the model policy: %s", exc)
            role = self.role_of(user_id)
        return role

    # -- model policy ---------------------------------------------------------------------------------------
    def check_model(self, *, provider_type: str, provider_name: str, model: str | None, username: str,
                    role: str | None) -> Denial | None:
        return self.policy.check(provider_type=provider_type, provider_name=provider_name, model=model,
                                 username=username, role=role)

    # -- budgets --------------------------------------------------------------------------------------------
    def _states(self, user_id: str, spent: Spent, day: date) -> tuple[list[LimitState], str | None]:
        gid = self.effective_group_id(user_id)
        states = limit_states(self.book.personal(user_id), spent.on(day))
        if gid is not None:
            states += limit_states(self.book.groups.get(gid), self._groups.get(gid, Spent(day)).on(day))
        return states, gid

    def _reached(self, user_id: str, spent: Spent, day: date) -> bool:
        """Whether any hard limit of the user's is used up (what `_states` + `blocking` would find)."""
        gid = self.effective_group_id(user_id)
        pairs = [(self.book.personal(user_id), spent)]
        if gid is not None:
            pairs.append((self.book.groups.get(gid), self._groups.get(gid, Spent(day))))
        for budget, figures in pairs:
            if budget is None:
                continue
            now = figures.on(day)
            if (budget.daily_micros is not None and now.daily_micros >= budget.daily_micros) or \
                    (budget.monthly_micros is not None and now.monthly_micros >= budget.monthly_micros):
                return True
        return False

    def check_budget(self, who: Initiator) -> Check | Awaitable[Check]:
        """None if `who` may make a model call now, else the refusal. Synchronous from cached figures; a
        coroutine only when this user's (or their group's) figures have not been read yet."""
        if self.book.empty and not (self.unresolved and who.user_id not in self.data.users):
            return None  # no budget applies (a user newer than the snapshot may be the one a budget names)
        gid = self.effective_group_id(who.user_id)
        if gid is None and self.book.personal(who.user_id) is None and who.user_id in self.data.users:
            return None  # no budget applies to this user
        began = time.perf_counter()
        tracked = self._users.get(who.user_id)
        if tracked is None or (gid is not None and gid not in self._groups):
            return self._check_cold(who, began)
        tracked.last_seen = time.monotonic()
        return self._decide(who, tracked.spent, began)

    def _decide(self, who: Initiator, spent: Spent, began: float) -> Check:
        day = utc_day(self._clock())
        verdict = None
        if self._reached(who.user_id, spent, day):  # the usual answer without building the states
            states, gid = self._states(who.user_id, spent, day)
            state = blocking(states)
            verdict = None if state is None else BudgetVerdict(state, gid or "")
        if self.m is not None:
            self.m.cost_enforcement_duration.labels("allowed" if verdict is None else "blocked").observe(
                time.perf_counter() - began)
            if verdict is not None:
                self.m.cost_blocked_requests.labels(verdict.group_id).inc()
        return verdict

    async def _check_cold(self, who: Initiator, began: float) -> Check:
        try:
            await asyncio.wait_for(asyncio.shield(self._fetch(who.user_id)), self.lookup_timeout)
        except Exception as exc:
            log.warning("budget figures for user %s could not be read (%s); the call goes ahead",
                        who.username, type(exc).__name__)
            if self.m is not None:
                self.m.cost_enforcement_duration.labels("error").observe(time.perf_counter() - began)
            return None
        return self._decide(who, self._users[who.user_id].spent, began)

    def _fetch(self, user_id: str) -> asyncio.Future[None]:
        """Read one user's figures (and their group's) now; concurrent first calls of a user share the read."""
        pending = self._cold.get(user_id)
        if pending is None:
            pending = self._cold[user_id] = asyncio.ensure_future(self._read_user(user_id))
        return pending

    async def _read_user(self, user_id: str) -> None:
        try:
            if user_id not in self.data.users:  # newer than the snapshot: its budgets and groups too
                await self.load_snapshot()
            gid = self.effective_group_id(user_id)
            commits = self._commits
            totals = await _read_spend(self._db, [user_id], [gid] if gid is not None else [], utc_day(self._clock()))
            cached = self._users.get(user_id)
            spent = self._newer(totals.users[user_id], cached.spent if cached else None, commits)
            self._users[user_id] = _Tracked(spent, time.monotonic())
            if gid is not None:
                self._groups[gid] = self._newer(totals.groups[gid], self._groups.get(gid), commits)
        finally:
            self._cold.pop(user_id, None)

    def _newer(self, read: Spent, cached: Spent | None, commits_before: int) -> Spent:
        """The figures just read, unless calls committed here meanwhile may be missing from them (`on_commit`
        counted them already): then the larger of the two."""
        if cached is None or self._commits == commits_before:
            return read
        c = cached.on(read.day)
        return Spent(read.day, max(read.daily_micros, c.daily_micros), max(read.monthly_micros, c.monthly_micros))

    async def refresh_spend(self) -> None:
        """Read the figures of every user seen lately and of their groups; update the metrics."""
        mono = time.monotonic()
        for uid in [u for u, t in self._users.items() if mono - t.last_seen > IDLE_AFTER]:
            del self._users[uid]
        user_ids = list(self._users)
        group_ids = {g for u in user_ids if (g := self.effective_group_id(u)) is not None}
        day = utc_day(self._clock())
        if not user_ids or self.book.empty:
            self._groups = {}
            self._report(day)
            return
        commits = self._commits
        totals = await _read_spend(self._db, user_ids, group_ids, day)
        for uid, spent in totals.users.items():
            tracked = self._users.get(uid)
            if tracked is not None:
                tracked.spent = self._newer(spent, tracked.spent, commits)
        self._groups = {g: self._newer(spent, self._groups.get(g), commits) for g, spent in totals.groups.items()}
        self._report(day)

    def on_commit(self, event: RecordEvent, info: CommitInfo) -> None:
        """The record writer's listener: a committed call's cost counts here at once (other replicas see it at
        their next refresh). Subscription calls and unpriced rows add nothing, as in the database's figures."""
        spend = info.spend
        if not isinstance(event, InterceptionEnded) or spend is None or spend.key.api_equivalent:
            return
        cost = sum(p.cost_micros for p in spend.prices if p is not None)
        if cost <= 0:
            return
        self._commits += 1
        day = utc_day(self._clock())
        uid = spend.key.initiator_id
        tracked = self._users.get(uid)
        if tracked is not None:
            tracked.spent = tracked.spent.on(day).plus(cost)
        gid = self.effective_group_id(uid)
        if gid is not None and gid in self._groups:
            self._groups[gid] = self._groups[gid].on(day).plus(cost)

    def group_for_write(self, user_id: str) -> str | None:
        """`effective_group_id` for the record writer, on its own thread: reads the current snapshot only."""
        return self.book.effective_group(self.data.members.get(user_id, ()))

    # -- reporting ------------------------------------------------------------------------------------------
    def _report(self, day: date) -> None:
        """Soft and hard limits reached, from the figures just read: the gauges, and each crossing once per
        window and subject."""
        soft: dict[tuple[str, str], int] = {}
        hard: dict[tuple[str, str], int] = {}
        blocked: dict[str, int] = {}
        subjects: list[tuple[str, str, str, list[LimitState]]] = []  # (kind, id, name, states)
        for uid, tracked in self._users.items():
            name = self.data.users.get(uid, (uid, ""))[0]
            subjects.append(("user", uid, name, limit_states(self.book.personal(uid), tracked.spent.on(day))))
            states, gid = self._states(uid, tracked.spent, day)
            if blocking(states) is not None:
                blocked[gid or ""] = blocked.get(gid or "", 0) + 1
        for gid, spent in self._groups.items():
            subjects.append(("group", gid, self.data.groups.get(gid, gid),
                             limit_states(self.book.groups.get(gid), spent.on(day))))
        current = (day, month_start(day))
        reported = {mark for mark in self._reported if mark[4] in current}  # this window's crossings
        for kind, sid, name, states in subjects:
            for s in states:
                key = (str(s.budget.scope), str(s.window))
                for reached, counts, record in ((s.soft_reached, soft, SOFT_LIMIT), (s.hard_reached, hard, HARD_LIMIT)):
                    if not reached:
                        continue
                    counts[key] = counts.get(key, 0) + 1
                    mark = (record, kind, sid, "/".join(key), window_start(s.window, day))
                    if mark not in reported:
                        reported.add(mark)
                        self._announce(record, kind, sid, name, s)
        self._reported = reported
        if self.m is not None:
            self.m.set_budget_states(soft, hard, blocked)

    def _announce(self, record: str, kind: str, subject_id: str, name: str, s: LimitState) -> None:
        soft = record == SOFT_LIMIT
        resets = s.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if soft:
            if self.m is not None:
                self.m.budget_soft_crossings.labels(str(s.budget.scope), str(s.window)).inc()
            message = (f"budget soft limit reached: {kind} {name} has spent {format_usd(s.spent_micros)} of "
                       f"{s.describe()} (soft limit {format_usd(s.soft_micros)})")
        else:
            message = (f"budget hard limit reached: {kind} {name} has spent {format_usd(s.spent_micros)} of "
                       f"{s.describe()}; new model calls are refused until {resets}")
        log.warning(message, extra={
            "record_type": record,
            "scope": str(s.budget.scope),
            "window": str(s.window),
            "subject": kind,
            f"{kind}_id": subject_id,
            "username" if kind == "user" else "group_name": name,
            "limit_usd": micros_to_usd(s.limit_micros),
            "soft_limit_usd": micros_to_usd(s.soft_micros),
            "spent_usd": micros_to_usd(s.spent_micros),
            "resets_at": resets,
        })
