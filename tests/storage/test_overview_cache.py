"""The console Overview's figures kept warm (admin/console/overview_cache.py): nothing is computed before a first
view (it would show figures from the start), a view within a minute of the computation is served from memory, the
refresher recomputes what people look at before it turns a minute old (so the figures move on without a view
waiting), and stops refreshing what nobody looked at for a while."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from aigw_proxy.admin.console import overview_cache
from aigw_proxy.admin.console.overview import WINDOWS
from aigw_proxy.admin.console.overview_cache import FRESH_SECONDS, WARM_FOR_SECONDS, OverviewCache
from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter
from tests.storage.test_overview_figures import _call


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stopwatch:
    """Every computation (two readings) takes `cost` seconds, however long it really took."""

    def __init__(self, cost: float) -> None:
        self.cost, self._t, self._running = cost, 0.0, False

    def __call__(self) -> float:
        if self._running:
            self._t += self.cost
        self._running = not self._running
        return self._t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def window(name: str) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - WINDOWS[name], now


async def test_views_are_served_warm_and_the_refresher_moves_them_on(
        db: Database, writer: RecordWriter, alice: Initiator, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview_cache, "MIN_FRESH_SECONDS", FRESH_SECONDS)  # as if each computation were costly
    now = datetime.now(UTC)
    _call(writer, "c1", alice, now - timedelta(hours=1), "s1", prompt="one")
    await writer.flush(timeout=10)
    cache = OverviewCache(db, clock)
    warm = asyncio.create_task(cache.keep_warm(interval=0.01))
    try:
        await asyncio.sleep(0.05)
        assert cache._entries == {}  # nothing computed ahead of a first view
        first = await cache.get("30d", *window("30d"), None)
        assert first.interceptions == 1
        # A call recorded now shows once the figures are recomputed, not on every view.
        _call(writer, "c2", alice, now - timedelta(minutes=5), "s2", prompt="two")
        await writer.flush(timeout=10)
        clock.now += FRESH_SECONDS / 2
        assert await cache.get("30d", *window("30d"), None) is first
        clock.now += FRESH_SECONDS / 2  # about to turn stale: the refresher recomputes it ahead of any view
        for _ in range(500):
            entry = cache._entries[("30d", "model", None, None, None)]
            if entry.value.interceptions == 2:
                break
            await asyncio.sleep(0.01)
        assert entry.value.interceptions == 2 and entry.value.sessions == 2
        assert (await cache.get("30d", *window("30d"), None)) is entry.value  # served, not computed
        # A member's window: computed on their first look, then kept warm like the others.
        mine = await cache.get("7d", *window("7d"), alice.user_id)
        assert mine.interceptions == 2 and ("7d", "model", alice.user_id, None, None) in cache._entries
        # Nobody looks for WARM_FOR_SECONDS: the entries are dropped, the next look computes afresh.
        clock.now += WARM_FOR_SECONDS + 1
        for _ in range(500):
            if not cache._entries:
                break
            await asyncio.sleep(0.01)
        assert cache._entries == {}
        assert (await cache.get("24h", *window("24h"), None)).interceptions == 2
    finally:
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)


async def test_a_failing_database_is_logged_and_the_refresher_keeps_going(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def broken(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("database is locked")

    monkeypatch.setattr(overview_cache, "overview", broken)
    cache = OverviewCache(db, clock)
    warm = asyncio.create_task(cache.keep_warm(interval=0.01))
    caplog.set_level(logging.WARNING, overview_cache.__name__)
    try:
        with pytest.raises(RuntimeError, match="locked"):  # a view shows its own error (the page's 500 handler)
            await cache.get("24h", *window("24h"), None)
        assert not cache._entries
        # A window viewed before the database failed: the refresher's failure is logged, it keeps going.
        monkeypatch.undo()
        await cache.get("30d", *window("30d"), None)
        monkeypatch.setattr(overview_cache, "overview", broken)
        clock.now += FRESH_SECONDS
        for _ in range(500):
            if calls >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not warm.done()  # still running
        assert "overview refresh failed: database is locked" in caplog.text
    finally:
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)


@pytest.mark.parametrize(("cost", "reused_for"), [(0.001, 0.5), (0.005, 0.6), (0.1, 12.0), (0.5, 60.0), (3.0, 60.0)])
async def test_cheap_figures_stay_as_fresh_as_the_records(db: Database, writer: RecordWriter, alice: Initiator,
                                                        clock: Clock, cost: float, reused_for: float) -> None:
    """Figures are reused for as long as their computation cost × 120, from half a second to a minute."""
    now = datetime.now(UTC)
    cache = OverviewCache(db, clock, stopwatch=Stopwatch(cost))
    assert (await cache.get("24h", *window("24h"), None)).interceptions == 0
    _call(writer, "c1", alice, now - timedelta(minutes=1), "s1", prompt="one")
    await writer.flush(timeout=10)
    [entry] = cache._entries.values()
    assert entry.fresh_for == pytest.approx(reused_for)
    computed_at = clock.now
    clock.now = computed_at + reused_for * 0.99
    assert (await cache.get("24h", *window("24h"), None)).interceptions == 0  # still the figures from before
    clock.now = computed_at + reused_for * 1.01
    assert (await cache.get("24h", *window("24h"), None)).interceptions == 1


async def test_a_first_view_is_kept_warm_even_if_the_refresher_runs_before_it_returns(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresher can run between a first view's computation and the view's return (another task's turn): the
    new entry must count as viewed, not as unviewed for 15 minutes and dropped, which made the next view compute
    again (the warm-up test's occasional failure on a loaded machine)."""
    computed = 0
    real = overview_cache.overview
    rounds: list[asyncio.Task[int]] = []

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal computed
        computed += 1
        value = await real(*args, **kwargs)  # type: ignore[arg-type]
        # The refresher's round, scheduled now, runs after the entry is stored and before the view resumes.
        rounds.append(asyncio.create_task(cache.refresh_due()))
        return value

    monkeypatch.setattr(overview_cache, "overview", counting)
    monkeypatch.setattr(overview_cache, "MIN_FRESH_SECONDS", FRESH_SECONDS)
    clock.now = WARM_FOR_SECONDS * 3  # a clock long past any 'last viewed' default
    cache = OverviewCache(db, clock)
    first = await cache.get("24h", *window("24h"), None)
    await asyncio.gather(*rounds)
    assert await cache.get("24h", *window("24h"), None) is first
    assert computed == 1
