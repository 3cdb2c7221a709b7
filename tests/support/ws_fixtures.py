"""Fixtures for the WebSocket end-to-end tests: a Responses WebSocket stand-in and a daemon whose providers all
point at it (imported by tests/conftest.py so every module shares one of each)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.ws_standin import WsStandIn

if TYPE_CHECKING:
    from tests.support.daemon import Daemon, UpstreamPKI


@pytest.fixture(scope="session")
def ws_standin_server(upstream_pki: UpstreamPKI) -> Iterator[WsStandIn]:
    s = WsStandIn(upstream_pki.context).start()
    yield s
    s.stop()


@pytest.fixture
def ws_upstream(ws_standin_server: WsStandIn) -> Iterator[WsStandIn]:
    ws_standin_server.reset()
    yield ws_standin_server
    ws_standin_server.reset()


@pytest.fixture(scope="session")
def ws_daemon(tmp_path_factory: pytest.TempPathFactory, ws_standin_server: WsStandIn,
              upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    from tests.support.daemon import provider_config, start_daemon, stop_daemon  # here: conftest imports this module

    d = start_daemon(tmp_path_factory.mktemp("ws-daemon"), provider_config(ws_standin_server, upstream_pki.ca_file))
    yield d
    stop_daemon(d)


@pytest.fixture
def ws_proxy_env(ws_daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """SDK clients created in the test go through the WebSocket daemon: HTTPS_PROXY + SSL_CERT_FILE, as users do."""
    monkeypatch.setenv("HTTPS_PROXY", ws_daemon.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(ws_daemon.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy",
                "WSS_PROXY", "wss_proxy", "SOCKS_PROXY", "socks_proxy"):
        monkeypatch.delenv(var, raising=False)
    return ws_daemon
