"""The record writer: the proxy's event loop hands events over with `submit()` (never blocks, never awaits the
database); a background task writes them in batches, one transaction per batch, in submission order.

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

from aigw_proxy.records import InterceptionEnded, InterceptionStarted, RecordEvent
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.schema import (
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


@dataclass(slots=True)
class _InFlight:
    metadata: dict[str, Any]
    info: CommitInfo


@dataclass(slots=True)
class _Skip:
    reason: str


@dataclass(slots=True)
class _BatchResult:
    committed: list[tuple[RecordEvent, CommitInfo]] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    started: dict[str, _InFlight] = field(default_factory=dict)  # started in this batch, still in flight
    ended: set[str] = field(default_factory=set)


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
        """Start the background task (on the running loop). First it closes interceptions a previous process
        left open. Idempotent."""
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
        (counted as `dropped["shutdown"]`)."""
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
        self._inflight.update(result.started)
        while len(self._inflight) > _INFLIGHT_CAP:
            del self._inflight[next(iter(self._inflight))]
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
        async with self._db.writer.begin() as conn:
            for event in batch:
                if not isolate:
                    outcome = await self._write_event(conn, event, result)
                else:
                    try:
                        async with conn.begin_nested():
                            outcome = await self._write_event(conn, event, result)
                    except Exception as exc:
                        if _is_database_error(exc):
                            raise
                        log.error("record %s refused by the database: %s", _event_name(event), _describe(exc))
                        outcome = _Skip("invalid")
                _apply(result, event, outcome)
        return result

    async def _write_event(self, conn: AsyncConnection, event: RecordEvent, batch: _BatchResult) -> CommitInfo | _Skip:
        """Write one event; mutate nothing outside the database (the caller applies the outcome)."""
        if isinstance(event, InterceptionStarted):
            return await self._write_start(conn, event)
        if isinstance(event, InterceptionEnded):
            return await self._write_end(conn, event, batch)
        raise TypeError(f"not a record event: {type(event).__name__}")

    async def _write_start(self, conn: AsyncConnection, ev: InterceptionStarted) -> CommitInfo:
        parent_id, root_id = await _thread_lineage(conn, ev)
        client_session_id = (
            _clip(ev.client_session_id.strip() if ev.client_session_id else None, CLIENT_SESSION_ID_MAX) or None
        )
        await conn.execute(
            sa.insert(interceptions).values(
                id=ev.id,
                initiator_id=ev.initiator.user_id,
                api_key_id=ev.initiator.token_id,
                provider=ev.provider,
                provider_name=ev.provider_name or "",
                model=ev.model or "",
                client=_clip(ev.client, CLIENT_MAX) or "Unknown",
                client_session_id=client_session_id,
                thread_parent_id=parent_id,
                thread_root_id=root_id,
                correlating_tool_call_id=ev.correlating_tool_call_id or None,
                previous_response_id=ev.previous_response_id or None,
                credential_kind=ev.credential_kind,
                credential_hint=_clip(ev.credential_hint, CREDENTIAL_HINT_MAX) or "",
                started_at=self._utc(ev.started_at),
                metadata=dict(ev.metadata),
            )
        )
        return CommitInfo(
            thread_parent_id=parent_id,
            thread_root_id=root_id,
            session_id=client_session_id or root_id or ev.id,
        )

    async def _write_end(self, conn: AsyncConnection, ev: InterceptionEnded, batch: _BatchResult) -> CommitInfo | _Skip:
        i = interceptions.c
        if ev.id in batch.ended:
            return _Skip("already_ended")
        inflight = batch.started.get(ev.id) or self._inflight.get(ev.id)
        if inflight is None:  # started by an earlier run or evicted from memory: read the row
            row = (
                await conn.execute(
                    sa.select(i.metadata, i.ended_at, i.thread_parent_id, i.thread_root_id, i.session_id).where(
                        i.id == ev.id
                    )
                )
            ).first()
            if row is None:
                return _Skip("unknown_interception")
            if row.ended_at is not None:
                return _Skip("already_ended")
            inflight = _InFlight(
                row.metadata or {}, CommitInfo(row.thread_parent_id, row.thread_root_id, row.session_id)
            )

        error_type = error_type_for_status(ev.upstream_status) if ev.status == "failed" else None
        ended_at = self._utc(ev.ended_at)
        values: dict[str, Any] = {
            "ended_at": ended_at,
            "status": ev.status,
            "upstream_status": ev.upstream_status,
            "error_type": error_type,
            "error_message": _clip(ev.error, ERROR_MESSAGE_MAX),
            "metadata": {**inflight.metadata, **ev.metadata},
        }
        if ev.model:
            values["model"] = ev.model
        result = await conn.execute(
            sa.update(interceptions).where(i.id == ev.id, i.ended_at.is_(None)).values(**values)
        )
        if not result.rowcount:
            exists = (await conn.execute(sa.select(i.id).where(i.id == ev.id))).first()
            return _Skip("already_ended" if exists else "unknown_interception")

        await _insert_children(conn, ev, ended_at)
        return CommitInfo(
            thread_parent_id=inflight.info.thread_parent_id,
            thread_root_id=inflight.info.thread_root_id,
            session_id=inflight.info.session_id,
            error_type=error_type,
        )

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
            logging.ERROR,
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


def _apply(result: _BatchResult, event: RecordEvent, outcome: CommitInfo | _Skip) -> None:
    if isinstance(outcome, _Skip):
        result.drops[outcome.reason] += 1
        return
    if isinstance(event, InterceptionStarted):
        result.started[event.id] = _InFlight(dict(event.metadata), outcome)
    else:
        result.started.pop(event.id, None)
        result.ended.add(event.id)
    result.committed.append((event, outcome))


async def _thread_lineage(conn: AsyncConnection, ev: InterceptionStarted) -> tuple[str | None, str | None]:
    """(thread_parent_id, thread_root_id): the interception that issued the tool call this request answers,
    else the one that produced `previous_response_id`. Only the same user's interceptions count: tool call
    ids are not globally unique for every provider."""
    i = interceptions.c
    lookups: list[tuple[sa.Table, sa.ColumnElement[bool]]] = []
    if ev.correlating_tool_call_id:
        lookups.append((tool_usages, tool_usages.c.provider_tool_call_id == ev.correlating_tool_call_id))
    if ev.previous_response_id:
        for child in (token_usages, user_prompts):
            lookups.append((child, child.c.provider_response_id == ev.previous_response_id))
    for child, condition in lookups:
        row = (
            await conn.execute(
                sa.select(i.id, i.thread_root_id)
                .select_from(child.join(interceptions, i.id == child.c.interception_id))
                .where(condition, i.initiator_id == ev.initiator.user_id)
                .order_by(child.c.created_at.desc(), child.c.id.desc())
                .limit(1)
            )
        ).first()
        if row is not None:
            return row.id, row.thread_root_id or row.id
    return None, None


async def _insert_children(conn: AsyncConnection, ev: InterceptionEnded, created_at: datetime) -> None:
    if ev.prompt:
        await conn.execute(
            sa.insert(user_prompts).values(
                id=new_id(),
                interception_id=ev.id,
                provider_response_id=ev.prompt_response_id or "",
                prompt=ev.prompt,
                metadata={},
                created_at=created_at,
            )
        )
    if ev.token_usages:
        await conn.execute(
            sa.insert(token_usages),
            [
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
            ],
        )
    if ev.tool_calls:
        await conn.execute(
            sa.insert(tool_usages),
            [
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
            ],
        )
    if ev.thoughts:
        await conn.execute(
            sa.insert(model_thoughts),
            [
                {
                    "id": new_id(),
                    "interception_id": ev.id,
                    "content": th.content,
                    "metadata": {"source": th.source},
                    "created_at": created_at,
                }
                for th in ev.thoughts
            ],
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
