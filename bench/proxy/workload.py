"""The workload: a realistic small Claude Code request and the stand-in's answers (JSON, SSE), as raw bytes."""

from __future__ import annotations

import json

HOST = "api.anthropic.com"
LOOPBACK = "127.0.0.1"

SESSION = "5b1f0c0e-8d3a-4c59-9a8e-2f7c6d1e4b10"


def request_body(stream: bool) -> bytes:
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering "
                                     "tasks. Use the instructions below and the tools available to you."},
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the "
                                     "following context:\n# claudeMd\nRun `make test` before committing.\n"
                                     "</system-reminder>"},
            {"type": "text", "text": "Rename parse_config to load_config across the repo and run the tests.",
             "cache_control": {"type": "ephemeral"}},
        ]}],
        "tools": [
            {"name": "Bash", "description": "Executes a given bash command in a persistent shell session.",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                               "timeout": {"type": "number"}},
                              "required": ["command"]}},
            {"name": "Read", "description": "Reads a file from the local filesystem.",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                               "offset": {"type": "number"}},
                              "required": ["file_path"]}},
        ],
        "metadata": {"user_id": json.dumps({"device_id": "d3c0ffee" * 8, "account_uuid": "",
                                            "session_id": SESSION})},
        "stream": stream,
    }
    return json.dumps(body).encode()


def request(stream: bool, pace: tuple[int, int] | None = None, lockstep: str | None = None) -> bytes:
    """The whole HTTP/1.1 request; `pace` = (events, gap ms) asks the stand-in for a paced SSE stream;
    `lockstep` = an id: instead of a timer, each event after the first waits for the client's datagram saying it
    received the one before (so every event crosses the proxy on its own, however the machine schedules it)."""
    body = request_body(stream)
    headers = [
        "POST /v1/messages?beta=true HTTP/1.1",
        f"Host: {HOST}",
        "Accept: application/json",
        "Content-Type: application/json",
        "User-Agent: claude-cli/2.1.197 (external, sdk-cli)",
        f"X-Claude-Code-Session-Id: {SESSION}",
        "X-App: cli",
        "Anthropic-Version: 2023-06-01",
        "Anthropic-Beta: claude-code-20250219,interleaved-thinking-2025-05-14",
        "X-Api-Key: sk-ant-api03-benchbenchbenchbenchbenchbenchbenchbench-XXXXXXXX",
        "Accept-Encoding: identity",
        f"Content-Length: {len(body)}",
    ]
    if pace:
        headers.append(f"X-Bench-Pace: {pace[0]},{pace[1]}")
    if lockstep:
        headers.append(f"X-Bench-Lockstep: {lockstep}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


MSG_ID = b"msg_01BENCH0000000000000000"  # fixed width: replaced by a per-response id of the same length
USAGE = {"input_tokens": 412, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 11870,
         "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
         "output_tokens": 23, "service_tier": "standard"}
TEXT = ["I'll", " rename", " parse_config", " to", " load_config", " and", " run", " the", " tests."]


def message(content: list[dict], stop_reason: str | None, usage: dict) -> dict:
    return {"id": MSG_ID.decode(), "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def json_response() -> bytes:
    body = json.dumps(message([{"type": "text", "text": "".join(TEXT)}], "end_turn", USAGE)).encode()
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRequest-Id: req_011CBench\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def sse_events(n_deltas: int) -> list[bytes]:
    """message_start … n_deltas text deltas … message_stop, each one SSE event."""
    words = [TEXT[i % len(TEXT)] for i in range(n_deltas)]
    evs: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": message([], None, dict(USAGE, output_tokens=1))}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]
    evs += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": w}}) for w in words]
    evs += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    # Compact JSON, as the Anthropic API sends it.
    return [f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode() for name, data in evs]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
            b"Request-Id: req_011CBench\r\nTransfer-Encoding: chunked\r\n\r\n")
FAST_SSE_DELTAS = 9
FAST_SSE_EVENTS = FAST_SSE_DELTAS + 5
