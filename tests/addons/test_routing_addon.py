"""ProviderRouter on mitmproxy's own test flows: provider hosts are decrypted (and sent to their upstream override),
every other host is checked against the port and private-address policy before it is tunnelled."""

from __future__ import annotations

import ipaddress

from mitmproxy import http
from mitmproxy.test import taddons, tflow

from aigw_proxy.addons.routing import CONNECT_TARGET, PROVIDER, ProviderRouter
from aigw_proxy.config.settings import FileConfig, merge_providers
from tests.support.flows import connect


def config(**kw: object) -> FileConfig:
    providers = merge_providers([{"name": "anthropic", "upstream": "https://127.0.0.1:9443"}])
    return FileConfig(providers=providers, **kw)  # type: ignore[arg-type]


async def test_a_provider_host_is_decrypted_and_dialled_at_its_override() -> None:
    router = ProviderRouter(config())
    with taddons.context(router):
        flow = connect("API.Anthropic.com.")
        await router.http_connect(flow)
        assert flow.response is None
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", 9443)  # never the real host
        target = flow.metadata[CONNECT_TARGET]
        assert (target.host, target.provider.name) == ("api.anthropic.com", "anthropic")
        inner = tflow.tflow(client_conn=flow.client_conn)
        router.requestheaders(inner)
        assert inner.metadata[PROVIDER].name == "anthropic"


async def test_ports_outside_the_allow_list_are_refused() -> None:
    router = ProviderRouter(config())
    with taddons.context(router):
        flow = connect("example.org", 22)
        await router.http_connect(flow)
        assert flow.response is not None and flow.response.status_code == 403
        assert flow.response.content is not None
        assert b"port 22" in flow.response.content


async def test_private_destinations_are_refused_unless_allowed() -> None:
    router = ProviderRouter(config())
    with taddons.context(router):
        flow = connect("localhost")
        await router.http_connect(flow)
        assert flow.response is not None and flow.response.status_code == 403
    allowed = ProviderRouter(config(allowed_private_cidrs=[ipaddress.ip_network("127.0.0.0/8")]))
    with taddons.context(allowed):
        flow = connect("localhost")
        await allowed.http_connect(flow)
        assert flow.response is None
        assert flow.request.host == "127.0.0.1"  # the checked address is the one dialled (no DNS rebinding)
        assert flow.metadata[CONNECT_TARGET].provider is None
        inner = tflow.tflow(client_conn=flow.client_conn)
        allowed.requestheaders(inner)
        assert PROVIDER not in inner.metadata  # a tunnel: nothing inside it is ever intercepted


async def test_a_refused_connect_is_left_alone() -> None:
    router = ProviderRouter(config())
    with taddons.context(router):
        flow = connect("api.anthropic.com")
        flow.response = http.Response.make(407)
        await router.http_connect(flow)
        assert flow.response.status_code == 407 and CONNECT_TARGET not in flow.metadata
