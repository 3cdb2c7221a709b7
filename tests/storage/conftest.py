"""Storage fixtures: a fresh database, users in it, a running record writer. Record-event helpers live in
tests/support/records.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, UserStore, open_database
from tests.support.backends import database_target, parametrize_backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests using `db` (or `db_target`) run on SQLite and on PostgreSQL; those using `db_path`, or marked
    `sqlite_only`, on SQLite alone."""
    parametrize_backends(metafunc)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A SQLite database file (for tests about SQLite itself: its pragmas, its file, its VM)."""
    return tmp_path / "data" / "aigw.db"


@pytest.fixture
def db_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str | Path]:
    """What `open_database` takes: a SQLite path, or the URL of a PostgreSQL database of this test's own."""
    with database_target(backend, tmp_path, request) as target:
        yield target


@pytest.fixture
async def db(db_target: str | Path) -> AsyncIterator[Database]:
    database = await open_database(db_target)
    yield database
    await database.close()


@pytest.fixture
async def alice(db: Database) -> Initiator:
    _, token = await UserStore(db).create_user("alice")
    who = await UserStore(db).authenticate(token)
    assert who is not None
    return who


@pytest.fixture
async def bob(db: Database) -> Initiator:
    _, token = await UserStore(db).create_user("bob", role="admin")
    who = await UserStore(db).authenticate(token)
    assert who is not None
    return who


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[RecordWriter]:
    w = RecordWriter(db, flush_interval=0.005)
    w.start()
    yield w
    await w.close(timeout=10)
