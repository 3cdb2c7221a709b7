"""Nothing leaked: secrets in every recorded field (prompt, tool-call input, thought, error text) through a real
daemon with the official SDKs, then looked for where a user or an attacker would look: the database files
(with their -wal and -shm), the REST API, the structured JSON logs, the daemon log and /metrics. The provider
still gets every byte it was sent. In block mode the SDK's own bad-request error says why and nothing reaches the
provider. Files are private whatever the umask."""

from __future__ import annotations

import json
import os
import re
import stat
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, run_cli, start_daemon, stop_daemon
from tests.support.payloads import anthropic_message, anthropic_stream, anthropic_usage
from tests.support.standin import Reply, StandIn

MODEL = "claude-sonnet-4-5-20250929"
# Made-up values in the shapes of real credentials.
AWS_ID = "AKIA" + "Q7WZ3XK2M5N8P4R6"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "Zq81Lm4Tu0"
GHP = "ghp_" + "R4nd0mT0k3nV4lu3sAbCdEfGhIjKlMnOpQrS"
PEM_LINES = ["MIIEowIBAAKCAQEAq8m2nV0rT1xYzPq4Lk7Wd3sFg9Hj2Kl5Mn8Bv1Cx4Za7Qw0E",
             "Rt6Yu3Io9Pa2Sd5Fg8Hj1Kl4Zx7Cv0Bn3Mq6Wl9Er2Ty5Ui8Op1As4Df7Gh0Jk3L"]
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_LINES) + "\n-----END RSA PRIVATE KEY-----"
OPENAI_KEY = "sk-proj-" + "T9xQ2mV7-bN4cK8_" * 4
SLACK = "xoxb-" + "918273645012-1029384756123-" + "QwErTyUiOpAsDfGhJkLzXcVb"
ANTHROPIC_KEY = "sk-ant-api03-" + "Lq7_Wz3-" * 10 + "AA"
SECRETS = {"aws id": AWS_ID, "aws secret": AWS_SECRET, "github": GHP, "pem": PEM_LINES[0], "pem2": PEM_LINES[1],
           "openai": OPENAI_KEY, "slack": SLACK, "anthropic": ANTHROPIC_KEY}

PROMPT = (f"Deploy with these, please:\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n"
          f"and push with {GHP}. The deploy key is\n{PEM}\n")
TOOL_INPUT = {"command": f"export OPENAI_API_KEY={OPENAI_KEY} && ./deploy.sh"}
THOUGHT = f"The user also has a Slack bot token {SLACK} in the repo; I will not print it."
ERROR_TEXT = f"invalid x-api-key: {ANTHROPIC_KEY} was revoked"
API_KEY = "sk-ant-api03-" + "k" * 80  # the credential header: never recorded in any mode


def api_get(d: Daemon, path: str, token: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{d.admin_port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def metric_values(d: Daemon, name: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}\{{kind="([^"]+)"\}} (\S+)$', text, re.M)}


def wait_for(d: Daemon, match: Callable[[dict], bool], timeout: float = 10.0) -> list[dict]:
    """The ended interceptions that `match`, once there is one (the writer commits in batches)."""
    deadline = time.monotonic() + timeout
    while not (found := [r for r in d.interceptions() if match(r)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def use_proxy(d: Daemon, monkeypatch: pytest.MonkeyPatch, user: str = "alice") -> None:
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url(user))
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def redacting(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
              upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("redacting")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--structured-logging", "--log-format", "json"))
    yield d
    stop_daemon(d)


def drive_secret_traffic(d: Daemon, upstream: StandIn, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    use_proxy(d, monkeypatch)
    upstream.queue(
        anthropic_stream("msg_SECRETS1", MODEL, [
            {"type": "thinking", "thinking": THOUGHT},
            {"type": "text", "text": "Running the deploy."},
            {"type": "tool_use", "id": "toolu_SECRETS1", "name": "Bash", "input": TOOL_INPUT},
        ], anthropic_usage(40, 60), stop_reason="tool_use"),
        Reply.json({"type": "error", "error": {"type": "authentication_error", "message": ERROR_TEXT}},
                   status=401),
    )
    claude = anthropic.Anthropic(api_key=API_KEY, max_retries=0)
    with claude.messages.stream(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": PROMPT}],
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    tool_use = final.content[2]
    assert isinstance(tool_use, anthropic.types.ToolUseBlock), tool_use
    assert tool_use.input == TOOL_INPUT  # the client got the response untouched
    sent = upstream.requests[-1].json()
    assert sent["messages"][0]["content"] == PROMPT  # ...and the provider the request, secrets and all
    with pytest.raises(anthropic.AuthenticationError) as err:
        claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "again"}])
    assert ANTHROPIC_KEY in str(err.value)  # the client sees the provider's own error text
    return d.one(response_id="msg_SECRETS1"), d.one(prompt="again")


def test_secrets_in_every_field_are_redacted_everywhere(redacting: Daemon, upstream: StandIn,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d = redacting
    ix, failed = drive_secret_traffic(d, upstream, monkeypatch)

    # The record, as the database holds it: placeholders, counts per kind.
    [prompt] = [p["prompt"] for p in ix["user_prompts"]]
    assert prompt == ("Deploy with these, please:\naws_access_key_id = [REDACTED:aws-access-key]\n"
                      "aws_secret_access_key = [REDACTED:aws-secret-key]\nand push with [REDACTED:github-token]. "
                      "The deploy key is\n[REDACTED:private-key]\n")
    [tool] = ix["tool_usages"]
    assert json.loads(tool["input"]) == {"command": "export OPENAI_API_KEY=[REDACTED:openai-api-key] && ./deploy.sh"}
    [thought] = ix["model_thoughts"]
    assert thought["content"] == ("The user also has a Slack bot token [REDACTED:slack-token] in the repo; "
                                  "I will not print it.")
    assert ix["metadata"]["redactions"] == {"aws-access-key": 1, "aws-secret-key": 1, "github-token": 1,
                                            "private-key": 1, "openai-api-key": 1, "slack-token": 1}
    assert failed["status"] == "failed" and failed["error_type"] == "unauthorized"
    assert "[REDACTED:anthropic-api-key] was revoked" in failed["error_message"]
    assert failed["metadata"]["redactions"] == {"anthropic-api-key": 1}

    # The database files, byte for byte (the WAL holds the newest pages).
    files = [d.data_dir / f"aigw-proxy.db{suffix}" for suffix in ("", "-wal", "-shm")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    assert b"[REDACTED:github-token]" in raw
    for what, secret in SECRETS.items():
        assert secret.encode() not in raw, f"{what} found in the database files"

    # The REST API.
    token = d.token("alice")
    answers = api_get(d, "/api/v2/aibridge/interceptions?limit=100", token)
    answers += api_get(d, f"/api/v2/aibridge/sessions/{ix['session_id']}", token)
    answers += api_get(d, "/api/v2/aibridge/sessions", token)
    assert "[REDACTED:private-key]" in answers
    for what, secret in SECRETS.items():
        assert secret not in answers and json.dumps(secret)[1:-1] not in answers, f"{what} in the REST API"

    # The logs: every structured record line, and everything else the daemon wrote.
    log = d.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    records = {(r["record_type"], r["interception_id"]): r for r in lines if r.get("message") == "interception log"}
    assert records[("prompt_usage", ix["id"])]["prompt"] == prompt
    assert json.loads(records[("tool_usage", ix["id"])]["input"]) == json.loads(tool["input"])
    assert records[("model_thought", ix["id"])]["content"] == thought["content"]
    assert "[REDACTED:anthropic-api-key]" in records[("interception_end", failed["id"])]["error_message"]
    for what, secret in SECRETS.items():
        assert secret not in log and json.dumps(secret)[1:-1] not in log, f"{what} in the daemon log"
    assert API_KEY not in log

    # The metric counts each kind once per secret recorded.
    counts = metric_values(d, "aigw_proxy_redactions_total")
    for kind, n in {**ix["metadata"]["redactions"], "anthropic-api-key": 1}.items():
        assert counts.get(kind, 0) >= n, kind


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
             upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("blocking")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file), extra_args=("--redaction", "block"))
    yield d
    stop_daemon(d)


def test_block_mode_refuses_an_anthropic_call_with_a_secret(blocking: Daemon, upstream: StandIn,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_proxy(blocking, monkeypatch)
    claude = anthropic.Anthropic(api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=MODEL, max_tokens=50,
                               messages=[{"role": "user", "content": f"push it with {GHP} and {AWS_ID}"}])
    assert err.value.status_code == 400
    message = err.value.body["error"]["message"]  # type: ignore[index]
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "DLP" in message and "aws-access-key" in message and "github-token" in message
    assert GHP not in str(err.value.body) and AWS_ID not in str(err.value.body)
    assert upstream.requests == []  # never reached the provider

    ix = blocking.one(prompt="push it with [REDACTED:github-token] and [REDACTED:aws-access-key]")
    assert (ix["status"], ix["upstream_status"], ix["error_type"]) == ("failed", 400, "bad_request")
    assert "secret_detected" in ix["error_message"] and "github-token" in ix["error_message"]
    assert ix["metadata"]["blocked_secrets"] == {"aws-access-key": 1, "github-token": 1}

    # A clean call goes through.
    upstream.queue(Reply.json(anthropic_message("msg_CLEAN", MODEL, [{"type": "text", "text": "ok"}],
                                                anthropic_usage(5, 1))))
    reply = claude.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hello"}])
    assert reply.id == "msg_CLEAN" and blocking.one(response_id="msg_CLEAN")["status"] == "completed"


def test_block_mode_refuses_an_openai_call_with_a_secret_in_a_tool_result(blocking: Daemon, upstream: StandIn,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret is not in the prompt but in a file the agent read (a tool result): it would still reach the
    provider, so the call is refused."""
    use_proxy(blocking, monkeypatch)
    client = openai.OpenAI(api_key="sk-proj-" + "o" * 60, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4.1-mini", messages=[
            {"role": "user", "content": "read the env file"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_env", "type": "function", "function": {"name": "read", "arguments": '{"p": ".env"}'}}]},
            {"role": "tool", "tool_call_id": "call_env", "content": f"OPENAI_API_KEY={OPENAI_KEY}\n{PEM}\n"},
        ])
    assert err.value.status_code == 400 and err.value.code == "secret_detected"
    assert "openai-api-key" in err.value.message and "private-key" in err.value.message
    assert OPENAI_KEY not in err.value.message and PEM_LINES[0] not in str(err.value.body)
    assert upstream.requests == []
    [ix] = wait_for(blocking, lambda r: r["metadata"]["route"] == "/v1/chat/completions")
    assert ix["user_prompts"] == []  # a request that returns a tool result carries no prompt
    assert (ix["status"], ix["upstream_status"], ix["metadata"]["route"]) == ("failed", 400, "/v1/chat/completions")
    assert ix["metadata"]["blocked_secrets"] == {"openai-api-key": 1, "private-key": 1}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_whatever_the_umask(tmp_path: Path, standin_server: StandIn,
                                              upstream_pki: UpstreamPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = os.umask(0)  # inherited by the CLI and the daemon started below
    try:
        data = tmp_path / "data"
        run_cli(data, "users", "add", "bob")  # the CLI creates the data dir and the database first
        assert mode(data) == 0o700 and mode(data / "aigw-proxy.db") == 0o600
        d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
        try:
            use_proxy(d, monkeypatch)
            standin_server.queue(Reply.json(anthropic_message("msg_MODES", MODEL, [{"type": "text", "text": "ok"}],
                                                              anthropic_usage(5, 1))))
            anthropic.Anthropic(api_key=API_KEY, max_retries=0).messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
            d.one(response_id="msg_MODES")
            wal, shm = data / "aigw-proxy.db-wal", data / "aigw-proxy.db-shm"
            assert wal.exists() and shm.exists()
            assert {p.name: mode(p) for p in (data / "aigw-proxy.db", wal, shm)} == {
                "aigw-proxy.db": 0o600, "aigw-proxy.db-wal": 0o600, "aigw-proxy.db-shm": 0o600}
            assert mode(data) == 0o700 and mode(data / "ca") == 0o700
            assert mode(data / "ca" / "mitmproxy-ca.pem") == 0o600  # the CA's private key
            public = {data / "ca" / "mitmproxy-ca-cert.pem"}  # the CA certificate clients are given
            assert {str(p.relative_to(data)): oct(mode(p)) for p in data.rglob("*")
                    if p not in public and mode(p) & 0o077} == {}
        finally:
            stop_daemon(d)
    finally:
        os.umask(previous)
