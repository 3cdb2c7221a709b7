"""Structured record logs and log formatting: the exact line each record makes, JSON or text, secrets masked."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from aigw_proxy.recording.commits import CommitInfo, Spend, SpendKey
from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    TokenUsage,
    ToolCall,
)
from aigw_proxy.spend import Price
from aigw_proxy.telemetry.log_setup import JsonLineFormatter, TextFormatter, redact
from aigw_proxy.telemetry.structured_log import LOGGER_NAME, StructuredLog

T0 = datetime(2025, 11, 22, 8, 30, 0, 123456, tzinfo=UTC)
T1 = datetime(2025, 11, 22, 8, 30, 4, 500000, tzinfo=UTC)
LINE_KEYS = {"time", "level", "logger", "message", "record_type"}

START = InterceptionStarted(
    id="ix-2", initiator=Initiator("u-1", "alice", "tok-9"), provider="anthropic", provider_name="anthropic",
    model="claude-x", client="Claude Code", client_session_id="sess-1", started_at=T0,
    metadata={"request_user_agent": "claude-cli/2.1", "route": "/v1/messages", "streaming": True},
    correlating_tool_call_id="toolu_0",
)
END = InterceptionEnded(
    id="ix-2", ended_at=T1, status="failed", upstream_status=529, error="Overloaded", prompt="list files",
    prompt_response_id="msg_1",
    token_usages=[TokenUsage("msg_1", 12, 87, 2048, 100, {"cache_ephemeral_5m_input": 100})],
    tool_calls=[ToolCall("msg_1", "toolu_1", "Bash", '{"command":"ls"}'),
                ToolCall("resp_1", "call_2", "apply_patch", "*** Begin Patch", item_id="ctc_2")],
    thoughts=[ModelThought("I should list the files.", "thinking")],
)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the interceptions logger writes, formatted as `--log-format json` does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.propagate = False
    yield out
    logger.removeHandler(handler)
    logger.propagate = True


def parsed(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_start_line_has_the_contract_fields_with_the_resolved_thread(json_lines: io.StringIO) -> None:
    StructuredLog().on_commit(START, CommitInfo(thread_parent_id="ix-1", thread_root_id="ix-0", session_id="sess-1"))
    [line] = parsed(json_lines)
    assert {k: line[k] for k in LINE_KEYS - {"time"}} == {
        "level": "INFO", "logger": "aigw_proxy.interceptions", "message": "interception log",
        "record_type": "interception_start"}
    assert {k: v for k, v in line.items() if k not in LINE_KEYS} == {
        "interception_id": "ix-2", "initiator_id": "u-1", "api_key_id": "tok-9", "provider": "anthropic",
        "provider_name": "anthropic", "model": "claude-x", "client": "Claude Code", "client_session_id": "sess-1",
        "started_at": "2025-11-22T08:30:00.123456Z",
        "metadata": {"request_user_agent": "claude-cli/2.1", "route": "/v1/messages", "streaming": True},
        "correlating_tool_call_id": "toolu_0", "thread_parent_id": "ix-1", "thread_root_id": "ix-0"}
    assert datetime.fromisoformat(line["time"]).tzinfo is not None


SPEND_KEY = SpendKey("anthropic", "anthropic", "claude-x", "Claude Code", "u-1", api_equivalent=False)
PRICE = Price(input_price_micros=36, output_price_micros=1305, cache_read_price_micros=614,
              cache_write_price_micros=375, other_price_micros=0, cost_micros=2330, source="genai-prices",
              version="0.2.3", model_ref="anthropic/claude-x")


def test_end_event_makes_one_line_per_record_then_the_end(json_lines: io.StringIO) -> None:
    StructuredLog().on_commit(END, CommitInfo(error_type="overloaded", spend=Spend(SPEND_KEY, (PRICE,))))
    lines = [{k: v for k, v in line.items() if k not in LINE_KEYS - {"record_type"}} for line in parsed(json_lines)]
    at = "2025-11-22T08:30:04.500000Z"
    assert lines == [
        {"record_type": "prompt_usage", "interception_id": "ix-2", "msg_id": "msg_1", "prompt": "list files",
         "created_at": at, "metadata": {}},
        {"record_type": "token_usage", "interception_id": "ix-2", "msg_id": "msg_1", "input_tokens": 12,
         "output_tokens": 87, "cache_read_input_tokens": 2048, "cache_write_input_tokens": 100, "created_at": at,
         "metadata": {"cache_ephemeral_5m_input": 100},
         # the stored price, as the writer computed it (CommitInfo.spend)
         "input_price_micros": 36, "output_price_micros": 1305, "cache_read_price_micros": 614,
         "cache_write_price_micros": 375, "other_price_micros": 0, "cost_micros": 2330, "cost_usd": 0.00233,
         "priced": True, "price_source": "genai-prices", "price_version": "0.2.3", "api_equivalent": False,
         "effective_group_id": None},
        {"record_type": "tool_usage", "interception_id": "ix-2", "msg_id": "msg_1", "tool_call_id": "toolu_1",
         "item_id": None, "tool": "Bash", "input": '{"command":"ls"}', "server_url": None, "injected": False,
         "invocation_error": None, "created_at": at, "metadata": {}},
        {"record_type": "tool_usage", "interception_id": "ix-2", "msg_id": "resp_1", "tool_call_id": "call_2",
         "item_id": "ctc_2", "tool": "apply_patch", "input": "*** Begin Patch", "server_url": None,
         "injected": False, "invocation_error": None, "created_at": at, "metadata": {}},
        {"record_type": "model_thought", "interception_id": "ix-2", "content": "I should list the files.",
         "created_at": at, "metadata": {"source": "thinking"}},
        {"record_type": "interception_end", "interception_id": "ix-2", "ended_at": at, "status": "failed",
         "upstream_status": 529, "error_type": "overloaded", "error_message": "Overloaded"},
    ]


def test_an_unpriced_token_usage_line_has_null_cost_never_zero(json_lines: io.StringIO) -> None:
    key = SpendKey("copilot", "copilot", "no-such-model", "Copilot", "u-1", api_equivalent=True)
    StructuredLog().on_commit(END, CommitInfo(spend=Spend(key, (None,))))
    [usage] = [line for line in parsed(json_lines) if line["record_type"] == "token_usage"]
    assert usage["priced"] is False and usage["api_equivalent"] is True
    assert [usage[k] for k in ("cost_micros", "cost_usd", "input_price_micros", "price_source")] == [None] * 4


def test_lines_are_logged_even_when_the_log_level_hides_info(json_lines: io.StringIO) -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.WARNING)
    logging.getLogger(LOGGER_NAME).setLevel(logging.NOTSET)
    try:
        StructuredLog().on_commit(START, CommitInfo())
    finally:
        root.setLevel(before)
    assert [line["record_type"] for line in parsed(json_lines)] == ["interception_start"]


def test_a_secret_inside_a_record_is_masked_in_the_line(json_lines: io.StringIO) -> None:
    key = "sk-ant-api03-" + "Q" * 40
    ev = InterceptionEnded(id="ix-3", ended_at=T1, status="completed", prompt=f"why does\n{key} fail?",
                           tool_calls=[ToolCall("m", "c", "curl", json.dumps({"h": f"Authorization: Bearer {key}"}))])
    StructuredLog().on_commit(ev, CommitInfo())
    text = json_lines.getvalue()
    assert "Q" * 20 not in text
    prompt, tool, _ = parsed(json_lines)
    assert prompt["prompt"] == "why does\n[REDACTED:anthropic-api-key] fail?"
    assert json.loads(tool["input"]) == {"h": "Authorization: Bearer [REDACTED:anthropic-api-key]"}


@pytest.mark.parametrize(("text", "masked"), [
    ("token aigw_" + "A1b-_" * 8 + " used", "token [REDACTED:aigw-token] used"),
    ("x-api-key: sk-ant-api03-" + "k" * 30, "x-api-key: [REDACTED:anthropic-api-key]"),
    ("key=sk-proj-" + "o" * 40, "key=[REDACTED:openai-api-key]"),
    ("'authorization': 'Bearer " + "t" * 30 + "'", "'authorization': 'Bearer [REDACTED:bearer-token]'"),
    ("got Bearer " + "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl", "got Bearer [REDACTED:bearer-token]"),
    ("Basic " + base64.b64encode(b"bob:aigw_secret").decode() + " sent", "Basic [REDACTED:basic-auth] sent"),
    ("authorization: tid=" + "c0ffee" * 6 + ";exp=1", "authorization: [REDACTED:credential-header];exp=1"),
    ("Basic setup guide", "Basic setup guide"),  # prose stays readable
    ("Bearer of bad news", "Bearer of bad news"),
    ("task-runner and sk-learn", "task-runner and sk-learn"),
])
def test_redaction(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_text_format_keeps_the_fields_as_json_after_the_message() -> None:
    record = logging.LogRecord("aigw_proxy.interceptions", logging.INFO, __file__, 1, "interception log", (), None)
    record.record_type = "model_thought"
    record.content = "hmm"
    line = TextFormatter().format(record)
    head, _, fields = line.partition(" INFO aigw_proxy.interceptions: interception log ")
    assert head and json.loads(fields) == {"record_type": "model_thought", "content": "hmm"}


def test_configured_json_logging_writes_every_line_as_json_with_tracebacks() -> None:
    """What `aigw-proxy run --log-format json` sets up, in a fresh process: lines written by the background
    writer are all there at exit, exceptions included, secrets masked."""
    key = "sk-ant-api03-" + "Z" * 40
    script = f"""
import logging
from aigw_proxy.spend import Price
from aigw_proxy.telemetry.log_setup import configure_logging
configure_logging("info", "json")
log = logging.getLogger("aigw_proxy.demo")
log.info("hello %s", "world", extra={{"count": 3}})
log.debug("hidden")
try:
    raise ValueError("bad key {key}")
except ValueError:
    log.exception("it failed")
logging.getLogger("mitmproxy.proxy").info("mitmproxy chatter is hidden below warning")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Z" * 20 not in proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "aigw_proxy.demo", "hello world"), ("ERROR", "aigw_proxy.demo", "it failed")]
    assert lines[0]["count"] == 3
    assert "ValueError: bad key [REDACTED:anthropic-api-key]" in lines[1]["exc_info"]
