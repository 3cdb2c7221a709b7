"""Cost through the real SDKs and a running `aigw-proxy run`: every token-usage row is priced when it is written,
and the stored price is what the interception and session JSON, the structured log, Prometheus and the spend
report (CLI and REST) show. Every expected figure is computed here by hand from genai-prices' own rates (or the
config's `[[prices]]`): tokens × USD per million tokens = micro-dollars, each component rounded half to even.

Our token figures are the uncached input (the providers' prompt counts include cached tokens), reasoning inside
output, Gemini's thinking billed as output, Anthropic's cache writes billed by TTL.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.support.api import PREFIX
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.gemini_payloads import gemini_chunks, gemini_sse, gemini_usage
from tests.support.metrics import wait_for
from tests.support.payloads import (
    anthropic_stream,
    anthropic_usage,
    chat_completion,
    chat_stream,
    chat_usage,
    responses_object,
    responses_stream,
    responses_usage,
)
from tests.support.prices import VERSION, base, micros, model_id, rates
from tests.support.standin import Reply, StandIn

PRICES = """
[[prices]]
provider = "openai"
model = "our-llama-*"   # self-hosted behind an OpenAI-compatible API: our own rates
input = 0.5
output = 1.5
cache_read = 0.05

[[prices]]
model = "claude-haiku-4-5*"
discount = 0.25         # negotiated: a quarter off the list price
"""
LATER_PRICE = """
[[prices]]
model = "mystery-model-y"
input = 2
output = 4
"""
ANTHROPIC_KEY = "sk-ant-api03-" + "s" * 80
OPENAI_KEY = "sk-proj-" + "s" * 60
GEMINI_KEY = "AIzaSy" + "S" * 33
CLAUDE_PLAN_TOKEN = "sk-ant-oat01-" + "P1a" * 30 + "-pln1"
COST = "aigw_proxy_cost_usd_total"
UNPRICED = "cost_control_unpriced_token_usage_records_total"


@pytest.fixture(scope="module")
def spend_daemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
                 upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("spend")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file, extra=PRICES),
                     extra_args=("--structured-logging", "--log-format", "json"))
    d.tokens["root"] = d.cli("users", "add", "root", "--role", "admin").stdout.strip()
    yield d
    stop_daemon(d)


@pytest.fixture
def env(spend_daemon: Daemon, upstream: StandIn, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setenv("HTTPS_PROXY", spend_daemon.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(spend_daemon.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return spend_daemon


def as_user(d: Daemon, monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url(user))


def rest(d: Daemon, path: str, user: str = "root", **params: str) -> Any:
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"http://127.0.0.1:{d.admin_port}{PREFIX}{path}" + (f"?{query}" if query else ""),
                                 headers={"Coder-Session-Token": d.token(user)})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def log_line(d: Daemon, record_type: str, **match: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        for raw in d.log().splitlines():
            if not raw.startswith("{"):
                continue
            line = json.loads(raw)
            if line.get("record_type") == record_type and all(line.get(k) == v for k, v in match.items()):
                return line
        assert time.monotonic() < deadline, f"no {record_type} line with {match}"
        time.sleep(0.1)


def expected(*parts: Decimal | int, other: Decimal | int = 0) -> dict[str, int]:
    """The stored components for exact (input, output, cache read, cache write) amounts in micro-dollars."""
    names = ("input_price_micros", "output_price_micros", "cache_read_price_micros", "cache_write_price_micros")
    out = {n: micros(p) for n, p in zip(names, parts, strict=True)}
    out["other_price_micros"] = micros(other)
    out["cost_micros"] = sum(out.values())
    return out


def stored(tu: dict[str, Any]) -> dict[str, int]:
    return {k: tu[k] for k in ("input_price_micros", "output_price_micros", "cache_read_price_micros",
                                 "cache_write_price_micros", "other_price_micros", "cost_micros")}


def assert_library_priced(tu: dict[str, Any], ref: str, *, api_equivalent: bool = False) -> None:
    assert (tu["price_source"], tu["price_version"], tu["price_ref"], tu["api_equivalent"], tu["priced"]) == (
        "genai-prices", VERSION, ref, api_equivalent, True)


def api_cost(micros_: int | None, unpriced: int = 0, equivalent: int | None = 0) -> dict[str, Any]:
    return {"priced": unpriced == 0, "unpriced_records": unpriced, "cost_micros": micros_,
            "cost_usd": None if micros_ is None else round(micros_ / 1e6, 6), "api_equivalent_micros": equivalent,
            "api_equivalent_usd": None if equivalent is None else round(equivalent / 1e6, 6)}


# --- exact cost per provider -------------------------------------------------------------------------------------


def test_anthropic_cache_read_and_writes_by_ttl(env: Daemon, upstream: StandIn) -> None:
    model = "claude-sonnet-4-5-20250929"
    usage = anthropic_usage(1234, 807, cache_read=30001, cache_5m=3001, cache_1h=2002)
    upstream.queue(anthropic_stream("msg_spend_A", model, [{"type": "text", "text": "cached answer"}], usage))
    with anthropic.Anthropic(api_key=ANTHROPIC_KEY, max_retries=0).messages.stream(
        model=model, max_tokens=900, messages=[{"role": "user", "content": "a long cached context"}],
    ) as s:
        assert s.get_final_text() == "cached answer"
    ix = env.one(response_id="msg_spend_A")
    [tu] = ix["token_usages"]
    r = rates("anthropic", model)
    assert base(r.cache_write_1h_mtok) > base(r.cache_write_mtok)  # the 1 h TTL costs more: the split matters
    want = expected(1234 * base(r.input_mtok), 807 * base(r.output_mtok), 30001 * base(r.cache_read_mtok),
                    3001 * base(r.cache_write_mtok) + 2002 * base(r.cache_write_1h_mtok))
    assert stored(tu) == want
    assert_library_priced(tu, "anthropic/claude-sonnet-4-5")
    assert ix["cost"] == api_cost(want["cost_micros"])

    # The same figures in the session (REST), the structured log line and Prometheus.
    session = rest(env, f"/sessions/{ix['session_id']}")
    assert session["cost"] == api_cost(want["cost_micros"])
    assert session["threads"][0]["cost"] == api_cost(want["cost_micros"])
    line = log_line(env, "token_usage", msg_id="msg_spend_A")
    assert {k: line[k] for k in want} == want
    assert (line["priced"], line["price_source"], line["cost_usd"]) == (True, "genai-prices",
                                                                        round(want["cost_micros"] / 1e6, 6))
    scraped = wait_for(env.admin_port, lambda s: s.value(COST, model=model) > 0)
    assert scraped.value(COST, provider="anthropic", model=model, kind="api") == pytest.approx(
        want["cost_micros"] / 1e6)


def test_openai_chat_cached_input_and_reasoning(env: Daemon, upstream: StandIn) -> None:
    model = "gpt-5-mini"
    upstream.queue(chat_stream("chatcmpl-spend1", model, text="done",
                               usage=chat_usage(1200, 64, cached=1024, reasoning=16)))
    chunks = list(openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "think, briefly"}]))
    assert chunks[-1].usage is not None
    [tu] = env.one(response_id="chatcmpl-spend1")["token_usages"]
    assert (tu["input_tokens"], tu["cache_read_input_tokens"], tu["output_tokens"]) == (176, 1024, 64)
    r = rates("openai", model)
    # Reasoning is inside the 64 output tokens: billed once, at the output rate.
    assert stored(tu) == expected(176 * base(r.input_mtok), 64 * base(r.output_mtok), 1024 * base(r.cache_read_mtok),
                                  0)
    assert_library_priced(tu, model_id("openai", model))


def test_openai_responses_cached_input_and_reasoning(env: Daemon, upstream: StandIn) -> None:
    model = "gpt-5.1-codex"
    upstream.queue(responses_stream(responses_object("resp_spend1", model, [
        {"type": "message", "id": "msg_s", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
    ], responses_usage(5000, 300, cached=4096, reasoning=128))))
    with openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).responses.stream(model=model, input="fix the bug") as s:
        s.get_final_response()
    [tu] = env.one(response_id="resp_spend1")["token_usages"]
    assert (tu["input_tokens"], tu["cache_read_input_tokens"], tu["output_tokens"]) == (904, 4096, 300)
    r = rates("openai", model)
    assert stored(tu) == expected(904 * base(r.input_mtok), 300 * base(r.output_mtok), 4096 * base(r.cache_read_mtok),
                                  0)
    assert_library_priced(tu, model_id("openai", model))


def test_gemini_cached_input_and_thinking(env: Daemon, upstream: StandIn) -> None:
    model = "gemini-2.5-flash"
    usage = gemini_usage(5012, 18, cached=4096, thoughts=124)
    upstream.queue(gemini_sse(gemini_chunks("gem-spend-1", model, [{"text": "answer"}], usage)))
    client = genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(
        retry_options=types.HttpRetryOptions(attempts=1)))
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents="think"))
    assert text == "answer"
    [tu] = env.one(response_id="gem-spend-1")["token_usages"]
    # promptTokenCount includes the cached tokens; the thoughts are billed as output.
    assert (tu["input_tokens"], tu["cache_read_input_tokens"], tu["output_tokens"]) == (916, 4096, 142)
    r = rates("google", model)
    assert stored(tu) == expected(916 * base(r.input_mtok), 142 * base(r.output_mtok), 4096 * base(r.cache_read_mtok),
                                  0)
    assert_library_priced(tu, model_id("google", model))


# --- the config's prices, unpriced models, subscriptions ---------------------------------------------------------


def test_config_prices_a_self_hosted_model_and_a_discount(env: Daemon, upstream: StandIn) -> None:
    hello = {"role": "assistant", "content": "hi"}
    upstream.queue(Reply.json(chat_completion("chatcmpl-llama", "our-llama-3-70b", hello,
                                              chat_usage(3000, 500, cached=1000))),
                   anthropic_stream("msg_haiku", "claude-haiku-4-5-20251001", [{"type": "text", "text": "hi"}],
                                    anthropic_usage(2000, 300, cache_read=5000)))
    openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).chat.completions.create(
        model="our-llama-3-70b", messages=[{"role": "user", "content": "hello llama"}])
    with anthropic.Anthropic(api_key=ANTHROPIC_KEY, max_retries=0).messages.stream(
            model="claude-haiku-4-5-20251001", max_tokens=300, messages=[{"role": "user", "content": "hi haiku"}]) as s:
        s.get_final_text()
    [llama] = env.one(response_id="chatcmpl-llama")["token_usages"]
    assert stored(llama) == expected(2000 * Decimal("0.5"), 500 * Decimal("1.5"), 1000 * Decimal("0.05"), 0)
    assert (llama["price_source"], llama["price_ref"]) == ("config", "openai/our-llama-*")
    assert llama["price_version"].startswith("prices[0]#")

    [haiku] = env.one(response_id="msg_haiku")["token_usages"]
    r = rates("anthropic", "claude-haiku-4-5-20251001")
    keep = Decimal("0.75")
    assert stored(haiku) == expected(2000 * base(r.input_mtok) * keep, 300 * base(r.output_mtok) * keep,
                                     5000 * base(r.cache_read_mtok) * keep, 0)
    assert haiku["price_source"] == "config" and haiku["price_version"].endswith(f"+genai-prices-{VERSION}")


def test_an_unpriced_model_is_null_and_counted(env: Daemon, upstream: StandIn) -> None:
    upstream.queue(Reply.json(chat_completion("chatcmpl-mystery", "mystery-model-x",
                                              {"role": "assistant", "content": "?"}, chat_usage(40, 7))))
    openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).chat.completions.create(
        model="mystery-model-x", messages=[{"role": "user", "content": "who prices me"}])
    ix = env.one(response_id="chatcmpl-mystery")
    [tu] = ix["token_usages"]
    assert (tu["input_tokens"], tu["output_tokens"]) == (40, 7)  # the tokens are recorded all the same
    assert tu["priced"] is False and stored(tu) == dict.fromkeys(stored(tu))  # null, never 0
    assert ix["cost"] == api_cost(None, unpriced=1)
    line = log_line(env, "token_usage", msg_id="chatcmpl-mystery")
    assert (line["priced"], line["cost_micros"], line["cost_usd"]) == (False, None, None)
    labels = {"model": "mystery-model-x", "provider": "openai", "provider_type": "openai"}
    s = wait_for(env.admin_port, lambda s: s.value("coder_ai_gateway_" + UNPRICED, **labels) == 1)
    assert s.value("coder_ai_gateway_" + UNPRICED, **labels) == 1
    assert s.value("coder_aibridged_" + UNPRICED, **labels) == 1  # the legacy name, from the same samples
    assert s.samples(COST, model="mystery-model-x") == []  # no $0 series for it


def test_subscription_value_is_kept_apart(env: Daemon, upstream: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    as_user(env, monkeypatch, "carol")
    model = "claude-sonnet-4-5-20250929"
    upstream.queue(anthropic_stream("msg_plan", model, [{"type": "text", "text": "on the plan"}],
                                    anthropic_usage(500, 200, cache_read=8000)))
    with anthropic.Anthropic(auth_token=CLAUDE_PLAN_TOKEN, max_retries=0, default_headers={
            "User-Agent": "claude-cli/2.1.197 (external, sdk-cli)", "anthropic-beta": "oauth-2025-04-20"},
    ).messages.stream(model=model, max_tokens=300, messages=[{"role": "user", "content": "plan call"}]) as s:
        s.get_final_text()
    ix = env.one(response_id="msg_plan")
    assert ix["credential_kind"] == "oauth"
    [tu] = ix["token_usages"]
    r = rates("anthropic", model)
    want = expected(500 * base(r.input_mtok), 200 * base(r.output_mtok), 8000 * base(r.cache_read_mtok), 0)
    assert stored(tu) == want  # priced at the API list price ...
    assert_library_priced(tu, "anthropic/claude-sonnet-4-5", api_equivalent=True)
    # ... and reported as API-equivalent value, not as cost billed per token.
    assert ix["cost"] == api_cost(0, equivalent=want["cost_micros"])
    report = rest(env, "/spend", by="user", q="initiator:carol")
    [carol] = report["groups"]
    assert carol["cost"] == api_cost(0, equivalent=want["cost_micros"]) == report["total"]["cost"]
    scraped = wait_for(env.admin_port, lambda s: s.value(COST, kind="api_equivalent") > 0)
    assert scraped.value(COST, model=model, kind="api_equivalent") == pytest.approx(want["cost_micros"] / 1e6)


# --- the spend report --------------------------------------------------------------------------------------------


def _rows_by_model(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ix in items:
        g = out.setdefault(ix["model"], {"records": 0, "input_tokens": 0, "output_tokens": 0, "api": 0, "eq": 0,
                                         "unpriced": 0})
        for tu in ix["token_usages"]:
            g["records"] += 1
            g["input_tokens"] += tu["input_tokens"]
            g["output_tokens"] += tu["output_tokens"]
            g["unpriced"] += tu["cost_micros"] is None
            g["eq" if tu["api_equivalent"] else "api"] += tu["cost_micros"] or 0
    return out


def _report_by_model(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["key"]: {"records": g["records"], "input_tokens": g["input_tokens"],
                       "output_tokens": g["output_tokens"], "api": g["cost"]["cost_micros"] or 0,
                       "eq": g["cost"]["api_equivalent_micros"] or 0, "unpriced": g["cost"]["unpriced_records"]}
            for g in report["groups"]}


def test_spend_report_cli_and_api_equal_the_rows(env: Daemon, upstream: StandIn,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    as_user(env, monkeypatch, "dave")
    upstream.queue(*(Reply.json(chat_completion(f"chatcmpl-dave{n}", model, {"role": "assistant", "content": "."},
                                                chat_usage(100 * n + 7, 10 * n, cached=50 * n)))
                     for n, model in enumerate(("gpt-5-mini", "gpt-4.1", "gpt-5-mini", "mystery-model-z"), 1)))
    for n, model in enumerate(("gpt-5-mini", "gpt-4.1", "gpt-5-mini", "mystery-model-z"), 1):
        openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"dave {n}"}])
    items = env.interceptions(expect=4, initiator="dave")
    assert len(items) == 4
    rows = _rows_by_model(items)
    assert rows["mystery-model-z"]["unpriced"] == 1 and rows["gpt-5-mini"]["api"] > 0

    admin_view = rest(env, "/spend", by="model", q="initiator:dave")
    assert _report_by_model(admin_view) == rows
    assert rest(env, "/spend", user="dave", by="model") == admin_view  # a member sees their own records only
    assert admin_view["total"]["cost"]["cost_micros"] == sum(g["api"] for g in rows.values())
    assert admin_view["total"]["cost"]["priced"] is False  # one row has no price
    local = json.loads(env.cli("spend", "--by", "model", "--initiator", "dave").stdout)
    assert local == admin_view
    url = f"http://127.0.0.1:{env.admin_port}"
    remote = json.loads(env.cli("spend", "--by", "model", "--url", url, "--token", env.token("dave")).stdout)
    assert remote == admin_view
    # A window: today's calls from the day's midnight (whole days from the summary, the edge from the rows).
    today = datetime.now(UTC).date().isoformat()
    windowed = json.loads(env.cli("spend", "--by", "day", "--initiator", "dave", "--since", today).stdout)
    assert windowed["total"] == admin_view["total"]
    table = env.cli("spend", "--by", "model", "--initiator", "dave", "--format", "table").stdout
    assert "mystery-model-z" in table and "unpriced" in table and "TOTAL" in table


# --- reload and reprice ------------------------------------------------------------------------------------------


def test_new_prices_apply_to_new_rows_and_reprice_recomputes_a_window(env: Daemon, upstream: StandIn,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    as_user(env, monkeypatch, "erin")
    client = openai.OpenAI(api_key=OPENAI_KEY, max_retries=0)
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    upstream.queue(Reply.json(chat_completion("chatcmpl-y1", "mystery-model-y", {"role": "assistant", "content": "."},
                                              chat_usage(1000, 100))))
    client.chat.completions.create(model="mystery-model-y", messages=[{"role": "user", "content": "before"}])
    assert env.one(response_id="chatcmpl-y1")["token_usages"][0]["priced"] is False

    config = Path(env.data_dir.parent / "aigw.toml")
    config.write_text(config.read_text().replace(PRICES, PRICES + LATER_PRICE))
    assert env.proc is not None
    env.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while "prices reloaded: 3" not in env.log():
        assert time.monotonic() < deadline, env.log()[-2000:]
        time.sleep(0.1)
    upstream.queue(Reply.json(chat_completion("chatcmpl-y2", "mystery-model-y", {"role": "assistant", "content": "."},
                                              chat_usage(1000, 100))))
    client.chat.completions.create(model="mystery-model-y", messages=[{"role": "user", "content": "after"}])
    new = env.one(response_id="chatcmpl-y2")["token_usages"][0]
    assert stored(new) == expected(1000 * 2, 100 * 4, 0, 0) and new["price_source"] == "config"
    # History is not rewritten by the new price ...
    assert env.one(response_id="chatcmpl-y1")["token_usages"][0]["priced"] is False
    before = rest(env, "/spend", by="model", q="initiator:erin")["total"]["cost"]
    assert (before["cost_micros"], before["unpriced_records"]) == (new["cost_micros"], 1)

    # ... until `reprice` recomputes the window on purpose.
    out = json.loads(env.cli("reprice", "--since", since, "--config", str(config)).stdout)
    assert out["previously_unpriced"] >= 1 and out["changed"] >= 1 and out["price_overrides"] == 3
    old = env.one(response_id="chatcmpl-y1")["token_usages"][0]
    assert stored(old) == stored(new)
    after = rest(env, "/spend", by="model", q="initiator:erin")["total"]["cost"]
    assert (after["cost_micros"], after["unpriced_records"]) == (2 * new["cost_micros"], 0)
    # Nothing changes on a second run.
    assert json.loads(env.cli("reprice", "--since", since, "--config", str(config)).stdout)["changed"] == 0
