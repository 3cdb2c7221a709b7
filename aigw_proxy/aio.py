"""Small asyncio helpers more than one layer uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast


async def both[A, B](first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, run concurrently; if either fails, its error (the first's if both fail) once both are done,
    so that neither is abandoned mid-way (e.g. a database connection closed under a running statement)."""
    got = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in got:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(tuple[A, B], tuple(got))
