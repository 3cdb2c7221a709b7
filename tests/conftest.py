"""Shared fixtures: a stand-in provider upstream on 127.0.0.1 and a real `aigw-proxy run` daemon in front of it.

Nothing here reaches the internet: every provider is pointed at the stand-in with its `upstream` override, and
tunnels are only ever opened to servers these fixtures start on loopback. The helpers behind them live in
tests/support/ (daemon.py, certs.py, standin.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backends import BACKENDS, fresh_database
from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem
from tests.support.daemon import PROVIDER_HOSTS, Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.postgres import (  # noqa: F401
    PostgresCluster,
    fresh_postgres_url,
    postgres_cluster,
    postgres_url,
)
from tests.support.standin import StandIn
from tests.support.ws_fixtures import ws_daemon, ws_proxy_env, ws_standin_server, ws_upstream  # noqa: F401


@pytest.fixture(scope="session")
def upstream_pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    d = tmp_path_factory.mktemp("upstream-pki")
    ca_cert, ca_key = make_ca("Stand-in Upstream CA")
    cert, key = make_server_cert(ca_cert, ca_key, [*PROVIDER_HOSTS, "origin.test", "localhost"])
    return UpstreamPKI(write_pem(d / "upstream-ca.pem", ca_cert), server_ssl_context(cert, key))


@pytest.fixture(scope="session")
def standin_server(upstream_pki: UpstreamPKI) -> Iterator[StandIn]:
    s = StandIn(upstream_pki.context).start()
    yield s
    s.stop()


@pytest.fixture
def upstream(standin_server: StandIn) -> Iterator[StandIn]:
    standin_server.reset()
    yield standin_server
    standin_server.reset()


@pytest.fixture(scope="session")
def origin_server(upstream_pki: UpstreamPKI) -> Iterator[StandIn]:
    """A TLS server that is NOT a provider: traffic to it must be tunnelled, never decrypted."""
    s = StandIn(upstream_pki.context).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn, origin_server: StandIn,
           upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("daemon")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file, ports=[origin_server.port]))
    yield d
    stop_daemon(d)


@pytest.fixture(scope="session")
def postgres_daemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn, origin_server: StandIn,
                    upstream_pki: UpstreamPKI, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """Like `daemon`, its records in a PostgreSQL database of its own."""
    tmp = tmp_path_factory.mktemp("daemon-postgresql")
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    with fresh_database(cluster, migrated=False) as url:
        d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file, ports=[origin_server.port]),
                         database_url=url)
        yield d
        stop_daemon(d)


@pytest.fixture
def proxy_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """Point SDK clients created in the test at the proxy, the way users do: HTTPS_PROXY + SSL_CERT_FILE."""
    return point_clients_at(daemon, monkeypatch)


@pytest.fixture(params=BACKENDS)
def proxy_env_each_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """`proxy_env` on the SQLite daemon, then on the PostgreSQL one (a test module opts in by naming its
    `proxy_env` fixture after this one)."""
    daemon = request.getfixturevalue("daemon" if request.param == "sqlite" else "postgres_daemon")
    return point_clients_at(daemon, monkeypatch)


def point_clients_at(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setenv("HTTPS_PROXY", daemon.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(daemon.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    return daemon
