"""A daemon of its own for the API tests (no other test's traffic in it), seeded with a known dataset."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.support.api import Api
from tests.support.api_seed import seed, user_id
from tests.support.backends import BACKENDS, fresh_database
from tests.support.daemon import UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn


@pytest.fixture(scope="session", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
        upstream_pki: UpstreamPKI) -> Iterator[Api]:
    """The daemon on each backend in turn: SQLite, then PostgreSQL (every API test runs against both)."""
    tmp = tmp_path_factory.mktemp(f"api-daemon-{request.param}")
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_cluster"), migrated=False))
        d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file), extra_args=("--retention", "0"),
                         database_url=url)
        try:
            tokens = {"root": d.cli("users", "add", "root", "--role", "admin").stdout.strip()}
            for name in ("alice", "bob", "carol"):
                tokens[name] = d.token(name)
            users = {name: user_id(d.database, name) for name in tokens}
            yield Api(d, seed(d.database, users), tokens)
        finally:
            stop_daemon(d)
