"""The daemon's cached hook dispatch (addons/stack.py) calls exactly what mitmproxy's own dispatch calls, in the
same order, with the same error handling: checked side by side on two masters with the same addons."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, http, options
from mitmproxy.master import Master
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import http as layers_http
from mitmproxy.test import tflow

from aigw_proxy.addons.stack import AigwAddons, CachedAddonManager, use_hook_cache


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.log.append(f"{self.name}.requestheaders")

    async def request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0)
        self.log.append(f"{self.name}.request")

    def response(self, flow: http.HTTPFlow) -> asyncio.Future[None] | None:
        self.log.append(f"{self.name}.response")
        return None

    def update(self, flows: list[object]) -> None:
        self.log.append(f"{self.name}.update")


class Failing(Recorder):
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.log.append(f"{self.name}.requestheaders")
        raise ValueError("boom")


class Halting(Recorder):
    def response(self, flow: http.HTTPFlow) -> None:
        self.log.append(f"{self.name}.response")
        raise exceptions.AddonHalt


class Other:
    """Handles no flow hook: never called for one."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def client_connected(self, client: object) -> None:
        self.log.append("other.client_connected")


def build(log: list[str], cached: bool) -> Master:
    master = Master(options.Options())
    if cached:
        use_hook_cache(master)
    master.addons.add(AigwAddons(Recorder("a", log), Failing("f", log), Recorder("b", log)))
    master.addons.add(Other(log), Recorder("c", log), Halting("h", log), Recorder("d", log))
    return master


async def run_events(master: Master) -> None:
    flow = tflow.tflow(resp=True)
    for hook in (layers_http.HttpRequestHeadersHook(flow), layers_http.HttpRequestHook(flow),
                 layers_http.HttpResponseHook(flow), server_hooks.ClientConnectedHook(flow.client_conn)):
        await master.addons.handle_lifecycle(hook)


async def test_the_cached_dispatch_calls_what_mitmproxy_calls_in_the_same_order(
        caplog: pytest.LogCaptureFixture) -> None:
    logs: dict[bool, list[str]] = {}
    errors: dict[bool, list[str]] = {}
    for cached in (False, True):
        log: list[str] = []
        master = build(log, cached)
        assert isinstance(master.addons, CachedAddonManager) is cached
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            await run_events(master)
        logs[cached] = log
        errors[cached] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logs[True] == logs[False]
    # An error stops the rest of its chain entry (b, nested after f) but not the next entries; AddonHalt stops the
    # event (d never sees the response) but not the `update` that follows it.
    assert logs[True][:4] == ["a.requestheaders", "f.requestheaders", "c.requestheaders", "h.requestheaders"]
    assert "d.response" not in logs[True] and "other.client_connected" in logs[True]
    assert errors[True] == errors[False] == ["Addon error: boom"]


async def test_an_addon_added_or_removed_later_is_dispatched_to_or_not() -> None:
    log: list[str] = []
    master = build(log, cached=True)
    late = Recorder("late", log)
    master.addons.add(late)
    flow = tflow.tflow()
    await master.addons.trigger_event(layers_http.HttpRequestHeadersHook(flow))
    assert log[-1] == "late.requestheaders"
    master.addons.remove(late)
    log.clear()
    await master.addons.trigger_event(layers_http.HttpRequestHeadersHook(flow))
    assert "late.requestheaders" not in log and log[-1] == "d.requestheaders"
