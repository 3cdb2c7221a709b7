"""The Interceptor's watchdog and the true cause of a cut call, on mitmproxy's test flows: the usage seen so far is
recorded while the stream goes on, a silent upstream is cut and recorded as `timeout`, a client that went away is
`client_disconnected`, an upstream that closed mid-response `upstream_reset`, a shutdown cut says so."""

from __future__ import annotations

import asyncio

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.test import taddons, tflow, tutils

from aigw_proxy.addons.connect_timeout import connect_timeout_message
from aigw_proxy.addons.intercept import SHUTDOWN_MESSAGE, TICK, Interceptor, failure_cause
from aigw_proxy.recording.records import InterceptionEnded, InterceptionStarted, InterceptionUsage, RecordEvent
from tests.support.flows import STREAM, model_call


def _streaming(addon: Interceptor) -> http.HTTPFlow:
    flow = model_call()
    addon.requestheaders(flow)
    addon.request(flow)
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=b"")
    addon.responseheaders(flow)
    return flow


async def test_the_usage_seen_is_recorded_while_the_stream_goes_on() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append)
    with taddons.context(addon):
        flow = _streaming(addon)
        assert callable(flow.response.stream)  # type: ignore[union-attr]
        flow.response.stream(STREAM[0])  # type: ignore[union-attr]  # message_start: 9 input tokens
        await asyncio.sleep(TICK * 2.5)
        usages = [r for r in records if isinstance(r, InterceptionUsage)]
        assert [(u.input_tokens, u.output_tokens) for r in usages for u in r.token_usages] == [(9, 1)]  # once
        for chunk in STREAM[1:]:
            flow.response.stream(chunk)  # type: ignore[union-attr]
        addon.response(flow)
        await asyncio.sleep(TICK * 2)
        assert isinstance(records[0], InterceptionStarted) and records[0].prompt == "hi there"
        end = records[-1]
        assert isinstance(end, InterceptionEnded) and end.status == "completed"
        assert sum(isinstance(r, InterceptionUsage) for r in records) == 1  # nothing after the end


async def test_a_silent_upstream_is_cut_and_recorded_as_a_timeout() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append, upstream_idle_timeout=TICK * 2)
    with taddons.context(addon):
        flow = _streaming(addon)
        flow.response.stream(STREAM[0])  # type: ignore[union-attr,operator]
        await asyncio.sleep(TICK * 5)
        flow.error = tflow.terr("server closed connection")  # what mitmproxy reports once the upstream is closed
        addon.error(flow)
        end = records[-1]
        assert isinstance(end, InterceptionEnded) and end.status == "failed"
        assert end.error_type == "timeout"
        assert end.error is not None and end.error.startswith("upstream sent nothing for ")


async def test_a_stream_that_keeps_talking_is_not_cut() -> None:
    records: list[RecordEvent] = []
    addon = Interceptor(records.append, upstream_idle_timeout=TICK * 3)
    with taddons.context(addon):
        flow = _streaming(addon)
        for chunk in STREAM:
            flow.response.stream(chunk)  # type: ignore[union-attr,operator]
            await asyncio.sleep(TICK * 1.5)  # each gap shorter than the timeout, the stream longer than it
        addon.response(flow)
        end = records[-1]
        assert isinstance(end, InterceptionEnded) and end.status == "completed"


def test_failure_causes() -> None:
    flow = model_call()
    flow.error = tflow.terr("Client disconnected.")
    assert failure_cause(flow) == ("Client disconnected.", "client_disconnected")

    flow = model_call()
    flow.client_conn.state = ConnectionState.CLOSED  # an HTTP/2 client that went away: the message is generic
    flow.error = tflow.terr("peer closed connection")
    assert failure_cause(flow)[1] == "client_disconnected"

    flow = model_call()
    flow.error = tflow.terr("server closed connection")
    assert failure_cause(flow) == ("server closed connection", "upstream_reset")

    flow = model_call()
    flow.server_conn.state = ConnectionState.CAN_WRITE  # the upstream's side closed (FIN or RST)
    flow.error = tflow.terr("HTTP/1 protocol error: peer closed connection")
    assert failure_cause(flow)[1] == "upstream_reset"

    flow = model_call()
    flow.server_conn.timestamp_tcp_setup = None  # never connected: its status (none) tells the type
    flow.error = tflow.terr("Connection refused")
    assert failure_cause(flow) == ("Connection refused", None)

    flow = model_call()
    flow.error = tflow.terr("Client disconnected.")
    assert failure_cause(flow, stopping=True) == (SHUTDOWN_MESSAGE, None)
    assert failure_cause(flow, cut_after=300.0) == ("upstream sent nothing for 300 s (--upstream-idle-timeout)",
                                                    "timeout")


def test_a_connect_that_timed_out_is_a_timeout() -> None:
    """A model call whose (re)connect inside its tunnel hit --upstream-connect-timeout: `timeout`, with the text
    the client's 502 carries."""
    flow = model_call()
    flow.server_conn.timestamp_tcp_setup = None
    message = connect_timeout_message(("127.0.0.1", 443), 10)
    flow.error = tflow.terr(message)
    assert failure_cause(flow) == (message, "timeout")
    assert message == ("upstream connect timed out: 127.0.0.1:443 did not answer within 10 s "
                       "(--upstream-connect-timeout)")
