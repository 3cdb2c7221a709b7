"""Health that tells the truth: `/livez`, `/readyz` and `/healthz`, and the `aigw_proxy_health_degraded` gauge.

The checks run on the admin thread, but what they report comes from the proxy's event loop: a small coroutine
is handed to that loop (`run_coroutine_threadsafe`) and reads the writer and the in-flight count there. If the
loop does not run it within `loop_timeout`, the proxy is not relaying either, and the answer is 503
`unresponsive`. The database is probed from the admin thread (its own engines), never from the proxy's loop.

Degraded, with a reason each (`REASONS`):
* `records_dropped`: the writer lost records in the last `drop_window` seconds (expected drops such as a duplicate
  end are not losses);
* `writer_failing`: writes have been failing for `failing_after` seconds (the writer retries, then drops);
* `writer_stalled`: the writer has been on one batch for `stall_after` seconds without committing it;
* `writer_stopped`: the writer's task is not running;
* `queue_high_water`: the queue holds `high_water` of its capacity or more (at capacity new records are dropped);
* `database_unreachable`: the database cannot be read, or (SQLite) its file is gone or was replaced under the
  proxy and the writer has not reopened it yet (it checks every second and before each write: a replacement it
  can open is reopened, a deleted file restored from the handle still open on it).

Records the writer cannot commit are not lost meanwhile: they wait in its spool (`recorder.spooled`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aigw_proxy.storage import Database, WriterHealth

log = logging.getLogger("aigw_proxy.admin")

REASONS = ("proxy_loop_unresponsive", "shutting_down", "writer_stopped", "records_dropped", "writer_failing",
           "writer_stalled", "queue_high_water", "database_unreachable")


class _Writer(Protocol):
    def health(self) -> WriterHealth: ...


class _InFlight(Protocol):
    @property
    def count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    loop_timeout: float = 2.0  # the proxy's loop must run a no-op within this (seconds)
    drop_window: float = 60.0  # records lost this recently make the proxy degraded
    failing_after: float = 5.0  # writes failing (and being retried) for this long
    stall_after: float = 15.0  # one batch taken and not committed for this long
    high_water: float = 0.5  # of the writer's queue capacity
    db_timeout: float = 2.0  # the database probe


@dataclass(slots=True)
class HealthReport:
    status: str  # ok | degraded | unresponsive | shutting_down
    reasons: dict[str, str] = field(default_factory=dict)  # reason -> what is wrong, for a person
    inflight_requests: int | None = None
    recorder: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "reasons": self.reasons}
        if self.inflight_requests is not None:
            out["inflight_requests"] = self.inflight_requests
        if self.recorder is not None:
            out["recorder"] = self.recorder
        return out


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def evaluate(w: WriterHealth, now: float, policy: HealthPolicy) -> dict[str, str]:
    """The writer's degraded reasons at monotonic time `now`."""
    reasons: dict[str, str] = {}
    if not w.running:
        reasons["writer_stopped"] = "the record writer is not running: nothing is being recorded"
    recent = sorted(r for r, at in w.last_loss_at.items() if now - at <= policy.drop_window)
    if recent:
        totals = ", ".join(f"{r} ({w.dropped.get(r, 0)} since start)" for r in recent)
        reasons["records_dropped"] = f"records were dropped in the last {policy.drop_window:.0f} s: {totals}"
    if w.failing_since is not None and now - w.failing_since >= policy.failing_after:
        reasons["writer_failing"] = (f"database writes have failed for {now - w.failing_since:.0f} s "
                                     f"({w.consecutive_failures} attempts): {w.last_error}; {w.spooled} record "
                                     f"events kept in the spool, {w.queue_depth} in memory")
    if w.database_problem is not None:
        reasons["database_unreachable"] = w.database_problem
    if w.busy_since is not None and now - w.busy_since >= policy.stall_after:
        reasons["writer_stalled"] = (f"the writer has been on one batch for {now - w.busy_since:.0f} s without "
                                     f"committing it; {w.queue_depth} record events waiting")
    if w.queue_depth >= policy.high_water * w.max_queue:
        reasons["queue_high_water"] = (f"{w.queue_depth} of {w.max_queue} record events queued: at "
                                       f"{w.max_queue} new records are dropped")
    return reasons


def _recorder(w: WriterHealth, now: float) -> dict[str, Any]:
    return {
        "queue_depth": w.queue_depth,
        "written": w.written,
        "dropped": w.dropped,
        "last_error": w.last_error,
        "seconds_since_commit": None if w.last_commit_at is None else round(now - w.last_commit_at, 3),
        "spooled": w.spooled,
        "spool_bytes": w.spool_bytes,
        "spool_max_bytes": w.spool_max_bytes,
    }


class HealthMonitor:
    """Built on the proxy's loop (it remembers that loop); its checks are awaited on the admin thread's loop."""

    def __init__(self, writer: _Writer, inflight: _InFlight, db_path: Path | None,
                 policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._proxy_loop = asyncio.get_running_loop()
        self._writer = writer
        self._inflight = inflight
        self._db_path = db_path
        self._db_identity = _file_identity(db_path) if db_path is not None else None
        self.stopping = False  # set by the daemon when it starts shutting down
        self.collector = HealthCollector()

    async def _snapshot(self) -> tuple[WriterHealth, int]:  # runs on the proxy's loop
        return self._writer.health(), self._inflight.count

    async def _ask_proxy_loop(self) -> tuple[WriterHealth, int] | None:
        fut: concurrent.futures.Future[tuple[WriterHealth, int]] = asyncio.run_coroutine_threadsafe(
            self._snapshot(), self._proxy_loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.policy.loop_timeout)
        except TimeoutError:
            fut.cancel()
            return None
        except RuntimeError:  # the proxy's loop is closed
            return None

    def _unresponsive(self) -> HealthReport:
        return HealthReport("unresponsive", {"proxy_loop_unresponsive": (
            f"the proxy's event loop did not answer within {self.policy.loop_timeout:g} s: requests are not "
            "being relayed")})

    async def live(self) -> HealthReport:
        """Process alive and the proxy's loop responsive."""
        if await self._ask_proxy_loop() is None:
            return self._unresponsive()
        return HealthReport("ok")

    async def check(self, db: Database | None) -> HealthReport:
        """Everything: the proxy's loop, the writer (read on that loop) and the database (probed here)."""
        snap = await self._ask_proxy_loop()
        if snap is None:
            report = self._unresponsive()
        else:
            writer, inflight = snap
            now = time.monotonic()
            reasons = evaluate(writer, now, self.policy)
            problem = await self._probe_database(db)
            if problem is not None:
                reasons.setdefault("database_unreachable", problem)
            if self.stopping:
                reasons = {"shutting_down": "the proxy is shutting down", **reasons}
            status = "shutting_down" if self.stopping else "degraded" if reasons else "ok"
            report = HealthReport(status, reasons, inflight, _recorder(writer, now))
        self.collector.last = report
        return report

    async def _probe_database(self, db: Database | None) -> str | None:
        # The file the proxy has open (the writer reopens a replaced or deleted one and updates it), else the one
        # at start.
        problem = db.file_problem() if db is not None else None
        if db is None and self._db_path is not None and self._db_identity is not None:
            now = _file_identity(self._db_path)
            problem = "deleted" if now is None else "replaced" if now != self._db_identity else None
        if problem == "deleted":
            return f"the database file {self._db_path} is gone: the record writer is restoring it"
        if problem == "replaced":
            return (f"the database file {self._db_path} was replaced since the proxy opened it: the record writer "
                    "is reopening it")
        if db is None:
            return None
        return await probe_database(db, self.policy.db_timeout)


async def probe_database(db: Database, within: float) -> str | None:
    """Why the database cannot be read (it did not answer within ``within`` s, or failed), None if it can."""
    try:
        async with asyncio.timeout(within):
            async with db.reader.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    except TimeoutError:
        return f"the database did not answer within {within:g} s"
    except Exception as exc:
        orig = getattr(exc, "orig", None) or exc
        return f"cannot read the database: {type(orig).__name__}: {orig}"
    return None


class HealthCollector(Collector):
    """`aigw_proxy_health_degraded{reason}`: 1 for each reason in the latest check (a scrape runs one first)."""

    def __init__(self) -> None:
        self.last: HealthReport | None = None

    def collect(self) -> Iterator[Metric]:
        last = self.last
        if last is None:
            return
        gauge = GaugeMetricFamily("aigw_proxy_health_degraded",
                                  "1 while the proxy reports this health reason (see /healthz), else 0.",
                                  labels=["reason"])
        for reason in REASONS:
            gauge.add_metric([reason], 1.0 if reason in last.reasons else 0.0)
        yield gauge
