"""Storage fixtures: a fresh database, users in it, a running record writer. Record-event helpers live in
tests/support/records.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.storage import Database, RecordWriter, UserStore, open_database


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "aigw.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = await open_database(db_path)
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
