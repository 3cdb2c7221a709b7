"""The proxy's event loop (`--event-loop`): uvloop where installed, Python's asyncio on request or without it."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from aigw_proxy.aio import EventLoopError, loop_factory, loop_name, new_loop_like, run


def kind(name: str) -> str:
    loop = loop_factory(name)()
    try:
        return loop_name(loop)
    finally:
        loop.close()


def test_auto_is_uvloop_where_it_is_installed() -> None:
    assert kind("auto") == f"uvloop {uvloop.__version__}"
    assert kind("uvloop") == kind("auto")
    assert kind("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert kind("auto") == "asyncio"
    with pytest.raises(EventLoopError, match="uvloop is not installed here"):
        loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(EventLoopError, match="unknown event loop 'trio'"):
        loop_factory("trio")


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_mitmproxys_eager_tasks_run_on_the_loop(name: str) -> None:
    """mitmproxy's master sets asyncio's eager task factory: a task made under it must run to its end (uvloop 0.23
    hands that factory an argument Python 3.12 and 3.13 refuse, and the proxy never started)."""

    async def child() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        return loop_name(loop), await asyncio.wait_for(asyncio.create_task(child()), 5)

    got_kind, value = run(main(), name)
    assert got_kind.split()[0] == name
    assert value == 7


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_a_thread_beside_the_loop_gets_one_of_its_kind(name: str) -> None:
    async def main() -> str:
        other = new_loop_like(asyncio.get_running_loop())
        try:
            return loop_name(other)
        finally:
            other.close()

    assert run(main(), name).split()[0] == name
