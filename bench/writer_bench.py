"""Record writer throughput and retention cost, on SQLite and on PostgreSQL.

    .venv/bin/python bench/writer_bench.py [--database-url postgresql://…] [--interceptions N] [--days D]

Writes N interceptions (each: a start, an end, a token usage, a prompt on new threads, 0-5 tool calls, 0-3
thoughts, in agentic sessions of 1-30 calls, each session one of 20 users'; --users-share-sessions: the users take
turns call by call, nearly every call then a (session, user) of its own) through the real RecordWriter as fast as
it takes them, spread over D days, and prints interceptions/s and child rows/s. On PostgreSQL it runs twice: with
the summary triggers (what production does) and with them disabled, so the triggers' share of the cost is a
measured figure. Then it purges the oldest day and prints how long that took (PostgreSQL: dropping the day's
partitions; SQLite: deleting its rows in batches). Without --database-url a throwaway PostgreSQL cluster is started
(Debian's server binaries, as the tests do) unless --sqlite-only; SQLite runs on a temporary file.
Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    TokenUsage,
    ToolCall,
)
from aigw_proxy.storage import Database, RecordWriter, UserStore, open_database
from aigw_proxy.storage.ids import new_id
from aigw_proxy.storage.retention import purge_old_records

TABLES = ("aibridge_interceptions", "aibridge_token_usages", "aibridge_user_prompts", "aibridge_tool_usages",
          "aibridge_model_thoughts")


def events(who: list[Initiator], n: int, days: int, rng: random.Random, *, shared: bool = False
           ) -> Iterator[tuple[InterceptionStarted, InterceptionEnded, int]]:
    """(start, end, child rows) of `n` interceptions over `days` days ending now. Each session is one user's (as
    a client's session id is); `shared`: the users take turns call by call instead, so nearly every call is a
    (session, user) of its own and adds new summary rows (the benchmark's shape before 2026-12)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    step = days * 86400 / n
    session, root_calls, user = None, 0, who[0]
    for k in range(n):
        if root_calls <= 0:
            session, root_calls = f"s{rng.getrandbits(64):016x}", rng.randint(1, 30)
            user = who[rng.randrange(len(who))]
        root_calls -= 1
        if shared:
            user = who[k % len(who)]
        t = start + timedelta(seconds=k * step)
        iid = new_id()
        resp = f"msg_{rng.getrandbits(64):016x}"
        calls = [ToolCall(resp, f"toolu_{rng.getrandbits(64):016x}", "Bash", '{"command":"ls -la"}')
                 for _ in range(rng.choices([0, 1, 2, 3, 4, 5], [0.1, 0.3, 0.25, 0.15, 0.12, 0.08])[0])]
        thoughts = [ModelThought("Let me look at the failing test first.", "thinking")
                    for _ in range(rng.choices([0, 1, 2, 3], [0.3, 0.3, 0.25, 0.15])[0])]
        prompt = "fix the failing test" if rng.random() < 0.3 else None
        s = InterceptionStarted(id=iid, initiator=user, provider="anthropic", provider_name="anthropic",
                                model=rng.choice(("claude-sonnet-4-5", "claude-haiku-4-5")), client="Claude Code",
                                client_session_id=session, started_at=t,
                                metadata={"request_user_agent": "claude-cli/2.0.67"})
        e = InterceptionEnded(id=iid, ended_at=t + timedelta(seconds=rng.uniform(0.5, 20)), status="completed",
                              upstream_status=200, prompt=prompt, prompt_response_id=resp,
                              token_usages=[TokenUsage(resp, rng.randint(10, 4000), rng.randint(5, 3000))],
                              tool_calls=calls, thoughts=thoughts)
        yield s, e, 1 + (prompt is not None) + len(calls) + len(thoughts)


SERVER: dict[str, Path] = {}  # "data": the local cluster's data directory, when we know it


def server_cpu() -> float:
    """CPU seconds (user + system) the local PostgreSQL server's processes have used, 0 if not known: the
    postmaster's children (the connections' backends, the WAL writer, …) read from /proc."""
    data = SERVER.get("data")
    if data is None:
        return 0.0
    import os

    master = int((data / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master or int(proc.name) == master:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


async def write(db: Database, who: list[Initiator], n: int, days: int, shared: bool
                ) -> tuple[float, int, float, float]:
    """(seconds, child rows, this process's CPU seconds, the server's CPU seconds) to write `n` interceptions
    through the writer (queue kept full)."""
    writer = RecordWriter(db, max_queue=50_000)
    writer.start()
    await writer.flush(60)
    children = 0
    began = time.perf_counter()
    cpu0, server0 = time.process_time(), server_cpu()
    for s, e, kids in events(who, n, days, random.Random(7), shared=shared):
        writer.submit(s)  # never refused: the queue holds 50k and is kept under 20k below
        writer.submit(e)
        children += kids
        if writer.queue_depth > 20_000:  # the writer is the bottleneck: let it drain a little
            await asyncio.sleep(0.01)
    await writer.flush(600)
    seconds = time.perf_counter() - began
    cpu, server = time.process_time() - cpu0, server_cpu() - server0
    await writer.close(60)
    if writer.dropped:
        print(f"    dropped: {dict(writer.dropped)}")
    return seconds, children, cpu, server


async def set_triggers(db: Database, enabled: bool) -> None:
    async with db.writer.begin() as conn:
        for table in (*TABLES, "aigw_session_slices"):
            await conn.exec_driver_sql(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")


async def run_one(label: str, target: str | Path, n: int, days: int, *, triggers: bool = True,
                  shared: bool = False) -> None:
    db = await open_database(target)
    try:
        store = UserStore(db)
        who = []
        for k in range(20):
            _, token = await store.create_user(f"bench{k}-{new_id()[-6:]}")
            found = await store.authenticate(token)
            assert found is not None
            who.append(found)
        if not triggers:
            await set_triggers(db, False)
        seconds, children, cpu, server = await write(db, who, n, days, shared)
        print(f"  {label:44s} {n / seconds:7,.0f} interceptions/s {children / seconds:7,.0f} child rows/s "
              f"({n:,} in {seconds:.1f} s wall)")
        per = (cpu + server) / n * 1e6
        print(f"  {'':44s} CPU per interception: {cpu / n * 1e6:,.0f} µs here + {server / n * 1e6:,.0f} µs in the "
              f"server = {per:,.0f} µs → {1e6 / per:,.0f} interceptions per CPU-second" if server else
              f"  {'':44s} CPU per interception: {cpu / n * 1e6:,.0f} µs (server CPU not measured)")
        if not triggers:
            await set_triggers(db, True)
            return
        oldest = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        began = time.perf_counter()
        result = await purge_old_records(db, oldest, pause=0)
        took = time.perf_counter() - began
        print(f"  {'  retention of the oldest day':44s} {took * 1000:9,.0f} ms  ({result.deleted_interceptions:,} "
              f"interceptions, {result.deleted_child_rows:,} child rows, {result.batches} row batches)")
    finally:
        await db.close()


@contextlib.contextmanager
def throwaway_cluster(durable: bool = False) -> Iterator[object]:
    from tests.support import postgres

    if durable:  # as a production server runs (the tests' cluster turns these off)
        postgres.SERVER_SETTINGS.update(fsync="on", synchronous_commit="on", full_page_writes="on")
    cluster = postgres.start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=None, help="a PostgreSQL database to write into (it gets rows)")
    ap.add_argument("--interceptions", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--users-share-sessions", action="store_true",
                    help="the users take turns call by call, so nearly every call is its own (session, user)")
    ap.add_argument("--durable", action="store_true",
                    help="the throwaway cluster with fsync, synchronous commit and full-page writes on")
    ap.add_argument("--sqlite-only", action="store_true")
    ap.add_argument("--postgresql-only", action="store_true")
    args = ap.parse_args()
    print(f"record writer, {args.interceptions:,} interceptions over {args.days} days:")
    if not args.postgresql_only:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run_one("SQLite (WAL, synchronous=NORMAL)", Path(tmp) / "w.db", args.interceptions,
                                args.days, shared=args.users_share_sessions))
    if args.sqlite_only:
        return 0
    with contextlib.ExitStack() as stack:
        urls: list[str]
        if args.database_url:
            urls = [args.database_url, args.database_url]
            note = "given server"
        else:
            cluster = stack.enter_context(throwaway_cluster(args.durable))
            urls = [cluster.create_database(), cluster.create_database()]  # type: ignore[attr-defined]
            SERVER["data"] = cluster.data_dir  # type: ignore[attr-defined]
            note = "throwaway cluster, fsync " + ("on" if args.durable else "off")
        asyncio.run(run_one(f"PostgreSQL, triggers ({note})", urls[0], args.interceptions, args.days,
                            shared=args.users_share_sessions))
        asyncio.run(run_one("PostgreSQL, summary triggers disabled", urls[1], args.interceptions, args.days,
                            triggers=False, shared=args.users_share_sessions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
