"""Lenient reload evaluation: per-provider statuses, first-wins host claims, and files that fail as a whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aigw_proxy.config.reload import Reloader, evaluate_config
from aigw_proxy.config.settings import ConfigError, FileConfig
from aigw_proxy.telemetry.metrics import Metrics

ATTEMPT = "coder_ai_gateway_proxy_providers_last_reload_timestamp_seconds"
SUCCESS = "coder_ai_gateway_proxy_providers_last_reload_success_timestamp_seconds"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aigw.toml"
    p.write_text(text)
    return p


def test_each_provider_gets_a_status_and_bad_ones_are_left_out(tmp_path: Path) -> None:
    ev = evaluate_config(write(tmp_path, """
[[providers]]
name = "openai"
enabled = false

[[providers]]
name = "acme"
type = "openai"
hosts = ["llm.acme.test"]

[[providers]]
name = "bad-url"
type = "openai"
hosts = ["x.test"]
upstream = "http://127.0.0.1:1"

[[providers]]
name = "thief"
type = "anthropic"
hosts = ["api.anthropic.com", "free.test"]

[[providers]]
name = "gopher"
type = "gopher"
hosts = ["g.test"]

[[providers]]
name = "acme"
type = "openai"
hosts = ["again.test"]
"""))
    st = {(s.name, s.status) for s in ev.providers}
    assert {("anthropic", "enabled"), ("openai", "disabled"), ("acme", "enabled"), ("bad-url", "error"),
            ("thief", "error"), ("gopher", "error"), ("acme", "error")} <= st
    errors: dict[str, str] = {}
    for s in ev.providers:
        if s.status == "error":
            assert s.error is not None, s  # an error status says what is wrong
            errors[s.name] = s.error
    assert "must be an https:// URL" in errors["bad-url"]
    assert "'api.anthropic.com' is already claimed by provider 'anthropic'" in errors["thief"]
    assert "unknown type 'gopher'" in errors["gopher"]
    table = ev.config.provider_table()
    assert table.for_host("llm.acme.test").name == "acme"  # type: ignore[union-attr]
    assert table.for_host("api.anthropic.com").name == "anthropic"  # type: ignore[union-attr]
    assert table.for_host("free.test") is None and table.for_host("api.openai.com") is None
    assert [p.name for p in ev.config.providers].count("acme") == 1


@pytest.mark.parametrize(("text", "message"), [
    ("this is not toml", "invalid TOML"),
    ("allowed_ports = ['x']", "allowed_ports must be a list"),
    ("providers = 3", "providers must be an array"),
    ("surprise = 1", "unknown setting(s) surprise"),
    ('[[prices]]\nmodel = "x"\ninput = "cheap"\noutput = 1', "input must be a non-negative number"),
])
def test_an_unusable_file_fails_as_a_whole(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate_config(write(tmp_path, text))


def test_a_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        evaluate_config(tmp_path / "gone.toml")


def test_a_reload_reads_the_prices(tmp_path: Path) -> None:
    ev = evaluate_config(write(tmp_path, '[[prices]]\nmodel = "gpt-*"\ndiscount = 0.1\n'))
    assert [(p.model, str(p.discount)) for p in ev.config.prices] == [("gpt-*", "0.1")]


async def test_failed_reload_keeps_routing_and_stamps_only_the_attempt(tmp_path: Path) -> None:
    path = write(tmp_path, '[[providers]]\nname = "acme"\ntype = "openai"\nhosts = ["llm.acme.test"]\n')
    applied: list[FileConfig] = []
    metrics = Metrics()
    reloader = Reloader(path, applied.append, metrics)
    assert await reloader.reload("test") is True
    ok_at = metrics.registry.get_sample_value(SUCCESS)
    assert ok_at is not None
    path.write_text("[[providers")
    await asyncio.sleep(0.01)  # a later attempt time
    assert await reloader.reload("test") is False
    assert len(applied) == 1 and applied[0].provider_table().for_host("llm.acme.test") is not None
    attempts = metrics.registry.get_sample_value(ATTEMPT)
    assert attempts is not None
    assert metrics.registry.get_sample_value(SUCCESS) == ok_at < attempts
    assert ("acme", "openai", "enabled") in {(s.name, s.type, s.status) for s in reloader.last_statuses}
