"""`/metrics` after real SDK traffic: Coder's names and labels (docs/compatibility.md#metrics), exact values
matching the records, legacy names equal to canonical ones, gauges back to zero, and our own recorder / TTFB /
shadow-AI figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_proxy.telemetry.metrics import legacy_name
from tests.e2e.test_proxy_behaviour import connect
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import Scrape, scrape, wait_for
from tests.support.payloads import anthropic_message, anthropic_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import (
    ANTHROPIC_MODEL,
    OPENAI_MODEL,
    anthropic_client,
    claude_code_turn,
    codex_chat,
    openai_client,
    tokens_by_type,
)

G = "coder_ai_gateway_"
P = "coder_ai_gateway_proxy_"


@pytest.fixture(scope="module")
def mdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn, origin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    """A daemon of its own, so every figure below is exact rather than a delta over other tests' traffic."""
    extra = 'shadow_ai_hosts = ["localhost"]'
    d = start_daemon(tmp_path_factory.mktemp("metrics"),
                     provider_config(standin_server, upstream_pki.ca_file, extra=extra, ports=[origin_server.port]))
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def traffic(mdaemon: Daemon, standin_server: StandIn) -> dict:
    """One Claude Code turn and two Codex chat calls by mia, and one passthrough request."""
    standin_server.reset()
    claude_code_turn(mdaemon, standin_server, "mia", "msg_metrics_1")
    oai = openai_client(mdaemon, "mia")
    codex_chat(oai, standin_server, "chatcmpl-metrics-1")
    codex_chat(oai, standin_server, "chatcmpl-metrics-2", scale=2)
    standin_server.queue(Reply.json({"object": "list", "data": []}))
    oai.models.list()  # GET /v1/models: relayed, not recorded
    rows = mdaemon.interceptions(expect=3)
    assert len(rows) == 3
    user_id = rows[0]["initiator"]["id"]
    # The client has its answer once the last byte is relayed; the proxy's own end-of-flow hooks follow.
    s = wait_for(mdaemon.admin_port, lambda s: s.value(P + "inflight_mitm_requests") == 0
                 and s.value("aigw_proxy_records_written_total") == 6)
    standin_server.reset()
    return {"rows": rows, "user_id": user_id, "scrape": s}


def test_metrics_endpoint_serves_prometheus_text(mdaemon: Daemon, traffic: dict) -> None:
    s = scrape(mdaemon.admin_port)
    assert s.content_type.startswith("text/plain; version=0.0.4")
    assert s.families  # parsed by Prometheus' own text parser


def test_gateway_metrics_match_the_recorded_interceptions(traffic: dict) -> None:
    s: Scrape = traffic["scrape"]
    uid = traffic["user_id"]
    by_provider = {"anthropic": [r for r in traffic["rows"] if r["provider"] == "anthropic"],
                   "openai": [r for r in traffic["rows"] if r["provider"] == "openai"]}
    for provider, rows in by_provider.items():
        client = rows[0]["client"]
        model = rows[0]["model"]
        for kind, n in tokens_by_type(rows).items():
            got = s.value(G + "tokens_total", provider=provider, model=model, type=kind, initiator_id=uid,
                          client=client)
            assert got == n, (provider, kind)
    assert s.value(G + "tokens_total", provider="anthropic", type="input") == 12
    assert s.value(G + "tokens_total", provider="openai", type="input") == 176 * 3
    assert s.value(G + "tokens_total", provider="openai", type="cache_read_input_tokens") == 1024 * 3
    assert s.value(G + "interceptions_total", provider="anthropic", model=ANTHROPIC_MODEL, status="completed",
                   route="/v1/messages", method="POST", initiator_id=uid, client="Claude Code") == 1
    assert s.value(G + "interceptions_total", provider="openai", model=OPENAI_MODEL, status="completed",
                   route="/v1/chat/completions", method="POST", initiator_id=uid, client="Codex") == 2
    assert s.value(G + "interceptions_total", status="failed") == 0
    assert s.value(G + "prompts_total", provider="openai", initiator_id=uid, client="Codex") == 2
    assert s.value(G + "non_injected_tool_selections_total", provider="anthropic", name="Bash") == 1
    assert s.value(G + "interceptions_duration_seconds_count", provider="openai", model=OPENAI_MODEL) == 2
    assert s.value(G + "passthrough_total", provider="openai", route="/v1/models", method="GET") == 1
    assert s.value("aigw_proxy_initiator_info", initiator_id=uid, username="mia") == 1


def test_proxy_metrics_count_connects_requests_and_responses(traffic: dict) -> None:
    s: Scrape = traffic["scrape"]
    assert s.value(P + "connect_sessions_total", type="mitm") == 2  # one tunnel per SDK client (keep-alive)
    assert s.value(P + "mitm_requests_total", provider="anthropic") == 1
    assert s.value(P + "mitm_requests_total", provider="openai") == 3
    assert s.value(P + "mitm_responses_total", code="200", provider="openai") == 3
    assert s.value("aigw_proxy_time_to_first_byte_seconds_count", provider="openai") == 3


def test_gauges_are_back_to_zero_after_traffic(traffic: dict) -> None:
    s: Scrape = traffic["scrape"]
    assert s.samples(G + "interceptions_inflight", provider="anthropic", model=ANTHROPIC_MODEL,
                     route="/v1/messages") == [({"provider": "anthropic", "model": ANTHROPIC_MODEL,
                                                 "route": "/v1/messages"}, 0.0)]
    assert s.value(G + "interceptions_inflight") == 0
    assert s.samples(P + "inflight_mitm_requests", provider="openai")[0][1] == 0
    assert s.value("aigw_proxy_recorder_queue_depth") == 0
    assert s.value("aigw_proxy_records_written_total") == 6  # a start and an end per interception
    assert s.samples("aigw_proxy_records_dropped_total") == []


def test_every_contract_metric_has_an_equal_legacy_twin(mdaemon: Daemon, traffic: dict) -> None:
    s = scrape(mdaemon.admin_port)
    canonical = [name for name in s.families if name.startswith("coder_ai_gateway_")]
    assert {P + "connect_sessions", P + "provider_info", G + "tokens", G + "interceptions_duration_seconds",
            P + "providers_last_reload_timestamp_seconds", G + "provider_info"} <= set(canonical)
    for name in canonical:
        legacy = legacy_name(name)
        assert legacy is not None and legacy.startswith(("coder_aibridgeproxyd_", "coder_aibridged_"))
        twin = {(n.replace(legacy, name, 1), tuple(sorted(lb.items())), v) for n, lb, v in s.families[legacy]}
        mine = {(n, tuple(sorted(lb.items())), v) for n, lb, v in s.families[name]}
        assert twin == mine, name
    assert not [n for n in s.families if n.endswith("_created")]


def test_parse_errors_are_counted_by_provider_and_api(mdaemon: Daemon, traffic: dict, standin_server: StandIn) -> None:
    standin_server.queue(Reply(chunks=[b'{"id": "msg_broken", "type": "message", "content": [tru']))
    with pytest.raises(ValueError):  # the SDK cannot read the body either
        anthropic_client(mdaemon, "mia").messages.create(
            model=ANTHROPIC_MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    s = wait_for(mdaemon.admin_port, lambda s: s.value("aigw_proxy_parse_errors_total") > 0)
    assert s.value("aigw_proxy_parse_errors_total", provider="anthropic", api="anthropic.messages") == 1
    standin_server.reset()


def test_tunnels_and_shadow_ai_are_counted(mdaemon: Daemon, traffic: dict, origin_server: StandIn) -> None:
    before = scrape(mdaemon.admin_port)
    token = f"x:{mdaemon.token('mia')}"
    sock, status, _ = connect(mdaemon, f"127.0.0.1:{origin_server.port}", token)
    sock.close()
    assert status == 200
    # `localhost` is an AI host for this daemon's config (shadow_ai_hosts) and no provider claims it.
    sock, _, _ = connect(mdaemon, f"localhost:{origin_server.port}", token)
    sock.close()
    refused, status, _ = connect(mdaemon, "127.0.0.1:25", token)  # a port that is not allowed: no session
    refused.close()
    assert status == 403
    s = scrape(mdaemon.admin_port)
    tunneled = s.value(P + "connect_sessions_total", type="tunneled") - before.value(
        P + "connect_sessions_total", type="tunneled")
    assert tunneled == 2
    assert s.value("aigw_proxy_shadow_ai_connects_total", host="localhost") == 1
    assert s.value("aigw_proxy_shadow_ai_connects_total", host="127.0.0.1") == 0
    assert s.value(P + "connect_sessions_total", type="mitm") == before.value(P + "connect_sessions_total",
                                                                             type="mitm")


def test_provider_info_reports_the_started_configuration(traffic: dict) -> None:
    s: Scrape = traffic["scrape"]
    for prefix in (P, G):
        rows = {lb["provider_name"]: (lb["provider_type"], lb["status"], v) for lb, v in s.samples(
            prefix + "provider_info")}
        assert rows["anthropic"] == ("anthropic", "enabled", 1)
        assert rows["copilot"] == ("copilot", "enabled", 1)
        attempt = s.value(prefix + "providers_last_reload_timestamp_seconds")
        assert attempt > 1.7e9 and attempt == s.value(prefix + "providers_last_reload_success_timestamp_seconds")


def test_no_initiator_label_flag_drops_the_user_label(tmp_path: Path, standin_server: StandIn,
                                                      upstream_pki: UpstreamPKI) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--metrics-initiator-label=false",))
    try:
        standin_server.reset()
        standin_server.queue(Reply.json(anthropic_message("msg_nolabel", ANTHROPIC_MODEL, [
            {"type": "text", "text": "ok"}], anthropic_usage(7, 3))))
        anthropic_client(d, "nils").messages.create(model=ANTHROPIC_MODEL, max_tokens=5,
                                                    messages=[{"role": "user", "content": "hi"}])
        s = wait_for(d.admin_port, lambda s: s.value(G + "interceptions_total") == 1)
        [(labels, value)] = s.samples(G + "tokens_total", type="input")
        assert value == 7 and "initiator_id" not in labels
        assert all("initiator_id" not in lb for lb, _ in s.samples(G + "interceptions_total"))
        assert s.samples("aigw_proxy_initiator_info") == []
    finally:
        stop_daemon(d)
        standin_server.reset()

