"""Time-ordered ids (UUID version 7, RFC 9562) for rows this process creates.

Ids are strictly increasing within the process (a 12-bit counter inside the millisecond, method 1 of RFC 9562
§6.2), so rows inserted in one transaction with the same `created_at` still sort in insertion order by id.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def new_id() -> str:
    """A new UUIDv7 string, greater than every id this process returned before."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2)) & 0x3FF  # random start, room left to count up
        else:  # same millisecond (or the clock stepped back): count on from the last id
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))
