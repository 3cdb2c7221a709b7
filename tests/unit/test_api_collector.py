"""The REST API's pause of the cyclic collector (admin/api/collector.py): off while a list page is built, on again
after the last one, bounded while pages overlap, and never switched on if someone else switched it off."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from aigw_proxy.admin.api.collector import CollectorPause


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    gc.enable() if was else gc.disable()


def test_off_while_a_page_is_built_and_on_after() -> None:
    pause = CollectorPause()
    with pause():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pages_keep_it_off_until_the_last_ends() -> None:
    pause = CollectorPause()
    first, second = pause(), pause()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_an_error_in_the_page_switches_it_back_on() -> None:
    pause = CollectorPause()
    with pytest.raises(ValueError), pause():
        raise ValueError("the page failed")
    assert gc.isenabled()


def test_switched_off_by_someone_else_it_stays_off() -> None:
    pause = CollectorPause()
    gc.disable()
    with pause():
        pass
    assert not gc.isenabled()


def test_pages_that_overlap_for_longer_than_the_bound_collect_the_young_garbage() -> None:
    clock = Clock()
    pause = CollectorPause(clock, max_pause=1.0)
    pages = [pause()]
    pages[0].__enter__()
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    for _ in range(5):  # a page starts before the one before it ends, for 2.5 s: the collector is never back on
        clock.now += 0.5
        pages.append(pause())
        pages[-1].__enter__()
        pages.pop(0).__exit__(None, None, None)
        assert not gc.isenabled()
    assert gone() is None  # collected while the pause went on
    assert pause.young_collections == 2  # at 1.0 and 2.0 s: once per bound, not per page
    pages.pop().__exit__(None, None, None)
    assert gc.isenabled()
