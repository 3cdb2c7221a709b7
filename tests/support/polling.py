"""Waiting for a daemon to reach a state: poll until a check passes, or fail saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll[T](fn: Callable[[], T], ok: Callable[[T], object], what: str, timeout: float = 40.0,
            interval: float = 0.2) -> T:
    """`fn()` again and again until `ok` accepts its value (returned); after `timeout` seconds fail with the last
    value, naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: last {value!r}"
        time.sleep(interval)
