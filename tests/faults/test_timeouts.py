"""A model call cut short under a real daemon, recorded with its true cause: an upstream that sends the head and
the first event and then nothing (cut after --upstream-idle-timeout: `timeout`), a client that goes away
(`client_disconnected`), an upstream that closes mid-response (`upstream_reset`), a stream still stalled when
the proxy stops (the shutdown, not "Client disconnected.")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_proxy.addons.intercept import SHUTDOWN_MESSAGE
from tests.support.bursts import stored_by_prompt, stream_reply
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn
from tests.support.traffic import ANTHROPIC_MODEL, CLAUDE_CODE, anthropic_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK on the stand-in's model name
IDLE = 1


@pytest.fixture
def daemon(tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--upstream-idle-timeout", f"{IDLE}s"))
    yield d
    standin_server.reset()
    stop_daemon(d)


def stream(d: Daemon, prompt: str, *, events: int | None = None) -> tuple[float, str | None]:
    """Stream a call; stop reading after `events` events if given. (seconds it took, the client's error)"""
    began = time.monotonic()
    client = anthropic_client(d, "alice", default_headers=CLAUDE_CODE)  # the SDK's own timeout: 10 minutes
    try:
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": prompt}]) as s:
            for n, _event in enumerate(s, 1):
                if events is not None and n >= events:
                    break  # the client goes away mid-stream
        return time.monotonic() - began, None
    except Exception as exc:  # the SDK raises its own errors, or httpx2's mid-stream
        return time.monotonic() - began, type(exc).__name__
    finally:
        client.close()


def test_a_stalled_upstream_is_cut_and_recorded_as_a_timeout(daemon: Daemon, standin_server: StandIn) -> None:
    standin_server.queue(stream_reply("msg_stall", delay=120.0))  # the head and message_start, then silence
    took, error = stream(daemon, "will it ever answer")
    assert error is not None  # the client is told, instead of waiting on a dead stream for ten minutes
    assert took < 60
    ix = daemon.one(prompt="will it ever answer")
    assert (ix["status"], ix["error_type"]) == ("failed", "timeout")
    assert ix["error_message"] == f"upstream sent nothing for {IDLE} s (--upstream-idle-timeout)"
    assert [u["input_tokens"] for u in ix["token_usages"]] == [120]  # what had arrived is kept
    assert "sent nothing for" in daemon.log()


def test_a_slow_but_talking_upstream_is_not_cut(daemon: Daemon, standin_server: StandIn) -> None:
    standin_server.queue(stream_reply("msg_slow", delay=IDLE * 0.6, text="ok"))  # each gap under it, all far over
    took, error = stream(daemon, "slow and steady")
    assert error is None and took > IDLE * 2
    assert daemon.one(prompt="slow and steady")["status"] == "completed"


def test_a_client_that_goes_away_is_client_disconnected(daemon: Daemon, standin_server: StandIn) -> None:
    standin_server.queue(stream_reply("msg_gone", delay=0.3))
    stream(daemon, "never mind", events=2)
    ix = daemon.one(prompt="never mind")
    assert (ix["status"], ix["error_type"]) == ("failed", "client_disconnected")


def test_an_upstream_that_closes_mid_response_is_upstream_reset(daemon: Daemon, standin_server: StandIn) -> None:
    reply = stream_reply("msg_reset")
    reply.cut_after = 3  # closes the connection after three events
    standin_server.queue(reply)
    _, error = stream(daemon, "cut me off")
    assert error is not None
    ix = daemon.one(prompt="cut me off")
    assert (ix["status"], ix["error_type"]) == ("failed", "upstream_reset")
    assert [u["input_tokens"] for u in ix["token_usages"]] == [120]


def test_a_stream_stalled_at_shutdown_says_the_proxy_stopped(
    tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI
) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--upstream-idle-timeout", "0", "--shutdown-grace", "1"))
    try:
        standin_server.queue(stream_reply("msg_stop", delay=120.0))
        d.token("alice")
        client_thread = threading.Thread(target=stream, args=(d, "still waiting at shutdown"))
        client_thread.start()
        deadline = time.monotonic() + 20
        while not standin_server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert stop_daemon(d) == 0
        client_thread.join(30)
        stored = stored_by_prompt(d.data_dir / "aigw-proxy.db")["still waiting at shutdown"]
        assert (stored.status, stored.error_message) == ("failed", SHUTDOWN_MESSAGE)
        assert stored.input_tokens == [120]
    finally:
        standin_server.reset()
        stop_daemon(d)
