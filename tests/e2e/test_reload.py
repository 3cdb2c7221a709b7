"""Provider reload on SIGHUP and on a config file change: statuses and timestamps in `provider_info`, new routing
for new tunnels, open tunnels untouched, and a broken file that keeps the previous routing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ACME_PROVIDER, Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.metrics import Scrape, scrape, wait_for
from tests.support.payloads import chat_completion, chat_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import openai_client

P = "coder_ai_gateway_proxy_"
ATTEMPT = P + "providers_last_reload_timestamp_seconds"
SUCCESS = P + "providers_last_reload_success_timestamp_seconds"

# ACME_PROVIDER claims `origin.test`, in the stand-in's certificate but resolving nowhere: until it is loaded a
# CONNECT to it cannot be tunnelled (502), so routing changes are visible without any traffic leaving the machine.
BROKEN = """
[[providers]]
name = "broken"
type = "openai"
hosts = ["broken.test"]
upstream = "http://127.0.0.1:1"

[[providers]]
name = "dup"
type = "openai"
hosts = ["api.anthropic.com"]

[[providers]]
name = "weird"
type = "gopher"
hosts = ["weird.test"]
"""
LATER = """
[[providers]]
name = "later"
type = "anthropic"
hosts = ["later.test"]
enabled = false
"""


def statuses(s: Scrape, prefix: str = P) -> dict[str, str]:
    return {lb["provider_name"]: lb["status"] for lb, v in s.samples(prefix + "provider_info") if v == 1}


@pytest.fixture
def rdaemon(tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    standin_server.reset()
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    yield d
    stop_daemon(d)
    standin_server.reset()


def write_config(d: Daemon, standin: StandIn, pki: UpstreamPKI, extra: str) -> None:
    (d.data_dir.parent / "aigw.toml").write_text(provider_config(standin, pki.ca_file) + extra)


def chat(client: object, standin: StandIn, cid: str) -> str:
    standin.queue(Reply.json(chat_completion(cid, "gpt-4o", {"role": "assistant", "content": "hi"},
                                             chat_usage(3, 1))))
    return client.chat.completions.create(  # type: ignore[attr-defined]
        model="gpt-4o", messages=[{"role": "user", "content": f"hello {cid}"}]).id


def test_sighup_reload_flips_statuses_and_routes_new_providers(rdaemon: Daemon, standin_server: StandIn,
                                                               upstream_pki: UpstreamPKI) -> None:
    first = scrape(rdaemon.admin_port)
    assert statuses(first)["copilot"] == "enabled" and "acme" not in statuses(first) and "later" not in statuses(first)
    acme = openai_client(rdaemon, "rita", base_url="https://origin.test/v1")
    with pytest.raises(Exception, match="Connection error"):
        chat(acme, standin_server, "chatcmpl-before")  # no provider claims origin.test yet: tunnel refused (502)
    standin_server.reset()

    write_config(rdaemon, standin_server, upstream_pki,
                 ACME_PROVIDER.format(upstream=standin_server.url) + BROKEN + LATER)
    assert rdaemon.proc is not None
    rdaemon.proc.send_signal(signal.SIGHUP)
    s = wait_for(rdaemon.admin_port, lambda s: statuses(s).get("acme") == "enabled")
    for prefix in (P, "coder_ai_gateway_", "coder_aibridgeproxyd_"):
        st = statuses(s, prefix)
        assert st["acme"] == "enabled" and st["later"] == "disabled" and st["anthropic"] == "enabled"
        assert st["broken"] == st["dup"] == st["weird"] == "error"
    types = {lb["provider_name"]: lb["provider_type"] for lb, _ in s.samples(P + "provider_info")}
    assert types["weird"] == "gopher" and types["acme"] == "openai"
    assert s.value(ATTEMPT) == s.value(SUCCESS) > first.value(SUCCESS)

    # New tunnels follow the new routing; the erroneous `dup` did not take api.anthropic.com away.
    acme = openai_client(rdaemon, "rita", base_url="https://origin.test/v1")
    assert chat(acme, standin_server, "chatcmpl-acme") == "chatcmpl-acme"
    ix = rdaemon.one(response_id="chatcmpl-acme")
    assert (ix["provider_name"], ix["provider"], ix["initiator"]["username"]) == ("acme", "openai", "rita")
    log = rdaemon.log()
    assert "provider weird excluded from routing" in log and "unknown type 'gopher'" in log


def test_file_change_reloads_and_a_broken_file_keeps_the_routing(rdaemon: Daemon, standin_server: StandIn,
                                                                 upstream_pki: UpstreamPKI) -> None:
    write_config(rdaemon, standin_server, upstream_pki, ACME_PROVIDER.format(upstream=standin_server.url))
    s = wait_for(rdaemon.admin_port, lambda s: statuses(s).get("acme") == "enabled")  # the watcher, no signal
    assert statuses(s)["acme"] == "enabled"
    good = s.value(SUCCESS)
    assert s.value(ATTEMPT) == good

    # An open tunnel keeps its decision across reloads, even one that removes its provider.
    acme = openai_client(rdaemon, "rita", base_url="https://origin.test/v1")
    assert chat(acme, standin_server, "chatcmpl-keep-1") == "chatcmpl-keep-1"

    (rdaemon.data_dir.parent / "aigw.toml").write_text("this is not toml")
    s = wait_for(rdaemon.admin_port, lambda s: s.value(ATTEMPT) > good)
    assert s.value(ATTEMPT) > good and s.value(SUCCESS) == good
    assert statuses(s)["acme"] == "enabled"  # the statuses of the routing still in force
    assert "keeping the previous routing" in rdaemon.log()
    fresh = openai_client(rdaemon, "rita", base_url="https://origin.test/v1")
    assert chat(fresh, standin_server, "chatcmpl-still-routed") == "chatcmpl-still-routed"  # new tunnel, old routing

    write_config(rdaemon, standin_server, upstream_pki, "")  # valid again, without acme
    s = wait_for(rdaemon.admin_port, lambda s: s.value(SUCCESS) > good)
    assert "acme" not in statuses(s)
    assert chat(acme, standin_server, "chatcmpl-keep-2") == "chatcmpl-keep-2"  # the open tunnel still decrypts
    assert rdaemon.one(response_id="chatcmpl-keep-2")["provider_name"] == "acme"
