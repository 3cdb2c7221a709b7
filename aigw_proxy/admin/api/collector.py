"""The cyclic garbage collector paused while a REST API list page is built and encoded.

A page of 1000 holds ~50,000 rows, dicts and lists alive until it is encoded, and none of them is part of a
reference cycle, yet they trigger collections (young and full: the daemon freezes its start-up objects, so the
page's are most of what a full collection walks) that traverse them again and again: 20-60 ms of a page of 1000 on
the API's thread, holding the GIL while the proxy's thread waits. Paused, the next collection after the page comes
when its objects are freed again (by reference counting) and walks none of them.

The collector is the whole process's, the proxy's loop included, so a pause is bounded: pages that overlap one
another could otherwise keep it off for as long as API load lasts, and the proxy's own cyclic garbage would pile
up. Once it has been off for `MAX_PAUSE_SECONDS`, the next page to start or end runs a young collection (the
generations the proxy's short-lived objects are in) before going on.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

MAX_PAUSE_SECONDS = 1.0


class CollectorPause:
    """Counts the pages in progress on the API's loop (one thread): the collector is off while any is."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_pause: float = MAX_PAUSE_SECONDS) -> None:
        self._clock = clock
        self._max_pause = max_pause
        self._pages = 0
        self._collected_at = 0.0  # when the collector was last switched off, or last ran while off
        self.young_collections = 0  # run because a pause had lasted max_pause

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self._pages == 0 and not gc.isenabled():  # switched off by someone else: leave it as it is
            yield
            return
        if self._pages == 0:
            gc.disable()
            self._collected_at = self._clock()
        else:
            self._bound()
        self._pages += 1
        try:
            yield
        finally:
            self._pages -= 1
            if self._pages == 0:
                gc.enable()
            else:
                self._bound()

    def _bound(self) -> None:
        now = self._clock()
        if now - self._collected_at >= self._max_pause:
            gc.collect(1)
            self.young_collections += 1
            self._collected_at = now


collector_paused = CollectorPause()
