"""What aigw's own per-event work costs, without a proxy around it: the Interceptor's tee and the stream parsers.

    .venv/bin/python bench/tee_bench.py [--calls N] [--events N] [--reps N]

Each call is a real Interceptor on a mitmproxy test flow: requestheaders, request, responseheaders, then every
SSE event handed to the tee as its own chunk (as the proxy does when events arrive one by one), each followed by
one event-loop turn (the tee parses a loop turn later), then response (which records the end). Prints µs per
event (median [min-max] of --reps) for an Anthropic stream (compact JSON as the API sends it, and spaced), an
OpenAI Chat stream and a Responses stream, and the loop's own cost per turn measured the same way without a tee,
so the figures are what aigw adds per event. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.intercept import Interceptor
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.policy.providers import builtin_providers
from aigw_proxy.recording.records import Initiator, RecordEvent
from bench.proxy.workload import request_body, sse_events

ALICE = Initiator("u1", "alice", "tok1")
PROVIDERS = {p.name: p for p in builtin_providers()}


def _sse(name: str | None, data: object, compact: bool = True) -> bytes:
    sep = (",", ":") if compact else (", ", ": ")
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=sep)}\n\n".encode()


def anthropic(n: int, compact: bool) -> list[bytes]:
    out = []
    for e in sse_events(n - 5):  # the benchmark's stream, compact or re-spaced
        name, data = e.decode().split("\n")[:2]
        out.append(_sse(name.removeprefix("event: "), json.loads(data.removeprefix("data: ")), compact))
    return out


def openai_chat(n: int) -> list[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5",
            "system_fingerprint": "fp_1"}
    out = [_sse(None, base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                           "finish_reason": None}]})]
    out += [_sse(None, base | {"choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]})
            for i in range(n - 3)]
    out.append(_sse(None, base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}}))
    out.append(b"data: [DONE]\n\n")
    return out


def openai_responses(n: int) -> list[bytes]:
    resp = {"id": "resp_1", "object": "response", "model": "gpt-5", "status": "in_progress", "output": []}
    out = [_sse("response.created", {"type": "response.created", "sequence_number": 0, "response": resp})]
    out += [_sse("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": i + 1,
                                                "item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                "delta": f" word{i}", "logprobs": []}) for i in range(n - 2)]
    done = resp | {"status": "completed", "usage": {"input_tokens": 10, "output_tokens": n, "total_tokens": n + 10,
                                                    "input_tokens_details": {"cached_tokens": 0},
                                                    "output_tokens_details": {"reasoning_tokens": 0}}}
    out.append(_sse("response.completed", {"type": "response.completed", "sequence_number": n, "response": done}))
    return out


CASES: dict[str, tuple[str, str, Callable[[int], list[bytes]]]] = {
    "anthropic (compact JSON)": ("anthropic", "/v1/messages", lambda n: anthropic(n, True)),
    "anthropic (spaced JSON)": ("anthropic", "/v1/messages", lambda n: anthropic(n, False)),
    "openai chat": ("openai", "/v1/chat/completions", openai_chat),
    "openai responses": ("openai", "/v1/responses", openai_responses),
}


def flow_for(provider: str, path: str) -> http.HTTPFlow:
    host = next(iter(PROVIDERS[provider].hosts))
    f = tflow.tflow(req=tutils.treq(method=b"POST", host=host, port=443, path=path.encode(),
                                    content=request_body(True)))
    f.request.headers["user-agent"] = "claude-cli/2.1.197 (external, sdk-cli)"
    f.metadata[PROVIDER] = PROVIDERS[provider]
    f.metadata[INITIATOR] = ALICE
    return f


async def one_call(addon: Interceptor | None, provider: str, path: str, events: list[bytes]) -> None:
    f = flow_for(provider, path)
    if addon is not None:
        addon.requestheaders(f)
        addon.request(f)
    await asyncio.sleep(0)
    f.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=b"")
    if addon is not None:
        addon.responseheaders(f)
    tee = f.response.stream
    for chunk in events:
        if callable(tee):
            tee(chunk)
        await asyncio.sleep(0)  # the relay's loop turn: the tee's parse runs in it
    if addon is not None:
        addon.response(f)


async def measure(case: str, calls: int, n: int, with_tee: bool) -> float:
    provider, path, make = CASES[case]
    events = make(n)
    records: list[RecordEvent] = []
    addon = Interceptor(records.append) if with_tee else None
    await one_call(addon, provider, path, events)  # warm-up
    gc.collect()
    t0 = time.process_time()
    for _ in range(calls):
        await one_call(addon, provider, path, events)
        records.clear()
    return (time.process_time() - t0) / (calls * len(events))


async def main_async(args: argparse.Namespace) -> None:
    with taddons.context():
        print(f"aigw per-event cost outside the proxy: {args.calls} calls x {args.events} events, "
              f"{args.reps} reps, median [min-max] (us per event, CPU)")
        base = [await measure("anthropic (compact JSON)", args.calls, args.events, False) for _ in range(args.reps)]
        b = statistics.median(base)
        print(f"  {'loop turn + flow, no tee (subtracted below)':44}{1e6 * b:7.1f} "
              f"[{1e6 * min(base):.1f}-{1e6 * max(base):.1f}]")
        for case in CASES:
            v = [await measure(case, args.calls, args.events, True) - b for _ in range(args.reps)]
            print(f"  {case:44}{1e6 * statistics.median(v):7.1f} [{1e6 * min(v):.1f}-{1e6 * max(v):.1f}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
