"""Config file validation, provider merging and route matching."""

from __future__ import annotations

import ipaddress
import socket
from decimal import Decimal
from pathlib import Path

import pytest

from aigw_proxy.config.settings import ConfigError, load_file_config, parse_hostport
from aigw_proxy.policy.network import DestinationRefused, is_blocked, resolve_allowed
from aigw_proxy.policy.providers import Api, Provider, RouteMatch


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aigw.toml"
    p.write_text(text)
    return p


def test_builtins_without_a_config_file() -> None:
    cfg = load_file_config(None)
    table = cfg.provider_table()
    assert [p.name for p in cfg.providers] == ["anthropic", "openai", "chatgpt", "copilot", "gemini"]
    assert table.for_host("API.Anthropic.com").name == "anthropic"  # type: ignore[union-attr]
    assert table.for_host("api.business.githubcopilot.com").type == "copilot"  # type: ignore[union-attr]
    assert table.for_host("generativelanguage.googleapis.com").type == "gemini"  # type: ignore[union-attr]
    assert table.for_host("example.com") is None
    assert cfg.allowed_ports == (80, 443)


def test_config_overrides_a_builtin_field_by_field_and_adds_providers(tmp_path: Path) -> None:
    (tmp_path / "extra.pem").write_text("pem")
    cfg = load_file_config(write(tmp_path, """
upstream_ca_file = "extra.pem"
allowed_private_cidrs = ["127.0.0.0/8"]
allowed_ports = [443, 8443]

[[providers]]
name = "anthropic"
upstream = "https://127.0.0.1:9443"

[[providers]]
name = "openai"
enabled = false

[[providers]]
name = "azure-openai"
type = "openai"
hosts = ["myco.openai.azure.com"]
base_path = "/openai/v1"
"""))
    by_name = {p.name: p for p in cfg.providers}
    assert by_name["anthropic"].hosts == ("api.anthropic.com",)
    assert str(by_name["anthropic"].upstream) == "https://127.0.0.1:9443"
    assert by_name["openai"].enabled is False
    table = cfg.provider_table()
    assert table.for_host("api.openai.com") is None  # disabled: tunnelled, not decrypted
    assert table.for_host("myco.openai.azure.com").api_for("POST", "/openai/v1/responses") == Api.OPENAI_RESPONSES  # type: ignore[union-attr]
    assert cfg.upstream_ca_file == tmp_path / "extra.pem"
    assert cfg.allowed_private_cidrs == [ipaddress.ip_network("127.0.0.0/8")]
    assert cfg.allowed_ports == (443, 8443)


@pytest.mark.parametrize(("text", "message"), [
    ('upstream_ca_file = "missing.pem"', "does not exist"),
    ('[[providers]]\nname = "x"\ntype = "openai"', "a new provider needs type and hosts"),
    ('[[providers]]\nname = "anthropic"\nhosts = ["api.anthropic.com:443"]', "must be a bare hostname"),
    ('[[providers]]\nname = "anthropic"\nupstream = "https://h/path"', "no path"),
    ('[[providers]]\nname = "anthropic"\n[[providers]]\nname = "anthropic"', "used twice"),
    ('[[providers]]\nname = "anthropic"\ncolour = "red"', "unknown key(s) colour"),
    ('[[providers]]\nname = "anthropic"\nenabled = "yes"', "enabled must be true or false"),
    ("providers = 3", "array of tables"),
    # [[prices]]: every problem names the table and the key
    ('[[prices]]\nmodel = "llama-*"\ninput = 1', "prices[0]: output required"),
    ('[[prices]]\nmodel = "x"\ninput = -1\noutput = 1', "prices[0]: input must be a non-negative number"),
    ('[[prices]]\nmodel = "x"\ndiscount = 1.5', "discount is a fraction between 0 and 1"),
    ('[[prices]]\nprovider = "openai"', "prices[0]: model is required"),
    ('[[prices]]\nmodel = "a"\ninput = 1\noutput = 1\n[[prices]]\nmodel = "b"\nprice = 3',
     "prices[1]: unknown key(s) price"),
    ("prices = 3", "prices must be an array of tables"),
])
def test_config_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_file_config(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "aigw.toml") in str(err.value)


def test_prices_from_the_config_file(tmp_path: Path) -> None:
    cfg = load_file_config(write(tmp_path, """
[[prices]]
provider = "openai"
model = "our-llama-*"
input = 0.5
output = 1.5

[[prices]]
model = "claude-*"
discount = 0.2
"""))
    assert [(p.provider, p.model, p.discount) for p in cfg.prices] == [
        ("openai", "our-llama-*", Decimal(0)), ("*", "claude-*", Decimal("0.2"))]
    assert cfg.prices[0].rates is not None and cfg.prices[0].rates.cache_read == Decimal("0.5")  # default: input
    assert cfg.prices[1].rates is None  # a discount on the list price
    assert load_file_config(None).prices == ()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_file_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:8888", ("127.0.0.1", 8888)), (":8888", ("0.0.0.0", 8888)), ("[::1]:0", ("::1", 0))])
def test_hostport(value: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(value, "--listen") == expected


@pytest.mark.parametrize("value", ["8888", "host:http", "host:70000"])
def test_bad_hostport(value: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_hostport(value, "--listen")


@pytest.mark.parametrize(("provider", "method", "path", "api"), [
    ("anthropic", "POST", "/v1/messages", Api.ANTHROPIC_MESSAGES),
    ("anthropic", "POST", "/v1/messages?beta=true", Api.ANTHROPIC_MESSAGES),
    ("anthropic", "POST", "/v1/messages/count_tokens", None),
    ("anthropic", "GET", "/v1/messages", None),
    ("anthropic", "GET", "/api/claude_code/settings", None),
    ("openai", "POST", "/v1/chat/completions", Api.OPENAI_CHAT),
    ("openai", "POST", "/v1/responses", Api.OPENAI_RESPONSES),
    ("openai", "POST", "/v1/responses/resp_1/cancel", None),
    ("openai", "GET", "/v1/models", None),
    ("chatgpt", "POST", "/backend-api/codex/responses", Api.OPENAI_RESPONSES),
    ("chatgpt", "POST", "/backend-api/conversation", None),
    ("chatgpt", "POST", "/v1/responses", None),
    ("copilot", "POST", "/chat/completions", Api.OPENAI_CHAT),
    ("copilot", "POST", "/responses", Api.OPENAI_RESPONSES),
    ("copilot", "POST", "/v1/messages", Api.ANTHROPIC_MESSAGES),
    ("copilot", "GET", "/models", None),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:generateContent", Api.GEMINI_GENERATE),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", Api.GEMINI_GENERATE),
    ("gemini", "POST", "/v1/models/gemini-2.5-flash:streamGenerateContent", Api.GEMINI_GENERATE),
    ("gemini", "POST", "/v1alpha/models/gemini-2.5-flash:generateContent", Api.GEMINI_GENERATE),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:countTokens", None),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-pro:embedContent", None),
    ("gemini", "POST", "/v1beta/models/:generateContent", None),
    ("gemini", "POST", "/v1beta/models/a/b:generateContent", None),
    ("gemini", "POST", "/v2/models/gemini-2.5-pro:generateContent", None),
    ("gemini", "GET", "/v1beta/models/gemini-2.5-pro:generateContent", None),
    ("gemini", "GET", "/v1beta/models", None),
])
def test_model_routes(provider: str, method: str, path: str, api: Api | None) -> None:
    p = {p.name: p for p in load_file_config(None).providers}[provider]
    assert p.api_for(method, path) == api


@pytest.mark.parametrize(("path", "model", "streaming"), [
    ("/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", False),
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=AIzaX", "gemini-2.5-pro", True),
    ("/v1/models/gemini-2.5-flash-lite:streamGenerateContent/", "gemini-2.5-flash-lite", True),
    ("/v1beta/models/my%2Dmodel:generateContent", "my-model", False),
])
def test_gemini_routes_name_the_model_and_whether_they_stream(path: str, model: str, streaming: bool) -> None:
    p = {p.name: p for p in load_file_config(None).providers}["gemini"]
    assert p.match_route(path) == RouteMatch(Api.GEMINI_GENERATE, model, streaming)
    # Exact routes say only the API.
    anthropic = {p.name: p for p in load_file_config(None).providers}["anthropic"]
    assert anthropic.match_route("/v1/messages?beta=true") == RouteMatch(Api.ANTHROPIC_MESSAGES)


def test_a_gemini_provider_under_a_base_path(tmp_path: Path) -> None:
    cfg = load_file_config(write(tmp_path, """
[[providers]]
name = "gemini-gw"
type = "gemini"
hosts = ["llm.example.com"]
base_path = "/google"
"""))
    p = cfg.provider_table().for_host("llm.example.com")
    assert p is not None and p.type == "gemini"
    assert p.api_for("POST", "/google/v1beta/models/gemini-2.5-pro:generateContent") == Api.GEMINI_GENERATE
    assert p.api_for("POST", "/v1beta/models/gemini-2.5-pro:generateContent") is None


def test_unknown_provider_type_lists_the_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of anthropic, openai, copilot, gemini"):
        load_file_config(write(tmp_path, '[[providers]]\nname = "x"\ntype = "vertex"\nhosts = ["x.example.com"]'))


def test_provider_name_rules() -> None:
    with pytest.raises(ValueError, match="must match"):
        Provider.build("Bad_Name", "openai", ["x"])
    assert Provider.build("my-gw-2", "anthropic", ["GW.Example.com."]).hosts == ("gw.example.com",)


@pytest.mark.parametrize(("ip", "blocked"), [
    ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("127.0.0.1", True), ("169.254.169.254", True),
    ("100.64.0.1", True), ("0.0.0.0", True), ("198.18.0.1", True), ("224.0.0.1", True), ("240.0.0.1", True),
    ("::1", True), ("fe80::1", True), ("fd00::1", True), ("::ffff:10.0.0.1", True), ("64:ff9b::a00:1", True),
    ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700::1111", False), ("::ffff:8.8.8.8", False),
])
def test_private_and_reserved_addresses(ip: str, blocked: bool) -> None:
    assert is_blocked(ipaddress.ip_address(ip)) is blocked


def test_exempted_cidrs() -> None:
    allowed = [ipaddress.ip_network("10.0.0.0/24")]
    assert not is_blocked(ipaddress.ip_address("10.0.0.7"), allowed)
    assert is_blocked(ipaddress.ip_address("10.0.1.7"), allowed)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.7", "8.8.8.8", "::1", "::ffff:10.0.0.1", "2606:4700::1111",
                                  "0:0::1", "127.1", "localhost"])
async def test_a_tunnel_destination_is_decided_as_the_resolver_would(host: str) -> None:
    """Addresses written out are answered without the resolver (no thread hop): the same address to dial and the
    same refusal as getaddrinfo's answer gives, for every notation it accepts."""
    resolved = [ipaddress.ip_address(str(i[4][0])) for i in socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)]
    allowed = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("127.0.0.0/8"),
               ipaddress.ip_network("::1/128")]
    if any(is_blocked(ip) for ip in resolved):
        with pytest.raises(DestinationRefused):
            await resolve_allowed(host, 443)
    else:
        assert await resolve_allowed(host, 443) == str(resolved[0])
    if not any(is_blocked(ip, allowed) for ip in resolved):
        assert ipaddress.ip_address(await resolve_allowed(host, 443, allowed)) == resolved[0]
