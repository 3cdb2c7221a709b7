"""A stand-in for everything the real coding agents call (Claude Code, Codex, Gemini CLI, Copilot CLI, OpenCode):
one TLS server on 127.0.0.1 with a certificate for every host they use, answering by path.

- Model APIs: Anthropic Messages (SSE or JSON; `count_tokens`), OpenAI Responses over HTTP/SSE and over WebSocket
  (api.openai.com `/v1/responses`, chatgpt.com `/backend-api/codex/responses`, Copilot `/responses`), Chat
  Completions, Gemini `generateContent` / `streamGenerateContent` (SSE or a JSON array) / `countTokens`.
- What the agents call besides: Claude Code's settings and policy endpoints, ChatGPT's account check, Copilot's
  GitHub user/token endpoints and model list, anything else with an empty JSON answer (recorded as `other`).

Tests script the model's side as a sequence of `Turn`s (tool calls, thinking, text) per API family; each model
call takes the next turn its script allows, or a plain final answer when none is scripted. Every request is kept
in `requests`; every model call in `ledger` with what was answered (response id, usage, tool call ids), so a test
can compare the proxy's records with what really went over the wire.

WebSocket upgrades are piped to an in-process `websockets` server on loopback (plain TCP: TLS ends here), which
speaks the Responses WebSocket protocol. Runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli
import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem
from tests.support.standin import read_body

# Every host the agents were seen to call, provider or not: the certificate names them all.
HOSTS = [
    "api.anthropic.com",
    "api.openai.com",
    "chatgpt.com",
    "api.githubcopilot.com",
    "api.individual.githubcopilot.com",
    "api.business.githubcopilot.com",
    "api.enterprise.githubcopilot.com",
    "generativelanguage.googleapis.com",
    "api.github.com",
    "localhost",
]


# --- what the model says -------------------------------------------------------------------------------------


@dataclass
class Usage:
    """Token figures as the proxy records them: `input` is uncached input, `output` includes reasoning."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass
class ToolUse:
    name: str
    input: dict | str  # a dict for function tools, text for custom (freeform) tools
    id: str | None = None  # set when answered; None in a Gemini turn = send the call without an id


@dataclass
class Turn:
    """One model response: optional thinking, tool calls, and text."""

    text: str = ""
    tools: list[ToolUse] = field(default_factory=list)
    thinking: str = ""
    usage: Usage | None = None  # None: generated (distinct per call)
    gemini_ids: bool = True  # Gemini only: send `functionCall.id` (Gemini 3) or not (Gemini 2.x)


@dataclass
class Call:
    """One model call the stand-in answered: the ledger entry."""

    api: str  # anthropic | responses | gemini | chat
    transport: str  # http | websocket
    host: str
    path: str
    headers: dict[str, str]
    request: dict
    response_id: str
    model: str
    turn: Turn
    usage: Usage
    tool_ids: list[str]
    at: float


@dataclass
class Seen:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: bytes
    kind: str  # what the stand-in took it for: anthropic, responses, gemini, chat, count_tokens, ..., other
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


Predicate = Callable[[str, dict, dict[str, str]], bool]  # (api, request body, headers) -> takes this script


@dataclass
class Script:
    api: str | None
    turns: list[Turn]
    when: Predicate | None


# --- the server ----------------------------------------------------------------------------------------------


class AgentStandIn:
    def __init__(self, directory: Path, *, sse_tail_delay: float = 0.03) -> None:
        ca_cert, ca_key = make_ca("Agent Stand-in CA")
        cert, key = make_server_cert(ca_cert, ca_key, HOSTS)
        self.ca_file = write_pem(directory / "standin-ca.pem", ca_cert)
        self.ssl_context = server_ssl_context(cert, key)
        # The real APIs end an SSE body some milliseconds after its last event; clients stop reading at the
        # terminal event. Reproduce that gap.
        self.sse_tail_delay = sse_tail_delay
        self.requests: list[Seen] = []
        self.ledger: list[Call] = []
        self.scripts: list[Script] = []
        self.port = 0
        self._ws_port = 0
        self._n = itertools.count(1)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._ws_server: Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> AgentStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._ws_server = await serve(self._serve_ws, "127.0.0.1", 0, max_size=None)
        self._ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _close() -> None:
            for s in (self._server, self._ws_server):
                if s is not None:
                    s.close()
        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.ledger.clear()
            self.scripts.clear()

    def script(self, *turns: Turn, api: str | None = None, when: Predicate | None = None) -> None:
        """Queue turns for model calls of `api` (any when None) that `when` accepts; unscripted calls get a plain
        answer."""
        with self._lock:
            self.scripts.append(Script(api, list(turns), when))

    def calls(self, api: str | None = None) -> list[Call]:
        return [c for c in self.ledger if api is None or c.api == api]

    # -- picking and recording an answer -----------------------------------------------------------------------
    def _answer(self, api: str, transport: str, host: str, path: str, headers: dict[str, str], req: dict,
                model: str) -> Call:
        with self._lock:
            turn = None
            for s in self.scripts:
                if s.turns and (s.api is None or s.api == api) and (s.when is None or s.when(api, req, headers)):
                    turn = s.turns.pop(0)
                    break
            n = next(self._n)
            turn = turn or Turn(text=_default_text(api, req, n))
            usage = turn.usage or Usage(input=100 + 11 * n, output=10 + 3 * n, cache_read=40 * n,
                                        cache_write=(5 * n if api == "anthropic" else 0),
                                        reasoning=(2 * n if turn.thinking and api != "anthropic" else 0))
            ids = []
            for t in turn.tools:
                if api == "gemini" and not turn.gemini_ids:
                    ids.append("")
                else:
                    ids.append(t.id or _tool_id(api, n, len(ids)))
            rid = _response_id(api, n)
            call = Call(api, transport, host, path, headers, req, rid, model, turn, usage, ids, time.monotonic())
            self.ledger.append(call)
            return call

    # -- HTTP --------------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        k = k.strip().lower()
                        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
                if headers.get("upgrade", "").lower() == "websocket":
                    await self._pipe_ws(head, reader, writer)
                    return
                body = await read_body(reader, headers)
                if not await self._respond(writer, method, target, headers, body):
                    return
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _respond(self, w: asyncio.StreamWriter, method: str, target: str, headers: dict[str, str],
                       raw: bytes) -> bool:
        host = headers.get("host", "").split(":")[0]
        path, _, query = target.partition("?")
        body = _decode_body(raw, headers.get("content-encoding"))
        kind, handler = self._route(method, host, path)
        with self._lock:
            self.requests.append(Seen(method, host, target, headers, body, kind, time.monotonic()))
        req: dict = {}
        if body:
            try:
                parsed = json.loads(body)
                req = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                req = {}
        return await handler(w, host, path, query, headers, req)

    def _route(self, method: str, host: str, path: str) -> tuple[str, Callable[..., Any]]:
        if method == "POST":
            if path.endswith("/messages/count_tokens"):
                return "count_tokens", self._count_tokens
            if path.endswith("/messages"):
                return "anthropic", self._anthropic
            if path.endswith("/responses"):
                return "responses", self._responses_http
            if path.endswith("/chat/completions"):
                return "chat", self._chat
            if ":streamGenerateContent" in path or ":generateContent" in path:
                return "gemini", self._gemini
            if ":countTokens" in path:
                return "gemini_count_tokens", self._gemini_count
        if method == "GET":
            if path.startswith("/api/claude_code/") or path.startswith("/api/oauth/"):
                return "claude_settings", self._claude_settings
            if path.endswith("/wham/accounts/check"):
                return "accounts_check", self._accounts_check
            if host == "api.github.com" or path.startswith("/copilot_internal"):
                return "github", self._github
            if path.rstrip("/").endswith("/models"):
                return "models", self._models
        return "other", self._other

    # -- non-model endpoints -----------------------------------------------------------------------------------
    async def _count_tokens(self, w: asyncio.StreamWriter, *_: Any) -> bool:
        return await _send_json(w, {"input_tokens": 1234})

    async def _gemini_count(self, w: asyncio.StreamWriter, *_: Any) -> bool:
        return await _send_json(w, {"totalTokens": 1234, "promptTokensDetails": [{"modality": "TEXT",
                                                                                  "tokenCount": 1234}]})

    async def _claude_settings(self, w: asyncio.StreamWriter, host: str, path: str, *_: Any) -> bool:
        # Claude Code reads organisation policy and remote settings: "nothing configured".
        if path.endswith("/policy_limits"):
            return await _send_json(w, {"restrictions": {}})
        return await _send_json(w, {})

    async def _accounts_check(self, w: asyncio.StreamWriter, *_: Any) -> bool:
        # What a ChatGPT-plan Codex needs before its first model call.
        account = {"id": "acct-standin-0001", "name": "Stand-in", "structure": "personal", "plan_type": "plus",
                   "workspace_backend_origin": "https://chatgpt.com", "account_routing_override": "NO_CONSTRAINT",
                   "is_deactivated": False}
        return await _send_json(w, {"accounts": [account]})

    async def _github(self, w: asyncio.StreamWriter, host: str, path: str, *_: Any) -> bool:
        if path == "/user":
            return await _send_json(w, {"login": "standin-user", "id": 4242, "type": "User", "name": "Stand In"})
        if path.startswith("/copilot_internal/v2/token"):
            return await _send_json(w, {
                "token": "tid=standin;exp=4102444800;sku=copilot_for_individual;8kp=1:" + "0" * 64,
                "expires_at": 4102444800, "refresh_in": 1500,
                "endpoints": {"api": "https://api.individual.githubcopilot.com"}})
        if path.startswith("/copilot_internal/user"):
            return await _send_json(w, {
                "login": "standin-user", "access_type_sku": "free_limited_copilot", "copilot_plan": "individual",
                "chat_enabled": True, "analytics_tracking_id": "standin",
                "endpoints": {"api": "https://api.individual.githubcopilot.com",
                              "proxy": "https://proxy.individual.githubcopilot.com",
                              "telemetry": "https://telemetry.individual.githubcopilot.com"},
                "quota_snapshots": {}})
        return await _send_json(w, {})

    async def _models(self, w: asyncio.StreamWriter, host: str, path: str, *_: Any) -> bool:
        if path.startswith("/backend-api/codex/"):  # Codex's model catalogue refresh: keep its built-in list
            return await _send_json(w, {"models": []})
        return await _send_json(w, {"object": "list", "data": [_copilot_model(m, v) for m, v in COPILOT_MODELS]})

    async def _other(self, w: asyncio.StreamWriter, host: str, path: str, *_: Any) -> bool:
        if "/mcp" in path:  # hosted MCP servers (GitHub's, ChatGPT's): not offered here
            return await _send_json(w, {"error": "not found"}, status=404)
        return await _send_json(w, {})

    # -- model endpoints ---------------------------------------------------------------------------------------
    async def _anthropic(self, w: asyncio.StreamWriter, host: str, path: str, query: str, headers: dict[str, str],
                         req: dict) -> bool:
        model = str(req.get("model") or "claude-sonnet-4-5")
        call = self._answer("anthropic", "http", host, path, headers, req, model)
        if req.get("stream"):
            return await _send_sse(w, anthropic_events(call), self.sse_tail_delay)
        return await _send_json(w, anthropic_message(call))

    async def _responses_http(self, w: asyncio.StreamWriter, host: str, path: str, query: str,
                              headers: dict[str, str], req: dict) -> bool:
        model = str(req.get("model") or "gpt-5.1-codex")
        call = self._answer("responses", "http", host, path, headers, req, model)
        events = responses_events(call)
        if req.get("stream"):
            return await _send_sse(w, [(e["type"], e) for e in events], self.sse_tail_delay)
        return await _send_json(w, events[-1]["response"])

    async def _chat(self, w: asyncio.StreamWriter, host: str, path: str, query: str, headers: dict[str, str],
                    req: dict) -> bool:
        model = str(req.get("model") or "gpt-4.1")
        call = self._answer("chat", "http", host, path, headers, req, model)
        if req.get("stream"):
            return await _send_sse(w, [(None, c) for c in chat_chunks(call)] + [(None, "[DONE]")],
                                   self.sse_tail_delay)
        return await _send_json(w, chat_completion(call))

    async def _gemini(self, w: asyncio.StreamWriter, host: str, path: str, query: str, headers: dict[str, str],
                      req: dict) -> bool:
        m = re.search(r"/models/([^/:]+):", path)
        model = m.group(1) if m else "gemini-2.5-pro"
        call = self._answer("gemini", "http", host, path, headers, req, model)
        chunks = gemini_chunks(call)
        if ":streamGenerateContent" not in path:
            whole = gemini_whole(call)
            return await _send_json(w, whole)
        if "alt=sse" in query:
            return await _send_sse(w, [(None, c) for c in chunks], self.sse_tail_delay)
        parts = [("[" if i == 0 else ",\r\n").encode() + json.dumps(c).encode() for i, c in enumerate(chunks)]
        return await _send_chunks(w, 200, "application/json; charset=UTF-8", [*parts, b"]"], 0.0)

    # -- WebSocket ---------------------------------------------------------------------------------------------
    async def _pipe_ws(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self._ws_port)
        up_w.write(head)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                try:
                    dst.close()
                except (ConnectionError, ssl.SSLError, RuntimeError):
                    pass

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    async def _serve_ws(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        host = headers.get("host", "").split(":")[0]
        path = ws.request.path.split("?")[0]
        with self._lock:
            self.requests.append(Seen("GET", host, ws.request.path, headers, b"", "responses_ws", time.monotonic()))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "response.create":
                    continue
                lane = {"stream_id": msg["stream_id"]} if "stream_id" in msg else {}
                if msg.get("generate") is False:  # a warm-up: an empty response, no output, no usage
                    rid = f"resp_warm_{uuid.uuid4().hex[:12]}"
                    resp = _responses_object(rid, str(msg.get("model") or "gpt-5.1-codex"), [], None)
                    for ev in ({"type": "response.created", "response": dict(resp, status="in_progress")},
                               {"type": "response.completed", "response": resp}):
                        await ws.send(json.dumps({**ev, **lane}))
                    continue
                model = str(msg.get("model") or "gpt-5.1-codex")
                call = self._answer("responses", "websocket", host, path, headers, msg, model)
                for ev in responses_events(call):
                    await ws.send(json.dumps({**ev, **lane}))
        except ConnectionClosed:
            return


# --- wire formats --------------------------------------------------------------------------------------------

COPILOT_MODELS = [("gpt-5-mini", "openai"), ("gpt-5.4-mini", "openai"), ("claude-sonnet-4.5", "anthropic")]


def _copilot_model(mid: str, vendor: str) -> dict:
    endpoints = {"gpt-5-mini": ["/responses", "/chat/completions"], "gpt-5.4-mini": ["/chat/completions"]}.get(
        mid, ["/v1/messages", "/chat/completions"])
    return {
        "id": mid, "name": mid, "object": "model", "vendor": vendor.title(), "version": mid, "preview": False,
        "model_picker_enabled": True, "is_chat_default": mid == "gpt-5-mini", "is_chat_fallback": mid == "gpt-5-mini",
        "policy": {"state": "enabled", "terms": ""}, "supported_endpoints": endpoints,
        "billing": {"is_premium": False, "multiplier": 0},
        "capabilities": {"family": mid, "type": "chat", "object": "model_capabilities", "tokenizer": "o200k_base",
                         "limits": {"max_context_window_tokens": 200000, "max_output_tokens": 64000,
                                    "max_prompt_tokens": 128000},
                         "supports": {"streaming": True, "tool_calls": True, "parallel_tool_calls": True,
                                      "structured_outputs": True, "vision": False}},
    }


def _default_text(api: str, req: dict, n: int) -> str:
    """An unscripted call's answer: JSON matching the schema when the request asks for one (Gemini CLI's model
    router does), else a plain sentence."""
    config = req.get("generationConfig") if api == "gemini" else None
    if isinstance(config, dict) and config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        return json.dumps(_schema_value(schema))
    return f"Done ({n})."


def _schema_value(schema: Any) -> Any:
    """A small value that satisfies a JSON schema (OpenAPI-style upper-case types too)."""
    if not isinstance(schema, dict):
        return "standin"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _schema_value(v) for k, v in props.items()}
    if kind == "array":
        return [_schema_value(schema.get("items"))]
    if kind == "integer":
        return max(int(schema.get("minimum", 10)), 10) if "maximum" not in schema else int(schema["maximum"]) // 2
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return False
    return "standin"


def _tool_id(api: str, n: int, i: int) -> str:
    if api == "anthropic":
        return f"toolu_standin{n:03d}{i}"
    if api == "gemini":
        return f"fc-standin-{n:03d}-{i}"
    return f"call_standin{n:03d}{i}"


def _response_id(api: str, n: int) -> str:
    return {"anthropic": f"msg_standin{n:04d}", "responses": f"resp_standin{n:04d}",
            "chat": f"chatcmpl-standin{n:04d}"}.get(api, f"gemini-standin-{n:04d}")


def _tool_text(t: ToolUse) -> str:
    return t.input if isinstance(t.input, str) else json.dumps(t.input)


def anthropic_usage_body(u: Usage) -> dict:
    # What a provider sends when no server tools ran and the cache-creation split is not reported: no
    # `server_tool_use`, no `cache_creation`.
    return {"input_tokens": u.input, "output_tokens": u.output, "cache_read_input_tokens": u.cache_read,
            "cache_creation_input_tokens": u.cache_write, "service_tier": "standard"}


def _anthropic_blocks(call: Call) -> list[dict]:
    t = call.turn
    blocks: list[dict] = []
    if t.thinking:
        blocks.append({"type": "thinking", "thinking": t.thinking, "signature": "c3RhbmRpbg=="})
    if t.text:
        blocks.append({"type": "text", "text": t.text})
    for tool, tid in zip(t.tools, call.tool_ids, strict=True):
        blocks.append({"type": "tool_use", "id": tid, "name": tool.name, "input": tool.input})
    return blocks


def anthropic_message(call: Call) -> dict:
    return {"id": call.response_id, "type": "message", "role": "assistant", "model": call.model,
            "content": _anthropic_blocks(call), "stop_reason": "tool_use" if call.turn.tools else "end_turn",
            "stop_sequence": None, "usage": anthropic_usage_body(call.usage)}


def anthropic_events(call: Call) -> list[tuple[str | None, object]]:
    start = anthropic_message(call)
    start.update(content=[], stop_reason=None, usage=dict(anthropic_usage_body(call.usage), output_tokens=1))
    events: list[tuple[str | None, object]] = [("message_start", {"type": "message_start", "message": start})]
    for i, b in enumerate(_anthropic_blocks(call)):
        if b["type"] == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "thinking", "thinking": "",
                                                                     "signature": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "thinking_delta", "thinking": b["thinking"]}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "signature_delta",
                                                             "signature": b["signature"]}}))
        elif b["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": b["text"]}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "tool_use", "id": b["id"],
                                                                     "name": b["name"], "input": {}}}))
            raw = json.dumps(b["input"])
            for k in range(0, len(raw), 16):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": raw[k:k + 16]}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "tool_use" if call.turn.tools else "end_turn",
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": call.usage.output}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _responses_object(rid: str, model: str, output: list[dict], usage: Usage | None,
                      status: str = "completed") -> dict:
    body: dict = {"id": rid, "object": "response", "created_at": int(time.time()), "status": status,
                  "model": model, "output": output, "error": None, "incomplete_details": None,
                  "parallel_tool_calls": False, "tool_choice": "auto", "tools": [], "usage": None}
    if usage is not None:
        body["usage"] = {"input_tokens": usage.input + usage.cache_read,
                         "input_tokens_details": {"cached_tokens": usage.cache_read},
                         "output_tokens": usage.output,
                         "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                         "total_tokens": usage.input + usage.cache_read + usage.output}
    return body


def responses_output(call: Call) -> list[dict]:
    t, n = call.turn, call.response_id.removeprefix("resp_")
    out: list[dict] = []
    if t.thinking:
        out.append({"type": "reasoning", "id": f"rs_{n}", "summary": [{"type": "summary_text", "text": t.thinking}]})
    for i, (tool, tid) in enumerate(zip(t.tools, call.tool_ids, strict=True)):
        if isinstance(tool.input, str):
            out.append({"type": "custom_tool_call", "id": f"ctc_{n}_{i}", "call_id": tid, "name": tool.name,
                        "input": tool.input, "status": "completed"})
        else:
            out.append({"type": "function_call", "id": f"fc_{n}_{i}", "call_id": tid, "name": tool.name,
                        "arguments": json.dumps(tool.input), "status": "completed"})
    if t.text or not out:
        out.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": t.text, "annotations": []}]})
    return out


def responses_events(call: Call) -> list[dict]:
    """response.created … output items … response.completed, as the Responses API streams them."""
    output = responses_output(call)
    final = _responses_object(call.response_id, call.model, output, call.usage)
    shell = dict(final, status="in_progress", output=[], usage=None)
    events: list[dict] = [{"type": "response.created", "response": shell},
                          {"type": "response.in_progress", "response": shell}]
    for i, item in enumerate(output):
        added = dict(item, status="in_progress")
        if item["type"] == "function_call":
            added["arguments"] = ""
        if item["type"] == "custom_tool_call":
            added["input"] = ""
        if item["type"] == "message":
            added["content"] = []
        if item["type"] == "reasoning":
            added["summary"] = []
        events.append({"type": "response.output_item.added", "output_index": i, "item": added})
        if item["type"] == "function_call":
            events.append({"type": "response.function_call_arguments.delta", "output_index": i,
                           "item_id": item["id"], "delta": item["arguments"]})
            events.append({"type": "response.function_call_arguments.done", "output_index": i,
                           "item_id": item["id"], "arguments": item["arguments"]})
        elif item["type"] == "custom_tool_call":
            events.append({"type": "response.custom_tool_call_input.delta", "output_index": i,
                           "item_id": item["id"], "delta": item["input"]})
            events.append({"type": "response.custom_tool_call_input.done", "output_index": i,
                           "item_id": item["id"], "input": item["input"]})
        elif item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append({"type": "response.content_part.added", "output_index": i, "item_id": item["id"],
                           "content_index": 0, "part": part})
            txt = item["content"][0]["text"]
            events.append({"type": "response.output_text.delta", "output_index": i, "item_id": item["id"],
                           "content_index": 0, "delta": txt})
            events.append({"type": "response.output_text.done", "output_index": i, "item_id": item["id"],
                           "content_index": 0, "text": txt})
            events.append({"type": "response.content_part.done", "output_index": i, "item_id": item["id"],
                           "content_index": 0, "part": item["content"][0]})
        elif item["type"] == "reasoning":
            txt = item["summary"][0]["text"]
            events.append({"type": "response.reasoning_summary_part.added", "output_index": i,
                           "item_id": item["id"], "summary_index": 0, "part": {"type": "summary_text", "text": ""}})
            events.append({"type": "response.reasoning_summary_text.delta", "output_index": i,
                           "item_id": item["id"], "summary_index": 0, "delta": txt})
            events.append({"type": "response.reasoning_summary_text.done", "output_index": i,
                           "item_id": item["id"], "summary_index": 0, "text": txt})
            events.append({"type": "response.reasoning_summary_part.done", "output_index": i,
                           "item_id": item["id"], "summary_index": 0, "part": item["summary"][0]})
        events.append({"type": "response.output_item.done", "output_index": i, "item": item})
    events.append({"type": "response.completed", "response": final})
    for seq, ev in enumerate(events, 1):
        ev["sequence_number"] = seq
    return events


def _chat_usage(u: Usage) -> dict:
    return {"prompt_tokens": u.input + u.cache_read, "completion_tokens": u.output,
            "total_tokens": u.input + u.cache_read + u.output,
            "prompt_tokens_details": {"cached_tokens": u.cache_read},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning}}


def chat_chunks(call: Call) -> list[dict]:
    base = {"id": call.response_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": call.model}
    t = call.turn
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    if t.text:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": t.text}, "finish_reason": None}]})
    for i, (tool, tid) in enumerate(zip(t.tools, call.tool_ids, strict=True)):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": tid, "type": "function",
             "function": {"name": tool.name, "arguments": _tool_text(tool)}}]}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {},
                                        "finish_reason": "tool_calls" if t.tools else "stop"}],
                   "usage": _chat_usage(call.usage)})
    return chunks


def chat_completion(call: Call) -> dict:
    t = call.turn
    msg: dict = {"role": "assistant", "content": t.text or None}
    if t.tools:
        msg["tool_calls"] = [{"id": tid, "type": "function", "function": {"name": tool.name,
                                                                           "arguments": _tool_text(tool)}}
                             for tool, tid in zip(t.tools, call.tool_ids, strict=True)]
    return {"id": call.response_id, "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if t.tools else "stop"}],
            "usage": _chat_usage(call.usage)}


def gemini_usage_body(u: Usage) -> dict:
    prompt = u.input + u.cache_read
    body: dict = {"promptTokenCount": prompt, "candidatesTokenCount": u.output - u.reasoning,
                  "totalTokenCount": prompt + u.output}
    if u.cache_read:
        body["cachedContentTokenCount"] = u.cache_read
    if u.reasoning:
        body["thoughtsTokenCount"] = u.reasoning
    return body


def _gemini_parts(call: Call) -> list[dict]:
    t = call.turn
    parts: list[dict] = []
    if t.thinking:
        parts.append({"text": t.thinking, "thought": True})
    if t.text:
        parts.append({"text": t.text})
    for tool, tid in zip(t.tools, call.tool_ids, strict=True):
        fc: dict = {"name": tool.name, "args": tool.input if isinstance(tool.input, dict) else {}}
        if tid:
            fc["id"] = tid
        parts.append({"functionCall": fc})
    return parts


def gemini_whole(call: Call) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": _gemini_parts(call)}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": gemini_usage_body(call.usage), "modelVersion": call.model,
            "responseId": call.response_id}


def gemini_chunks(call: Call) -> list[dict]:
    """One chunk per part; prompt figures on the early chunks, the whole usage with the finishReason."""
    parts = _gemini_parts(call) or [{"text": ""}]
    early = {"promptTokenCount": call.usage.input + call.usage.cache_read,
             "totalTokenCount": call.usage.input + call.usage.cache_read}
    chunks = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        cand: dict = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if last:
            cand["finishReason"] = "STOP"
        chunks.append({"candidates": [cand], "usageMetadata": gemini_usage_body(call.usage) if last else early,
                       "modelVersion": call.model, "responseId": call.response_id})
    return chunks


# --- HTTP plumbing -------------------------------------------------------------------------------------------


def _decode_body(raw: bytes, encoding: str | None) -> bytes:
    if not raw or not encoding:
        return raw
    enc = encoding.strip().lower()
    try:
        if enc == "gzip":
            return gzip.decompress(raw)
        if enc == "br":
            return brotli.decompress(raw)
        if enc == "deflate":
            return zlib.decompress(raw)
        if enc == "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    except Exception:
        return raw
    return raw


async def _send_chunks(w: asyncio.StreamWriter, status: int, content_type: str, chunks: list[bytes],
                       tail_delay: float) -> bool:
    head = (f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            "Cache-Control: no-cache\r\n\r\n")
    w.write(head.encode())
    for c in chunks:
        w.write(f"{len(c):x}\r\n".encode() + c + b"\r\n")
        await w.drain()
    if tail_delay:
        await asyncio.sleep(tail_delay)
    w.write(b"0\r\n\r\n")
    await w.drain()
    return True


async def _send_sse(w: asyncio.StreamWriter, events: list[tuple[str | None, object]], tail_delay: float) -> bool:
    chunks = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        chunks.append((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())
    return await _send_chunks(w, 200, "text/event-stream", chunks, tail_delay)


async def _send_json(w: asyncio.StreamWriter, obj: object, status: int = 200) -> bool:
    body = json.dumps(obj).encode()
    w.write(f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body)
    await w.drain()
    return True


# --- "direct": the agents without the proxy ------------------------------------------------------------------


class DirectRelay:
    """An HTTP CONNECT relay that pipes every tunnel to the stand-in, untouched (TLS ends at the stand-in): the
    agents run as they would without aigw-proxy, with nothing but a TCP hop in between, so their wall time
    can be compared. CONNECTs to hosts the stand-in does not serve get 502, as an unresolvable host would."""

    def __init__(self, standin: AgentStandIn) -> None:
        self.standin = standin
        self.port = 0
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None

    def start(self) -> DirectRelay:
        async def go() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
        asyncio.run_coroutine_threadsafe(go(), self.standin._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.standin._loop.call_soon_threadsafe(self._server.close)

    @property
    def url(self) -> str:
        return f"http://direct:direct@127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            host = target.rsplit(":", 1)[0]
            if host not in HOSTS:
                self.refused.append(host)
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.standin.port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                except ConnectionError:
                    pass
                finally:
                    dst.close()

            await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
