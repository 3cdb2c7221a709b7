"""`aigw-proxy db migrate-to`: a SQLite database copied into PostgreSQL answers every list, count and session
exactly as the SQLite one did; an interrupted copy continues where it stopped; the counts are printed."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aigw_proxy.recording.records import Initiator
from aigw_proxy.spend.budgets import Budget
from aigw_proxy.storage import (
    ControlsStore,
    Database,
    InterceptionFilter,
    RecordWriter,
    UserStore,
    get_session,
    list_interceptions,
    open_database,
    sessions_page,
    spend_report,
)
from aigw_proxy.storage.read.counts import count_interceptions
from aigw_proxy.storage.transfer import transfer
from tests.storage.test_session_slices import DAY, _write_random_traffic
from tests.support.backends import fresh_database
from tests.support.daemon import run_cli
from tests.support.postgres import PostgresCluster
from tests.support.records import at


async def _answers(db: Database) -> list[Any]:
    """What the API would show: interception pages, sessions lists (filtered and windowed), sessions, counts."""
    out: list[Any] = [await list_interceptions(db, limit=1000), await count_interceptions(db),
                      await ControlsStore(db).list_groups(), await ControlsStore(db).list_budgets()]
    out += [await spend_report(db, by=by) for by in ("user", "model", "day", None)]
    for flt in (InterceptionFilter(), InterceptionFilter(provider="openai"), InterceptionFilter(model="gpt-5"),
                InterceptionFilter(started_after=at(2 * DAY), started_before=at(6 * DAY)),
                InterceptionFilter(client="Unknown", started_after=at(DAY))):
        total, page = await sessions_page(db, flt, limit=1000)
        out += [total, page, await count_interceptions(db, flt)]
        for s in page[:8]:
            out.append(await get_session(db, s["id"]))
    return out


class Stop(Exception):
    pass


async def test_a_copy_answers_as_the_original_and_resumes(
    db: Database, db_path: Path, writer: RecordWriter, alice: Initiator, bob: Initiator,
    postgres_cluster: PostgresCluster,
) -> None:
    await _write_random_traffic(writer, [alice, bob], seed=4)
    await writer.close(timeout=10)
    _, carol_token = await UserStore(db).create_user("carol")
    controls = ControlsStore(db)
    await controls.create_group("eng")
    await controls.add_member("eng", "alice")
    await controls.set_budget(Budget.build("group:eng", daily=Decimal("5"), monthly=Decimal("50")))
    await controls.set_budget(Budget.build("user:carol", monthly=Decimal("12.5")))
    with closing(sqlite3.connect(db_path)) as raw, raw:  # rows from before schema v10: no interception start
        raw.execute("UPDATE aibridge_tool_usages SET interception_started_at = NULL")
    expected = await _answers(db)

    with fresh_database(postgres_cluster, migrated=False) as url:
        target = await open_database(url)
        try:
            lines: list[str] = []

            def interrupt(line: str) -> None:
                lines.append(line)
                if len(lines) == 3:
                    raise Stop  # as if the process died after three chunks

            with pytest.raises(Stop):
                await transfer(db_path, target, chunk=40, progress=interrupt)
            async with target.reader.connect() as conn:
                copied = (await conn.exec_driver_sql("SELECT count(*) FROM aibridge_interceptions")).scalar()
            assert copied == 3 * 40  # whole chunks, each with its children
            report = await transfer(db_path, target, chunk=40)
            assert report.complete and report.copied["aibridge_interceptions"] < report.counts[
                "aibridge_interceptions"][0]  # the first run's chunks were skipped
            assert all(source == copy for source, copy in report.counts.values()), report.counts
            assert all(source == copy for source, copy in report.summaries.values()), report.summaries
            assert await _answers(target) == expected
            assert await UserStore(target).authenticate(carol_token) is not None
            again = await transfer(db_path, target, chunk=40)
            assert set(again.copied.values()) == {0} and again.complete
        finally:
            await target.close()


def test_the_command_prints_the_counts_and_hides_the_password(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    data = tmp_path / "data"
    token = run_cli(data, "users", "add", "alice").stdout.strip()

    async def seed() -> None:
        db = await open_database(data / "aigw-proxy.db")
        who = await UserStore(db).authenticate(token)
        assert who is not None
        w = RecordWriter(db, flush_interval=0.005)
        w.start()
        await _write_random_traffic(w, [who], seed=7)
        await w.close(10)
        await db.close()

    asyncio.run(seed())
    with fresh_database(postgres_cluster, migrated=False) as url:
        proc = run_cli(data, "db", "migrate-to", "--chunk", "25", env={"AIGW_DATABASE_URL": url})
        assert postgres_cluster.password not in proc.stdout + proc.stderr
        assert "copying" in proc.stderr and "postgresql://aigw:***@" in proc.stderr
        table = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:-1]}
        n = table["aibridge_interceptions"]
        assert n[0] == n[1] == n[2] and int(n[0]) > 50
        assert proc.stdout.splitlines()[-1].endswith("complete")
        rerun = run_cli(data, "db", "migrate-to", url)
        assert [line.split()[-1] for line in rerun.stdout.splitlines()[1:12]] == ["0"] * 11  # the tables copied
        # The daemon's commands read the copy through the same URL.
        listed = run_cli(data, "interceptions", "list", "--limit", "1000", database_url=url).stdout
        local = run_cli(data, "interceptions", "list", "--limit", "1000").stdout
        assert listed == local
    bad = run_cli(data, "db", "migrate-to", "mysql://x", check=False)
    assert bad.returncode == 1 and "unsupported database URL scheme" in bad.stderr
