"""The Interceptor, InFlight and Readiness addons on mitmproxy's own test flows: a model call's stream is relayed
chunk by chunk untouched while a copy is parsed a loop turn later; passthrough paths are streamed and not recorded;
requests in flight are counted for the shutdown grace; a proxy that did not come up is reported."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from aigw_proxy.addons.inflight import InFlight
from aigw_proxy.addons.intercept import INTERCEPTION, Interceptor
from aigw_proxy.addons.readiness import Readiness
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, RecordEvent
from tests.support.flows import MODEL, STREAM, model_call


async def test_a_streamed_model_call_is_relayed_untouched_and_recorded() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append)
    with taddons.context(addon):
        flow = model_call()
        addon.requestheaders(flow)
        assert flow.metadata[INTERCEPTION] is not None
        addon.request(flow)
        assert records == []  # parsed after the hook returned, i.e. after the request was handed upstream
        await asyncio.sleep(0)
        assert isinstance(records[0], InterceptionStarted)
        assert (records[0].model, records[0].client) == (MODEL, "Claude Code")

        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=b"")
        addon.responseheaders(flow)
        tee = flow.response.stream
        assert callable(tee)
        relayed = [tee(chunk) for chunk in STREAM]
        assert relayed == STREAM  # every byte forwarded as it came
        addon.response(flow)
        end = records[-1]
        assert isinstance(end, InterceptionEnded) and end.status == "completed"
        assert end.prompt == "hi there"
        assert [(u.input_tokens, u.output_tokens) for u in end.token_usages] == [(9, 4)]


async def test_passthrough_paths_are_streamed_and_not_recorded() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append)
    with taddons.context(addon):
        flow = model_call("/api/claude_code/settings")
        flow.request.method = "GET"
        addon.requestheaders(flow)
        assert INTERCEPTION not in flow.metadata
        flow.response = tutils.tresp()
        addon.responseheaders(flow)
        assert flow.response.stream is True
        addon.response(flow)
        await asyncio.sleep(0)
        assert records == []


async def test_an_upstream_failure_records_a_failed_call() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append)
    with taddons.context(addon):
        flow = model_call()
        addon.requestheaders(flow)
        addon.request(flow)
        flow.error = tflow.terr("server closed connection")
        addon.error(flow)
        end = records[-1]
        assert isinstance(end, InterceptionEnded) and end.status == "failed"
        assert end.error is not None and "server closed connection" in end.error


async def test_inflight_counts_until_response_or_error() -> None:
    inflight = InFlight()
    with taddons.context(inflight):
        a, b = tflow.tflow(), tflow.tflow()
        inflight.requestheaders(a)
        inflight.requestheaders(b)
        assert inflight.count == 2
        assert not await inflight.wait_idle(0.01)
        inflight.response(a)
        inflight.error(b)
        inflight.response(b)  # ends once only
        assert inflight.count == 0 and await inflight.wait_idle(0.01)


async def test_readiness_reports_a_proxy_that_is_not_listening() -> None:
    readiness = Readiness()
    with taddons.context(readiness):
        readiness.running()
        with pytest.raises(RuntimeError, match="cannot listen"):
            await readiness.result
