"""The redaction engine and the record policy: each kind of secret replaced by its typed placeholder, the
allow-list and extra patterns honoured, ordinary code and prose left alone, capped fields marked."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aigw_proxy.config.settings import ConfigError, parse_file_config
from aigw_proxy.recording.records import Initiator, InterceptionEnded, InterceptionStarted, ModelThought, ToolCall
from aigw_proxy.redaction.engine import Redactor, compile_extra_rule
from aigw_proxy.redaction.records import TRUNCATION_MARKER, RecordPolicy

# Shaped like the real thing, made up here (not live credentials).
AWS_ID = "AKIA" + "Q7WZ3XK2M5N8P4R6"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "Zq81Lm4Tu0"
GHP = "ghp_" + "R4nd0mT0k3nV4lu3sAbCdEfGhIjKlMnOpQrS"
GHO = "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GH_PAT = "github_pat_11ABCDEFG0" + "aBcD3fGh1jKlMn0pQrStUv_" + "W" * 58
ANTHROPIC = "sk-ant-api03-" + "Xy9_" * 20 + "AA"
OPENAI_PROJ = "sk-proj-" + "Ab1-Cd2_" * 8
OPENAI_LEGACY = "sk-" + "a1B2c3D4e5F6g7H8i9J0" * 2 + "k1L2m3N4"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
SLACK = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_HOOK = "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/" + "aBcDeFgHiJkLmNoPqRsTuVwX"
STRIPE = "sk_live_" + "51H8xYzAbCdEfGhIjKlMnOpQ" + "rStUvWxYz0123456789"
TWILIO_SID = "AC" + "0123456789abcdef0123456789abcdef"
TWILIO_KEY = "SK" + "fedcba9876543210fedcba9876543210"
JWT = ".".join([
    base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("="),
    base64.urlsafe_b64encode(json.dumps({"sub": "1234567890", "name": "Jo"}).encode()).decode().rstrip("="),
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
])
PEM_BODY = "MIIEowIBAAKCAQEA" + "q" * 48 + "\n" + "Zm9vYmFyYmF6" * 5 + "\n" + "dGFpbA=="
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
AIGW = "aigw_" + "Zx8-Qw_7" * 5 + "abc"

CASES = [
    (f"my id is {AWS_ID} ok", "aws-access-key", AWS_ID),
    (f'aws_secret_access_key = "{AWS_SECRET}"', "aws-secret-key", AWS_SECRET),
    (f"aws_secret_access_key={AWS_SECRET}\n", "aws-secret-key", AWS_SECRET),
    (f"push with {GHP} please", "github-token", GHP),
    (f"oauth {GHO}", "github-token", GHO),
    (f"GH_TOKEN is {GH_PAT}.", "github-token", GH_PAT),
    (f"use {ANTHROPIC} for claude", "anthropic-api-key", ANTHROPIC),
    (f"key: {OPENAI_PROJ}", "openai-api-key", OPENAI_PROJ),
    (f"old key {OPENAI_LEGACY} here", "api-key", OPENAI_LEGACY),
    (f"gemini {GOOGLE}", "google-api-key", GOOGLE),
    (f"bot {SLACK}", "slack-token", SLACK),
    (f"post to {SLACK_HOOK}", "slack-webhook", SLACK_HOOK),
    (f"charge with {STRIPE}", "stripe-key", STRIPE),
    (f"twilio {TWILIO_SID}", "twilio-key", TWILIO_SID),
    (f"twilio {TWILIO_KEY}", "twilio-key", TWILIO_KEY),
    (f"cookie {JWT}", "jwt", JWT),
    (f"here is my key:\n{PEM}\nthanks", "private-key", PEM),
    ("clone https://deploy:Sup3rS3cret@git.example.com/repo.git", "basic-auth", "Sup3rS3cret"),
    ("curl -H 'Authorization: Bearer abcdEFGH1234ijklMNOP5678'", "bearer-token", "abcdEFGH1234ijklMNOP5678"),
    ("Authorization: Basic " + base64.b64encode(b"bob:hunter2").decode(), "basic-auth",
     base64.b64encode(b"bob:hunter2").decode()),
    ("x-api-key: k3y-F0r-Th3-Gateway-99", "api-key", "k3y-F0r-Th3-Gateway-99"),
    (f"proxy token {AIGW}", "aigw-token", AIGW),
    ("mysql -u root password=hunter2 db", "password", "hunter2"),
    ("curl 'https://x.test/cb?token=a1b2c3d4e5f6'", "token", "a1b2c3d4e5f6"),
    ('DB_PASSWORD="Tr0ub4dor&3"', "password", "Tr0ub4dor&3"),
    ("client_secret: 9f8e7d6c5b4a", "secret", "9f8e7d6c5b4a"),
    ('{"api_key": "zz-99-abc-123"}', "api-key", "zz-99-abc-123"),
]


@pytest.mark.parametrize(("text", "kind", "secret"), CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_each_kind_is_replaced_by_its_placeholder(text: str, kind: str, secret: str) -> None:
    result = Redactor().redact(text)
    assert secret not in result.text
    assert f"[REDACTED:{kind}]" in result.text
    assert result.counts == {kind: 1}
    # What is around the secret is kept.
    before, _, after = text.partition(secret)
    assert result.text == f"{before}[REDACTED:{kind}]{after}"


def test_export_of_an_openai_key_is_named_by_its_shape() -> None:
    result = Redactor().redact(f"export OPENAI_API_KEY={OPENAI_PROJ}")
    assert result.text == "export OPENAI_API_KEY=[REDACTED:openai-api-key]"


def test_a_placeholder_is_never_redacted_again() -> None:
    once = Redactor().redact(f"token={GHP} password=hunter2 {PEM}").text
    assert Redactor().redact(once).text == once and Redactor().redact(once).counts == {}


@pytest.mark.parametrize("code", [
    "token = get_token()",
    "password = self.password",
    "api_key = os.environ['OPENAI_API_KEY']",
    "def login(token: str, password: Optional[str] = None) -> None:",
    "if token != current_token:",
    "max_tokens: 1024",
    '"input_tokens": 1200, "cache_read_input_tokens": 0',
    '"token_type": "Bearer"',
    "secret_name = 'prod'",
    'password: "${DB_PASSWORD}"',
    "token=$GITHUB_TOKEN",
    "api_key: <your key here>",
    "Authorization: Bearer <token>",
    "Basic setup guide: run the installer",
    "the bearer of bad news",
    "pip install scikit-learn sk-learn task-runner",
    "Incorrect API key provided: sk-proj-****abcd.",
    "see -----BEGIN PRIVATE KEY----- blocks in PEM files",
    "SOCKS5_METHOD_USER_PASSWORD_AUTHENTICATION = 0x02",
    "aigw_interception_days and aigw_proxy_redactions_total",
    'token_range = "%d,%d" % (start, end)',
    "The quick brown fox explains how JWT signing and API keys work.",
])
def test_ordinary_code_and_prose_are_left_alone(code: str) -> None:
    result = Redactor().redact(code)
    assert (result.text, dict(result.counts)) == (code, {})


def test_tool_input_json_stays_valid_json() -> None:
    tool_input = json.dumps({"command": f"export OPENAI_API_KEY={OPENAI_PROJ} && curl -H "
                                        f"\"Authorization: Bearer {GHP}\"", "file": PEM, "n": 1})
    result = Redactor().redact(tool_input)
    decoded = json.loads(result.text)
    assert OPENAI_PROJ not in result.text and GHP not in result.text and PEM_BODY.splitlines()[0] not in result.text
    assert decoded["file"] == "[REDACTED:private-key]" and decoded["n"] == 1
    assert result.counts == {"openai-api-key": 1, "github-token": 1, "private-key": 1}


def test_allow_list_keeps_matching_secrets() -> None:
    example = "AKIAIOSFODNN7EXAMPLE"
    r = Redactor(allow=[re.compile("EXAMPLE$")])
    result = r.redact(f"docs key {example}, real key {AWS_ID}")
    assert result.text == "docs key AKIAIOSFODNN7EXAMPLE, real key [REDACTED:aws-access-key]"


def test_extra_patterns_add_kinds() -> None:
    r = Redactor([compile_extra_rule("corp-token", r"corp_[a-z0-9]{12}"),
                  compile_extra_rule("ticket-pin", r"PIN (\d{6})", keywords=["pin"])])
    result = r.redact("use corp_abc123def456 with PIN 918273")
    assert result.text == "use [REDACTED:corp-token] with PIN [REDACTED:ticket-pin]"
    with pytest.raises(ValueError, match="lower-case words"):
        compile_extra_rule("Bad Name", "x")
    with pytest.raises(ValueError, match="invalid regex"):
        compile_extra_rule("bad-regex", "(")
    with pytest.raises(ValueError, match="empty string"):
        compile_extra_rule("everything", ".*")


def test_config_file_redaction_table() -> None:
    cfg = parse_file_config({"redaction": {
        "mode": "block", "max_field_bytes": 4096, "allow": ["EXAMPLE$"],
        "patterns": [{"name": "corp-token", "regex": "corp_[a-z0-9]{12}", "keywords": ["corp_"]}],
    }}, base_dir=Path("."))
    assert (cfg.redaction.mode, cfg.redaction.max_field_bytes) == ("block", 4096)
    assert [p.kind for p in cfg.redaction.patterns] == ["corp-token"]
    for bad, message in [
        ({"mode": "loud"}, "redaction.mode"),
        ({"max_field_bytes": 10}, "at least 1024"),
        ({"allow": ["("]}, "invalid regex"),
        ({"patterns": [{"name": "x"}]}, "name and regex"),
        ({"patterns": [{"name": "x", "regex": "y", "flags": "i"}]}, "unknown key"),
        ({"colour": "red"}, "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_file_config({"redaction": bad}, base_dir=Path("."))


def ended(**kw: object) -> InterceptionEnded:
    return InterceptionEnded(id="ix", ended_at=datetime.now(UTC), status="completed", **kw)  # type: ignore[arg-type]


def test_policy_redacts_every_recorded_field_and_counts_per_record() -> None:
    seen: list[dict[str, int]] = []
    policy = RecordPolicy(Redactor(), on_redactions=lambda c: seen.append(dict(c)))
    ev = ended(prompt=f"deploy with {AWS_ID} and {AWS_ID}", error=f"bad key {ANTHROPIC}",
               tool_calls=[ToolCall("r", "c1", "Bash", json.dumps({"command": f"echo {GHP}"}))],
               thoughts=[ModelThought(f"the user pasted {PEM}", "thinking")], metadata={"streaming": True})
    policy.apply(ev)
    assert ev.prompt == "deploy with [REDACTED:aws-access-key] and [REDACTED:aws-access-key]"
    assert ev.error == "bad key [REDACTED:anthropic-api-key]"
    assert json.loads(ev.tool_calls[0].input) == {"command": "echo [REDACTED:github-token]"}
    assert ev.thoughts[0].content == "the user pasted [REDACTED:private-key]"
    counts = {"aws-access-key": 2, "anthropic-api-key": 1, "github-token": 1, "private-key": 1}
    assert ev.metadata == {"streaming": True, "redactions": counts}
    assert seen == [counts]


def test_policy_caps_fields_with_a_marker_and_the_original_size() -> None:
    policy = RecordPolicy(Redactor(), max_field_bytes=2048)
    big = "é" + "x" * 10_000  # 10,002 bytes in UTF-8
    ev = ended(prompt=big, tool_calls=[ToolCall("r", "c", "Write", "y" * 3000), ToolCall("r", "d", "Read", "{}")],
               metadata={"truncated": {"request_body": 1}})
    policy.apply(ev)
    assert ev.prompt == big[:2047] + TRUNCATION_MARKER.format(size=10_002)
    assert ev.tool_calls[0].input == "y" * 2048 + TRUNCATION_MARKER.format(size=3000)
    assert ev.tool_calls[1].input == "{}"
    assert ev.metadata["truncated"] == {"request_body": 1, "prompt": 10_002, "tool_calls[0].input": 3000}


def test_a_secret_across_the_cut_is_redacted_not_half_kept() -> None:
    policy = RecordPolicy(Redactor(), max_field_bytes=1024)
    text = "a" * 1010 + " " + GHP + " " + "b" * 5000  # the token starts 13 bytes before the cut
    ev = ended(prompt=text)
    policy.apply(ev)
    assert ev.prompt is not None
    assert GHP[:13] not in ev.prompt and "[REDACTED:" not in ev.prompt  # a placeholder is not cut in half either
    assert ev.prompt.startswith("a" * 1010) and ev.prompt.endswith(TRUNCATION_MARKER.format(size=len(text)))
    assert "redactions" not in ev.metadata  # nothing of the secret was kept, so nothing counts


def started(prompt: str, id: str = "ix") -> InterceptionStarted:
    return InterceptionStarted(id=id, initiator=Initiator("u", "alice", "t"), provider="anthropic",
                               provider_name="anthropic", model="m", client="Unknown", client_session_id=None,
                               started_at=datetime.now(UTC), metadata={}, prompt=prompt)


@pytest.mark.parametrize("max_field_bytes", [256 * 1024, 64])
def test_a_start_and_its_end_record_the_same_cleaned_prompt(max_field_bytes: int) -> None:
    seen: list[dict[str, int]] = []
    policy = RecordPolicy(Redactor(), max_field_bytes=max_field_bytes, on_redactions=lambda c: seen.append(dict(c)))
    prompt = f"use {AWS_ID} to deploy, then tell me what " + "happened " * 10
    start, other, end = started(prompt), started("no secret here", id="other"), ended(prompt=prompt,
                                                                                     error=f"bad key {ANTHROPIC}")
    for event in (start, other, end):  # applied in place
        policy.apply(event)
    assert start.prompt == end.prompt and start.prompt is not None and "[REDACTED:aws-access-key]" in start.prompt
    assert AWS_ID not in start.prompt and other.prompt == "no secret here"
    assert start.metadata["redactions"] == {"aws-access-key": 1}
    assert end.metadata["redactions"] == {"aws-access-key": 1, "anthropic-api-key": 1}
    assert seen == [{"aws-access-key": 1}, {"aws-access-key": 1, "anthropic-api-key": 1}]
    capped = len(prompt) if max_field_bytes < len(prompt) else None
    truncated = [record.metadata.get("truncated") or {} for record in (start, end)]
    assert [t.get("prompt") for t in truncated if isinstance(t, dict)] == [capped, capped]
    # An end whose prompt is not its start's is cleaned on its own.
    policy.apply(started(prompt))
    changed = ended(prompt=f"{GHP} now")
    policy.apply(changed)
    assert changed.prompt == "[REDACTED:github-token] now"
    assert changed.metadata["redactions"] == {"github-token": 1}


def test_redaction_off_still_caps() -> None:
    policy = RecordPolicy(None, max_field_bytes=1024)
    ev = ended(prompt=f"{GHP} " + "z" * 2000)
    policy.apply(ev)
    assert ev.prompt is not None and ev.prompt.startswith(GHP) and "redactions" not in ev.metadata
    assert ev.metadata["truncated"] == {"prompt": len(GHP) + 2001}
