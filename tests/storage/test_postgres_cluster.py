"""The test suite's own PostgreSQL cluster (tests/support/postgres.py) works the way the backend will use it:
asyncpg and SQLAlchemy's async engine connect with the application role's password over TCP, the role is an
ordinary one (not a superuser), and each test can have a database of its own, empty or copied from a template."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import PostgresCluster, sqlalchemy_url, with_database


async def test_asyncpg_connects_as_the_application_role(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    assert parts.scheme == "postgresql" and parts.hostname == "127.0.0.1" and parts.path == "/aigw"
    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow(
            "SELECT current_user AS who, current_database() AS db, rolsuper, rolcreatedb, "
            "current_setting('server_version_num')::int AS version, current_setting('TimeZone') AS tz "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert (row["who"], row["db"], row["tz"]) == ("aigw", "aigw", "UTC")
        assert row["rolsuper"] is False and row["rolcreatedb"] is True
        assert row["version"] >= 130000
        assert await conn.fetchval("SELECT sum(x) FROM generate_series(1, 100) AS x") == 5050
    finally:
        await conn.close()


async def test_a_wrong_password_is_refused(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    wrong = postgres_url.replace(f":{parts.password}@", ":not-the-password@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


async def test_sqlalchemy_async_engine_round_trips_rows(fresh_postgres_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(fresh_postgres_url))
    meta = sa.MetaData()
    calls = sa.Table(
        "calls", meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("meta", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    )
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(meta.create_all)
            await conn.execute(calls.insert(), [
                {"model": "claude-sonnet-4-5", "started_at": when, "meta": {"client": "Claude Code"}},
                {"model": "gpt-5", "started_at": when, "meta": {"client": "Codex"}},
            ])
        async with engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(calls.c.model, calls.c.started_at, calls.c.meta["client"].as_string()).order_by(calls.c.id)
            )).all()
        assert [tuple(r) for r in rows] == [("claude-sonnet-4-5", when, "Claude Code"), ("gpt-5", when, "Codex")]
    finally:
        await engine.dispose()


async def test_each_test_database_is_its_own_and_templates_copy(
    postgres_cluster: PostgresCluster, fresh_postgres_url: str, postgres_url: str
) -> None:
    conn = await asyncpg.connect(fresh_postgres_url)
    try:
        await conn.execute("CREATE TABLE marker (n int); INSERT INTO marker VALUES (42)")
    finally:
        await conn.close()  # a template must have no connections while it is copied
    template = urlsplit(fresh_postgres_url).path.lstrip("/")
    copy_url = postgres_cluster.create_database(template=template)
    try:
        assert copy_url == with_database(postgres_url, urlsplit(copy_url).path.lstrip("/"))
        conn = await asyncpg.connect(copy_url)
        try:
            assert await conn.fetchval("SELECT n FROM marker") == 42
        finally:
            await conn.close()
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetchval("SELECT to_regclass('marker')") is None  # the shared database is untouched
        finally:
            await conn.close()
    finally:
        postgres_cluster.drop_database(urlsplit(copy_url).path.lstrip("/"))
