"""A daemon of its own for the API tests (no other test's traffic in it), seeded with a known dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import Api
from tests.support.api_seed import seed, user_id
from tests.support.daemon import UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn, upstream_pki: UpstreamPKI) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api-daemon")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file), extra_args=("--retention", "0"))
    try:
        tokens = {"root": d.cli("users", "add", "root", "--role", "admin").stdout.strip()}
        for name in ("alice", "bob", "carol"):
            tokens[name] = d.token(name)
        db_path = d.data_dir / "aigw-proxy.db"
        users = {name: user_id(db_path, name) for name in tokens}
        yield Api(d, seed(db_path, users), tokens)
    finally:
        stop_daemon(d)
