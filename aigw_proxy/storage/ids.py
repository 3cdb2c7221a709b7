"""Time-ordered ids (UUID version 7, RFC 9562) for rows this process creates.

Ids are strictly increasing within the process (a 12-bit counter inside the millisecond, method 1 of RFC 9562
§6.2), so rows inserted in one transaction with the same `created_at` still sort in insertion order by id.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF
_POOL_BYTES = 4096  # random bytes read at once: one getrandom() call per ~500 ids instead of one or two per id
_pool = b""
_pos = 0


def _forget_pool() -> None:
    global _pool, _pos
    _pool, _pos = b"", 0


os.register_at_fork(after_in_child=_forget_pool)  # a forked worker must never reuse its parent's random bytes


def _random(n: int) -> int:
    """`n` bytes from the OS's CSPRNG as an integer; call with `_lock` held."""
    global _pool, _pos
    if _pos + n > len(_pool):
        _pool, _pos = os.urandom(_POOL_BYTES), 0
    value = int.from_bytes(_pool[_pos:_pos + n])
    _pos += n
    return value


def new_id() -> str:
    """A new UUIDv7 string, greater than every id this process returned before."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = _random(2) & 0x3FF  # random start, room left to count up
        else:  # same millisecond (or the clock stepped back): count on from the last id
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
        rand_b = _random(8) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
