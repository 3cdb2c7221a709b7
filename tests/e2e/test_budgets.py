"""Budgets through the running proxy with the real SDKs (docs/spend.md#budgets): a user who crosses a tiny hard
limit gets the SDK's own rate-limit error carrying our message on the next call, before it reaches the upstream,
recorded as a failed interception; other users, passthrough paths and calls already running are unaffected; the
soft limit alerts (metric and structured log record); a group's budget holds its members; a restart keeps it all.

What a call costs is computed here from genai-prices' own data (`calc_price`), not from the proxy's pricing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import openai
import pytest
import websockets.exceptions
from genai_prices import Usage, calc_price

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import scrape, wait_for
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage, chat_completion, chat_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import anthropic_client, openai_client

G = "coder_ai_gateway_"
LEGACY = "coder_aibridged_"
CLAUDE = "claude-sonnet-4-5-20250929"
GPT = "gpt-4.1"
TOKENS = (1000, 100)  # input, output of every call here


def cost(model: str, provider: str) -> Decimal:
    """USD of one call of TOKENS, from the price data itself."""
    return calc_price(Usage(input_tokens=TOKENS[0], output_tokens=TOKENS[1]), model, provider_id=provider).total_price


CLAUDE_CALL = cost(CLAUDE, "anthropic")
GPT_CALL = cost(GPT, "openai")


def usd(amount: Decimal) -> str:
    """As the proxy's messages print amounts: 2 decimals at least, up to 6."""
    whole, _, frac = f"{amount.quantize(Decimal('0.000001')):f}".rstrip("0").partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


CONFIG = f"""
[[budgets]]
scope = "user:carol"
daily = {CLAUDE_CALL * Decimal("0.9")}
soft_fraction = 0.5

[[budgets]]
scope = "user:gina"
daily = {CLAUDE_CALL * 3}
soft_fraction = 0.3

[[budgets]]
scope = "user:hank"
monthly = {CLAUDE_CALL * Decimal("1.5")}
"""


@dataclass
class Proxy:
    """The module's daemon; the restart test replaces it."""

    d: Daemon
    tmp: Path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
          upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("budgets")
    config = provider_config(standin_server, upstream_pki.ca_file, extra=CONFIG)
    p = Proxy(start_daemon(tmp, config, extra_args=("--log-format", "json")), tmp)
    yield p
    stop_daemon(p.d)


def message(msg_id: str) -> Reply:
    return Reply.json(anthropic_message(msg_id, CLAUDE, [{"type": "text", "text": "ok"}], anthropic_usage(*TOKENS)))


def ask(d: Daemon, user: str, prompt: str) -> anthropic.types.Message:
    return anthropic_client(d, user).messages.create(model=CLAUDE, max_tokens=64,
                                                     messages=[{"role": "user", "content": prompt}])


def upstream_prompts(standin: StandIn) -> list[str]:
    out = []
    for r in standin.requests:
        if r.path.startswith("/v1/messages") or r.path.startswith("/v1/chat/completions"):
            out.append(json.loads(r.body)["messages"][-1]["content"])
    return out


def log_records(d: Daemon, record_type: str) -> list[dict]:
    out = []
    for line in d.log().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("record_type") == record_type:
            out.append(rec)
    return out


def tomorrow_utc() -> str:
    return (datetime.now(UTC).date() + timedelta(days=1)).isoformat() + "T00:00:00Z"


def blocked(d: Daemon, group_id: str = "") -> float:
    return wait_for(d.admin_port, lambda s: s.value(G + "cost_control_blocked_users", group_id=group_id) >= 1)\
        .value(G + "cost_control_blocked_users", group_id=group_id)


def test_over_a_tiny_hard_limit_the_next_call_is_refused_in_the_anthropic_shape(
        proxy: Proxy, upstream: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    d = proxy.d
    upstream.queue(message("msg_carol_1"))
    assert ask(d, "carol", "carol's first question").id == "msg_carol_1"
    d.one(prompt="carol's first question")  # recorded: its cost now counts
    assert blocked(d) == 1  # the proxy sees carol over her limit

    with pytest.raises(anthropic.RateLimitError) as err:
        ask(d, "carol", "carol's second question")
    limit = CLAUDE_CALL * Decimal("0.9")
    expected = (f"budget_exceeded: the daily budget of user carol ({usd(limit)}) is used up ({usd(CLAUDE_CALL)} "
                f"spent); new model calls are refused until it resets at {tomorrow_utc()}")
    assert err.value.status_code == 429
    assert err.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": expected}}
    midnight = datetime.fromisoformat(tomorrow_utc())
    assert abs(int(err.value.response.headers["retry-after"]) - (midnight - datetime.now(UTC)).total_seconds()) < 5
    assert upstream_prompts(upstream) == ["carol's first question"]  # the refused call never left the proxy

    refused = d.one(prompt="carol's second question")
    assert (refused["status"], refused["upstream_status"], refused["error_type"]) == ("failed", 429,
                                                                                     "budget_exceeded")
    assert refused["model"] == CLAUDE and expected in refused["error_message"]
    assert refused["token_usages"] == []

    # Another user is unaffected; carol's passthrough paths (not model calls) keep working.
    upstream.queue(message("msg_dave_1"))
    assert ask(d, "dave", "dave's question").id == "msg_dave_1"
    upstream.queue(Reply.json({"data": [{"type": "model", "id": CLAUDE, "display_name": "Claude Sonnet 4.5",
                                         "created_at": "2025-09-29T00:00:00Z"}],
                               "has_more": False, "first_id": CLAUDE, "last_id": CLAUDE}))
    assert [m.id for m in anthropic_client(d, "carol").models.list()] == [CLAUDE]

    # A Responses socket (Codex's transport) cannot be opened either.
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("carol"))  # the SDK's socket takes the proxy from here
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    with pytest.raises(websockets.exceptions.InvalidStatus) as ws_err:
        with openai.OpenAI(api_key="sk-proj-" + "m" * 60, max_retries=0).responses.connect():
            pass
    assert ws_err.value.response.status_code == 429
    assert json.loads(ws_err.value.response.body)["error"]["message"] == expected

    s = scrape(d.admin_port)
    for prefix in (G, LEGACY):
        assert s.value(prefix + "cost_control_blocked_requests_total", group_id="") == 2
        assert s.value(prefix + "cost_control_blocked_users", group_id="") == 1
    assert s.value(G + "cost_control_enforcement_duration_seconds_count", outcome="blocked") == 2
    assert s.value(G + "cost_control_enforcement_duration_seconds_count", outcome="allowed") >= 1
    # One call crossed both limits: each is reported once (metric and structured log record).
    assert s.value("aigw_proxy_budget_soft_limit_crossings_total", scope="user:carol", window="daily") == 1
    assert s.value("aigw_proxy_budget_hard_limit_reached", scope="user:carol", window="daily") == 1
    [soft] = [r for r in log_records(d, "budget_soft_limit") if r["scope"] == "user:carol"]
    assert (soft["username"], soft["window"], soft["subject"]) == ("carol", "daily", "user")
    assert soft["spent_usd"] == pytest.approx(float(CLAUDE_CALL))
    assert soft["soft_limit_usd"] == pytest.approx(float(limit) * 0.5, abs=1e-6)
    [hard] = [r for r in log_records(d, "budget_hard_limit") if r["scope"] == "user:carol"]
    assert hard["resets_at"] == tomorrow_utc()


def test_the_soft_limit_alerts_without_refusing(proxy: Proxy, upstream: StandIn) -> None:
    d = proxy.d
    upstream.queue(message("msg_gina_1"), message("msg_gina_2"))
    assert ask(d, "gina", "gina asks once").id == "msg_gina_1"
    s = wait_for(d.admin_port, lambda s: s.value("aigw_proxy_budget_soft_limit_reached", scope="user:gina") == 1)
    assert s.value("aigw_proxy_budget_soft_limit_reached", scope="user:gina", window="daily") == 1
    assert s.value("aigw_proxy_budget_soft_limit_crossings_total", scope="user:gina", window="daily") == 1
    assert s.value("aigw_proxy_budget_hard_limit_reached", scope="user:gina") == 0
    [record] = [r for r in log_records(d, "budget_soft_limit") if r["scope"] == "user:gina"]
    assert record["message"].startswith("budget soft limit reached: user gina has spent")
    assert record["limit_usd"] == pytest.approx(float(CLAUDE_CALL * 3))
    assert ask(d, "gina", "gina asks again").id == "msg_gina_2"  # over the soft limit, under the hard one
    time.sleep(1.5)  # a refresh or two later: still reported once
    assert scrape(d.admin_port).value("aigw_proxy_budget_soft_limit_crossings_total", scope="user:gina") == 1


def test_a_call_in_flight_when_the_limit_is_crossed_finishes(proxy: Proxy, upstream: StandIn) -> None:
    d = proxy.d
    words = " ".join(f"w{i}" for i in range(12))
    slow = anthropic_stream("msg_hank_slow", CLAUDE, [{"type": "text", "text": words}], anthropic_usage(*TOKENS),
                            delay=0.25)
    upstream.queue(slow)
    streamed: list[str] = []

    def long_call() -> None:
        with anthropic_client(d, "hank").messages.stream(
                model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hank's long call"}]) as stream:
            streamed.append(stream.get_final_message().content[0].text)  # type: ignore[union-attr]

    t = threading.Thread(target=long_call)
    t.start()
    deadline = time.monotonic() + 10
    while "hank's long call" not in upstream_prompts(upstream):  # the stream is running upstream
        assert time.monotonic() < deadline
        time.sleep(0.02)
    upstream.queue(message("msg_hank_quick"))
    assert ask(d, "hank", "hank's quick call").id == "msg_hank_quick"  # allowed: nothing recorded yet
    t.join(20)
    assert streamed == [words]  # the running call streamed to its end
    d.one(prompt="hank's long call")
    s = wait_for(d.admin_port, lambda s: s.value("aigw_proxy_budget_hard_limit_reached", scope="user:hank") == 1)
    assert s.value("aigw_proxy_budget_hard_limit_reached", scope="user:hank", window="monthly") == 1  # 2 > 1.5
    with pytest.raises(anthropic.RateLimitError, match="the monthly budget of user hank"):
        ask(d, "hank", "hank's third call")


def test_a_group_budget_holds_every_member_in_the_openai_shape(proxy: Proxy, upstream: StandIn) -> None:
    d = proxy.d
    for user in ("erin", "frank", "ivan"):
        d.token(user)
    d.cli("groups", "add", "interns")
    d.cli("groups", "add", "staff")
    for user in ("erin", "frank"):
        d.cli("groups", "add-user", "interns", user)
    d.cli("groups", "add-user", "staff", "frank")
    d.cli("groups", "add-user", "staff", "ivan")
    d.cli("budgets", "set", "group:interns", "--daily", str(GPT_CALL * Decimal("1.5")))
    d.cli("budgets", "set", "group:staff", "--monthly", "100")
    # The proxy picks the changes up within about a second: the limits in force are a metric.
    wait_for(d.admin_port, lambda s: s.value("aigw_proxy_budget_limit_usd", scope="group:staff") == 100)
    s = scrape(d.admin_port)
    assert s.value("aigw_proxy_budget_limit_usd", scope="group:interns", window="daily") == pytest.approx(
        float(GPT_CALL * Decimal("1.5")))
    groups = {g["name"]: g for g in json.loads(d.cli("groups", "list").stdout)}
    interns, staff = groups["interns"]["id"], groups["staff"]["id"]
    assert {m["username"] for m in groups["interns"]["members"]} == {"erin", "frank"}

    def chat(user: str, cid: str | None, prompt: str) -> str:
        if cid is not None:  # None: the call must not reach the upstream
            upstream.queue(Reply.json(chat_completion(cid, GPT, {"role": "assistant", "content": "ok"},
                                                      chat_usage(*TOKENS))))
        resp = openai_client(d, user).chat.completions.create(model=GPT,
                                                              messages=[{"role": "user", "content": prompt}])
        return resp.id

    # frank is in both groups: the most restrictive budget (interns' daily) is the one his calls are charged to.
    assert chat("erin", "chatcmpl-erin", "erin's call") == "chatcmpl-erin"
    assert chat("frank", "chatcmpl-frank", "frank's call") == "chatcmpl-frank"
    charged = [d.one(prompt=f"{u}'s call")["token_usages"][0]["effective_group_id"] for u in ("erin", "frank")]
    assert charged == [interns, interns]  # stored on the token rows
    assert blocked(d, interns) == 2  # the group spent 2 calls of its 1.5
    with pytest.raises(openai.RateLimitError) as err:
        chat("erin", None, "erin again")
    assert err.value.status_code == 429
    assert err.value.body == {
        "message": f"budget_exceeded: the daily budget of group interns ({usd(GPT_CALL * Decimal('1.5'))}) is used "
                   f"up ({usd(GPT_CALL * 2)} spent); new model calls are refused until it resets at {tomorrow_utc()}",
        "type": "insufficient_quota", "code": "budget_exceeded"}
    # ivan is in staff only: its budget is far from used up.
    assert chat("ivan", "chatcmpl-ivan", "ivan's call") == "chatcmpl-ivan"
    assert scrape(d.admin_port).value(G + "cost_control_blocked_requests_total", group_id=interns) == 1
    assert staff != interns


def test_a_restart_keeps_the_budget_state(proxy: Proxy, standin_server: StandIn, upstream_pki: UpstreamPKI,
                                          upstream: StandIn) -> None:
    tokens = dict(proxy.d.tokens)
    stop_daemon(proxy.d)
    config = provider_config(standin_server, upstream_pki.ca_file, extra=CONFIG)
    proxy.d = start_daemon(proxy.tmp, config, extra_args=("--log-format", "json"))
    proxy.d.tokens.update(tokens)
    with pytest.raises(anthropic.RateLimitError, match="the daily budget of user carol"):
        ask(proxy.d, "carol", "carol after the restart")
    upstream.queue(message("msg_dave_2"))
    assert ask(proxy.d, "dave", "dave after the restart").id == "msg_dave_2"
    assert upstream_prompts(upstream) == ["dave after the restart"]
