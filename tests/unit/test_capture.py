"""The capture builder (`--capture-bodies`): what reaches the capture table from what the relay collected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from aigw_proxy.capture.build import CaptureBuilder
from aigw_proxy.capture.raw import MARGIN, CaptureRecord, RawCapture
from aigw_proxy.capture.stored import compress, decompress
from aigw_proxy.redaction.engine import Redactor
from tests.support.records import T0

ANTHROPIC_KEY = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 3
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def _raw(request: bytes = b"", response: bytes = b"", *, headers: dict[str, str] | None = None,
         max_bytes: int = 64 * 1024) -> RawCapture:
    raw = RawCapture(max_bytes, route="/v1/messages", request_headers=headers or {})
    raw.request.set(request)
    raw.response.add(response)
    raw.response_status = 200
    return raw


def test_a_key_pasted_in_a_prompt_is_redacted_and_counted() -> None:
    body = json.dumps({"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": f"why does {ANTHROPIC_KEY} fail? also {AWS_KEY}"}]}).encode()
    sealed = CaptureBuilder(Redactor()).seal(_raw(body))
    text = sealed.request.text()
    assert ANTHROPIC_KEY not in text and AWS_KEY not in text
    assert "[REDACTED:anthropic-api-key]" in text and "[REDACTED:aws-access-key]" in text
    assert json.loads(text)["model"] == "claude-sonnet-4-5"  # still the JSON it was
    assert sealed.redactions == {"anthropic-api-key": 1, "aws-access-key": 1}
    assert sealed.request.size == len(body) and not sealed.request.truncated


def test_credential_headers_keep_their_name_not_their_value() -> None:
    headers = {
        "authorization": f"Bearer {ANTHROPIC_KEY}", "x-api-key": ANTHROPIC_KEY, "cookie": "session=abc123xyz",
        "proxy-authorization": "Basic YWxpY2U6c2VjcmV0", "x-goog-api-key": "AIza" + "x" * 35,
        "x-my-session-token": "opaque", "content-type": "application/json", "anthropic-version": "2023-06-01",
        "x-note": f"see {AWS_KEY}",
    }
    sealed = CaptureBuilder(Redactor()).seal(_raw(b"{}", headers=headers))
    h = sealed.request_headers
    for name in ("authorization", "x-api-key", "cookie", "proxy-authorization", "x-goog-api-key",
                 "x-my-session-token"):
        assert h[name] == "[REDACTED:credential-header]"
    assert h["content-type"] == "application/json" and h["anthropic-version"] == "2023-06-01"
    assert h["x-note"] == "see [REDACTED:aws-access-key]"  # any other header: secrets found in it go
    assert sealed.redactions["credential-header"] == 6
    assert not any(ANTHROPIC_KEY in v or AWS_KEY in v for v in h.values())


def test_headers_are_scrubbed_even_with_redaction_off() -> None:
    sealed = CaptureBuilder(None).seal(_raw(f"key {ANTHROPIC_KEY}".encode(),
                                            headers={"authorization": f"Bearer {ANTHROPIC_KEY}"}))
    assert sealed.request_headers["authorization"] == "[REDACTED:credential-header]"
    assert ANTHROPIC_KEY in sealed.request.text()  # --redaction off: bodies as they were


def test_a_body_past_the_bound_is_cut_and_says_so() -> None:
    body = b"data: " + b"x" * 40_000 + b"\n\n"
    raw = _raw(response=body, max_bytes=4096)
    assert len(raw.response.data) == 4096 + MARGIN  # the relay keeps the bound and a margin, nothing more
    sealed = CaptureBuilder(Redactor(), 4096).seal(raw)
    assert sealed.response.truncated and sealed.response.size == len(body) and sealed.response.stored == 4096
    assert decompress(sealed.response.data) == body[:4096]
    assert not sealed.request.truncated


def test_a_secret_across_the_cut_is_redacted_not_cut_in_two() -> None:
    body = b"a" * 4080 + b" " + ANTHROPIC_KEY.encode() + b" tail" * 100
    sealed = CaptureBuilder(Redactor(), 4096).seal(_raw(body, max_bytes=4096))
    kept = decompress(sealed.request.data)
    assert sealed.request.truncated and len(kept) <= 4096
    assert b"sk-ant-" not in kept and ANTHROPIC_KEY[:12].encode() not in kept
    assert not kept.endswith(b"[REDACTED:")  # never half a placeholder


def test_compression_round_trip_and_bytes_kept_exactly() -> None:
    body = "café ✓ ".encode() * 500 + b"\xff\xfe not utf-8"
    sealed = CaptureBuilder(Redactor()).seal(_raw(body))
    assert decompress(sealed.request.data) == body  # no secret: byte for byte
    assert len(sealed.request.data) < len(body) / 10
    assert zstandard.ZstdDecompressor().decompress(sealed.request.data) == body  # plain zstd frames
    assert decompress(compress(b"")) == b"" and decompress(b"") == b""
    with pytest.raises(ValueError):
        decompress(sealed.request.data, "gzip")


def test_a_capture_record_seals_once_and_drops_the_raw_bodies() -> None:
    record = CaptureRecord("i-1", T0, raw=_raw(ANTHROPIC_KEY.encode()), builder=CaptureBuilder(Redactor()))
    first = record.seal()
    assert record.raw is None and record.seal() is first
    assert ANTHROPIC_KEY not in first.request.text()


def test_each_websocket_turn_captures_its_request_message_and_its_server_messages() -> None:
    """Two lanes interleaved on one socket: each turn's capture holds its own `response.create` and only the
    server messages of its lane, one a line, as relayed."""
    from aigw_proxy.capture.raw import Capturing
    from aigw_proxy.intercept.interception import Interception
    from aigw_proxy.intercept.socket_turns import SocketTurns
    from aigw_proxy.policy.providers import Api, builtin_providers
    from aigw_proxy.recording.records import Initiator
    from tests.unit.test_socket_turns import create, events

    openai = next(p for p in builtin_providers() if p.name == "openai")
    captured: list[CaptureRecord] = []
    capturing = Capturing(CaptureBuilder(Redactor()), captured.append)

    def new() -> Interception:
        return Interception(api=Api.OPENAI_RESPONSES, provider=openai, initiator=Initiator("u1", "alice", "t1"),
                            headers={"authorization": "Bearer sk-" + "k9" * 20, "user-agent": "codex"},
                            route="/v1/responses", submit=lambda e: None, transport="websocket",
                            capturing=capturing)

    turns = SocketTurns(new)
    requests = {"a": create(f"lane a {AWS_KEY}", stream_id="a"), "b": create("lane b", stream_id="b")}
    turns.client_message(requests["a"])
    turns.client_message(requests["b"])
    sent = {"a": events("resp_a", stream_id="a"), "b": events("resp_b", stream_id="b")}
    for ea, eb in zip(sent["a"], sent["b"], strict=True):
        turns.server_message(eb)
        turns.server_message(ea)
    by_lane = {json.loads(c.seal().request.text())["stream_id"]: c.seal() for c in captured}
    assert set(by_lane) == {"a", "b"}
    assert by_lane["b"].request.text() == requests["b"]
    assert by_lane["a"].request.text() == requests["a"].replace(AWS_KEY, "[REDACTED:aws-access-key]")
    for lane in ("a", "b"):
        s = by_lane[lane]
        assert s.response.text() == "".join(m + "\n" for m in sent[lane])
        assert (s.transport, s.response_status, s.streamed) == ("websocket", 101, True)
        assert s.request_headers["authorization"] == "[REDACTED:credential-header]"


def test_the_switch_and_the_bound_from_the_config_file_and_the_command_line(tmp_path: Path) -> None:
    from aigw_proxy.config.settings import ConfigError, Settings, parse_file_config

    assert not Settings().capture_enabled and Settings().capture_limit == 1024 * 1024  # off by default
    cfg = parse_file_config({"capture_bodies": True, "capture_max_bytes": 4096}, base_dir=tmp_path)
    assert Settings(file=cfg).capture_enabled and Settings(file=cfg).capture_limit == 4096
    assert not Settings(file=cfg, capture_bodies=False).capture_enabled  # --no-capture-bodies wins
    assert Settings(file=cfg, capture_max_bytes=8192).capture_limit == 8192
    for bad in ({"capture_bodies": "yes"}, {"capture_max_bytes": 10}, {"capture_max_bytes": True}):
        with pytest.raises(ConfigError, match="capture_"):
            parse_file_config(bad, base_dir=tmp_path)
