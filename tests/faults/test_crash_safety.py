"""The proxy killed or stopped under real SDK traffic: `kill -9` at random points of a burst, `kill -9` in the middle
of a stream, SIGTERM with streams in flight. What a user checks afterwards: every call that had completed at the
client (the durability window before the kill) is recorded completed with its prompt and tokens; a call cut by
the kill keeps the prompt and the tokens that had arrived; a stop lets every stream finish and records them all.

`DURABILITY_WINDOW` is the documented bound (README, "Durability"); bench/durability_bench.py measures the
actual figure (p99 around a tenth of it under a saturating burst)."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_proxy.storage import DANGLING_MESSAGE
from tests.support.bursts import Call, burst, default_reply, stored_by_prompt, stream_reply
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn
from tests.support.traffic import ANTHROPIC_MODEL, CLAUDE_CODE, anthropic_client

DURABILITY_WINDOW = 1.0  # seconds: a call complete at the client this long before a kill is recorded


def kill9(d: Daemon) -> float:
    assert d.proc is not None
    at = time.time()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(30)
    return at


def _burst_into(calls: list[Call], d: Daemon, prompts: list[str], workers: int) -> None:
    burst(d, prompts, workers=workers, into=calls)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK on the stand-in's model name

@pytest.fixture
def config(standin_server: StandIn, upstream_pki: UpstreamPKI) -> Iterator[str]:
    with default_reply(standin_server, stream_reply(delay=0.01)):  # ~0.1 s per call: many in flight at a kill
        yield provider_config(standin_server, upstream_pki.ca_file)


def test_kill_9_at_random_points_of_a_burst_keeps_every_completed_call(tmp_path: Path, config: str) -> None:
    db = tmp_path / "data" / "aigw-proxy.db"
    all_calls: list[Call] = []
    token: str | None = None
    for seed in (1, 2, 3):
        rng = random.Random(seed)
        d = start_daemon(tmp_path, config)  # the same data dir every time: a restart after each kill
        if token is not None:
            d.tokens["alice"] = token
        token = d.token("alice")
        calls: list[Call] = []
        prompts = [f"seed {seed} call {n}" for n in range(300)]
        runner = threading.Thread(target=_burst_into, args=(calls, d, prompts, 6))
        runner.start()
        deadline = time.monotonic() + 30
        while not any(c.done for c in list(calls)) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(DURABILITY_WINDOW + 0.1, DURABILITY_WINDOW + 1.5))  # at a random point of it
        killed_at = kill9(d)
        runner.join(60)
        stored = stored_by_prompt(db)
        durable = [c for c in calls if c.done is not None and c.done <= killed_at - DURABILITY_WINDOW]
        assert durable, "no call completed a window before the kill: the kill came too early to test anything"
        problems = {c.prompt: stored.get(c.prompt) for c in durable
                    if c.prompt not in stored or not stored[c.prompt].ended or stored[c.prompt].status != "completed"
                    or not stored[c.prompt].input_tokens}
        assert not problems, f"seed {seed}: calls complete at the client but not recorded: {problems}"
        sent = [c for c in calls if c.started <= killed_at - DURABILITY_WINDOW]
        assert all(c.prompt in stored for c in sent)  # every call sent a window before the kill: its prompt kept
        all_calls += calls
    d = start_daemon(tmp_path, config)  # the last restart closes what the last kill left open
    stop_daemon(d)
    stored = stored_by_prompt(db)
    assert all(s.ended for s in stored.values())  # nothing left open
    for c in all_calls:
        s = stored.get(c.prompt)
        if s is not None and s.status == "failed":
            assert s.error_message == DANGLING_MESSAGE and s.prompts == [c.prompt]  # cut by a kill, not lost


def test_kill_9_mid_stream_keeps_the_prompt_and_the_tokens_seen(
    tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI
) -> None:
    standin_server.queue(stream_reply("msg_cut", delay=60.0))  # message_start now, the rest in a minute
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    db = d.data_dir / "aigw-proxy.db"
    try:
        client = anthropic_client(d, "alice", default_headers=CLAUDE_CODE)
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": "explain the cut"}]) as stream:
            first = next(iter(stream))
            assert first.type == "message_start" and first.message.usage.input_tokens == 120
            time.sleep(DURABILITY_WINDOW)
            kill9(d)
        stored = stored_by_prompt(db)["explain the cut"]
        assert not stored.ended  # the process died with it in flight
        assert stored.input_tokens == [120]  # message_start's figures, stored as they arrived
        d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
        [ix] = d.interceptions(expect=1)
        assert (ix["status"], ix["error_message"]) == ("failed", DANGLING_MESSAGE)
        assert [p["prompt"] for p in ix["user_prompts"]] == ["explain the cut"]
        assert [u["input_tokens"] for u in ix["token_usages"]] == [120]
    finally:
        standin_server.reset()
        stop_daemon(d)


def test_sigterm_under_load_lets_every_stream_finish_and_records_it(
    tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI
) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    d.token("alice")
    calls: list[Call] = []
    with default_reply(standin_server, stream_reply(delay=0.15)):  # ~2 s per stream
        runner = threading.Thread(target=_burst_into, args=(calls, d, [f"term {n}" for n in range(20)], 20))
        runner.start()
        time.sleep(0.8)  # every stream under way
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        runner.join(60)
        code = d.proc.wait(60)
    assert code == 0
    assert [c.error for c in calls] == [None] * 20  # every stream in flight finished at the client
    stored = stored_by_prompt(d.data_dir / "aigw-proxy.db")
    assert sorted(stored) == sorted(c.prompt for c in calls)
    assert all(s.ended and s.status == "completed" and s.input_tokens == [120] for s in stored.values())
    assert "dropped: none" in d.log()
