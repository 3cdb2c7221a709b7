"""Two `aigw-proxy run` replicas sharing one PostgreSQL database (the suite's throwaway cluster), as a deployment
behind a load balancer would run them: the official SDKs through either, one REST API answering for every record,
retention run by one replica while the other skips it, a token revoked through one refused by the other on the
next tunnel, and one replica stopped (SIGTERM) while the other keeps serving.

Each replica has a data directory (and so a proxy CA) of its own; clients trust the CA of the replica they use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from aigw_proxy.storage import RecordWriter, UserStore, list_interceptions, open_database
from tests.support.api import PREFIX
from tests.support.backends import fresh_database
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.payloads import anthropic_message, anthropic_usage, chat_completion, chat_usage
from tests.support.postgres import PostgresCluster
from tests.support.records import ended, started
from tests.support.standin import Reply, StandIn

CLAUDE = "claude-sonnet-4-5-20250929"
GPT = "gpt-5"
OLD_CALLS = 6  # seeded in 2025: far older than the replicas' one-day retention window


def _seed_old_calls(url: str) -> None:
    async def seed() -> None:
        db = await open_database(url)  # migrates the empty database, as the first replica would
        try:
            _, token = await UserStore(db).create_user("veteran")
            who = await UserStore(db).authenticate(token)
            assert who is not None
            writer = RecordWriter(db, flush_interval=0.005)
            writer.start()
            for n in range(OLD_CALLS):
                writer.submit(started(f"old-{n}", who, t=n * 3600))
                writer.submit(ended(f"old-{n}", t=n * 3600 + 2, response_id=f"r-old-{n}"))
            await writer.close(timeout=10)
        finally:
            await db.close()

    asyncio.run(seed())


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn, origin_server: StandIn,
             upstream_pki: UpstreamPKI, postgres_cluster: PostgresCluster) -> Iterator[tuple[Daemon, Daemon]]:
    config = provider_config(standin_server, upstream_pki.ca_file, ports=[origin_server.port])
    with fresh_database(postgres_cluster, migrated=False) as url:
        _seed_old_calls(url)
        a = start_daemon(tmp_path_factory.mktemp("replica-a"), config, database_url=url,
                         extra_args=("--retention", "1d"))
        try:
            b = start_daemon(tmp_path_factory.mktemp("replica-b"), config, database_url=url,
                             extra_args=("--retention", "1d"))
            try:
                for user, role in (("alice", "member"), ("root", "admin")):  # users made once, known to both
                    a.tokens[user] = b.tokens[user] = a.cli("users", "add", user, "--role", role).stdout.strip()
                yield a, b
            finally:
                stop_daemon(b)
        finally:
            stop_daemon(a)


def _through(d: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDK clients made from now on use replica `d` (HTTPS_PROXY with alice's token, its CA trusted)."""
    monkeypatch.setenv("HTTPS_PROXY", d.proxy_url("alice"))
    monkeypatch.setenv("SSL_CERT_FILE", str(d.ca_bundle))
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


def _claude(d: Daemon, monkeypatch: pytest.MonkeyPatch, upstream: StandIn, msg_id: str, prompt: str) -> None:
    _through(d, monkeypatch)
    upstream.queue(Reply.json(anthropic_message(msg_id, CLAUDE, [{"type": "text", "text": "ok"}],
                                                anthropic_usage(40, 5))))
    c = anthropic.Anthropic(api_key="sk-ant-api03-" + "k" * 80, max_retries=0)
    reply = c.messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": prompt}])
    assert reply.id == msg_id


def _gpt(d: Daemon, monkeypatch: pytest.MonkeyPatch, upstream: StandIn, cid: str, prompt: str) -> None:
    _through(d, monkeypatch)
    upstream.queue(Reply.json(chat_completion(cid, GPT, {"role": "assistant", "content": "ok"}, chat_usage(30, 4))))
    c = openai.OpenAI(api_key="sk-proj-" + "o" * 60, max_retries=0)
    reply = c.chat.completions.create(model=GPT, messages=[{"role": "user", "content": prompt}])
    assert reply.id == cid


def _rest(d: Daemon, path: str, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    req = urllib.request.Request(f"http://127.0.0.1:{d.admin_port}{PREFIX}{path}" + (f"?{query}" if query else ""),
                                 headers={"Coder-Session-Token": d.tokens["root"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _connect_status(d: Daemon, token: str) -> int:
    """The status a new tunnel (CONNECT) through `d` with alice's `token` gets."""
    credentials = base64.b64encode(f"alice:{token}".encode()).decode()
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(f"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n"
                  f"Proxy-Authorization: Basic {credentials}\r\n\r\n".encode())
        head = s.recv(4096).decode(errors="replace")
    return int(head.split()[1])


def _wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"timed out waiting for {what}"
            return value
        time.sleep(0.5)


def _ids(items: list[dict]) -> set[str]:
    return {r["id"] for r in items}


def test_both_replicas_record_and_either_api_answers_for_all(
    replicas: tuple[Daemon, Daemon], upstream: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    _claude(a, monkeypatch, upstream, "msg_via_a", "hello through a")
    _gpt(b, monkeypatch, upstream, "chatcmpl-via-b", "hello through b")
    _claude(b, monkeypatch, upstream, "msg_via_b", "claude through b")
    mine = _wait_for("the three calls", lambda: [r for r in a.interceptions(expect=OLD_CALLS + 3)
                                                 if r["initiator"]["username"] == "alice"], 15)
    # One API: each replica's REST API lists every record, whichever replica proxied it.
    for d in (a, b):
        listed = _wait_for("the API to list them", lambda d=d: [
            r for r in _rest(d, "/interceptions", limit=1000)["results"] if r["initiator"]["username"] == "alice"
            ] if len(mine) >= 3 else None, 15)
        assert {(r["provider"], r["model"]) for r in listed} == {("anthropic", CLAUDE), ("openai", GPT)}
        assert len(listed) == 3 and _ids(listed) == _ids(mine)
        assert {t["provider_response_id"] for r in listed for t in r["token_usages"]} == {
            "msg_via_a", "chatcmpl-via-b", "msg_via_b"}


def test_retention_runs_in_one_replica_and_the_other_skips_it(replicas: tuple[Daemon, Daemon]) -> None:
    a, b = replicas

    async def old_left() -> int:
        db = await open_database(a.database)
        try:
            return sum(r["id"].startswith("old-") for r in await list_interceptions(db, limit=1000))
        finally:
            await db.close()

    # Each replica's first round comes 30 s after it started; the first to take the job keeps it.
    def retention_lines() -> str:
        return "\n".join(f"{name}: {line}" for name, d in (("a", a), ("b", b)) for line in d.log().splitlines()
                         if "retention" in line)

    _wait_for("the old calls to be purged", lambda: asyncio.run(old_left()) == 0, 120)
    purged = re.compile(r"retention: dropped the partitions of \d+ day\(s\) before .* \(6 interceptions")
    skipped = "retention: another process sharing the database runs the purge; skipping this round"
    _wait_for("the other replica's round", lambda: any(skipped in d.log() for d in (a, b)), 90)
    leaders = [d for d in (a, b) if purged.search(d.log())]
    others = [d for d in (a, b) if skipped in d.log()]
    assert len(leaders) == 1 and others == [d for d in (a, b) if d is not leaders[0]], retention_lines()


def test_a_token_revoked_through_one_replica_is_refused_by_the_other(replicas: tuple[Daemon, Daemon]) -> None:
    a, b = replicas
    token = a.tokens["alice"]
    assert _connect_status(b, token) == 200 and _connect_status(a, token) == 200
    a.cli("users", "revoke", "alice")  # through replica a's database access
    # No cache of valid tokens: every new tunnel looks its token up in the shared database, so the very next
    # CONNECT to the other replica is refused, with no wait in between (a tunnel opened before keeps its identity
    # until it closes).
    assert _connect_status(b, token) == 407
    assert _connect_status(a, token) == 407
    a.tokens["alice"] = b.tokens["alice"] = fresh = a.cli("users", "token", "alice").stdout.strip()
    assert _connect_status(b, fresh) == 200


def test_one_replica_stopped_the_other_keeps_serving(
    replicas: tuple[Daemon, Daemon], upstream: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    _claude(b, monkeypatch, upstream, "msg_while_a_stops", "still there?")  # while a shuts down
    assert a.proc.wait(30) == 0
    _gpt(b, monkeypatch, upstream, "chatcmpl-after-a", "and now?")
    assert b.healthz()["status"] in ("ok", "degraded")
    _wait_for("both calls in b's API", lambda: {"msg_while_a_stops", "chatcmpl-after-a"} <= {
        t["provider_response_id"] for r in _rest(b, "/interceptions", limit=1000)["results"]
        for t in r["token_usages"]}, 15)
