"""Circuit breaking through the running proxy with the real SDKs (docs/compatibility.md#circuit-breaker): trips on
Coder's failure statuses, answers 503 with Retry-After and the provider's own error shape while open, records the
rejection, recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import scrape, wait_for
from tests.support.payloads import anthropic_message, anthropic_usage, chat_completion, chat_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import anthropic_client, openai_client

G = "coder_ai_gateway_"
MODEL = "claude-opus-4-1-20250805"
OTHER_MODEL = "claude-haiku-4-5-20251001"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.fixture(scope="module")
def bdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("breaker"), provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--circuit-breaker-enabled", "--circuit-breaker-failure-threshold", "2",
                                 "--circuit-breaker-timeout", "1s", "--circuit-breaker-max-requests=1"))
    yield d
    stop_daemon(d)


def ask(d: Daemon, model: str, prompt: str) -> anthropic.types.Message:
    return anthropic_client(d, "bea").messages.create(model=model, max_tokens=16,
                                                      messages=[{"role": "user", "content": prompt}])


def ok(msg_id: str, model: str) -> Reply:
    return Reply.json(anthropic_message(msg_id, model, [{"type": "text", "text": "fine"}], anthropic_usage(3, 1)))


def test_anthropic_breaker_opens_rejects_records_and_recovers(bdaemon: Daemon, standin_server: StandIn) -> None:
    standin_server.reset()
    labels = {"provider": "anthropic", "endpoint": "/v1/messages", "model": MODEL}
    # Two 529s in a row (Anthropic's overloaded status counts) open the breaker for this model.
    standin_server.queue(Reply.json(OVERLOADED, status=529), Reply.json(OVERLOADED, status=529))
    for i in range(2):
        with pytest.raises(anthropic.APIStatusError) as err:
            ask(bdaemon, MODEL, f"overloaded {i}")
        assert err.value.status_code == 529
    wait_for(bdaemon.admin_port, lambda s: s.value(G + "circuit_breaker_state", **labels) == 1)

    with pytest.raises(anthropic.InternalServerError) as err:
        ask(bdaemon, MODEL, "rejected while open")
    assert err.value.status_code == 503
    assert err.value.response.headers["retry-after"] == "1"
    assert err.value.response.headers["content-type"] == "application/json"
    assert err.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "circuit breaker is open"}}
    assert len(standin_server.requests) == 2  # the rejected call never reached the upstream

    # Another model has its own breaker: still closed.
    standin_server.queue(ok("msg_other_model", OTHER_MODEL))
    assert ask(bdaemon, OTHER_MODEL, "other model").id == "msg_other_model"

    rejected = bdaemon.one(prompt="rejected while open")
    assert (rejected["status"], rejected["upstream_status"], rejected["model"]) == ("failed", 503, MODEL)
    assert rejected["error_message"] == "overloaded_error: circuit breaker is open"
    assert rejected["error_type"] == "overloaded"
    s = scrape(bdaemon.admin_port)
    assert s.value(G + "circuit_breaker_trips_total", **labels) == 1
    assert s.value(G + "circuit_breaker_rejects_total", **labels) == 1
    assert s.value(G + "circuit_breaker_state", provider="anthropic", model=OTHER_MODEL) == 0
    assert s.value("coder_aibridged_circuit_breaker_rejects_total", **labels) == 1
    assert s.value(G + "interceptions_total", provider="anthropic", model=MODEL, status="failed") == 3

    # After the timeout the breaker lets one request through (half-open); its success closes it.
    deadline = time.monotonic() + 10
    standin_server.queue(ok("msg_recovered", MODEL))
    while True:
        try:
            assert ask(bdaemon, MODEL, "after the timeout").id == "msg_recovered"
            break
        except anthropic.InternalServerError:  # still open: the timeout has not run out yet
            assert time.monotonic() < deadline, "the breaker never half-opened"
            time.sleep(0.2)
    s = wait_for(bdaemon.admin_port, lambda s: s.value(G + "circuit_breaker_state", **labels) == 0)
    assert s.value(G + "circuit_breaker_state", **labels) == 0
    assert s.value(G + "circuit_breaker_trips_total", **labels) == 1
    standin_server.reset()


def test_openai_breaker_answers_in_openai_shape_and_a_broken_stream_is_no_failure(
        bdaemon: Daemon, standin_server: StandIn) -> None:
    standin_server.reset()
    client = openai_client(bdaemon, "bea")
    messages = [{"role": "user", "content": "hi"}]
    # A stream that breaks after its 200 headers is not a breaker failure: interleaved with 503s it keeps the
    # consecutive count from reaching the threshold.
    standin_server.queue(
        Reply.json({"error": {"message": "busy", "type": "server_error"}}, status=503),
        Reply(chunks=[b'data: {"id":"c1","object":"chat.completion.chunk","choices":[]}\n\n', b"x"],
              content_type="text/event-stream", cut_after=1),
        Reply.json({"error": {"message": "busy", "type": "server_error"}}, status=503),
        Reply.json(chat_completion("chatcmpl-ok", "gpt-4o", {"role": "assistant", "content": "ok"},
                                   chat_usage(5, 1))),
    )
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="gpt-4o", messages=messages).id == "chatcmpl-ok"  # type: ignore[arg-type]

    # Now two 504s in a row open it, and the rejection speaks the OpenAI error shape.
    standin_server.queue(Reply.json({"error": {"message": "timeout"}}, status=504),
                         Reply.json({"error": {"message": "timeout"}}, status=504))
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "1"
    assert err.value.body == {"message": "circuit breaker is open", "type": "server_error",
                              "code": "service_unavailable"}
    s = scrape(bdaemon.admin_port)
    labels = {"provider": "openai", "endpoint": "/v1/chat/completions", "model": "gpt-4o"}
    assert s.value(G + "circuit_breaker_trips_total", **labels) == 1
    assert s.value(G + "circuit_breaker_rejects_total", **labels) == 1
    assert len(standin_server.requests) == 6
    standin_server.reset()
