"""`--rate-limit`, `--max-concurrency` and `[[limits]]` through the running proxy with concurrent SDK calls
(docs/spend.md#rate-limits-and-concurrency): refused requests get the SDK's own error (429 with Retry-After, 503
"at capacity"), never reach the upstream and are not recorded; passthrough paths are limited too; other tokens
and exempted users are not."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import scrape
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage, chat_completion, chat_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import anthropic_client, openai_client

CLAUDE = "claude-haiku-4-5-20251001"
LIMITS = """
[[limits]]
user = "bulk"
rate_limit = 0

[[limits]]
user = "solo"
rate_limit = 0
max_concurrency = 1
"""


@pytest.fixture(scope="module")
def rdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("rate-limit"),
                     provider_config(standin_server, upstream_pki.ca_file, extra=LIMITS),
                     extra_args=("--rate-limit", "0.2"))  # one request per 5 s: slow machines stay within it
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def cdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("max-concurrency"),
                     provider_config(standin_server, upstream_pki.ca_file), extra_args=("--max-concurrency", "2"))
    yield d
    stop_daemon(d)


def message(msg_id: str) -> Reply:
    return Reply.json(anthropic_message(msg_id, CLAUDE, [{"type": "text", "text": "ok"}], anthropic_usage(10, 2)))


def slow_stream(msg_id: str) -> Reply:
    words = " ".join(f"w{i}" for i in range(10))
    return anthropic_stream(msg_id, CLAUDE, [{"type": "text", "text": words}], anthropic_usage(10, 10), delay=0.3)


def ask(d: Daemon, user: str, prompt: str) -> anthropic.types.Message:
    return anthropic_client(d, user).messages.create(model=CLAUDE, max_tokens=16,
                                                     messages=[{"role": "user", "content": prompt}])


def models_page() -> Reply:
    return Reply.json({"data": [], "has_more": False, "first_id": None, "last_id": None})


def model_prompts(standin: StandIn) -> list[str]:
    return [json.loads(r.body)["messages"][-1]["content"] for r in standin.requests
            if r.path.startswith(("/v1/messages", "/v1/chat/completions"))]


def concurrently(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls at once (one thread each, released together); each result or the exception it raised."""
    results: list[object] = [None] * len(calls)
    go = threading.Barrier(len(calls))

    def run(i: int) -> None:
        go.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def wait_until(ok: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_rate_limit_per_token_on_model_calls_and_passthrough(rdaemon: Daemon, upstream: StandIn) -> None:
    d = rdaemon
    for user in ("rita", "rob"):
        d.token(user)
    # Passthrough is limited too: a second request within the second is refused.
    upstream.queue(models_page())
    assert list(anthropic_client(d, "rita").models.list()) == []
    with pytest.raises(anthropic.RateLimitError) as err:
        anthropic_client(d, "rita").models.list()
    wait = int(err.value.response.headers["retry-after"])
    assert 1 <= wait <= 5
    assert err.value.body == {"type": "error", "error": {
        "type": "rate_limit_error",
        "message": f"rate_limit_exceeded: at most 0.2 request(s) per second per proxy token; retry after {wait} s"}}
    time.sleep(5.1)  # the bucket holds one request again

    # Four calls at once on one token: one goes through, three are refused before the upstream.
    upstream.queue(message("msg_rita"))
    results = concurrently([functools.partial(ask, d, "rita", f"rita {i}") for i in range(4)])
    passed = [r for r in results if isinstance(r, anthropic.types.Message)]
    refused = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    assert (len(passed), len(refused)) == (1, 3), results
    assert all(1 <= int(r.response.headers["retry-after"]) <= 5 for r in refused)
    assert len(model_prompts(upstream)) == 1
    assert len(d.interceptions(expect=1, initiator="rita")) == 1  # refusals are not recorded

    # Another token has its own bucket; the OpenAI shape on OpenAI's API.
    upstream.queue(message("msg_rob"))
    assert ask(d, "rob", "rob's call").id == "msg_rob"
    with pytest.raises(openai.RateLimitError) as oerr:
        openai_client(d, "rita").chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    assert oerr.value.status_code == 429 and oerr.value.body["type"] == "requests"  # type: ignore[index]
    assert oerr.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    s = scrape(d.admin_port)
    assert s.value("aigw_proxy_limited_requests_total", provider="anthropic", reason="rate_limit") == 4
    assert s.value("aigw_proxy_limited_requests_total", provider="openai", reason="rate_limit") == 1


def test_an_exempt_user_and_a_users_own_concurrency_cap(rdaemon: Daemon, upstream: StandIn) -> None:
    d = rdaemon
    # [[limits]] rate_limit = 0: bulk is not rate limited.
    upstream.queue(*(message(f"msg_bulk_{i}") for i in range(5)))
    assert [ask(d, "bulk", f"bulk {i}").id for i in range(5)] == [f"msg_bulk_{i}" for i in range(5)]

    # solo may have one request in flight: a second one while the first streams is refused (429), not queued.
    upstream.queue(slow_stream("msg_solo_slow"))
    streamed: list[str] = []

    def long_call() -> None:
        with anthropic_client(d, "solo").messages.stream(
                model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "solo's long call"}]) as stream:
            streamed.append(stream.get_final_message().id)

    t = threading.Thread(target=long_call)
    t.start()
    wait_until(lambda: "solo's long call" in model_prompts(upstream), "the long call to reach the upstream")
    with pytest.raises(anthropic.RateLimitError) as err:
        ask(d, "solo", "solo's second call")
    assert err.value.response.headers["retry-after"] == "1"
    assert "concurrency_limit_exceeded: solo already has 1 request(s) in flight" in str(err.value.body)
    t.join(20)
    assert streamed == ["msg_solo_slow"]
    upstream.queue(message("msg_solo_after"))
    assert ask(d, "solo", "solo once the first is done").id == "msg_solo_after"
    assert scrape(d.admin_port).value("aigw_proxy_limited_requests_total", reason="user_capacity") == 1


def test_max_concurrency_answers_503_at_capacity(cdaemon: Daemon, upstream: StandIn) -> None:
    d = cdaemon
    for user in ("ann", "ben", "cat"):
        d.token(user)
    upstream.queue(slow_stream("msg_ann"), slow_stream("msg_ben"))
    done: dict[str, str] = {}

    def stream(user: str) -> None:
        with anthropic_client(d, user).messages.stream(
                model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": f"{user}'s stream"}]) as s:
            done[user] = s.get_final_message().id

    threads = [threading.Thread(target=stream, args=(u,)) for u in ("ann", "ben")]
    for t in threads:
        t.start()
    wait_until(lambda: len(model_prompts(upstream)) == 2, "both streams to reach the upstream")
    with pytest.raises(openai.InternalServerError) as err:
        openai_client(d, "cat").chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503
    assert err.value.body == {"message": "at_capacity: aigw-proxy is currently at capacity (2 requests in flight). "
                                         "Please try again later.", "type": "server_error", "code": "at_capacity"}
    with pytest.raises(anthropic.InternalServerError):  # passthrough counts against the cap too
        anthropic_client(d, "cat").models.list()
    assert len(model_prompts(upstream)) == 2
    for t in threads:
        t.join(20)
    assert sorted(done) == ["ann", "ben"] and sorted(done.values()) == ["msg_ann", "msg_ben"]
    upstream.queue(Reply.json(chat_completion("chatcmpl-cat", "gpt-4.1", {"role": "assistant", "content": "ok"},
                                              chat_usage(5, 1))))
    reply = openai_client(d, "cat").chat.completions.create(model="gpt-4.1",
                                                            messages=[{"role": "user", "content": "now"}])
    assert reply.id == "chatcmpl-cat"
    s = scrape(d.admin_port)
    assert s.value("aigw_proxy_limited_requests_total", reason="proxy_capacity") == 2
    assert s.value("aigw_proxy_limited_requests_inflight") == 0
