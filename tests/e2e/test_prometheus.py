"""A real Prometheus (Debian's package) scrapes the proxy after SDK traffic. Every alert rule and every Grafana
panel query in deploy/ must evaluate, and the dashboard's token and interception queries must return exactly the
traffic just sent.

Exactness with `increase()`: Prometheus extrapolates a range to its window edges unless the window starts and ends
on samples. The test therefore sends warm-up traffic first (so every series exists), notes the scrape right before
the measured traffic and the scrape after it, and evaluates the dashboard queries with `$__range` set to exactly
the time between the two: the increase over that window is the measured traffic, with no extrapolation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.support.daemon import Daemon, UpstreamPKI, free_port, provider_config, start_daemon, stop_daemon
from tests.support.metrics import wait_for
from tests.support.polling import poll
from tests.support.standin import StandIn
from tests.support.traffic import ANTHROPIC_MODEL, claude_code_turn, codex_chat, openai_client, tokens_by_type

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "aigw-proxy-dashboard.json"


def _binaries() -> tuple[str, str]:
    prom, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prom and promtool:
        return prom, promtool
    why = "prometheus/promtool not installed: `bash scripts/ensure-prometheus.sh` installs them (root + apt-get)"
    if os.environ.get("CI"):
        pytest.fail(why)  # CI installs them through `make test`: a missing binary is a broken set-up, not a skip
    pytest.skip(why)


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        try:
            body = self.api("query", **params)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr!r} failed: {exc.read().decode(errors='replace')}") from None
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def last_scrape(self) -> float:
        """Timestamp (s) of the newest scrape of the proxy."""
        result = self.query('timestamp(up{job="aigw-proxy"})')  # a bare selector: the scrape's own time
        return float(result[0]["value"][1]) if result else 0.0




@pytest.fixture(scope="module")
def pdaemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("prom-daemon"), provider_config(standin_server, upstream_pki.ca_file))
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pdaemon: Daemon) -> Iterator[Prometheus]:
    prom, _ = _binaries()
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": "aigw-proxy", "static_configs": [
            {"targets": [f"127.0.0.1:{pdaemon.admin_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([prom, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp / 'data'}"],
                                stdout=out, stderr=subprocess.STDOUT)
    p = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{p.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        poll(ready, bool, "prometheus to start")
        poll(p.last_scrape, lambda t: t > 0, "the first scrape of the proxy")
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Window:
    start: float  # a scrape before the measured traffic
    end: float  # a scrape after it
    tokens: dict[str, int]  # the measured traffic's tokens by type (from its records)
    interceptions: int
    cost: dict[str, int]  # the measured traffic's stored cost by model, micro-dollars (API calls)

    @property
    def range(self) -> str:
        return f"{round((self.end - self.start) * 1000)}ms"


@pytest.fixture(scope="module")
def window(pdaemon: Daemon, prometheus: Prometheus, standin_server: StandIn) -> Window:
    standin_server.reset()
    oai = openai_client(pdaemon, "mia")
    # Warm-up: the same users, models and clients as the measured traffic, so each series exists beforehand.
    claude_code_turn(pdaemon, standin_server, "mia", "msg_warmup")
    codex_chat(oai, standin_server, "chatcmpl-warmup")
    wait_for(pdaemon.admin_port, lambda s: s.value("coder_ai_gateway_interceptions_total") == 2)
    poll(lambda: prometheus.query("sum(coder_ai_gateway_interceptions_total)"),
         lambda r: bool(r) and r[0]["value"][1] == "2", "the warm-up to be scraped")
    # Cost is counted when the writer has stored the priced rows, a moment after the call ends: its series must
    # exist before the window opens too, or `increase()` over the window sees a series born inside it.
    poll(lambda: prometheus.query("count(aigw_proxy_cost_usd_total)"),
         lambda r: bool(r) and r[0]["value"][1] == "2", "the warm-up's cost to be scraped")
    start = prometheus.last_scrape()

    claude_code_turn(pdaemon, standin_server, "mia", "msg_measured", scale=3)
    codex_chat(oai, standin_server, "chatcmpl-measured-1", scale=2)
    codex_chat(oai, standin_server, "chatcmpl-measured-2", scale=5)
    wait_for(pdaemon.admin_port, lambda s: s.value("coder_ai_gateway_interceptions_total") == 5
             and s.value("coder_ai_gateway_interceptions_inflight") == 0)
    done = time.time()
    end = poll(prometheus.last_scrape, lambda t: t > done, "a scrape after the measured traffic")
    measured = [pdaemon.one(response_id=rid) for rid in ("msg_measured", "chatcmpl-measured-1",
                                                         "chatcmpl-measured-2")]
    standin_server.reset()
    cost: dict[str, int] = {}
    for ix in measured:
        for tu in ix["token_usages"]:
            assert tu["priced"] and not tu["api_equivalent"]
            cost[ix["model"]] = cost.get(ix["model"], 0) + tu["cost_micros"]
    return Window(start, end, tokens_by_type(measured), len(measured), cost)


def grafana_expr(expr: str, w: Window) -> str:
    """Substitute what Grafana would: the time range, the rate interval and the All value of each variable."""
    out = expr.replace("$__range", w.range).replace("$__rate_interval", "1m").replace("$__interval", "15s")
    out = re.sub(r"\$\{?(provider|model|client)\}?", ".*", out)
    assert "$" not in out, out
    return out


def dashboard_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    doc = YAML(typ="safe").load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_alert_rules() -> None:
    _, promtool = _binaries()
    proc = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


def test_every_alert_expression_evaluates(prometheus: Prometheus, window: Window) -> None:
    rules = alert_rules()
    assert {"AIGWProxyDown", "AIGWRecordsDropped", "AIGWParseErrorsRising", "AIGWCircuitBreakerOpen",
            "AIGatewayProviderReloadFailing", "AIGatewayProviderNotEnabled"} <= {r["alert"] for r in rules}
    for rule in rules:
        prometheus.query(rule["expr"], at=window.end)
    # Prometheus itself loaded the same file and evaluates every rule without error.
    def health() -> list[dict]:
        groups = prometheus.api("rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]
    loaded = poll(health, lambda rs: len(rs) == len(rules) and all(r["health"] != "unknown" for r in rs),
                  "every rule to be evaluated")
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in loaded if r["health"] != "ok"] == []
    firing = {r["name"] for r in loaded if r["state"] == "firing"}
    assert "AIGWProxyDown" not in firing and "AIGWRecordsDropped" not in firing


def test_every_dashboard_query_evaluates(prometheus: Prometheus, window: Window) -> None:
    targets = dashboard_targets()
    assert len(targets) >= 25
    empty = []
    for title, expr in targets:
        if not prometheus.query(grafana_expr(expr, window), at=window.end):
            empty.append(title)
    # Panels over things this traffic never caused (drops, parse errors, breakers, shadow AI) may be empty.
    quiet = {"Records written and dropped", "Parse errors", "Circuit breakers", "Shadow AI (tunnelled AI hosts)",
             "Tools the models selected", "Passthrough requests", "Failure rate", "Unpriced token-usage records"}
    assert set(empty) <= quiet, empty


def panel_query(title: str, w: Window) -> str:
    [expr] = [e for t, e in dashboard_targets() if t == title]
    return grafana_expr(expr, w)


def test_dashboard_token_queries_return_exactly_the_traffic_sent(prometheus: Prometheus, window: Window) -> None:
    rows = prometheus.query(panel_query("Tokens by user and type", window), at=window.end)
    got = {(r["metric"]["username"], r["metric"]["type"]): float(r["value"][1]) for r in rows}
    assert got == {("mia", kind): n for kind, n in window.tokens.items()}
    assert window.tokens["input"] == 12 * 3 + 176 * (2 + 5)

    rows = prometheus.query(panel_query("Tokens by model", window), at=window.end)
    by_model = {(r["metric"]["model"], r["metric"]["type"]): float(r["value"][1]) for r in rows}
    assert by_model[(ANTHROPIC_MODEL, "output")] == 87 * 3
    assert by_model[("gpt-4.1", "cache_read_input_tokens")] == 1024 * (2 + 5)

    rows = prometheus.query(panel_query("Tokens by client", window), at=window.end)
    by_client = {(r["metric"]["client"], r["metric"]["type"]): float(r["value"][1]) for r in rows}
    assert by_client[("Claude Code", "cache_write_input_tokens")] == 200 * 3
    assert by_client[("Codex", "input")] == 176 * 7


def test_dashboard_cost_queries_return_exactly_the_stored_cost(prometheus: Prometheus, window: Window) -> None:
    rows = prometheus.query(panel_query("Approximate cost by model (USD)", window), at=window.end)
    by_model = {(r["metric"]["model"], r["metric"]["kind"]): float(r["value"][1]) for r in rows}
    assert by_model == pytest.approx({(model, "api"): micros / 1e6 for model, micros in window.cost.items()})
    rows = prometheus.query(panel_query("Approximate cost by user (USD)", window), at=window.end)
    assert {(r["metric"]["username"], r["metric"]["kind"]): float(r["value"][1]) for r in rows} == pytest.approx(
        {("mia", "api"): sum(window.cost.values()) / 1e6})


def test_dashboard_interception_queries_return_exactly_the_traffic_sent(prometheus: Prometheus,
                                                                        window: Window) -> None:
    rows = prometheus.query(panel_query("Interceptions by user", window), at=window.end)
    assert {r["metric"]["username"]: float(r["value"][1]) for r in rows} == {"mia": window.interceptions}
    [total] = prometheus.query(panel_query("Total interceptions", window), at=window.end)
    assert float(total["value"][1]) == window.interceptions
    rows = prometheus.query(panel_query("Interceptions by client", window), at=window.end)
    assert {r["metric"]["client"]: float(r["value"][1]) for r in rows} == {"Claude Code": 1, "Codex": 2}
    [prompts] = prometheus.query(panel_query("Prompts", window), at=window.end)
    assert float(prompts["value"][1]) == 3
