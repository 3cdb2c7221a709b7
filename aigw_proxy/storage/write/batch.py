"""One batch of record events written in one transaction, and the memory later batches need: the interceptions
still in flight (their start metadata and lineage, until they end) and the thread lineage links.

Writes are queued and sent with executemany (interception inserts, then end updates, then child rows: each group
only depends on the ones before it). Nothing in memory changes until the transaction committed: each event yields
an outcome, the batch's outcomes are collected in a `BatchResult`, and the writer applies it (`commit()`) once the
batch went through, so a batch retried after a failure starts from the same memory.

With `isolate`, each event is written inside its own savepoint, so a record the database refuses (duplicate id, a
value it cannot store) is skipped alone (`invalid`) instead of failing the batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.recording.commits import CommitInfo, Spend, SpendKey
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.spend import Pricer
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.schema.tables import CHILD_TABLES, interceptions
from aigw_proxy.storage.write.lineage import Lineage, Links, links_of, remember
from aigw_proxy.storage.write.rows import (
    END_INTERCEPTION,
    INSERT_CHILD,
    INSERT_INTERCEPTION,
    Row,
    child_rows,
    end_error_type,
    end_params,
    ended_model,
    spend_key,
    start_row,
    usage_prices,
)

log = logging.getLogger("aigw_proxy.storage")

INFLIGHT_CAP: Final = 100_000  # in-flight start metadata kept in memory; beyond it the writer reads the row back


@dataclass(slots=True)
class InFlight:
    """What the end of a started interception needs from its start."""

    metadata: dict[str, Any]
    info: CommitInfo
    initiator_id: str
    spend: SpendKey  # what its token usage is priced and reported by


@dataclass(slots=True)
class _Skip:
    reason: str  # counted in the writer's `dropped`


@dataclass(slots=True)
class _Outcome:
    """One event's effect on the writer's memory, applied only once its writes went through."""

    info: CommitInfo
    inflight: InFlight | None = None  # starts
    links: Links = field(default_factory=Links)  # ends: its tool call / response ids → this interception


@dataclass(slots=True)
class BatchResult:
    committed: list[tuple[RecordEvent, CommitInfo]] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    started: dict[str, InFlight] = field(default_factory=dict)  # started in this batch, still in flight
    ended: set[str] = field(default_factory=set)
    links: Links = field(default_factory=Links)

    def add(self, event: RecordEvent, outcome: _Outcome | _Skip) -> None:
        if isinstance(outcome, _Skip):
            self.drops[outcome.reason] += 1
            return
        if outcome.inflight is not None:
            self.started[event.id] = outcome.inflight
        else:
            self.started.pop(event.id, None)
            self.ended.add(event.id)
        self.links.update(outcome.links)
        self.committed.append((event, outcome.info))


class _Pending:
    """Writes queued in the current transaction; `flush()` sends them in dependency order."""

    __slots__ = ("children", "ends", "starts")

    def __init__(self) -> None:
        self.starts: list[Row] = []
        self.ends: list[Row] = []
        self.children: dict[str, list[Row]] = {t.name: [] for t in CHILD_TABLES}

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        for rows in self.children.values():
            rows.clear()

    async def flush(self, conn: AsyncConnection) -> None:
        if self.starts:
            rows, self.starts = self.starts, []
            await conn.execute(INSERT_INTERCEPTION, rows)
        if self.ends:
            rows, self.ends = self.ends, []
            result = await conn.execute(END_INTERCEPTION, rows)
            if result.rowcount >= 0 and result.rowcount < len(rows):  # another process ended some first
                log.warning("%d of %d interceptions were already ended", len(rows) - result.rowcount, len(rows))
        for name, rows in self.children.items():
            if rows:
                self.children[name] = []
                await conn.execute(INSERT_CHILD[name], rows)


class BatchWriter:
    """Writes batches on the database's writer engine; keeps the in-flight interceptions and lineage links."""

    def __init__(self, db: Database, pricer: Pricer | None = None) -> None:
        self._db = db
        self.pricer = pricer or Pricer()  # replaced on a config reload: new prices apply to new rows
        self.inflight: dict[str, InFlight] = {}
        self.lineage = Lineage()
        self._naive_warned = False

    async def write(self, batch: list[RecordEvent], *, isolate: bool) -> BatchResult:
        """Write `batch` in one transaction; raise if the transaction failed (nothing was written then)."""
        result = BatchResult()
        pending = _Pending()
        async with self._db.writer.begin() as conn:
            for event in batch:
                outcome: _Outcome | _Skip
                if not isolate:
                    outcome = await self._write_event(conn, event, result, pending)
                else:
                    try:
                        async with conn.begin_nested():
                            outcome = await self._write_event(conn, event, result, pending)
                            await pending.flush(conn)
                    except Exception as exc:
                        if is_database_error(exc):
                            raise
                        pending.clear()
                        log.error("record %s refused by the database: %s", _event_name(event), describe(exc))
                        outcome = _Skip("invalid")
                result.add(event, outcome)
            await pending.flush(conn)
        return result

    def commit(self, result: BatchResult) -> None:
        """Apply a written batch to the memory."""
        for event_id in result.ended:
            self.inflight.pop(event_id, None)
        remember(self.inflight, result.started, INFLIGHT_CAP)
        self.lineage.remember(result.links)

    async def _write_event(
        self, conn: AsyncConnection, event: RecordEvent, batch: BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        """Queue one event's writes; change nothing in memory (the caller applies the outcome)."""
        if isinstance(event, InterceptionStarted):
            return await self._write_start(conn, event, batch, pending)
        if isinstance(event, InterceptionEnded):
            return await self._write_end(conn, event, batch, pending)
        raise TypeError(f"not a record event: {type(event).__name__}")

    async def _write_start(
        self, conn: AsyncConnection, ev: InterceptionStarted, batch: BatchResult, pending: _Pending
    ) -> _Outcome:
        async def flush_pending() -> None:  # the lookup must see this batch's rows
            await pending.flush(conn)

        parent = await self.lineage.parent(conn, ev, batch.links, flush_pending)
        parent_id = parent.interception_id if parent else None
        root_id = parent.root_id if parent else None
        row = start_row(ev, started_at=self._utc(ev.started_at), parent_id=parent_id, root_id=root_id)
        pending.starts.append(row)
        info = CommitInfo(
            thread_parent_id=parent_id, thread_root_id=root_id, session_id=row["client_session_id"] or root_id or ev.id
        )
        return _Outcome(info, inflight=InFlight(dict(ev.metadata), info, ev.initiator.user_id, spend_key(row)))

    async def _write_end(
        self, conn: AsyncConnection, ev: InterceptionEnded, batch: BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        if ev.id in batch.ended:
            return _Skip("already_ended")
        inflight = batch.started.get(ev.id) or self.inflight.get(ev.id)
        if inflight is None:  # started by an earlier run or evicted from memory: read the row
            row = (await conn.execute(_IN_FLIGHT_ROW, {"id": ev.id})).first()
            if row is None:
                return _Skip("unknown_interception")
            if row.ended_at is not None:
                return _Skip("already_ended")
            inflight = InFlight(
                row.metadata or {},
                CommitInfo(row.thread_parent_id, row.thread_root_id, row.session_id),
                row.initiator_id,
                spend_key(row._asdict()),
            )

        ended_at = self._utc(ev.ended_at)
        pending.ends.append(end_params(ev, ended_at=ended_at, start_metadata=inflight.metadata))
        key = ended_model(inflight.spend, ev)
        prices = usage_prices(self.pricer, key, ev, ended_at) if ev.token_usages else ()
        for name, rows in child_rows(ev, ended_at, prices=prices, api_equivalent=key.api_equivalent).items():
            pending.children[name].extend(rows)
        started = inflight.info
        return _Outcome(
            CommitInfo(
                thread_parent_id=started.thread_parent_id,
                thread_root_id=started.thread_root_id,
                session_id=started.session_id,
                error_type=end_error_type(ev),
                spend=Spend(key, prices) if ev.token_usages else None,
            ),
            links=links_of(ev, started.thread_root_id, inflight.initiator_id),
        )

    def _utc(self, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            if not self._naive_warned:
                self._naive_warned = True
                log.warning("record with a naive datetime %r: assuming UTC", value)
            return value.replace(tzinfo=UTC)
        return value


_i = interceptions.c
_IN_FLIGHT_ROW = sa.select(
    _i.metadata, _i.ended_at, _i.thread_parent_id, _i.thread_root_id, _i.session_id, _i.initiator_id,
    _i.provider, _i.provider_name, _i.model, _i.client, _i.credential_kind,
).where(_i.id == sa.bindparam("id"))


def is_database_error(exc: BaseException) -> bool:
    """True when the database failed (retry the batch later), False when one record was refused."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    if isinstance(exc, sa.exc.DBAPIError):
        return True
    if isinstance(exc, sa.exc.StatementError):  # a value could not be bound
        return False
    return isinstance(exc, sa.exc.SQLAlchemyError | OSError)


def describe(exc: BaseException) -> str:
    """The driver's error (type and message) behind a SQLAlchemy exception, else the exception itself."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}"


def _event_name(event: object) -> str:
    return f"{type(event).__name__}({getattr(event, 'id', '?')!r})"
