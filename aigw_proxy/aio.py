"""Small asyncio helpers more than one layer uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, cast


async def both[A, B](first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, run concurrently; if either fails, its error (the first's if both fail) once both are done,
    so that neither is abandoned mid-way (e.g. a database connection closed under a running statement)."""
    got = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in got:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(tuple[A, B], tuple(got))


# The proxy's event loop (`--event-loop`). uvloop (libuv) does the loop's own work (polling, socket reads and
# writes, callbacks) in C. With one event in flight that changes little (mitmproxy's layers are most of an event's
# cost); with many connections streaming at once one core relays more events, with shorter tails (README, "How it
# works"). "auto": uvloop where it is installed.
EVENT_LOOPS: Final = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The event loop asked for cannot be had here."""


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of kind `name` (one of EVENT_LOOPS)."""
    if name not in EVENT_LOOPS:
        raise EventLoopError(f"unknown event loop {name!r} (one of {', '.join(EVENT_LOOPS)})")
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise EventLoopError("--event-loop uvloop: uvloop is not installed here (pip install uvloop, "
                                     "or --event-loop asyncio)") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.partition(".")[0] == "uvloop"


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """How a log line names `loop`'s kind: "uvloop 0.22.1" or "asyncio"."""
    if _is_uvloop(loop):
        import uvloop

        return f"uvloop {uvloop.__version__}"
    return "asyncio"


def run[T](coro: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """`asyncio.run(coro)` on a new loop of kind `event_loop`."""
    return asyncio.run(coro, loop_factory=loop_factory(event_loop))


def new_loop_like(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """A new event loop of `loop`'s kind (for a thread of its own beside it)."""
    if _is_uvloop(loop):
        return loop_factory("uvloop")()
    return asyncio.new_event_loop()
