"""Merging the workers' scrapes (proxy/workers.py): one worker's scrape comes out exactly as it went in, two add
their counters and in-flight gauges and de-duplicate the rest; `workers` settings parse like the other options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aigw_proxy.config.settings import ConfigError, Settings, parse_file_config, parse_workers
from aigw_proxy.proxy.worker_metrics import MergedCollector, counters_only, merge_scrapes, parse_scrape
from aigw_proxy.telemetry.metrics import Metrics


def busy_metrics(calls: int, inflight: int) -> Metrics:
    m = Metrics()
    m.interceptions.labels("openai", "gpt-4o", "completed", "/v1/chat/completions", "POST", "u1", "codex").inc(calls)
    m.interceptions_inflight.labels("openai", "gpt-4o", "/v1/chat/completions").set(inflight)
    m.inflight_mitm.labels("openai").set(inflight)
    for _ in range(calls):
        m.interceptions_duration.labels("openai", "gpt-4o").observe(1.5)
    m.set_provider_statuses([("openai", "openai", "enabled"), ("acme", "openai", "error")])
    m.stamp_reload(success=True, at=1000.0 + calls)
    m.initiator_info.labels("u1", "alice").set(1)
    m.budget_limit.labels("user:u1", "day").set(5.0)
    return m


def render(families: dict) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(lambda: (f.metric() for f in families.values())))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_one_worker_comes_out_as_it_went_in() -> None:
    text = busy_metrics(3, 1).render().decode()
    merged = render(merge_scrapes([parse_scrape(text)]))
    assert merged == text  # names, help, types, labels, values and order: byte for byte


def test_two_workers_sum_counters_and_inflight_and_deduplicate_the_rest() -> None:
    a = parse_scrape(busy_metrics(3, 1).render().decode())
    b = parse_scrape(busy_metrics(4, 2).render().decode())
    out = samples(render(merge_scrapes([a, b])))
    route = ("route", "/v1/chat/completions")
    total = ("coder_ai_gateway_interceptions_total",
             (("client", "codex"), ("initiator_id", "u1"), ("method", "POST"), ("model", "gpt-4o"),
              ("provider", "openai"), route, ("status", "completed")))
    assert out[total] == 7
    assert out[("coder_aibridged_interceptions_total", total[1])] == 7  # the legacy name agrees
    duration = (("le", "2.0"), ("model", "gpt-4o"), ("provider", "openai"))
    assert out[("coder_ai_gateway_interceptions_duration_seconds_bucket", duration)] == 7
    assert out[("coder_ai_gateway_interceptions_duration_seconds_sum",
                (("model", "gpt-4o"), ("provider", "openai")))] == 7 * 1.5
    assert out[("coder_ai_gateway_interceptions_inflight",
                (("model", "gpt-4o"), ("provider", "openai"), route))] == 3
    assert out[("coder_ai_gateway_proxy_inflight_mitm_requests", (("provider", "openai"),))] == 3
    assert out[("coder_aibridgeproxyd_inflight_mitm_requests", (("provider", "openai"),))] == 3
    info = (("provider_name", "acme"), ("provider_type", "openai"), ("status", "error"))
    assert out[("coder_ai_gateway_provider_info", info)] == 1
    assert out[("aigw_proxy_initiator_info", (("initiator_id", "u1"), ("username", "alice")))] == 1
    assert out[("aigw_proxy_budget_limit_usd", (("scope", "user:u1"), ("window", "day")))] == 5.0
    assert out[("coder_ai_gateway_providers_last_reload_timestamp_seconds", ())] == 1004.0  # the latest


def test_a_dead_workers_counters_stay_in_the_sums() -> None:
    a = parse_scrape(busy_metrics(3, 1).render().decode())
    b = parse_scrape(busy_metrics(4, 2).render().decode())
    retired = merge_scrapes([{}, counters_only(a)])
    out = samples(render(merge_scrapes([b, retired])))
    name = "coder_ai_gateway_proxy_inflight_mitm_requests"
    assert out[(name, (("provider", "openai"),))] == 2  # the dead worker's calls are no longer in flight
    assert sum(v for (n, _), v in out.items() if n == "coder_ai_gateway_interceptions_total") == 7


def test_workers_setting() -> None:
    assert parse_workers("3") == 3 and parse_workers(2) == 2
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parse_workers("auto") == parse_workers(" AUTO ") == cpus
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="must be a number >= 1 or auto"):
            parse_workers(bad)
    assert parse_file_config({"workers": 4}, base_dir=Path(".")).workers == 4
    assert parse_file_config({"workers": "auto"}, base_dir=Path(".")).workers == cpus
    with pytest.raises(ConfigError, match="workers"):
        parse_file_config({"workers": True}, base_dir=Path("."))
    cfg = parse_file_config({"workers": 4}, base_dir=Path("."))
    assert Settings(file=cfg).worker_count == 4
    assert Settings(file=cfg, workers=1).worker_count == 1  # --workers / AIGW_WORKERS win over the file
    assert Settings().worker_count == 1


def test_each_worker_has_a_spool_of_its_own() -> None:
    from aigw_proxy.proxy.worker_control import worker_spool_path

    db, data = Path("/d/aigw-proxy.db"), Path("/d")
    assert worker_spool_path(db, data, 0) is None  # the writer's default, as one process has it
    assert worker_spool_path(db, data, 1) == Path("/d/aigw-proxy.db-spool-1.jsonl")
    assert worker_spool_path(None, data, 0) == Path("/d/aigw-proxy-spool.jsonl")  # a database without a file
    assert worker_spool_path(None, data, 2) == Path("/d/aigw-proxy-spool-2.jsonl")
