"""Realistic SDK calls for the metrics tests, played through a daemon as a given user, and the token totals by
metric `type` that the recorded interceptions say they used."""

from __future__ import annotations

import ssl
from typing import Any

import anthropic
import openai

from tests.support.daemon import Daemon
from tests.support.payloads import (
    anthropic_stream,
    anthropic_usage,
    chat_completion,
    chat_usage,
)
from tests.support.standin import Reply, StandIn

ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
OPENAI_MODEL = "gpt-4.1"
CLAUDE_CODE = {"User-Agent": "claude-cli/2.1.197 (external, sdk-cli)", "X-Claude-Code-Session-Id": "sess-metrics"}
CODEX = {"User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64)", "originator": "codex_exec"}


def _tls(daemon: Daemon) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(daemon.ca_bundle))


def anthropic_client(daemon: Daemon, user: str, **kw: Any) -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(proxy=daemon.proxy_url(user), verify=_tls(daemon))
    return anthropic.Anthropic(api_key="sk-ant-api03-" + "m" * 80, max_retries=0, http_client=http, **kw)


def openai_client(daemon: Daemon, user: str, **kw: Any) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(proxy=daemon.proxy_url(user), verify=_tls(daemon))
    return openai.OpenAI(api_key="sk-proj-" + "m" * 60, max_retries=0, http_client=http, **kw)


def claude_code_turn(daemon: Daemon, upstream: StandIn, user: str, msg_id: str, *, scale: int = 1,
                     model: str = ANTHROPIC_MODEL) -> None:
    """A streamed Claude Code turn with thinking and one Bash tool call."""
    usage = anthropic_usage(12 * scale, 87 * scale, cache_read=2048 * scale, cache_5m=150 * scale,
                            cache_1h=50 * scale)
    upstream.queue(anthropic_stream(msg_id, model, [
        {"type": "thinking", "thinking": "I should list the files."},
        {"type": "tool_use", "id": f"toolu_{msg_id}", "name": "Bash", "input": {"command": "ls"}},
    ], usage, stop_reason="tool_use"))
    with anthropic_client(daemon, user, default_headers=CLAUDE_CODE).messages.stream(
        model=model, max_tokens=512, messages=[{"role": "user", "content": f"list the files ({msg_id})"}],
    ) as stream:
        stream.get_final_message()


def codex_chat(client: openai.OpenAI, upstream: StandIn, cid: str, *, scale: int = 1) -> None:
    """A blocking Chat Completions call the way Codex sends it (cached prompt tokens, reasoning)."""
    upstream.queue(Reply.json(chat_completion(cid, OPENAI_MODEL, {"role": "assistant", "content": "done"},
                                              chat_usage(1200 * scale, 64 * scale, cached=1024 * scale,
                                                         reasoning=16 * scale))))
    client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": f"refactor ({cid})"}],
                                   extra_headers=CODEX)


def tokens_by_type(interceptions: list[dict]) -> dict[str, int]:
    """What `coder_ai_gateway_tokens_total` must add up to for these recorded interceptions, by `type`."""
    out: dict[str, int] = {}
    for ix in interceptions:
        for tu in ix["token_usages"]:
            figures = {"input": tu["input_tokens"], "output": tu["output_tokens"],
                       "cache_read_input_tokens": tu["cache_read_input_tokens"],
                       "cache_write_input_tokens": tu["cache_write_input_tokens"], **tu["metadata"]}
            for kind, n in figures.items():
                out[kind] = out.get(kind, 0) + n
    return out
