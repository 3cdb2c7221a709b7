"""Durability window: how long after a call's response has fully reached the client its record is committed.

    .venv/bin/python bench/durability_bench.py [--calls 300] [--workers 10] [--delay 0.0]

A real `aigw-proxy run` daemon in front of a stand-in Anthropic upstream (loopback only); `--workers` threads of
the anthropic SDK stream calls through it, each with a unique prompt. A poller reads the database every 2 ms with
plain SQL and notes when each call's completed record (with its prompt) is first visible, i.e. committed. The
window of a call is that moment minus the moment the client had the whole response; a kill -9 after the window
cannot lose the call (WAL + synchronous=NORMAL: a commit is in the OS before COMMIT returns; only a power loss can
take the last ones). Reported, never asserted: p50/p95/p99/max, and the bound it is documented against (README,
"Durability"): the writer's flush interval plus one batch commit.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.bursts import burst, default_reply, stream_reply  # noqa: E402
from tests.support.certs import make_ca, make_server_cert, server_ssl_context, write_pem  # noqa: E402
from tests.support.daemon import PROVIDER_HOSTS, provider_config, start_daemon, stop_daemon  # noqa: E402
from tests.support.standin import StandIn  # noqa: E402

POLLER = """
import sqlite3, sys, time
db, out = sys.argv[1], sys.argv[2]
sql = ("SELECT p.prompt FROM aibridge_interceptions i JOIN aibridge_user_prompts p ON p.interception_id = i.id "
       "WHERE i.status = 'completed'")
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
seen = {}
with open(out, "w") as f:
    while True:
        now = time.time()
        try:
            for (prompt,) in conn.execute(sql):
                if prompt not in seen:
                    seen[prompt] = now
                    f.write(f"{now} {prompt}\\n")
                    f.flush()
        except sqlite3.OperationalError:
            pass
        time.sleep(0.002)
"""


def read_seen(path: Path) -> dict[str, float]:
    seen: dict[str, float] = {}
    if not path.exists():
        return seen
    for line in path.read_text().splitlines():
        at, _, prompt = line.partition(" ")
        seen[prompt] = float(at)
    return seen


@contextlib.contextmanager
def watching_commits(db: Path, seen_file: Path) -> Iterator[None]:
    """The POLLER notes in `seen_file` when each call's completed record is first visible in `db`. In a process of
    its own: in the benchmark's it would wait for the GIL behind the SDK threads."""
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(db), str(seen_file)])
    try:
        yield
    finally:
        poller.kill()
        poller.wait()


def wait_until_seen(seen_file: Path, prompts: list[str], timeout: float) -> dict[str, float]:
    """read_seen once every prompt is in it, or after `timeout` seconds with what is."""
    deadline = time.monotonic() + timeout
    while not set(prompts) <= read_seen(seen_file).keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    return read_seen(seen_file)


def ended_at(db: Path) -> dict[str, float]:
    """prompt -> when the proxy saw the call end (its `ended_at`)."""
    import sqlite3
    from datetime import UTC, datetime

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT p.prompt, i.ended_at FROM aibridge_interceptions i JOIN aibridge_user_prompts p "
                            "ON p.interception_id = i.id WHERE i.ended_at IS NOT NULL").fetchall()
    return {prompt: datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp() for prompt, at in rows}


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds between the stand-in's SSE events")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aigw-durability-") as tmp_s:
        tmp = Path(tmp_s)
        ca_cert, ca_key = make_ca("Bench Upstream CA")
        cert, key = make_server_cert(ca_cert, ca_key, PROVIDER_HOSTS)
        ca_file = write_pem(tmp / "upstream-ca.pem", ca_cert)
        upstream = StandIn(server_ssl_context(cert, key)).start()
        daemon = start_daemon(tmp, provider_config(upstream, ca_file))
        db = daemon.data_dir / "aigw-proxy.db"
        try:
            daemon.token("alice")
            with watching_commits(db, tmp / "seen.tsv"), default_reply(upstream, stream_reply(delay=args.delay)):
                began = time.monotonic()
                calls = burst(daemon, [f"durability {n}" for n in range(args.calls)], workers=args.workers)
                elapsed = time.monotonic() - began
                seen = wait_until_seen(tmp / "seen.tsv", [c.prompt for c in calls], timeout=10)
            ended = ended_at(db)
        finally:
            stop_daemon(daemon)
            upstream.stop()
    failed = [c for c in calls if c.done is None]
    windows = [max(0.0, seen[c.prompt] - c.done) * 1000 for c in calls if c.done is not None and c.prompt in seen]
    missing = [c.prompt for c in calls if c.done is not None and c.prompt not in seen]
    print(f"{len(calls)} calls from {args.workers} workers in {elapsed:.1f} s ({len(calls) / elapsed:.0f}/s), "
          f"{len(failed)} failed at the client, {len(missing)} never recorded")
    proxy_end = [(ended[c.prompt] - c.done) * 1000 for c in calls if c.done is not None and c.prompt in ended]
    commit = [(seen[p] - ended[p]) * 1000 for p in seen if p in ended]
    for name, xs in (("proxy's end - client done", proxy_end), ("proxy's end -> committed", commit)):
        if xs:
            print(f"{name} (ms): p50 {statistics.median(xs):.0f}  p95 {pct(xs, 0.95):.0f}  max {max(xs):.0f}")
    if windows:
        print(f"client done -> record committed (ms): p50 {statistics.median(windows):.0f}  "
              f"p95 {pct(windows, 0.95):.0f}  p99 {pct(windows, 0.99):.0f}  max {max(windows):.0f}  "
              f"(poll resolution ~2 ms plus the query)")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
