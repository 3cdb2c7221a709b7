"""Raw capture (`--capture-bodies`) through a real daemon with the official anthropic SDK: the stored capture is
what the stand-in upstream received and sent, minus secrets; bounded; read through the REST API (a member's own
only) and the CLI; off by default nothing is stored; retention removes captures with their interceptions."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import anthropic
import jsonschema
import pytest

from aigw_proxy.admin.api.openapi import openapi_document
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, run_cli, start_daemon, stop_daemon
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage
from tests.support.standin import Reply, StandIn

MODEL = "claude-sonnet-4-5-20250929"
API_KEY = "sk-ant-api03-" + "q" * 80
PASTED = "AKIA" + "IOSFODNN7EXAMPLE"  # an AWS access key pasted into a prompt
MAX_BYTES = 65536
CREDENTIALS = {"x-api-key", "authorization", "cookie", "proxy-authorization"}


@pytest.fixture(scope="module")
def capturing(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
              upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("capture")
    # The switch from the environment, the bound from the command line.
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--capture-max-bytes", str(MAX_BYTES)), env={"AIGW_CAPTURE_BODIES": "true"})
    d.tokens["root"] = run_cli(d.data_dir, "users", "add", "root", "--role", "admin").stdout.strip()
    yield d
    stop_daemon(d)


def sdk(d: Daemon, user: str = "alice") -> anthropic.Anthropic:
    http = anthropic.DefaultHttpxClient(proxy=d.proxy_url(user),
                                        verify=ssl.create_default_context(cafile=str(d.ca_bundle)))
    return anthropic.Anthropic(api_key=API_KEY, max_retries=0, http_client=http,
                               default_headers={"User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
                                                "X-Claude-Code-Session-Id": "sess-capture-1"})


def api(d: Daemon, path: str, user: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{d.admin_port}/api/v2/aibridge{path}",
                                 headers={"Coder-Session-Token": d.token(user)})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def capture_of(d: Daemon, iid: str, user: str = "alice", timeout: float = 10) -> dict:
    """The capture once the writer stored it (it is queued right after the interception's end)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = api(d, f"/interceptions/{iid}/capture", user)
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return body
        time.sleep(0.05)


def captures_stored(d: Daemon) -> int:
    with closing(sqlite3.connect(d.data_dir / "aigw-proxy.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM aibridge_captures").fetchone()[0])


def test_a_streamed_call_is_captured_as_relayed_minus_secrets(capturing: Daemon, upstream: StandIn) -> None:
    d = capturing
    reply = anthropic_stream("msg_cap_stream", MODEL, [
        {"type": "thinking", "thinking": "They pasted a key; I will not repeat it."},
        {"type": "text", "text": "Rotate that key <script>alert(1)</script> now."},
    ], anthropic_usage(40, 12))
    upstream.queue(reply)
    prompt = f"why does deploying with {PASTED} fail?"
    with sdk(d).messages.stream(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": prompt}]) as s:
        s.get_final_message()
    iid = d.one(response_id="msg_cap_stream")["id"]
    cap = capture_of(d, iid)
    seen = upstream.requests[-1]

    # The request: the body the upstream received with the pasted key replaced; its headers, credentials removed.
    req = cap["request"]
    assert (req["method"], req["route"]) == ("POST", "/v1/messages")
    assert req["body"] == seen.body.decode().replace(PASTED, "[REDACTED:aws-access-key]")
    assert json.loads(req["body"])["messages"][0]["content"] == prompt.replace(PASTED, "[REDACTED:aws-access-key]")
    assert req["size"] == len(seen.body) and not req["truncated"]
    assert set(req["headers"]) == set(seen.headers)
    for name, value in seen.headers.items():
        expected = "[REDACTED:credential-header]" if name in CREDENTIALS else value
        assert req["headers"][name] == expected, name
    sent_as = "x-api-key" if "x-api-key" in seen.headers else "authorization"  # SDK versions differ
    assert API_KEY in seen.headers[sent_as] and req["headers"][sent_as] == "[REDACTED:credential-header]"
    # The response: the raw event stream exactly as the upstream sent it (and the client got it).
    resp = cap["response"]
    assert resp["status"] == 200 and resp["streamed"]
    assert resp["body"] == b"".join(reply.chunks).decode()
    assert resp["headers"]["content-type"] == "text/event-stream"
    assert resp["size"] == len(b"".join(reply.chunks)) and not resp["truncated"]
    assert resp["compressed_bytes"] < resp["size"]
    assert cap["redactions"] == {"aws-access-key": 1, "credential-header": 1}
    everything = json.dumps(cap)
    assert API_KEY not in everything and PASTED not in everything
    jsonschema.validate(cap, openapi_document()["components"]["schemas"]["Capture"])  # as the API documents it

    # The interception's access rules: its owner and admins read it, another member gets 404 like a missing one.
    assert api(d, f"/interceptions/{iid}/capture", "root") == (200, cap)
    assert api(d, f"/interceptions/{iid}/capture", "bob")[0] == 404
    assert api(d, "/interceptions/no-such-id/capture", "root")[0] == 404

    # The CLI prints it (local database), curl -v style, and one body alone for a pipe.
    out = d.cli("interceptions", "capture", iid).stdout
    assert "> POST /v1/messages" in out and f"> {sent_as}: [REDACTED:credential-header]" in out
    assert "< 200 (streamed)" in out and "event: message_stop" in out and API_KEY not in out
    assert d.cli("interceptions", "capture", iid, "--body", "request").stdout == req["body"]
    assert json.loads(d.cli("interceptions", "capture", iid, "--json").stdout) == cap
    remote = d.cli("interceptions", "capture", iid, "--json", "--url", f"http://127.0.0.1:{d.admin_port}",
                   "--token", d.token("alice")).stdout
    assert json.loads(remote) == cap


def test_a_large_body_is_cut_at_the_bound_and_a_compressed_response_decoded(capturing: Daemon,
                                                                            upstream: StandIn) -> None:
    d = capturing
    answer = anthropic_message("msg_cap_big", MODEL, [{"type": "text", "text": "summary: " + "ok " * 2000}],
                               anthropic_usage(30000, 2000))
    reply = Reply.json(answer)
    reply.encoding = "gzip"
    upstream.queue(reply)
    prompt = "summarise this log:\n" + "".join(f"line {n}: all quiet\n" for n in range(6000))  # ~110 KB
    sdk(d).messages.create(model=MODEL, max_tokens=4000, messages=[{"role": "user", "content": prompt}])
    iid = d.one(response_id="msg_cap_big")["id"]
    cap = capture_of(d, iid)
    seen = upstream.requests[-1]
    req, resp = cap["request"], cap["response"]
    assert len(seen.body) > MAX_BYTES
    assert req["truncated"] and req["size"] == len(seen.body) and req["stored_bytes"] == MAX_BYTES
    assert req["body"] == seen.body[:MAX_BYTES].decode()
    # Stored decoded (Content-Encoding undone): the JSON the client read.
    assert not resp["streamed"] and not resp["truncated"]
    assert json.loads(resp["body"]) == answer
    assert resp["headers"]["content-encoding"] == "gzip"
    out = d.cli("interceptions", "capture", iid).stdout
    assert f"[request body: truncated, {MAX_BYTES} of {len(seen.body)} bytes kept]" in out


def test_off_by_default_nothing_is_captured(proxy_env: Daemon, upstream: StandIn) -> None:
    d = proxy_env  # the session's daemon: no --capture-bodies
    upstream.queue(Reply.json(anthropic_message("msg_nocap", MODEL, [{"type": "text", "text": "hi"}],
                                                anthropic_usage(3, 1))))
    anthropic.Anthropic(api_key=API_KEY, max_retries=0).messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hello"}])
    iid = d.one(response_id="msg_nocap")["id"]
    assert captures_stored(d) == 0
    assert api(d, f"/interceptions/{iid}/capture", "alice")[0] == 404
    missing = d.cli("interceptions", "capture", iid, check=False)
    assert missing.returncode == 1 and "--capture-bodies" in missing.stderr


def test_retention_removes_captures_with_their_interceptions(capturing: Daemon) -> None:
    d = capturing  # after the tests above: their calls are older than a second now
    ids = [r["id"] for r in d.interceptions()]
    assert ids and captures_stored(d) == len(ids)
    time.sleep(1.1)
    d.cli("purge", "--retention", "1s")
    assert captures_stored(d) == 0 and d.interceptions() == []
    assert all(api(d, f"/interceptions/{iid}/capture", "root")[0] == 404 for iid in ids)


@pytest.fixture(scope="module")
def ws_capturing(tmp_path_factory: pytest.TempPathFactory, ws_standin_server: Any,
                 upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("ws-capture"),
                     provider_config(ws_standin_server, upstream_pki.ca_file), extra_args=("--capture-bodies",))
    yield d
    stop_daemon(d)


def test_each_websocket_turn_is_captured_with_its_own_messages(ws_capturing: Daemon, ws_upstream: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Codex over a Responses WebSocket: each turn's capture holds the `response.create` the upstream received and
    the server events it sent for that turn, one message a line, with the upgrade's headers scrubbed."""
    import openai

    from tests.e2e.test_websocket import CODEX_HEADERS, CODEX_SOCKET_HEADERS, MODEL, codex_input, message, read_turn
    from tests.support.payloads import responses_object, responses_usage
    from tests.support.ws_standin import Script, responses_events

    d = ws_capturing
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    key = "sk-proj-" + "Zz9" * 20
    scripts = [Script(responses_events(responses_object(rid, MODEL, [message(text, f"m_{rid}")],
                                                        responses_usage(900, 9))))
               for rid, text in (("resp_cap_w1", "first"), ("resp_cap_w2", "second"))]
    ws_upstream.queue(*scripts)
    client = openai.OpenAI(api_key=key, max_retries=0, default_headers=CODEX_HEADERS)
    with client.responses.connect(extra_headers=CODEX_SOCKET_HEADERS) as conn:
        for prompt in (f"deploy with {PASTED}", "and then?"):
            conn.response.create(model=MODEL, input=codex_input(prompt), store=False)
            read_turn(conn)
    [sock] = ws_upstream.sockets
    for n, (rid, script) in enumerate(zip(("resp_cap_w1", "resp_cap_w2"), scripts, strict=True)):
        cap = capture_of(d, d.one(response_id=rid)["id"])
        req, resp = cap["request"], cap["response"]
        assert cap["transport"] == "websocket" and (resp["status"], resp["streamed"]) == (101, True)
        expected = json.loads(json.dumps(sock.messages[n]).replace(PASTED, "[REDACTED:aws-access-key]"))
        assert json.loads(req["body"]) == expected
        assert resp["body"] == "".join(json.dumps(e) + "\n" for e in script.events)
        assert req["headers"]["authorization"] == "[REDACTED:credential-header]"
        assert req["headers"]["openai-beta"] == CODEX_SOCKET_HEADERS["openai-beta"]
        assert key not in json.dumps(cap) and PASTED not in json.dumps(cap)
