"""What `--capture-bodies` costs per model call: sealing time on the writer's thread (redaction, the cut, zstd) and
the bytes it adds to the database, for Claude Code-shaped calls of three sizes (a first turn, a long session,
one past the 1 MiB bound) with a streamed answer.

The database figure is measured, not estimated: the same calls written through the record writer into two fresh
databases, with and without their captures; the difference in file size (WAL checkpointed), per call.

    .venv/bin/python bench/capture_bench.py [--calls 200] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aigw_proxy.capture.build import CaptureBuilder
from aigw_proxy.capture.raw import DEFAULT_CAPTURE_MAX_BYTES, CaptureRecord, RawCapture
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, TokenUsage
from aigw_proxy.redaction.engine import Redactor
from aigw_proxy.storage import RecordWriter, UserStore, open_database


def _source(limit: int) -> str:
    """Real Python source (the standard library's files, read in name order), as tool results carry it."""
    text = ""
    for path in sorted(Path(inspect.getfile(json)).parent.parent.glob("*.py")):
        text += path.read_text(errors="replace")
        if len(text) >= limit:
            break
    return text[:limit]


def request_body(history_bytes: int) -> bytes:
    """A Claude Code request: system prompt, 20 tool definitions, and a conversation whose tool results (source
    files read) add up to about `history_bytes`."""
    tools = [{"name": f"Tool{n}", "description": "Run a shell command and return its output. " * 12,
              "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                                "timeout": {"type": "number"}},
                               "required": ["command"]}} for n in range(20)]
    messages: list[dict] = [{"role": "user", "content": "refactor the HTTP client for retries"}]
    code = _source(max(history_bytes, 1))
    step = 24 * 1024
    for n, i in enumerate(range(0, len(code), step)):
        messages.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{n}", "name": "Read", "input": {"path": f"src/file{n}.py"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": code[i:i + step]}]})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code, an interactive CLI tool. " * 300}],
            "tools": tools, "messages": messages}
    return json.dumps(body).encode()


def response_stream(words: int = 600) -> bytes:
    events: list[tuple[str, dict[str, Any]]]
    events = [("message_start", {"type": "message_start", "message": {"id": "msg_b", "type": "message",
                                                                      "role": "assistant", "content": []}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": f" word{n}"}}) for n in range(words)]
    events += [("message_stop", {"type": "message_stop"})]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


HEADERS = {"authorization": "Bearer sk-ant-oat01-" + "x" * 90, "content-type": "application/json",
           "user-agent": "claude-cli/2.1.197 (external, cli)", "anthropic-version": "2023-06-01",
           "anthropic-beta": "claude-code-20250219,oauth-2025-04-20", "x-app": "cli"}


def raw_capture(request: bytes, response: bytes) -> RawCapture:
    raw = RawCapture(DEFAULT_CAPTURE_MAX_BYTES, route="/v1/messages", request_headers=dict(HEADERS))
    raw.request.set(request)
    raw.response.add(response)
    raw.response_status, raw.streamed = 200, True
    raw.response_headers = {"content-type": "text/event-stream", "request-id": "req_011CV"}
    return raw


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} (range {min(values):.1f}–{max(values):.1f})"


async def db_bytes_per_call(request: bytes, response: bytes, calls: int, capture: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aigw.db"
        db = await open_database(path)
        _, token = await UserStore(db).create_user("alice")
        who = await UserStore(db).authenticate(token)
        assert who is not None
        await db.close()
        base = _checkpointed_size(path)
        db = await open_database(path)
        writer = RecordWriter(db, flush_interval=0.005)
        writer.start()
        builder = CaptureBuilder(Redactor())
        now = datetime.now(UTC)
        for n in range(calls):
            iid = str(uuid.uuid4())
            writer.submit(InterceptionStarted(iid, Initiator(who.user_id, "alice", who.token_id), "anthropic",
                                              "anthropic", "claude-sonnet-4-5", "Claude Code", "s1", now, {},
                                              prompt="refactor the HTTP client for retries"))
            writer.submit(InterceptionEnded(iid, now, "completed", 200, prompt_response_id=f"msg_{n}",
                                            token_usages=[TokenUsage(f"msg_{n}", 1200, 300)]))
            if capture:
                writer.submit(CaptureRecord(iid, now, raw=raw_capture(request, response), builder=builder))
        await writer.flush(120)
        await writer.close()
        await db.close()
        return (_checkpointed_size(path) - base) / calls


def _checkpointed_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    response = response_stream()
    builder = CaptureBuilder(Redactor())
    for label, history in (("first turn", 8 * 1024), ("long session", 240 * 1024), ("past the bound", 1400 * 1024)):
        request = request_body(history)
        times = []
        for _ in range(args.repeat):
            raw = raw_capture(request, response)
            began = time.perf_counter()
            sealed = builder.seal(raw)
            times.append((time.perf_counter() - began) * 1000)
        stored = len(sealed.request.data) + len(sealed.response.data)
        with_capture = asyncio.run(db_bytes_per_call(request, response, args.calls, True))
        without = asyncio.run(db_bytes_per_call(request, response, args.calls, False))
        print(f"{label}: request {len(request) / 1024:.0f} KiB{' (cut at 1 MiB)' if sealed.request.truncated else ''}"
              f", response {len(response) / 1024:.0f} KiB; sealed {stored / 1024:.1f} KiB compressed; "
              f"seal ms {_spread(times)}; database +{(with_capture - without) / 1024:.1f} KiB per call "
              f"(with {with_capture / 1024:.1f}, without {without / 1024:.1f} KiB, {args.calls} calls)")


if __name__ == "__main__":
    main()
