"""Generate a realistic aigw-proxy database for the API benchmark: 1,000,000 interceptions over 90 days from 2,000
users in agentic sessions (threads of tool-call turns), about 5,000,000 child rows (token usages, prompts, tool
calls, thoughts).

    .venv/bin/python bench/gen_api_db.py [--out DIR] [--interceptions N] [--users N] [--force]

The database goes to DIR/aigw-proxy.db (default /tmp/aigw-api-bench-v<schema>-<N>, outside the repo) and is
reused if it is already there; DIR/tokens.json holds API tokens for an admin and for the busiest member. Rows go
straight into SQLite with executemany in big transactions; the summary triggers are off during the load and the
summaries are rebuilt once at the end (the same code the migrations run). Token usages are priced as the record
writer prices them (aigw_proxy.spend, the bundled price data); Copilot calls are subscription (OAuth) calls, their
cost API-equivalent value.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigw_proxy.storage.schema.migrations import LATEST_VERSION
from aigw_proxy.storage.users import hash_token, token_hint

SEED = 20250301
PRICED = ("input_price_micros", "output_price_micros", "cache_read_price_micros", "cache_write_price_micros",
          "other_price_micros", "cost_micros", "price_source", "price_version", "price_ref", "api_equivalent")
DAYS = 90
MODELS = {  # provider type → (provider name, models, clients), with rough shares
    "anthropic": ("anthropic", ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5"],
                  ["Claude Code", "Claude Code", "Claude Code", "Zed", "Cursor", "Unknown"]),
    "openai": ("openai", ["gpt-5", "gpt-5-codex", "gpt-4.1", "o4-mini"], ["Codex", "Codex", "Unknown", "OpenCode"]),
    "copilot": ("copilot", ["gpt-4.1", "claude-sonnet-4", "gpt-5-mini"],
                ["GitHub Copilot (VS Code)", "GitHub Copilot (CLI)"]),
    "gemini": ("gemini", ["gemini-2.5-pro", "gemini-2.5-flash"], ["Gemini CLI"]),
}
PROVIDER_WEIGHTS = [("anthropic", 0.5), ("openai", 0.3), ("copilot", 0.15), ("gemini", 0.05)]
TOOLS = ["Bash", "Read", "Edit", "Write", "Grep", "Glob", "apply_patch", "shell", "read_file", "TodoWrite"]
PROMPTS = [
    "fix the failing test in tests/api/test_rest_api.py",
    "add pagination to the sessions endpoint and document it",
    "why does the proxy return 407 for my token?",
    "refactor the writer so that batches are smaller",
    "explain this stack trace",
    "write a migration that adds an index on started_at",
]


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")  # the stored form of UTCDateTime


class Ids:
    """Time-ordered UUID-shaped ids, cheap to make."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def __call__(self, t: datetime) -> str:
        self.n += 1
        ms = int(t.timestamp() * 1000)
        r = self.rng.getrandbits(62)
        variant = 0x8000 | (r >> 48) & 0x3FFF
        return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{self.n & 0xFFF:03x}-{variant:04x}-{r & 0xFFFFFFFFFFFF:012x}"


def generate(path: Path, *, interceptions: int, n_users: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    ids = Ids(rng)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -512000")
    from aigw_proxy.spend import Figures, Pricer
    from aigw_proxy.storage.dialects.sqlite import create_triggers
    from aigw_proxy.storage.schema import session_slices, spend_days, summaries
    from aigw_proxy.storage.write.rows import price_columns

    pricer = Pricer()
    for name in [*summaries.TRIGGERS, *session_slices.TRIGGERS, *spend_days.TRIGGERS]:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")

    users = [(ids(start), f"user{n:04d}", "admin" if n < 5 else "member", _fmt(start)) for n in range(n_users)]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users (id, username, role, created_at) VALUES (?, ?, ?, ?)", users)
    tokens = {"admin": "aigw_bench_admin_token_000000000000000000000000",
              "member": "aigw_bench_member_token_00000000000000000000000"}
    # Activity is skewed: a few heavy users, a long tail.
    weights = [1.0 / (1 + i) ** 0.7 for i in range(n_users)]
    busiest = users[0]
    conn.execute("INSERT INTO api_tokens (id, user_id, token_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
                 (ids(start), users[0][0], hash_token(tokens["admin"]), token_hint(tokens["admin"]), _fmt(start)))
    member = users[5]
    conn.execute("INSERT INTO api_tokens (id, user_id, token_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
                 (ids(start), member[0], hash_token(tokens["member"]), token_hint(tokens["member"]), _fmt(start)))
    conn.execute("COMMIT")

    made = children = 0
    sessions: list[str] = []
    batch: dict[str, list[tuple]] = {k: [] for k in ("i", "t", "p", "u", "m")}
    began = time.monotonic()
    span = DAYS * 86400

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO aibridge_interceptions (id, initiator_id, api_key_id, provider, provider_name, model, client, "
            "client_session_id, thread_parent_id, thread_root_id, correlating_tool_call_id, credential_kind, "
            "credential_hint, started_at, ended_at, status, upstream_status, error_type, error_message, metadata) "
            "VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sk-a...xy12', ?, ?, ?, ?, ?, ?, ?)", batch["i"])
        conn.executemany(
            "INSERT INTO aibridge_token_usages (id, interception_id, provider_response_id, input_tokens, "
            "output_tokens, cache_read_input_tokens, cache_write_input_tokens, metadata, created_at, "
            f"{', '.join(PRICED)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {', '.join('?' * len(PRICED))})",
            batch["t"])
        conn.executemany(
            "INSERT INTO aibridge_user_prompts (id, interception_id, provider_response_id, prompt, metadata, "
            "created_at) VALUES (?, ?, ?, ?, '{}', ?)", batch["p"])
        conn.executemany(
            "INSERT INTO aibridge_tool_usages (id, interception_id, provider_response_id, provider_tool_call_id, tool, "
            "input, injected, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, '{}', ?)", batch["u"])
        conn.executemany(
            "INSERT INTO aibridge_model_thoughts (id, interception_id, content, metadata, created_at) "
            "VALUES (?, ?, ?, ?, ?)", batch["m"])
        conn.execute("COMMIT")
        for rows in batch.values():
            rows.clear()

    while made < interceptions:
        user = rng.choices(users, weights)[0] if rng.random() < 0.98 else busiest
        ptype = rng.choices([p for p, _ in PROVIDER_WEIGHTS], [w for _, w in PROVIDER_WEIGHTS])[0]
        pname, models, clients = MODELS[ptype]
        model, client = rng.choice(models), rng.choice(clients)
        t = start + timedelta(seconds=rng.random() * span)
        has_session = client not in ("Unknown", "Zed", "Cursor")
        session = f"{rng.getrandbits(128):032x}" if has_session else None
        turns = min(int(rng.expovariate(1 / 10)) + 1, 400, interceptions - made)  # interceptions in the session
        root = None
        parent_call = None
        last_id = ""
        for _n in range(turns):
            iid = ids(t)
            new_thread = root is None or rng.random() < 0.15 or not has_session
            if new_thread:
                root, parent, call = None, None, None
            else:
                parent, call = last_id, parent_call
            ended = t + timedelta(seconds=rng.uniform(0.5, 40))
            failed = rng.random() < 0.03
            resp = f"msg_{rng.getrandbits(64):016x}"
            kind = "oauth" if ptype == "copilot" else "api_key"
            batch["i"].append((iid, user[0], ptype, pname, model, client, session, parent, root, call, kind, _fmt(t),
                               _fmt(ended), "failed" if failed else "completed", 529 if failed else 200,
                               "overloaded" if failed else None, "Overloaded" if failed else None,
                               '{"request_user_agent":"claude-cli/2.0.67 (external, cli)","route":"/v1/messages",'
                               '"streaming":true}'))
            ts = _fmt(ended)
            figures = Figures(rng.randint(10, 4000), rng.randint(5, 3000), rng.randint(0, 80000), rng.randint(0, 5000),
                              {"cache_ephemeral_5m_input": 12})
            price = pricer.price(figures, provider_type=ptype, provider_name=pname, model=model, at=ended)
            cols = price_columns(price, api_equivalent=kind == "oauth")
            batch["t"].append((ids(ended), iid, resp, figures.input_tokens, figures.output_tokens,
                               figures.cache_read_input_tokens, figures.cache_write_input_tokens,
                               '{"cache_ephemeral_5m_input":12}', ts, *(cols[c] for c in PRICED)))
            kids = 1
            if new_thread:
                batch["p"].append((ids(ended), iid, resp, rng.choice(PROMPTS), ts))
                kids += 1
            calls = rng.choices([0, 1, 2, 3, 4, 5], [0.1, 0.3, 0.25, 0.15, 0.12, 0.08])[0]
            parent_call = None
            for _ in range(calls):
                parent_call = f"toolu_{rng.getrandbits(64):016x}"
                batch["u"].append((ids(ended), iid, resp, parent_call, rng.choice(TOOLS),
                                   '{"command":"ls -la","description":"list files"}', ts))
            for _ in range(rng.choices([0, 1, 2, 3], [0.3, 0.3, 0.25, 0.15])[0]):
                batch["m"].append((ids(ended), iid, "Let me look at the failing test first, then the fixture.",
                                   '{"source":"thinking"}', ts))
                kids += 1
            kids += calls
            children += kids
            made += 1
            if root is None:
                root = iid
            last_id = iid
            t = ended + timedelta(seconds=rng.uniform(0.2, 120))
        if session is not None:
            sessions.append(session)
        if len(batch["i"]) >= 50_000:
            flush()
            print(f"  {made:,} interceptions, {children:,} child rows ({time.monotonic() - began:.0f}s)", flush=True)
    flush()
    print("  rebuilding summaries and ANALYZE ...", flush=True)
    rebuild_started = time.monotonic()
    with _sqlalchemy(path) as sa_conn:
        summaries.rebuild(sa_conn)
        # Prompts were bulk-loaded, not written through the RecordWriter: derive `last_prompt_at` from them.
        from aigw_proxy.storage.schema.migrations import backfill_last_prompt_at

        backfill_last_prompt_at(sa_conn)
        session_slices.rebuild(sa_conn)  # after the back-fill: slices carry last_prompt_at
        spend_days.rebuild(sa_conn)
        create_triggers(sa_conn, summaries.TRIGGERS)
        create_triggers(sa_conn, session_slices.TRIGGERS)
        create_triggers(sa_conn, spend_days.TRIGGERS)
    conn.execute("ANALYZE")
    conn.close()
    print(f"  summaries + ANALYZE: {time.monotonic() - rebuild_started:.0f}s", flush=True)
    return {"tokens": tokens, "member_id": member[0], "sessions_sample": rng.sample(sessions, min(200, len(sessions))),
            "interceptions": made, "child_rows": children, "users": n_users, "generated_at": now.isoformat()}


class _sqlalchemy:
    """A plain synchronous SQLAlchemy connection in one transaction (summaries.py takes one)."""

    def __init__(self, path: Path) -> None:
        import sqlalchemy as sa

        self.engine = sa.create_engine(f"sqlite:///{path}")

    def __enter__(self):
        self.ctx = self.engine.begin()
        return self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)
        self.engine.dispose()


def ensure_db(out: Path, *, interceptions: int, n_users: int, force: bool = False) -> dict[str, Any]:
    """Create (or reuse) the benchmark database; returns what tokens.json holds."""
    db, meta = out / "aigw-proxy.db", out / "tokens.json"
    if db.exists() and meta.exists() and not force:
        print(f"reusing {db}")
        return json.loads(meta.read_text())
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("aigw-proxy.db*"):
        f.unlink()
    print(f"generating {interceptions:,} interceptions for {n_users:,} users into {db}", flush=True)
    began = time.monotonic()
    import asyncio

    from aigw_proxy.storage import open_database

    async def create() -> None:
        await (await open_database(db)).close()

    asyncio.run(create())
    info = generate(db, interceptions=interceptions, n_users=n_users)
    info["seconds"] = round(time.monotonic() - began, 1)
    meta.write_text(json.dumps(info))
    size = db.stat().st_size / 2**20
    print(f"generated {info['interceptions']:,} interceptions and {info['child_rows']:,} child rows "
          f"in {info['seconds']}s ({size:,.0f} MiB)")
    return info


def default_dir(interceptions: int) -> Path:
    """Per schema: the version and a digest of the migrations, so branches whose schemas differ under the same
    version number never reuse each other's database."""
    from aigw_proxy.storage.schema.migrations import MIGRATIONS

    digest = hashlib.sha256("|".join(m.description for m in MIGRATIONS).encode()).hexdigest()[:8]
    return Path(f"/tmp/aigw-api-bench-v{LATEST_VERSION}-{digest}-{interceptions}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interceptions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    ensure_db(args.out or default_dir(args.interceptions), interceptions=args.interceptions, n_users=args.users,
              force=args.force)


if __name__ == "__main__":
    main()
