"""The record writer: the proxy's event loop hands events over with `submit()` (never blocks, never awaits the
database); a background task writes them in batches, one transaction per batch, in submission order.

Within a batch, writes are queued and sent with executemany (interception inserts, then end updates, then child
rows: each group only depends on the ones before it). Thread lineage is resolved from in-memory maps of recent
tool call ids and response ids (batch-local entries included, so a parent earlier in the same batch counts);
only a miss asks the database, after sending the queued writes so they are visible to the lookup.

Failure handling:
* database locked / I/O errors: the batch stays in memory and is retried with exponential backoff for up to
  `retry_for` seconds, then dropped and counted as `dropped["db_error"]` (logged);
* one record the database refuses (duplicate id, value it cannot store): the batch is rewritten record by
  record inside savepoints and only that record is dropped (`dropped["invalid"]`);
* queue full: `submit()` returns False and counts `dropped["queue_full"]`.
Nothing is dropped without being counted and logged (drop logs are rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema.tables import (
    CHILD_TABLES,
    CLIENT_MAX,
    CLIENT_SESSION_ID_MAX,
    CREDENTIAL_HINT_MAX,
    ERROR_MESSAGE_MAX,
    error_type_for_status,
    interceptions,
    model_thoughts,
    token_usages,
    tool_usages,
    user_prompts,
)

log = logging.getLogger("aigw_proxy.storage")

DANGLING_MESSAGE: Final = "proxy stopped before the interception ended"
_INFLIGHT_CAP = 100_000  # in-flight start metadata kept in memory; beyond it the writer reads the row back
# Recent tool call ids / response ids kept in memory for thread lineage. A tool result usually follows its call
# within seconds, so a few thousand cover it; older ones are found in the database. Small keeps memory flat.
_LINK_CAP = 4096
_EXPECTED_DROPS = frozenset({"already_ended", "unknown_interception", "closed"})  # logged as warnings
_LOG_EVERY = 10.0  # seconds between two warnings of the same kind


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What the writer resolved for a committed event (given to listeners).

    Starts: the thread lineage and session id. Ends: the same (from the start) plus the derived error type.
    """

    thread_parent_id: str | None = None
    thread_root_id: str | None = None
    session_id: str | None = None
    error_type: str | None = None


Listener = Callable[[RecordEvent, CommitInfo], None]


@dataclass(frozen=True, slots=True)
class _Link:
    """A possible thread parent: the interception that issued a tool call or produced a response."""

    interception_id: str
    root_id: str  # COALESCE(its thread_root_id, its id)
    initiator_id: str


@dataclass(slots=True)
class _InFlight:
    metadata: dict[str, Any]
    info: CommitInfo
    initiator_id: str


@dataclass(slots=True)
class _Skip:
    reason: str


@dataclass(slots=True)
class _Outcome:
    """One event's effect on the writer's memory, applied only once its writes went through."""

    info: CommitInfo
    inflight: _InFlight | None = None  # starts
    tool_links: dict[str, _Link] = field(default_factory=dict)  # ends: call id → this interception
    response_links: dict[str, _Link] = field(default_factory=dict)  # ends: response id → this interception


@dataclass(slots=True)
class _BatchResult:
    committed: list[tuple[RecordEvent, CommitInfo]] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    started: dict[str, _InFlight] = field(default_factory=dict)  # started in this batch, still in flight
    ended: set[str] = field(default_factory=set)
    tool_links: dict[str, _Link] = field(default_factory=dict)
    response_links: dict[str, _Link] = field(default_factory=dict)


class _Pending:
    """Writes queued in the current transaction; `flush()` sends them in dependency order."""

    __slots__ = ("children", "ends", "starts")

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends: list[dict[str, Any]] = []
        self.children: dict[str, list[dict[str, Any]]] = {t.name: [] for t in CHILD_TABLES}

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        for rows in self.children.values():
            rows.clear()

    async def flush(self, conn: AsyncConnection) -> None:
        if self.starts:
            rows, self.starts = self.starts, []
            await conn.execute(_INSERT_INTERCEPTION, rows)
        if self.ends:
            rows, self.ends = self.ends, []
            result = await conn.execute(_END_INTERCEPTION, rows)
            if result.rowcount >= 0 and result.rowcount < len(rows):  # another process ended some first
                log.warning("%d of %d interceptions were already ended", len(rows) - result.rowcount, len(rows))
        for name, rows in self.children.items():
            if rows:
                self.children[name] = []
                await conn.execute(_INSERT_CHILD[name], rows)


class _Stop:
    pass


_STOP: Final = _Stop()


class RecordWriter:
    """Queue + background batch writer for `InterceptionStarted` / `InterceptionEnded` events.

    `submit()` must be called from the event loop the writer was started on (it is not thread-safe).
    """

    def __init__(
        self,
        db: Database,
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        retry_for: float = 30.0,
        max_backoff: float = 2.0,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be positive")
        self._db = db
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_for = retry_for
        self._max_backoff = max_backoff
        self._queue: asyncio.Queue[RecordEvent | _Stop] = asyncio.Queue()  # bounded by submit()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # set once interceptions left open by a previous run are closed
        self._closing = False
        self._listeners: list[Listener] = []
        self._inflight: dict[str, _InFlight] = {}
        self._tool_links: dict[str, _Link] = {}
        self._response_links: dict[str, _Link] = {}
        self._submitted = 0  # events accepted by submit()
        self._done = 0  # accepted events written or dropped
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._urgent = 0  # flush() callers waiting: do not linger for a fuller batch
        self._last_log: dict[str, float] = {}
        self._naive_warned = False
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self.closed_dangling = 0

    # -- the proxy side --------------------------------------------------------------------------------------

    def submit(self, event: RecordEvent) -> bool:
        """Queue an event without blocking; False (counted in `dropped`) if the queue is full or closed."""
        if self._closing:
            self._drop("closed", 1, "record writer closed; dropping records")
            return False
        if self._queue.qsize() >= self._max_queue:
            self._drop("queue_full", 1, f"record queue full ({self._max_queue}); dropping records")
            return False
        self._queue.put_nowait(event)
        self._submitted += 1
        return True

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(event, info)` after each event is committed. Exceptions are logged, never raised."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    @property
    def queue_depth(self) -> int:
        """Events accepted but not yet written or dropped (queued plus the batch being written)."""
        return self._submitted - self._done

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (on the running loop). First it closes, as failed, every interception a
        previous process left open: one recording daemon per database. Idempotent."""
        if self._task is not None:
            return
        if self._closing:
            raise RuntimeError("the record writer was closed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-record-writer")

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every event submitted so far is written (or dropped and counted), and until the start-up
        clean-up of a previous run's dangling interceptions is done."""
        async with asyncio.timeout(timeout):
            await self._wait_flushed()

    async def _wait_flushed(self) -> None:
        target = self._submitted
        if self._done >= target and (self._task is None or self._ready.is_set()):
            return
        if not self.running:
            raise RuntimeError("the record writer is not running")
        await self._ready.wait()
        if self._done >= target:
            return
        if not self.running:
            raise RuntimeError("the record writer stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._urgent += 1
        try:
            await fut
        finally:
            self._urgent -= 1

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop accepting events, write everything queued, stop. After `timeout` seconds the rest is dropped
        (counted as `dropped["shutdown"]`). If another process holds the database lock at that moment, the
        write already waiting for it cannot be interrupted: close() can overrun by up to busy_timeout."""
        if self._closing:
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=timeout)
            return
        self._closing = True
        if self._task is None:
            self._abandon("record writer closed before it was started")
            return
        self._queue.put_nowait(_STOP)
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._abandon(f"record writer did not finish within {timeout}s")

    def _abandon(self, why: str) -> None:
        lost = self._submitted - self._done
        if lost:
            self.dropped["shutdown"] += lost
            log.error("%s: %d records lost", why, lost)
            self._finish(lost)
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- the background task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._close_dangling()
            self._ready.set()
            while True:
                batch, stop = await self._next_batch()
                if batch:
                    try:
                        await self._process(batch)
                    except Exception as exc:  # a bug: never let the task die with records queued
                        self.last_error = _describe(exc)
                        self.dropped["db_error"] += len(batch)
                        log.exception("record batch of %d lost", len(batch))
                        self._finish(len(batch))
                if stop:
                    return
        finally:
            self._ready.set()
            for _target, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(RuntimeError("record writer stopped before the flushed events were written"))
            self._waiters.clear()

    async def _next_batch(self) -> tuple[list[RecordEvent], bool]:
        item = await self._queue.get()
        if isinstance(item, _Stop):
            return [], True
        batch: list[RecordEvent] = [item]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._flush_interval
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._urgent or self._closing:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if isinstance(item, _Stop):
                return batch, True
            batch.append(item)
        return batch, False

    async def _process(self, batch: list[RecordEvent]) -> None:
        isolate = False
        attempt = 0
        first_failure: float | None = None
        while True:
            try:
                result = await self._write_batch(batch, isolate=isolate)
                break
            except Exception as exc:
                if not isolate and not _is_database_error(exc):
                    log.warning(
                        "the database refused a record in a batch of %d (%s); writing them one by one",
                        len(batch),
                        _describe(exc),
                    )
                    isolate = True
                    continue
                first_failure = first_failure or time.monotonic()
                attempt += 1
                if not await self._backoff(exc, attempt, first_failure, f"a batch of {len(batch)} records"):
                    self._drop("db_error", len(batch), f"record batch dropped after retrying: {_describe(exc)}")
                    self._finish(len(batch))
                    return

        for event_id in result.ended:
            self._inflight.pop(event_id, None)
        _remember(self._inflight, result.started, _INFLIGHT_CAP)
        _remember(self._tool_links, result.tool_links, _LINK_CAP)
        _remember(self._response_links, result.response_links, _LINK_CAP)
        for reason, n in result.drops.items():
            self._drop(reason, n, f"records not written: {reason}")
        self.written += len(result.committed)
        self._finish(len(batch))
        for event, info in result.committed:
            self._notify(event, info)

    async def _backoff(self, exc: BaseException, attempt: int, first_failure: float, what: str) -> bool:
        """Record the error and sleep before the next attempt; False once past `retry_for`."""
        self.last_error = _describe(exc)
        if time.monotonic() - first_failure >= self._retry_for:
            return False
        delay = min(self._max_backoff, 0.05 * 2 ** (attempt - 1))
        self._log_limited("retry", logging.WARNING, "database write failed (%s); retrying %s", self.last_error, what)
        await asyncio.sleep(delay)
        return True

    async def _close_dangling(self) -> None:
        attempt = 0
        first_failure: float | None = None
        while True:
            try:
                async with self._db.writer.begin() as conn:
                    result = await conn.execute(
                        sa.update(interceptions)
                        .where(interceptions.c.ended_at.is_(None))
                        .values(
                            ended_at=datetime.now(UTC),
                            status="failed",
                            error_type="unknown",
                            error_message=DANGLING_MESSAGE,
                        )
                    )
                self.closed_dangling = int(result.rowcount or 0)
                if self.closed_dangling:
                    log.warning("closed %d interceptions left open by a previous run", self.closed_dangling)
                return
            except Exception as exc:
                first_failure = first_failure or time.monotonic()
                attempt += 1
                if not await self._backoff(exc, attempt, first_failure, "closing dangling interceptions"):
                    log.error("could not close dangling interceptions: %s", self.last_error)
                    return

    # -- one transaction -------------------------------------------------------------------------------------

    async def _write_batch(self, batch: list[RecordEvent], *, isolate: bool) -> _BatchResult:
        result = _BatchResult()
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
                        if _is_database_error(exc):
                            raise
                        pending.clear()
                        log.error("record %s refused by the database: %s", _event_name(event), _describe(exc))
                        outcome = _Skip("invalid")
                _apply(result, event, outcome)
            await pending.flush(conn)
        return result

    async def _write_event(
        self, conn: AsyncConnection, event: RecordEvent, batch: _BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        """Queue one event's writes; change nothing in memory (the caller applies the outcome)."""
        if isinstance(event, InterceptionStarted):
            return await self._write_start(conn, event, batch, pending)
        if isinstance(event, InterceptionEnded):
            return await self._write_end(conn, event, batch, pending)
        raise TypeError(f"not a record event: {type(event).__name__}")

    async def _write_start(
        self, conn: AsyncConnection, ev: InterceptionStarted, batch: _BatchResult, pending: _Pending
    ) -> _Outcome:
        parent = await self._thread_parent(conn, ev, batch, pending)
        parent_id = parent.interception_id if parent else None
        root_id = parent.root_id if parent else None
        client_session_id = ev.client_session_id.strip() if ev.client_session_id else None
        client_session_id = _clip(client_session_id, CLIENT_SESSION_ID_MAX) or None
        pending.starts.append(
            {
                "id": ev.id,
                "initiator_id": ev.initiator.user_id,
                "api_key_id": ev.initiator.token_id,
                "provider": ev.provider,
                "provider_name": ev.provider_name or "",
                "model": ev.model or "",
                "client": _clip(ev.client, CLIENT_MAX) or "Unknown",
                "client_session_id": client_session_id,
                "thread_parent_id": parent_id,
                "thread_root_id": root_id,
                "correlating_tool_call_id": ev.correlating_tool_call_id or None,
                "previous_response_id": ev.previous_response_id or None,
                "credential_kind": ev.credential_kind,
                "credential_hint": _clip(ev.credential_hint, CREDENTIAL_HINT_MAX) or "",
                "started_at": self._utc(ev.started_at),
                "ended_at": None,
                "metadata": dict(ev.metadata),
            }
        )
        info = CommitInfo(
            thread_parent_id=parent_id, thread_root_id=root_id, session_id=client_session_id or root_id or ev.id
        )
        return _Outcome(info, inflight=_InFlight(dict(ev.metadata), info, ev.initiator.user_id))

    async def _thread_parent(
        self, conn: AsyncConnection, ev: InterceptionStarted, batch: _BatchResult, pending: _Pending
    ) -> _Link | None:
        """The interception that issued the tool call this request answers, else the one that produced
        `previous_response_id`; the most recent one, and only among the same user's interceptions (tool call ids
        are not globally unique with every provider). Memory first, the database on a miss."""
        who = ev.initiator.user_id
        lookups = []
        if ev.correlating_tool_call_id:
            lookups.append((ev.correlating_tool_call_id, batch.tool_links, self._tool_links, _PARENT_BY_TOOL_CALL))
        if ev.previous_response_id:
            lookups.append((ev.previous_response_id, batch.response_links, self._response_links, _PARENT_BY_RESPONSE))
        for key, batch_links, links, queries in lookups:
            link = batch_links.get(key) or links.get(key)
            if link is not None and link.initiator_id == who:
                return link
            await pending.flush(conn)  # the lookup must see this batch's rows
            for query in queries:
                row = (await conn.execute(query, {"key": key, "who": who})).first()
                if row is not None:
                    return _Link(row.id, row.root_id, who)
        return None

    async def _write_end(
        self, conn: AsyncConnection, ev: InterceptionEnded, batch: _BatchResult, pending: _Pending
    ) -> _Outcome | _Skip:
        if ev.id in batch.ended:
            return _Skip("already_ended")
        inflight = batch.started.get(ev.id) or self._inflight.get(ev.id)
        if inflight is None:  # started by an earlier run or evicted from memory: read the row
            row = (await conn.execute(_IN_FLIGHT_ROW, {"id": ev.id})).first()
            if row is None:
                return _Skip("unknown_interception")
            if row.ended_at is not None:
                return _Skip("already_ended")
            inflight = _InFlight(
                row.metadata or {},
                CommitInfo(row.thread_parent_id, row.thread_root_id, row.session_id),
                row.initiator_id,
            )

        error_type = error_type_for_status(ev.upstream_status) if ev.status == "failed" else None
        ended_at = self._utc(ev.ended_at)
        pending.ends.append(
            {
                "b_id": ev.id,
                "b_ended_at": ended_at,
                "b_status": ev.status,
                "b_upstream_status": ev.upstream_status,
                "b_error_type": error_type,
                "b_error_message": _clip(ev.error, ERROR_MESSAGE_MAX),
                "b_metadata": {**inflight.metadata, **ev.metadata},
                "b_model": ev.model or None,
                "b_last_prompt_at": ended_at if ev.prompt else None,  # the prompt row's created_at
            }
        )
        _queue_children(pending, ev, ended_at)

        link = _Link(ev.id, inflight.info.thread_root_id or ev.id, inflight.initiator_id)
        outcome = _Outcome(
            CommitInfo(
                thread_parent_id=inflight.info.thread_parent_id,
                thread_root_id=inflight.info.thread_root_id,
                session_id=inflight.info.session_id,
                error_type=error_type,
            )
        )
        for call in ev.tool_calls:
            if call.call_id:
                outcome.tool_links[call.call_id] = link
        for usage in ev.token_usages:
            if usage.provider_response_id:
                outcome.response_links[usage.provider_response_id] = link
        if ev.prompt and ev.prompt_response_id:
            outcome.response_links.setdefault(ev.prompt_response_id, link)
        return outcome

    # -- helpers ---------------------------------------------------------------------------------------------

    def _utc(self, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            if not self._naive_warned:
                self._naive_warned = True
                log.warning("record with a naive datetime %r: assuming UTC", value)
            return value.replace(tzinfo=UTC)
        return value

    def _finish(self, n: int) -> None:
        self._done += n
        pending: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self._done >= target:
                fut.set_result(None)
            else:
                pending.append((target, fut))
        self._waiters = pending

    def _notify(self, event: RecordEvent, info: CommitInfo) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, info)
            except Exception:
                log.exception("record listener %r failed", fn)

    def _drop(self, reason: str, n: int, message: str) -> None:
        self.dropped[reason] += n
        self._log_limited(
            f"drop:{reason}",
            logging.WARNING if reason in _EXPECTED_DROPS else logging.ERROR,
            "%s (%s: %d dropped so far)",
            message,
            reason,
            self.dropped[reason],
        )

    def _log_limited(self, key: str, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._last_log[key] = now
            log.log(level, msg, *args)


def _apply(result: _BatchResult, event: RecordEvent, outcome: _Outcome | _Skip) -> None:
    if isinstance(outcome, _Skip):
        result.drops[outcome.reason] += 1
        return
    if outcome.inflight is not None:
        result.started[event.id] = outcome.inflight
    else:
        result.started.pop(event.id, None)
        result.ended.add(event.id)
    result.tool_links.update(outcome.tool_links)
    result.response_links.update(outcome.response_links)
    result.committed.append((event, outcome.info))


def _remember[V](memory: dict[str, V], new: dict[str, V], cap: int) -> None:
    """Merge `new` into an insertion-ordered map (newest last) and evict the oldest entries beyond `cap`."""
    for key, value in new.items():
        memory.pop(key, None)
        memory[key] = value
    while len(memory) > cap:
        del memory[next(iter(memory))]


def _queue_children(pending: _Pending, ev: InterceptionEnded, created_at: datetime) -> None:
    # Ids are time-ordered and increasing, so rows with the same created_at keep this order.
    if ev.prompt:
        pending.children[user_prompts.name].append(
            {
                "id": new_id(),
                "interception_id": ev.id,
                "provider_response_id": ev.prompt_response_id or "",
                "prompt": ev.prompt,
                "metadata": {},
                "created_at": created_at,
            }
        )
    pending.children[token_usages.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "provider_response_id": u.provider_response_id or "",
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "cache_write_input_tokens": u.cache_write_input_tokens,
            "metadata": dict(u.metadata),
            "created_at": created_at,
        }
        for u in ev.token_usages
    )
    pending.children[tool_usages.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "provider_response_id": t.provider_response_id or "",
            "provider_tool_call_id": t.call_id or None,
            "provider_item_id": t.item_id or None,
            "tool": t.name,
            "input": t.input,
            "server_url": None,
            "injected": False,
            "invocation_error": None,
            "metadata": {},
            "created_at": created_at,
        }
        for t in ev.tool_calls
    )
    pending.children[model_thoughts.name].extend(
        {
            "id": new_id(),
            "interception_id": ev.id,
            "content": th.content,
            "metadata": {"source": th.source},
            "created_at": created_at,
        }
        for th in ev.thoughts
    )


# Statements are built once: executing a constant statement skips SQLAlchemy's per-call compile/cache-key work.
_i = interceptions.c
_INSERT_INTERCEPTION = sa.insert(interceptions)
_INSERT_CHILD = {t.name: sa.insert(t) for t in CHILD_TABLES}
_END_INTERCEPTION = (
    sa.update(interceptions)
    .where(_i.id == sa.bindparam("b_id", type_=_i.id.type), _i.ended_at.is_(None))
    .values(
        ended_at=sa.bindparam("b_ended_at", type_=_i.ended_at.type),
        status=sa.bindparam("b_status", type_=_i.status.type),
        upstream_status=sa.bindparam("b_upstream_status", type_=_i.upstream_status.type),
        error_type=sa.bindparam("b_error_type", type_=_i.error_type.type),
        error_message=sa.bindparam("b_error_message", type_=_i.error_message.type),
        metadata=sa.bindparam("b_metadata", type_=_i.metadata.type),
        model=sa.func.coalesce(sa.bindparam("b_model", type_=_i.model.type), _i.model),
        last_prompt_at=sa.bindparam("b_last_prompt_at", type_=_i.last_prompt_at.type),
    )
)
_IN_FLIGHT_ROW = sa.select(
    _i.metadata, _i.ended_at, _i.thread_parent_id, _i.thread_root_id, _i.session_id, _i.initiator_id
).where(_i.id == sa.bindparam("id"))


def _parent_query(child: sa.Table, key: sa.Column[Any]) -> sa.Select[Any]:
    return (
        sa.select(_i.id, sa.func.coalesce(_i.thread_root_id, _i.id).label("root_id"))
        .select_from(child.join(interceptions, _i.id == child.c.interception_id))
        .where(key == sa.bindparam("key"), _i.initiator_id == sa.bindparam("who"))
        .order_by(child.c.created_at.desc(), child.c.id.desc())
        .limit(1)
    )


_PARENT_BY_TOOL_CALL = (_parent_query(tool_usages, tool_usages.c.provider_tool_call_id),)
_PARENT_BY_RESPONSE = (
    _parent_query(token_usages, token_usages.c.provider_response_id),
    _parent_query(user_prompts, user_prompts.c.provider_response_id),
)


def _is_database_error(exc: BaseException) -> bool:
    """True when the database failed (retry the batch later), False when one record was refused."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return False
    if isinstance(exc, sa.exc.DBAPIError):
        return True
    if isinstance(exc, sa.exc.StatementError):  # a value could not be bound
        return False
    return isinstance(exc, sa.exc.SQLAlchemyError | OSError)


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}"


def _event_name(event: object) -> str:
    return f"{type(event).__name__}({getattr(event, 'id', '?')!r})"
