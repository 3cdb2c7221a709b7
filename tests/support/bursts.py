"""Bursts of real SDK calls through a daemon for the fault tests, and what the database holds afterwards, read
with plain SQL (the daemon may be dead: a killed process leaves its WAL, which SQLite recovers on open).

Every call carries a unique prompt: that is how a call at the client is matched to its record."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import anthropic

from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_stream, anthropic_usage
from tests.support.standin import Reply, StandIn
from tests.support.traffic import ANTHROPIC_MODEL, CLAUDE_CODE, anthropic_client

USAGE = anthropic_usage(120, 7, cache_read=4096)


def stream_reply(msg_id: str = "msg_burst", *, delay: float = 0.0, text: str = "done and dusted") -> Reply:
    return anthropic_stream(msg_id, ANTHROPIC_MODEL, [{"type": "text", "text": text}], USAGE, delay=delay)


@contextmanager
def default_reply(upstream: StandIn, reply: Reply) -> Iterator[None]:
    """Every request the stand-in gets (and none is queued for) is answered with `reply`."""
    saved = upstream.default
    upstream.default = reply
    try:
        yield
    finally:
        upstream.default = saved


@dataclass(slots=True)
class Call:
    prompt: str
    started: float  # time.time()
    done: float | None = None  # when the whole response had reached the client
    error: str | None = None


def one_call(client: anthropic.Anthropic, prompt: str) -> Call:
    call = Call(prompt, time.time())
    try:
        with client.messages.stream(model=ANTHROPIC_MODEL, max_tokens=64,
                                    messages=[{"role": "user", "content": prompt}]) as stream:
            stream.get_final_message()
        call.done = time.time()
    except Exception as exc:  # the proxy killed under it, …
        call.error = f"{type(exc).__name__}: {exc}"
    return call


def burst(daemon: Daemon, prompts: list[str], *, workers: int = 10, user: str = "alice",
          stop: threading.Event | None = None, into: list[Call] | None = None) -> list[Call]:
    """Make the calls from `workers` threads (one SDK client each, connections kept alive); after `stop` is set
    the calls not started yet are not made. Each finished call is appended to `into` (if given) as it ends."""
    clients = [anthropic_client(daemon, user, default_headers=CLAUDE_CODE) for _ in range(workers)]
    lock = threading.Lock()
    todo = list(reversed(prompts))
    calls: list[Call] = into if into is not None else []

    def work(client: anthropic.Anthropic) -> None:
        while True:
            with lock:
                if not todo or (stop is not None and stop.is_set()):
                    return
                prompt = todo.pop()
            call = one_call(client, prompt)
            with lock:
                calls.append(call)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, clients))
    for client in clients:
        client.close()
    return calls


@dataclass(slots=True)
class Stored:
    id: str
    status: str | None
    error_type: str | None
    error_message: str | None
    ended: bool
    prompts: list[str]
    input_tokens: list[int]


def stored_by_prompt(db_path: Path) -> dict[str, Stored]:
    """Every interception in the file, keyed by its prompt (in flight ones too); empty while there is no file or
    it is not one (a reader never creates the file: the proxy may be restoring it)."""
    try:
        return _stored(db_path)
    except sqlite3.Error:
        return {}


def _stored(db_path: Path) -> dict[str, Stored]:
    with closing(sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True)) as conn:
        ix = conn.execute("SELECT id, status, error_type, error_message, ended_at IS NOT NULL "
                          "FROM aibridge_interceptions").fetchall()
        prompts: dict[str, list[str]] = {}
        for iid, prompt in conn.execute("SELECT interception_id, prompt FROM aibridge_user_prompts"):
            prompts.setdefault(iid, []).append(prompt)
        tokens: dict[str, list[int]] = {}
        for iid, n in conn.execute("SELECT interception_id, input_tokens FROM aibridge_token_usages"):
            tokens.setdefault(iid, []).append(n)
    out: dict[str, Stored] = {}
    for iid, status, error_type, message, ended in ix:
        s = Stored(iid, status, error_type, message, bool(ended), prompts.get(iid, []), tokens.get(iid, []))
        for p in s.prompts:
            out[p] = s
    return out
