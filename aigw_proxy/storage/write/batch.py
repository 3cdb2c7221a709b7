"""One batch of record events written in one transaction, and the memory later batches need: the interceptions
still in flight (their start metadata and lineage, until they end) and the thread lineage links.

Writes are queued and sent one statement per kind for the whole batch (interception inserts, then end updates, then
child rows: each group only depends on the ones before it), through the backend (`write_rows`: on SQLite every
statement's executemany in one call on the driver's thread, on PostgreSQL array-bound statements, `insert_rows`
and `end_interceptions`, one after the other). Nothing in memory changes
until the transaction committed: each event yields an outcome, the batch's outcomes are collected in a
`BatchResult`, and the writer applies it (`commit()`) once the batch went through, so a batch retried after a
failure starts from the same memory.

With `isolate`, each event is written inside its own savepoint, so a record the database refuses (duplicate id, a
value it cannot store) is skipped alone (`invalid`) instead of failing the batch.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.capture.raw import CaptureRecord
from aigw_proxy.recording.commits import CommitInfo, Spend, SpendKey
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, InterceptionUsage, RecordEvent
from aigw_proxy.spend import Pricer
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.dialects import RowWrite, backend_of
from aigw_proxy.storage.schema.tables import CHILD_TABLES, captures, interceptions, token_usages, user_prompts
from aigw_proxy.storage.write.lineage import Lineage, Links, links_of, remember
from aigw_proxy.storage.write.rows import (
    DELETE_TOKEN_USAGES,
    END_INTERCEPTION,
    INSERT_CAPTURE,
    INSERT_CHILD,
    INSERT_INTERCEPTION,
    SET_PROMPT_RESPONSE_ID,
    Row,
    capture_row,
    child_rows,
    end_error_type,
    end_params,
    ended_model,
    spend_key,
    start_children,
    start_row,
    token_rows,
    usage_prices,
)

log = logging.getLogger("aigw_proxy.storage")

StoredEvent = RecordEvent | CaptureRecord  # what the writer queues: record events and raw captures

INFLIGHT_CAP: Final = 100_000  # in-flight start metadata kept in memory; beyond it the writer reads the row back


@dataclass(slots=True)
class InFlight:
    """What the end of a started interception needs from its start."""

    metadata: dict[str, Any]
    info: CommitInfo
    initiator_id: str
    spend: SpendKey  # what its token usage is priced and reported by
    prompt_written: bool = False  # the start stored the prompt
    usage_written: bool = False  # token rows written while in progress (replaced when it ends)
    # As stored: the end's UPDATE and the child rows name the interception by it too (PostgreSQL's partition key).
    started_at: datetime | None = None


@dataclass(slots=True)
class _Skip:
    reason: str  # counted in the writer's `dropped`


@dataclass(slots=True)
class _Outcome:
    """One event's effect on the writer's memory, applied only once its writes went through."""

    info: CommitInfo
    inflight: InFlight | None = None  # starts
    links: Links = field(default_factory=Links)  # ends: its tool call / response ids → this interception
    usage: bool = False  # an in-progress usage update (whether or not it wrote rows)
    capture: bool = False  # a raw capture (changes nothing in memory)


@dataclass(slots=True)
class BatchResult:
    committed: list[tuple[StoredEvent, CommitInfo]] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    started: dict[str, InFlight] = field(default_factory=dict)  # started in this batch, still in flight
    ended: set[str] = field(default_factory=set)
    usage_written: set[str] = field(default_factory=set)  # in flight, with token rows written in this batch
    links: Links = field(default_factory=Links)

    def add(self, event: StoredEvent, outcome: _Outcome | _Skip) -> None:
        if isinstance(outcome, _Skip):
            self.drops[outcome.reason] += 1
            return
        if outcome.inflight is not None:
            self.started[event.id] = outcome.inflight
        elif not outcome.usage and not outcome.capture:
            self.started.pop(event.id, None)
            self.ended.add(event.id)
            self.usage_written.discard(event.id)
        self.links.update(outcome.links)
        self.committed.append((event, outcome.info))


class _Pending:
    """Writes queued in the current transaction; `flush()` sends them in dependency order: interceptions, the
    prompts of starts, deletes of in-progress token rows, their replacements, prompt response ids, ends, and the
    ends' child rows (after the end, as the summary triggers expect), then raw captures (after their end). No
    interception has both in-progress token rows and its end in one batch (`BatchWriter.write` drops usage updates
    an end supersedes)."""

    __slots__ = ("captures", "children", "ends", "prompt_ids", "start_children", "starts", "usage", "usage_deletes")

    def __init__(self) -> None:
        self._renew()

    def _renew(self) -> None:
        self.starts: list[Row] = []
        self.start_children: list[Row] = []  # user_prompts rows
        self.usage_deletes: list[Row] = []
        self.usage: list[Row] = []  # token_usages rows
        self.prompt_ids: list[Row] = []
        self.ends: list[Row] = []
        self.children: dict[str, list[Row]] = {t.name: [] for t in CHILD_TABLES}
        self.captures: list[Row] = []

    def clear(self) -> None:
        for rows in (self.starts, self.start_children, self.usage_deletes, self.usage, self.prompt_ids, self.ends,
                     self.captures):
            rows.clear()
        for rows in self.children.values():
            rows.clear()

    async def flush(self, conn: AsyncConnection) -> None:
        writes: list[RowWrite] = []
        if self.starts:
            writes.append(RowWrite("insert", INSERT_INTERCEPTION, self.starts))
        if self.start_children:
            writes.append(RowWrite("insert", INSERT_CHILD[user_prompts.name], self.start_children))
        if self.usage_deletes:
            writes.append(RowWrite("execute", DELETE_TOKEN_USAGES, self.usage_deletes))
        if self.usage:
            writes.append(RowWrite("insert", INSERT_CHILD[token_usages.name], self.usage))
        if self.prompt_ids:
            writes.append(RowWrite("execute", SET_PROMPT_RESPONSE_ID, self.prompt_ids))
        ends = len(writes) if self.ends else -1
        if self.ends:
            writes.append(RowWrite("end", END_INTERCEPTION, self.ends))
        for name, rows in self.children.items():
            if rows:
                writes.append(RowWrite("insert", INSERT_CHILD[name], rows))
        if self.captures:
            writes.append(RowWrite("insert", INSERT_CAPTURE, self.captures))
        if not writes:
            return
        self._renew()  # the rows are the writes' now
        counts = await backend_of(conn).write_rows(conn, writes)
        if ends >= 0 and 0 <= counts[ends] < len(writes[ends].rows):  # another process ended some first
            log.warning("%d of %d interceptions were already ended", len(writes[ends].rows) - counts[ends],
                        len(writes[ends].rows))


def _no_group(_initiator_id: str) -> str | None:
    return None


class BatchWriter:
    """Writes batches on the database's writer engine; keeps the in-flight interceptions and lineage links."""

    def __init__(self, db: Database, pricer: Pricer | None = None) -> None:
        self.db = db  # the record writer points it at its own, on its own thread
        self.pricer = pricer or Pricer()  # replaced on a config reload: new prices apply to new rows
        # The group whose budget a user's calls are charged to now (spend controls), stored on the token rows.
        self.group_of: Callable[[str], str | None] = _no_group
        self.inflight: dict[str, InFlight] = {}
        self.lineage = Lineage()
        self._naive_warned = False

    async def write(self, batch: list[StoredEvent], *, isolate: bool, replay: bool = False) -> BatchResult:
        """Write `batch` in one transaction; raise if the transaction failed (nothing was written then).

        `replay`: the events may have been written before (a spool replayed after a crash): starts already in
        the database are skipped (`already_written`); ends and usage updates are idempotent anyway."""
        result = BatchResult()
        pending = _Pending()
        await self.db.backend.prepare_batch(self.db, batch)  # PostgreSQL: the day partitions the rows go to
        for event in batch:  # redact and compress raw captures before the transaction takes the write lock
            if isinstance(event, CaptureRecord) and event.sealed is None:
                try:
                    event.seal()
                except Exception:
                    pass  # logged and skipped by _write_capture
        # A usage update is superseded by a later one, or by the end, of the same interception in this batch.
        ending = {e.id for e in batch if isinstance(e, InterceptionEnded)}
        last_usage = {e.id: n for n, e in enumerate(batch) if isinstance(e, InterceptionUsage)}
        async with self.db.writer.begin() as conn:
            existing = await self._existing_starts(conn, batch) if replay else set()
            for n, event in enumerate(batch):
                outcome: _Outcome | _Skip
                if isinstance(event, InterceptionStarted) and event.id in existing:
                    outcome = _Skip("already_written")
                elif isinstance(event, InterceptionUsage) and (event.id in ending or last_usage[event.id] != n):
                    outcome = _Outcome(CommitInfo(), usage=True)  # nothing to write
                elif not isolate:
                    outcome = await self._write_event(conn, event, result, pending, replay)
                else:
                    try:
                        async with conn.begin_nested():
                            outcome = await self._write_event(conn, event, result, pending, replay)
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
        for event_id in result.usage_written:
            if (inflight := self.inflight.get(event_id)) is not None:
                inflight.usage_written = True
        self.lineage.remember(result.links)

    def forget_inflight(self) -> None:
        """Forget what is kept about in-flight interceptions (their rows are read back when they end)."""
        self.inflight.clear()

    @staticmethod
    async def _existing_starts(conn: AsyncConnection, batch: list[StoredEvent]) -> set[str]:
        ids = [e.id for e in batch if isinstance(e, InterceptionStarted)]
        if not ids:
            return set()
        rows = await conn.execute(sa.select(interceptions.c.id).where(interceptions.c.id.in_(ids)))
        return {r[0] for r in rows}

    async def _write_event(
        self, conn: AsyncConnection, event: StoredEvent, batch: BatchResult, pending: _Pending, replay: bool = False
    ) -> _Outcome | _Skip:
        """Queue one event's writes; change nothing in memory (the caller applies the outcome)."""
        if isinstance(event, CaptureRecord):
            return await self._write_capture(conn, event, batch, pending, replay)
        if isinstance(event, InterceptionStarted):
            return await self._write_start(conn, event, batch, pending)
        if isinstance(event, InterceptionEnded):
            return await self._write_end(conn, event, batch, pending)
        if isinstance(event, InterceptionUsage):
            return await self._write_usage(conn, event, batch, pending)
        raise TypeError(f"not a record event: {type(event).__name__}")

    async def _write_start(
        self, conn: AsyncConnection, ev: InterceptionStarted, batch: BatchResult, pending: _Pending
    ) -> _Outcome:
        async def flush_pending() -> None:  # the lookup must see this batch's rows
            await pending.flush(conn)

        parent = await self.lineage.parent(conn, ev, batch.links, flush_pending)
        parent_id = parent.interception_id if parent else None
        root_id = parent.root_id if parent else None
        started_at = self._utc(ev.started_at)
        row = start_row(ev, started_at=started_at, parent_id=parent_id, root_id=root_id)
        pending.starts.append(row)
        pending.start_children.extend(of_interception(start_children(ev, started_at), started_at))
        info = CommitInfo(
            thread_parent_id=parent_id, thread_root_id=root_id, session_id=row["client_session_id"] or root_id or ev.id
        )
        return _Outcome(info, inflight=InFlight(dict(ev.metadata), info, ev.initiator.user_id, spend_key(row),
                                                prompt_written=bool(ev.prompt), started_at=started_at))

    async def _in_flight(self, conn: AsyncConnection, event_id: str, batch: BatchResult) -> InFlight | _Skip:
        """What is known of a started interception that has not ended: from this batch, memory, or its row."""
        if event_id in batch.ended:
            return _Skip("already_ended")
        inflight = batch.started.get(event_id) or self.inflight.get(event_id)
        if inflight is not None:
            return inflight
        # Started by an earlier run, before the database was reopened, or evicted from memory: read the row.
        row = (await conn.execute(_IN_FLIGHT_ROW, {"id": event_id})).first()
        if row is None:
            return _Skip("unknown_interception")
        if row.ended_at is not None:
            return _Skip("already_ended")
        return InFlight(
            row.metadata or {},
            CommitInfo(row.thread_parent_id, row.thread_root_id, row.session_id),
            row.initiator_id,
            spend_key(row._asdict()),
            prompt_written=bool(row.has_prompt),
            usage_written=bool(row.has_usage),
            started_at=row.started_at,
        )

    async def _write_usage(
        self, conn: AsyncConnection, ev: InterceptionUsage, batch: BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        inflight = await self._in_flight(conn, ev.id, batch)
        if isinstance(inflight, _Skip):
            return inflight
        if inflight.usage_written or ev.id in batch.usage_written:
            pending.usage_deletes.append({"b_id": ev.id, "b_started_at": inflight.started_at})
        # Unpriced while in progress: the end replaces these rows with its final, priced ones.
        pending.usage.extend(of_interception(token_rows(ev.id, ev.token_usages, self._utc(ev.at),
                                                        api_equivalent=inflight.spend.api_equivalent,
                                                        effective_group_id=self._group(inflight.initiator_id)),
                                             inflight.started_at))
        batch.usage_written.add(ev.id)
        return _Outcome(inflight.info, usage=True)

    async def _write_end(
        self, conn: AsyncConnection, ev: InterceptionEnded, batch: BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        inflight = await self._in_flight(conn, ev.id, batch)
        if isinstance(inflight, _Skip):
            return inflight

        ended_at = self._utc(ev.ended_at)
        started_at = inflight.started_at
        if inflight.usage_written or ev.id in batch.usage_written:
            pending.usage_deletes.append({"b_id": ev.id, "b_started_at": started_at})
        if inflight.prompt_written and ev.prompt_response_id:
            pending.prompt_ids.append({"b_id": ev.id, "b_rid": ev.prompt_response_id, "b_started_at": started_at})
        pending.ends.append(end_params(ev, started_at=started_at, ended_at=ended_at, start_metadata=inflight.metadata,
                                       prompt_written=inflight.prompt_written))
        key = ended_model(inflight.spend, ev)
        prices = usage_prices(self.pricer, key, ev, ended_at) if ev.token_usages else ()
        for name, rows in child_rows(ev, ended_at, prompt_written=inflight.prompt_written, prices=prices,
                                     api_equivalent=key.api_equivalent,
                                     effective_group_id=self._group(inflight.initiator_id)).items():
            pending.children[name].extend(of_interception(rows, started_at))
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

    async def _write_capture(
        self, conn: AsyncConnection, ev: CaptureRecord, batch: BatchResult, pending: _Pending, replay: bool
    ) -> _Outcome | _Skip:
        """A raw capture, queued after its interception's end: stored once its interception is (the end in this
        batch, or its row), sealed here, on the writer's thread (redaction and compression: capture/build.py)."""
        if ev.id not in batch.ended or replay:
            row = (await conn.execute(_CAPTURE_TARGET, {"id": ev.id})).first()
            if row is None and ev.id not in batch.ended:
                return _Skip("unknown_interception")
            if row is not None and row.captured:
                return _Skip("already_written")
        try:
            sealed = ev.seal()
        except Exception:  # a bug sealing it must never cost the batch
            log.exception("the capture of interception %s could not be sealed; not stored", ev.id)
            return _Skip("invalid")
        pending.captures.append(capture_row(ev.id, self._utc(ev.started_at), sealed, datetime.now(UTC)))
        return _Outcome(CommitInfo(), capture=True)

    def _group(self, initiator_id: str) -> str | None:
        try:
            return self.group_of(initiator_id)
        except Exception:  # a bug there must never cost the record
            log.exception("the effective group of %s could not be resolved; stored without one", initiator_id)
            return None

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
    sa.exists().where(user_prompts.c.interception_id == _i.id).label("has_prompt"),
    sa.exists().where(token_usages.c.interception_id == _i.id).label("has_usage"),
    _i.provider, _i.provider_name, _i.model, _i.client, _i.credential_kind, _i.started_at,
).where(_i.id == sa.bindparam("id")).order_by(_i.started_at.desc()).limit(1)


_CAPTURE_TARGET = sa.select(
    _i.id, sa.exists().where(captures.c.interception_id == _i.id).label("captured"),
).where(_i.id == sa.bindparam("id"))


def is_database_error(exc: BaseException) -> bool:
    """True when the database failed (retry the batch later), False when one record was refused."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError | sqlite3.IntegrityError | sqlite3.DataError):
        return False
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23"):  # PostgreSQL: data exception, constraint
        return False
    if isinstance(exc, sqlite3.Error):  # the driver's own, not wrapped (raised while connecting)
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return True
    if isinstance(exc, sa.exc.StatementError):  # a value could not be bound
        return False
    return isinstance(exc, sa.exc.SQLAlchemyError | OSError)


def of_interception(rows: list[Row], started_at: datetime | None) -> list[Row]:
    """Child rows carry their interception's start (schema v10: PostgreSQL's partition key)."""
    for row in rows:
        row["interception_started_at"] = started_at
    return rows


def describe(exc: BaseException) -> str:
    """The driver's error (type and message) behind a SQLAlchemy exception, else the exception itself."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}"


def _event_name(event: object) -> str:
    return f"{type(event).__name__}({getattr(event, 'id', '?')!r})"
