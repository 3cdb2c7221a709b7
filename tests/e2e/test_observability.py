"""`aigw-proxy run --structured-logging --log-format json --trace --trace-logs` with real SDK traffic: every stderr
line is JSON, each record type is logged with exactly its fields, spans reach an OTLP/HTTP endpoint with the
right names and nesting, and no credential appears in the logs, the database or the exported spans."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.daemon import AIGW, Daemon, UpstreamPKI, free_port, provider_config, stop_daemon
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage, chat_completion, chat_usage
from tests.support.standin import Reply, StandIn

ANTHROPIC_KEY = "sk-ant-api03-" + "Obs" * 30
OPENAI_KEY = "sk-proj-" + "Xy7" * 20
MODEL = "claude-sonnet-4-5-20250929"
LINE_KEYS = {"time", "level", "logger", "message", "record_type", "trace_id", "span_id"}
FIELDS = {
    "interception_start": {"interception_id", "initiator_id", "api_key_id", "provider", "provider_name", "model",
                           "client", "client_session_id", "started_at", "metadata", "correlating_tool_call_id",
                           "thread_parent_id", "thread_root_id"},
    "interception_end": {"interception_id", "ended_at", "status", "upstream_status", "error_type", "error_message"},
    "token_usage": {"interception_id", "msg_id", "input_tokens", "output_tokens", "cache_read_input_tokens",
                    "cache_write_input_tokens", "created_at", "metadata",
                    # ours: the row's stored price
                    "input_price_micros", "output_price_micros", "cache_read_price_micros",
                    "cache_write_price_micros", "other_price_micros", "cost_micros", "cost_usd", "priced",
                    "price_source", "price_version", "api_equivalent", "effective_group_id"},
    "prompt_usage": {"interception_id", "msg_id", "prompt", "created_at", "metadata"},
    "tool_usage": {"interception_id", "msg_id", "tool_call_id", "item_id", "tool", "input", "server_url", "injected",
                   "invocation_error", "created_at", "metadata"},
    "model_thought": {"interception_id", "content", "created_at", "metadata"},
}
SPAN_OF = {
    "interception_start": "Intercept.RecordInterception", "prompt_usage": "Intercept.RecordPromptUsage",
    "token_usage": "Intercept.RecordTokenUsage", "tool_usage": "Intercept.RecordToolUsage",
    "model_thought": "Intercept.RecordModelThought", "interception_end": "Intercept.RecordInterceptionEnded",
}
REQUEST_SPANS = ["Intercept", "Intercept.CreateInterceptor", "Intercept.ProcessRequest",
                 "Intercept.ProcessRequest.Upstream"]


class OTLPReceiver:
    """A minimal OTLP/HTTP trace endpoint on 127.0.0.1: decodes each export and keeps the spans."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[tuple[dict[str, object], Span]] = []  # (resource attributes, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportTraceServiceRequest.FromString(body)
                receiver.bodies.append(body)
                for rs in req.resource_spans:
                    resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
                    receiver.spans += [(resource, s) for ss in rs.scope_spans for s in ss.spans]
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(v: AnyValue) -> object:
    field = v.WhichOneof("value")
    return getattr(v, field) if field else None


def attrs(span: Span) -> dict[str, object]:
    return {kv.key: value(kv.value) for kv in span.attributes}


@dataclass
class Observed:
    daemon: Daemon
    stderr: str
    stdout: str
    lines: list[dict]
    spans: list[tuple[dict[str, object], Span]]
    otlp_bodies: list[bytes]
    interceptions: dict[str, dict]  # by first provider response id
    secrets: dict[str, str]


def start_observed(tmp: Path, config: str, env: dict[str, str]) -> tuple[Daemon, Path]:
    """Like conftest.start_daemon, but with stdout and stderr apart: stderr is where the logs go."""
    data_dir = tmp / "data"
    (tmp / "aigw.toml").write_text(config)
    d = Daemon(data_dir, free_port(), free_port(), tmp / "ca-bundle.pem", tmp / "stderr.log")
    stdout = tmp / "stdout.log"
    with d.log_path.open("wb") as err, stdout.open("wb") as out:
        d.proc = subprocess.Popen(
            [*AIGW, "run", "--listen", d.address, "--admin-listen", f"127.0.0.1:{d.admin_port}",
             "--data-dir", str(data_dir), "--config", str(tmp / "aigw.toml"),
             "--structured-logging", "--log-format", "json", "--trace", "--trace-logs"],
            stdout=out, stderr=err, env=env,
        )
    d.wait_healthy()
    return d, stdout


def drive_traffic(d: Daemon, upstream: StandIn) -> None:
    upstream.queue(
        anthropic_stream("msg_OBS1", MODEL, [
            {"type": "thinking", "thinking": "I should look at the files."},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_OBS1", "name": "Bash", "input": {"command": "ls"}},
        ], anthropic_usage(12, 87, cache_read=2048), stop_reason="tool_use"),
        Reply.json(anthropic_message("msg_OBS2", MODEL, [{"type": "text", "text": "Two files."}],
                                     anthropic_usage(30, 5))),
        Reply.json(chat_completion("chatcmpl-OBS3", "gpt-4.1-mini", {"role": "assistant", "content": "hi"},
                                   chat_usage(50, 2))),
        Reply.json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, status=529),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HTTPS_PROXY", d.proxy_url("alice"))
        mp.setenv("SSL_CERT_FILE", str(d.ca_bundle))
        claude = anthropic.Anthropic(api_key=ANTHROPIC_KEY, max_retries=0)
        msgs: list[dict] = [{"role": "user", "content": "what is in this directory?"}]
        with claude.messages.stream(model=MODEL, max_tokens=500, messages=msgs,  # type: ignore[arg-type]
                                    thinking={"type": "enabled", "budget_tokens": 200}) as s:
            first = s.get_final_message()
        msgs += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_OBS1",
                                               "content": "a.txt b.txt"}]}]
        claude.messages.create(model=MODEL, max_tokens=100, messages=msgs)  # type: ignore[arg-type]
        openai.OpenAI(api_key=OPENAI_KEY, max_retries=0).chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "say hi"}])
        with pytest.raises(anthropic.InternalServerError):
            claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "busy?"}])
    # The credentials really went through (this SDK sends its key as a Bearer value).
    sent = upstream.requests[0].headers
    assert ANTHROPIC_KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert upstream.requests[2].headers["authorization"] == f"Bearer {OPENAI_KEY}"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
             upstream_pki: UpstreamPKI) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("observed")
    proxy_vars = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k not in proxy_vars and not k.startswith("OTEL_")}
    with OTLPReceiver() as receiver:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
                   NO_PROXY="127.0.0.1,localhost")
        d, stdout = start_observed(tmp, provider_config(standin_server, upstream_pki.ca_file), env)
        standin_server.reset()
        try:
            drive_traffic(d, standin_server)
            rows = d.interceptions(expect=4)
        finally:
            code = stop_daemon(d)
            standin_server.reset()
        assert code == 0, d.log()
        token = d.token("alice")
        stderr = d.log()
        yield Observed(
            daemon=d, stderr=stderr, stdout=stdout.read_text(),
            lines=[json.loads(line) for line in stderr.splitlines() if line.strip()],
            spans=list(receiver.spans), otlp_bodies=list(receiver.bodies),
            interceptions={(r["token_usages"] or r["user_prompts"])[0]["provider_response_id"] or r["status"]: r
                           for r in rows},
            secrets={
                "anthropic key": ANTHROPIC_KEY, "openai key": OPENAI_KEY, "proxy token": token,
                "authorization values": f"Bearer {OPENAI_KEY}", "anthropic bearer": f"Bearer {ANTHROPIC_KEY}",
                "proxy-authorization value": base64.b64encode(f"alice:{token}".encode()).decode(),
            },
        )


def records(o: Observed) -> list[dict]:
    return [line for line in o.lines if line.get("message") == "interception log"]


def test_every_stderr_line_is_json_with_time_level_and_logger(observed: Observed) -> None:
    assert observed.stderr.strip(), "nothing was logged"
    for line in observed.stderr.splitlines():
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line
    assert any(x["logger"] == "aigw_proxy.daemon" and x["message"].startswith("proxy listening on")
               for x in observed.lines)


def test_each_record_type_is_logged_with_exactly_its_fields(observed: Observed) -> None:
    lines = records(observed)
    assert Counter(x["record_type"] for x in lines) == {
        "interception_start": 4, "interception_end": 4, "prompt_usage": 3, "token_usage": 3, "tool_usage": 1,
        "model_thought": 1}
    for x in lines:
        assert set(x) == LINE_KEYS | FIELDS[x["record_type"]], x["record_type"]
        assert (x["level"], x["logger"]) == ("INFO", "aigw_proxy.interceptions")


def test_record_lines_say_what_the_database_says(observed: Observed) -> None:
    ix = observed.interceptions
    first, second, chat, failed = ix["msg_OBS1"], ix["msg_OBS2"], ix["chatcmpl-OBS3"], ix["failed"]
    by = {(x["interception_id"], x["record_type"]): x for x in records(observed)}
    start = by[(first["id"], "interception_start")]
    assert (start["initiator_id"], start["api_key_id"]) == (first["initiator"]["id"], first["api_key_id"])
    assert (start["provider"], start["model"], start["client"]) == ("anthropic", MODEL, first["client"])
    assert start["metadata"]["streaming"] is True and start["thread_parent_id"] is None
    # Logged after the writer resolved the thread: the tool result's line names the call that asked for it.
    follow = by[(second["id"], "interception_start")]
    assert follow["correlating_tool_call_id"] == "toolu_OBS1"
    assert (follow["thread_parent_id"], follow["thread_root_id"]) == (first["id"], first["id"])
    assert by[(first["id"], "prompt_usage")]["prompt"] == "what is in this directory?"
    tokens = by[(first["id"], "token_usage")]
    assert (tokens["msg_id"], tokens["input_tokens"], tokens["output_tokens"], tokens["cache_read_input_tokens"]) == (
        "msg_OBS1", 12, 87, 2048)
    [stored] = first["token_usages"]
    assert tokens["cost_micros"] == stored["cost_micros"] and tokens["priced"] is stored["priced"]
    tool = by[(first["id"], "tool_usage")]
    assert (tool["tool"], tool["tool_call_id"], json.loads(tool["input"])) == ("Bash", "toolu_OBS1", {"command": "ls"})
    thought = by[(first["id"], "model_thought")]
    assert (thought["content"], thought["metadata"]) == ("I should look at the files.", {"source": "thinking"})
    assert by[(chat["id"], "interception_start")]["provider"] == "openai"
    end = by[(failed["id"], "interception_end")]
    assert (end["status"], end["upstream_status"], end["error_type"]) == ("failed", 529, "overloaded")
    assert by[(first["id"], "interception_end")]["ended_at"] == first["ended_at"]


def spans_by_interception(o: Observed) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for _, span in o.spans:
        out.setdefault(str(attrs(span)["interception_id"]), []).append(span)
    return out


def test_spans_arrive_over_otlp_nested_under_intercept(observed: Observed) -> None:
    assert {str(r.get("service.name")) for r, _ in observed.spans} == {"aigw-proxy"}
    traces = spans_by_interception(observed)
    assert set(traces) == {r["id"] for r in observed.interceptions.values()}
    lines = records(observed)
    for iid, spans in traces.items():
        # The request's spans plus one record span per record the interception logged.
        expected = Counter(REQUEST_SPANS) + Counter(SPAN_OF[x["record_type"]] for x in lines
                                                    if x["interception_id"] == iid)
        assert Counter(s.name for s in spans) == expected, iid
        [root] = [s for s in spans if s.name == "Intercept"]
        [process] = [s for s in spans if s.name == "Intercept.ProcessRequest"]
        assert root.parent_span_id == b"" and {s.trace_id for s in spans} == {root.trace_id}
        for s in spans:
            if s is not root:
                want = process if s.name == "Intercept.ProcessRequest.Upstream" else root
                assert s.parent_span_id == want.span_id, s.name


def test_span_attributes_and_error_status(observed: Observed) -> None:
    traces = spans_by_interception(observed)
    for row in observed.interceptions.values():
        for s in traces[row["id"]]:
            a = attrs(s)
            assert {k: a.get(k) for k in ("interception_id", "user_id", "provider", "model", "request_path")} == {
                "interception_id": row["id"], "user_id": row["initiator"]["id"], "provider": row["provider"],
                "model": row["model"], "request_path": row["metadata"]["route"]}, s.name
            assert a["streaming"] is row["metadata"]["streaming"], s.name
    failed = {s.name: s.status for s in traces[observed.interceptions["failed"]["id"]]}
    assert failed["Intercept"].code == Status.STATUS_CODE_ERROR
    assert failed["Intercept.ProcessRequest.Upstream"].message == "upstream returned HTTP 529"
    ok = {s.name: s.status for s in traces[observed.interceptions["msg_OBS1"]["id"]]}
    assert ok["Intercept"].code == Status.STATUS_CODE_UNSET


def test_log_lines_carry_their_record_span_which_holds_them_as_events(observed: Observed) -> None:
    spans = {(s.trace_id.hex(), s.span_id.hex()): s for _, s in observed.spans}
    for x in records(observed):
        span = spans[(x["trace_id"], x["span_id"])]
        assert span.name == SPAN_OF[x["record_type"]]
        assert attrs(span)["interception_id"] == x["interception_id"]
        assert [e.name for e in span.events] == ["interception log"]


def test_no_credential_in_logs_database_or_spans(observed: Observed) -> None:
    places = {"stderr": observed.stderr.encode(), "stdout": observed.stdout.encode(),
              "otlp exports": b"".join(observed.otlp_bodies)}
    for f in observed.daemon.data_dir.iterdir():
        if f.is_file() and f.name.startswith("aigw-proxy.db"):
            places[f.name] = f.read_bytes()
    assert "aigw-proxy.db" in places and len(places["otlp exports"]) > 0
    leaks = [(what, where) for what, secret in observed.secrets.items() for where, data in places.items()
             if secret.encode() in data]
    assert leaks == []
