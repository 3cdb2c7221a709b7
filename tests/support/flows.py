"""mitmproxy test flows for the in-process addon tests (tests/addons/): a CONNECT, a model call on a provider
host with its identity attached, and an Anthropic SSE stream to answer it with."""

from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from aigw_proxy.addons.auth import INITIATOR
from aigw_proxy.addons.routing import PROVIDER
from aigw_proxy.policy.providers import builtin_providers
from aigw_proxy.recording.records import Initiator


def connect(host: str, port: int = 443) -> http.HTTPFlow:
    return tflow.tflow(req=tutils.treq(method=b"CONNECT", host=host, port=port, path=b"",
                                       authority=f"{host}:{port}".encode()))


ANTHROPIC = next(p for p in builtin_providers() if p.name == "anthropic")
ALICE = Initiator("u1", "alice", "tok1")
MODEL = "claude-sonnet-4-5"


def model_call(path: str = "/v1/messages?beta=true") -> http.HTTPFlow:
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi there"}]}).encode()
    flow = tflow.tflow(req=tutils.treq(method=b"POST", host="api.anthropic.com", port=443, path=path.encode(),
                                       content=body))
    flow.request.headers["user-agent"] = "claude-cli/2.1.197 (external, sdk-cli)"
    flow.metadata[PROVIDER] = ANTHROPIC
    flow.metadata[INITIATOR] = ALICE
    return flow


def sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = [
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "model": MODEL, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": "hello"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"output_tokens": 4}}),
    sse("message_stop", {"type": "message_stop"}),
]
