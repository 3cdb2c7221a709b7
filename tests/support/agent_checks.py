"""What a user checks after running a real agent through aigw-proxy: every model call the stand-in answered is one
interception, recorded with the figures, tool calls, thoughts, thread links, session, client and credential that
really went over the wire — and the credential itself is nowhere in the database or the logs.

The stand-in's ledger (tests/support/agent_standin.py) is the truth: what each request carried and what was
answered. Nothing here reads the proxy's own parsers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.agent_standin import Call
from tests.support.daemon import Daemon


def sent_token_metadata(call: Call) -> dict[str, int]:
    """The extra token kinds the stand-in's answer carried, by the proxy's metadata names, with their values.
    A recorded kind outside this set is a figure the provider never sent."""
    u = call.usage
    if call.api == "anthropic":
        return {"cache_creation_input": u.cache_write, "cache_read_input": u.cache_read}
    if call.api == "responses":
        return {"input_cached": u.cache_read, "output_reasoning": u.reasoning,
                "total_tokens": u.input + u.cache_read + u.output}
    if call.api == "gemini":
        sent = {"total_tokens": u.input + u.cache_read + u.output}
        return {**sent, "output_reasoning": u.reasoning} if u.reasoning else sent
    return {"prompt_cached": u.cache_read, "completion_reasoning": u.reasoning}  # chat


@dataclass
class Expect:
    client: str
    provider: str  # provider type
    provider_name: str
    credential_kind: str
    secret: str
    session_id: str | None  # the client session id every call carries (None: the agent sends none)
    prompts: dict[str, str] = field(default_factory=dict)  # response id -> the prompt that call must record


def new_rows(daemon: Daemon, before: set[str], expect: int, timeout: float = 20.0) -> list[dict]:
    """Interceptions recorded since `before` (ids), waiting for the writer until `expect` of them have ended."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in daemon.interceptions() if r["id"] not in before]
        if len(rows) >= expect or time.monotonic() > deadline:
            return sorted(rows, key=lambda r: r["started_at"])
        time.sleep(0.1)


def row_ids(daemon: Daemon, timeout: float = 20.0) -> set[str]:
    """Ids of the interceptions recorded so far, taken once the daemon is idle: no request in flight, no record
    event queued, and the same ids and write count twice in a row. An agent exits as soon as its last stream ends,
    before the proxy has recorded that call; a snapshot taken then would count that call in the next test's
    window."""
    deadline = time.monotonic() + timeout
    last: tuple[set[str], int] | None = None
    while True:
        h = daemon.healthz()
        recorder = h.get("recorder") or {}
        ids = {r["id"] for r in daemon.interceptions()}
        idle = h.get("inflight_requests", 0) == 0 and recorder.get("queue_depth", 0) == 0
        now = (ids, int(recorder.get("written", 0)))
        if idle and now == last:
            return ids
        assert time.monotonic() < deadline, f"the daemon did not go idle within {timeout:.0f} s: {h}"
        last = now if idle else None
        time.sleep(0.2)


# --- what a request answers (read from the stand-in's copy of the request) ----------------------------------


def answered_tool_ids(call: Call) -> list[str]:
    """Tool call ids (or, for Gemini calls without ids, function names) whose results this request returns."""
    req = call.request
    if call.api == "anthropic":
        msgs = [m for m in req.get("messages", []) if m.get("role") != "system"]
        last = msgs[-1] if msgs else {}
        if last.get("role") != "user" or not isinstance(last.get("content"), list):
            return []
        return [b.get("tool_use_id", "") for b in last["content"] if b.get("type") == "tool_result"]
    if call.api == "responses":
        given = req.get("input")
        items = given if isinstance(given, list) else []
        out = []
        for item in reversed(items):
            kind = item.get("type", "message")
            if kind.endswith("_call_output"):
                out.append(item.get("call_id", ""))
            elif kind == "message" and item.get("role") in ("user", "assistant"):
                break
            elif kind.endswith("_call"):
                break
        return out
    if call.api == "gemini":
        contents = req.get("contents", [])
        last = contents[-1] if contents else {}
        return [p["functionResponse"].get("id") or p["functionResponse"].get("name", "")
                for p in last.get("parts", []) if "functionResponse" in p]
    if call.api == "chat":
        out = []
        for m in reversed(req.get("messages", [])):
            if m.get("role") != "tool":
                break
            out.append(m.get("tool_call_id", ""))
        return out
    return []


def expected_parent(call: Call, earlier: list[Call]) -> Call | None:
    """The earlier call whose tool call this request answers (Gemini without ids: by function name), else the
    one whose response id it continues (Responses `previous_response_id`)."""
    for tid in answered_tool_ids(call):
        for c in reversed(earlier):
            if tid in c.tool_ids or (call.api == "gemini" and any(
                    not cid and t.name == tid for t, cid in zip(c.turn.tools, c.tool_ids, strict=True))):
                return c
            if call.api == "gemini" and any(t.name == tid.rsplit("_", 2)[0] for t in c.turn.tools):
                return c  # Gemini CLI's invented `<name>_<ms>_<n>` id for a call the model sent without one
    prev = call.request.get("previous_response_id") if call.api == "responses" else None
    for c in reversed(earlier):
        if prev and c.response_id == prev:
            return c
    return None


# --- the checks --------------------------------------------------------------------------------------------


def check_calls(daemon: Daemon, calls: list[Call], rows: list[dict], expect: Expect) -> dict[str, dict]:
    """Every assertion per model call; returns the interception of each call by response id."""
    assert len(rows) == len(calls), (
        f"{len(calls)} model calls reached the stand-in but {len(rows)} interceptions were recorded:\n"
        + "\n".join(f"  ledger {c.api} {c.path} {c.response_id}" for c in calls)
        + "\n" + "\n".join(f"  row {r['model']} {r['metadata'].get('route')} "
                           f"{[t['provider_response_id'] for t in r['token_usages']]}" for r in rows))
    by_rid: dict[str, dict] = {}
    for c in calls:
        matching = [r for r in rows if c.response_id in [t["provider_response_id"] for t in r["token_usages"]]]
        assert len(matching) == 1, f"{c.response_id}: {len(matching)} interceptions carry it"
        by_rid[c.response_id] = matching[0]

    for i, c in enumerate(calls):
        r = by_rid[c.response_id]
        where = f"call {i} ({c.api} {c.path}, {c.response_id})"
        assert r["status"] == "completed", f"{where}: {r['status']} {r['error_message']}"
        assert r["upstream_status"] == (101 if c.transport == "websocket" else 200), where
        assert r["error_type"] is None and r["error_message"] is None, where
        assert r["client"] == expect.client, where
        assert r["provider"] == expect.provider and r["provider_name"] == expect.provider_name, where
        assert r["model"] == c.model, where
        assert r["metadata"]["transport"] == c.transport, where
        assert r["client_session_id"] == expect.session_id, where
        assert r["credential_kind"] == expect.credential_kind, where
        assert r["credential_hint"] == f"{expect.secret[:4]}...{expect.secret[-4:]}", where
        # Tokens: exactly what the stand-in answered, in one usage row.
        [u] = r["token_usages"]
        got = (u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_write_input_tokens"])
        want = (c.usage.input, c.usage.output, c.usage.cache_read, c.usage.cache_write)
        assert got == want, f"{where}: tokens {got} != answered {want}"
        # Extra token kinds: only those the answer carried (a figure never sent is never invented), as sent.
        sent, meta = sent_token_metadata(c), u["metadata"]
        assert {k: v for k, v in meta.items() if k not in sent} == {}, f"{where}: invented {meta}"
        assert {k: v for k, v in meta.items() if k in sent} == {k: sent[k] for k in meta if k in sent}, where
        # Tool calls with their input and call id.
        tools = [(t["tool"], _json_or_text(t["input"])) for t in r["tool_usages"]]
        assert tools == [(t.name, t.input) for t in c.turn.tools], where
        for t, cid in zip(r["tool_usages"], c.tool_ids, strict=True):
            if cid:
                assert t["provider_tool_call_id"] == cid, where
        # Thoughts.
        assert [t["content"] for t in r["model_thoughts"]] == ([c.turn.thinking] if c.turn.thinking else []), where

        # The prompt: the text typed, on the call that carried it; none on the calls that return tool results.
        prompts = [p["prompt"] for p in r["user_prompts"]]
        want_prompt = expect.prompts.get(c.response_id)
        assert prompts == ([want_prompt] if want_prompt is not None else []), f"{where}: prompt {prompts!r}"

    # Threads: a call answering a tool call continues the thread (and session) of the call that made it.
    for i, c in enumerate(calls):
        r = by_rid[c.response_id]
        parent = expected_parent(c, calls[:i])
        if parent is None:
            continue
        p = by_rid[parent.response_id]
        where = f"call {i} ({c.response_id}) answers {parent.response_id}"
        assert r["thread_parent_id"] == p["id"], where
        assert r["thread_root_id"] == (p["thread_root_id"] or p["id"]), where
        assert r["session_id"] == p["session_id"], where
    return by_rid


def _json_or_text(s: str) -> object:
    try:
        return json.loads(s)
    except ValueError:
        return s


def check_secret_absent(daemon: Daemon, secrets: Iterable[str]) -> None:
    """No credential in the database (main file, -wal and -shm) or the daemon's log."""
    files = [daemon.data_dir / f"aigw-proxy.db{suffix}" for suffix in ("", "-wal", "-shm")]
    blobs = {str(f): f.read_bytes() for f in files if f.exists()}
    blobs[str(daemon.log_path)] = daemon.log_path.read_bytes()
    assert str(files[0]) in blobs
    for secret in secrets:
        for name, blob in blobs.items():
            assert secret.encode() not in blob, f"the credential {secret[:6]}… is in {name}"


def check_stayed_local(daemon: Daemon) -> None:
    """No tunnel was opened: every host the agents called was a provider host (answered by the stand-in), and any
    other (telemetry, update checks) was switched off or refused, never relayed to the internet."""
    for line in read_metrics(daemon).splitlines():
        if line.startswith('coder_ai_gateway_proxy_connect_sessions_total{type="tunneled"}'):
            assert float(line.rsplit(" ", 1)[1]) == 0, line


def sums(rows: Iterable[dict]) -> dict[str, int]:
    """The proxy's token totals over some interceptions."""
    out = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0, "reasoning": 0}
    for r in rows:
        for u in r["token_usages"]:
            out["input"] += u["input_tokens"]
            out["output"] += u["output_tokens"]
            out["cache_read"] += u["cache_read_input_tokens"]
            out["cache_write"] += u["cache_write_input_tokens"]
            out["reasoning"] += int(u["metadata"].get("output_reasoning") or 0)
    return out


def passthrough_routes(metrics_text: str) -> list[str]:
    """`provider method route` of every passthrough counter in a /metrics page."""
    out = []
    for line in metrics_text.splitlines():
        if line.startswith("coder_ai_gateway_passthrough_total{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.index("}")].split(","))
            out.append(" ".join(labels[k].strip('"') for k in ("provider", "method", "route")))
    return out


def read_metrics(daemon: Daemon) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.admin_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def db_path(daemon: Daemon) -> Path:
    return daemon.data_dir / "aigw-proxy.db"
