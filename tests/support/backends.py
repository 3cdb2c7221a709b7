"""Running a test against both database backends: a SQLite file of its own, or a PostgreSQL database of its own
in the session's throwaway cluster (tests/support/postgres.py).

A conftest that wants its tests to run on both calls `parametrize_backends(metafunc)` from its
`pytest_generate_tests`: every test that (through its fixtures) uses `backend` runs once per backend, except
tests marked `@pytest.mark.sqlite_only("why")` or using the SQLite-only `db_path` fixture, which run on SQLite
only. Each PostgreSQL test database is a copy of one migrated template (CREATE DATABASE … TEMPLATE: a file copy,
much faster than migrating again), dropped afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.postgres import PostgresCluster, run_sync

BACKENDS = ("sqlite", "postgresql")
_templates: dict[str, str] = {}


def parametrize_backends(metafunc: pytest.Metafunc, *, only_sqlite_with: tuple[str, ...] = ("db_path",)) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        if "backend" in str(marker.args[0]):
            return  # the test chose its backends itself
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None or any(
        name in metafunc.fixturenames for name in only_sqlite_with)
    metafunc.parametrize("backend", ["sqlite"] if sqlite_only else list(BACKENDS))


def migrated_template(cluster: PostgresCluster) -> str:
    """The name of a database migrated to the latest schema, made once per cluster (no connection left open)."""
    key = str(cluster.root)
    if key not in _templates:
        from aigw_proxy.storage import open_database

        url = cluster.create_database(f"aigw_template_{len(_templates)}")

        async def migrate() -> None:
            await (await open_database(url)).close()

        run_sync(migrate())  # in a thread of its own: callers may be inside a running event loop
        _templates[key] = urlsplit(url).path.lstrip("/")
    return _templates[key]


@contextlib.contextmanager
def fresh_database(cluster: PostgresCluster, *, migrated: bool = True) -> Iterator[str]:
    """The URL of a new database for one test (a copy of the migrated template, or empty), dropped afterwards."""
    url = cluster.create_database(template=migrated_template(cluster) if migrated else None)
    try:
        yield url
    finally:
        cluster.drop_database(urlsplit(url).path.lstrip("/"))


@contextlib.contextmanager
def database_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                    *, migrated: bool = True) -> Iterator[str | Path]:
    """What `open_database` takes for `backend`: a SQLite file path under `tmp_path`, or a fresh PostgreSQL URL."""
    if backend == "sqlite":
        yield tmp_path / "data" / "aigw.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    with fresh_database(cluster, migrated=migrated) as url:
        yield url
