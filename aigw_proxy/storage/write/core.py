"""The record writer's state and bookkeeping, shared by the parts in this package: what it counts (written,
dropped by reason, recent losses), its health snapshot, the flush waiters, the commit listeners and their fan-out,
the database thread hop, and the rate-limited logging. The other parts build on it in layers: file_guard.py (the
database file deleted or replaced), commits.py (one batch in one transaction), backlog.py (the spool and the
backlog while the database fails), dangling.py (a previous run's open interceptions); writer.py puts them together
with the queue and the background task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aigw_proxy.recording.commits import CommitInfo, CommitListener
from aigw_proxy.recording.records import RecordEvent
from aigw_proxy.spend import Pricer
from aigw_proxy.storage.database import Database
from aigw_proxy.storage.write.batch import BatchWriter, InFlight, StoredEvent, describe
from aigw_proxy.storage.write.db_thread import DatabaseThread
from aigw_proxy.storage.write.spool import Spool

log = logging.getLogger("aigw_proxy.storage")

DEFAULT_MAX_QUEUE: Final = 10_000
DEFAULT_SPOOL_MAX_BYTES: Final = 256 * 1024 * 1024
RECENT_WINDOW: Final = 60.0  # seconds of drops `WriterHealth.dropped_recently` covers
EXPECTED_DROPS: Final = frozenset({"already_ended", "already_written", "unknown_interception", "closed"})
_LOG_EVERY = 10.0  # seconds between two warnings of the same kind


def default_spool_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + "-spool.jsonl")


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """A read-only snapshot of the writer for health checks. Times are `time.monotonic()` values.

    * `running`: the background task is alive; `queue_depth` / `max_queue`: events held in memory (queued, being
      written, or kept because the spool cannot take them) and the bound past which new ones are dropped;
    * `written`: events committed; `dropped`: by reason since start; `dropped_recently`: losses (expected drops
      left out) in the last `RECENT_WINDOW` seconds, by reason; `last_loss_at`: reason → latest loss;
    * `last_commit_at`: the latest committed batch; `busy_since`: when the write in progress began (None when
      idle); `failing_since`: first failure of the current run of failed writes (None once one succeeds);
      `consecutive_failures`; `last_error`: the latest database error;
    * `spooled` / `spool_bytes` / `spool_max_bytes`: events and bytes waiting in the spool file, and its bound
      (0: no spool);
    * `database_problem`: why the database file cannot be used now (deleted or replaced and not reopened yet),
      else None.
    """

    running: bool
    queue_depth: int
    max_queue: int
    written: int
    dropped: dict[str, int]
    dropped_recently: dict[str, int]
    last_loss_at: dict[str, float]
    last_commit_at: float | None
    busy_since: float | None
    failing_since: float | None
    consecutive_failures: int
    last_error: str | None
    spooled: int
    spool_bytes: int
    spool_max_bytes: int
    database_problem: str | None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Stop:
    pass


_STOP: Final = _Stop()


class WriterState:
    """The writer's state (its constructor is `RecordWriter`'s) and the bookkeeping every part uses."""

    def __init__(
        self,
        db: Database,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_backoff: float = 5.0,
        spool_path: Path | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        check_interval: float = 1.0,
        pricer: Pricer | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be positive")
        self._db = db  # the caller's; the writer works on one of its own (`_wdb`), on its database thread
        self._wdb: Database = db
        self._io: DatabaseThread | None = None
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._check_interval = check_interval
        self._queue: asyncio.Queue[StoredEvent | _Stop] = asyncio.Queue()  # bounded by submit()
        # Beside the SQLite file; on PostgreSQL where the daemon says (the data directory), else none.
        spool_at = spool_path or (default_spool_path(db.path) if db.path is not None else None)
        self._spool = Spool(spool_at, spool_max_bytes) if spool_max_bytes and spool_at is not None else None
        self._spool_refusal: str | None = None  # why the last append to the spool failed ("full" or the error)
        self._inherited = 0  # events left in the spool by an earlier run, not written yet
        self._held: list[StoredEvent] = []  # backlog the spool did not take (newer than the spool's)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # set once interceptions left open by a previous run are closed
        self._closing = False
        self._listeners: list[CommitListener] = []
        self._batches = BatchWriter(db, pricer)
        self._submitted = 0  # events accepted by submit()
        self._done = 0  # accepted events written or dropped
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._urgent = 0  # flush() callers waiting: do not linger for a fuller batch
        self._last_log: dict[str, float] = {}
        self._recent: deque[tuple[float, str, int]] = deque()
        self._born = datetime.now(UTC)  # interceptions open from before this are a previous run's
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_loss_at: dict[str, float] = {}
        self.last_commit_at: float | None = None
        self.busy_since: float | None = None
        self.failing_since: float | None = None
        self.consecutive_failures = 0
        self.database_problem: str | None = None
        self.closed_dangling = 0

    def add_listener(self, fn: CommitListener) -> None:
        """Call `fn(event, info)` after each start or end is committed. Exceptions are logged, never raised."""
        self._listeners.append(fn)

    def remove_listener(self, fn: CommitListener) -> None:
        self._listeners.remove(fn)

    @property
    def pricer(self) -> Pricer:
        """What prices token-usage rows as they are written (the bundled price data and the config's overrides)."""
        return self._batches.pricer

    @pricer.setter
    def pricer(self, pricer: Pricer) -> None:
        """New prices (a config reload) apply to the rows written from now on; stored rows keep theirs."""
        self._batches.pricer = pricer

    @property
    def group_of(self) -> Callable[[str], str | None]:
        """The group whose budget a user's calls are charged to (spend controls), stored on their token rows as
        `effective_group_id` when the call ends; called on the writer's thread, so it must only read."""
        return self._batches.group_of

    @group_of.setter
    def group_of(self, fn: Callable[[str], str | None]) -> None:
        self._batches.group_of = fn

    @property
    def queue_depth(self) -> int:
        """Events accepted but not yet written or dropped that are held in memory (the spool's are not)."""
        return self._submitted - self._done - self._own_spooled

    @property
    def _own_spooled(self) -> int:
        return self._spool.pending - self._inherited if self._spool is not None else 0

    @property
    def spooled(self) -> int:
        """Events waiting in the spool file (this run's and any an earlier run left)."""
        return self._spool.pending if self._spool is not None else 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def _spool_max(self) -> str:
        return f"{self._spool.max_bytes} bytes" if self._spool is not None else "off"

    def health(self) -> WriterHealth:
        """The writer's state now, for /healthz and friends (cheap; call it on the writer's loop)."""
        now = time.monotonic()
        while self._recent and now - self._recent[0][0] > RECENT_WINDOW:
            self._recent.popleft()
        recent: Counter[str] = Counter()
        for _at, reason, n in self._recent:
            recent[reason] += n
        spool = self._spool
        return WriterHealth(
            running=self.running,
            queue_depth=self.queue_depth,
            max_queue=self._max_queue,
            written=self.written,
            dropped=dict(self.dropped),
            dropped_recently=dict(recent),
            last_loss_at=dict(self.last_loss_at),
            last_commit_at=self.last_commit_at,
            busy_since=self.busy_since,
            failing_since=self.failing_since,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
            spooled=self.spooled,
            spool_bytes=spool.bytes_pending if spool is not None else 0,
            spool_max_bytes=spool.max_bytes if spool is not None else 0,
            database_problem=self.database_problem,
        )

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
            "spooled": self.spooled,
            "failing_since": self.failing_since,
        }

    async def _on_db[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a database coroutine on the writer's database thread (or here, without one)."""
        return await self._io.run(coro) if self._io is not None else await coro

    def _failed(self, exc: BaseException) -> None:
        self.failing_since = self.failing_since or time.monotonic()
        self.consecutive_failures += 1
        self.last_error = describe(exc)
        self._log_limited("retry", logging.WARNING,
                          "database write failed (%s); %d record events kept (%d in the spool), retrying",
                          self.last_error, self._submitted - self._done, self.spooled)

    def _succeeded(self) -> None:
        now = time.monotonic()
        if self.failing_since is not None:
            log.warning("database writes work again after %.1f s of failures; writing the %d record events kept",
                        now - self.failing_since, self._submitted - self._done + self._inherited)
            self._last_log.pop("retry", None)
        self.failing_since = None
        self.consecutive_failures = 0
        self.last_commit_at = now

    def _finish(self, n: int) -> None:
        if n <= 0:
            return
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
        expected = reason in EXPECTED_DROPS
        if not expected:
            now = time.monotonic()
            self.last_loss_at[reason] = now
            self._recent.append((now, reason, n))
        self._log_limited(
            f"drop:{reason}",
            logging.WARNING if expected else logging.ERROR,
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

    @property
    def _inflight(self) -> dict[str, InFlight]:
        """The started interceptions whose start is kept in memory until they end."""
        return self._batches.inflight
