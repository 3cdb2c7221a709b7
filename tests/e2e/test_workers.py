"""`aigw-proxy run --workers 2`: two proxy processes behind one port under a supervisor, on SQLite and on
PostgreSQL, driven with the OpenAI SDK through the stand-in upstream: both workers serve, /metrics sums them
exactly, /healthz lists each, a worker killed -9 mid-burst is restarted with every completed call recorded once,
SIGHUP reloads every worker, SIGTERM drains them all and the supervisor exits 0."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from aigw_proxy.proxy.workers import ADMIN_NICENESS
from tests.support.backends import BACKENDS, fresh_database
from tests.support.daemon import (
    ACME_PROVIDER,
    Daemon,
    UpstreamPKI,
    provider_config,
    run_cli,
    start_daemon,
    stop_daemon,
)
from tests.support.metrics import scrape, wait_for
from tests.support.payloads import chat_completion, chat_usage
from tests.support.postgres import PostgresCluster
from tests.support.standin import Reply, StandIn
from tests.support.traffic import OPENAI_MODEL, openai_client

G = "coder_ai_gateway_"
P = "coder_ai_gateway_proxy_"
# Every worker imports the whole daemon in a fresh interpreter, all at once: on a loaded 2-core machine start-up
# can take longer than one process's.
START_WITHIN = 90.0


def reply(cid: str, *, delay: float = 0.0) -> Reply:
    body = chat_completion(cid, OPENAI_MODEL, {"role": "assistant", "content": "done"}, chat_usage(10, 2))
    if not delay:
        return Reply.json(body)
    # The same JSON body in several chunks `delay` apart: the call is in flight for a while.
    raw = Reply.json(body).chunks[0]
    step = max(1, len(raw) // 6)
    return Reply(chunks=[raw[i:i + step] for i in range(0, len(raw), step)], delay=delay)


def call(client: openai.OpenAI, prompt: str) -> str:
    return client.chat.completions.create(model=OPENAI_MODEL,
                                          messages=[{"role": "user", "content": prompt}]).id


def burst(d: Daemon, standin: StandIn, prompts: list[str], *, clients: int = 8, delay: float = 0.0,
          user: str = "wendy", done_at: dict[str, float] | None = None,
          **client_args: str) -> dict[str, str | BaseException]:
    """Every prompt as one call, `clients` at a time (each thread its own client: its own connection); the
    monotonic time each call returned goes into `done_at`."""
    standin.default = reply("chatcmpl-burst", delay=delay)
    d.token(user)  # made once, before the threads ask for it
    local = threading.local()

    def one(prompt: str) -> tuple[str, str | BaseException]:
        if not hasattr(local, "client"):
            local.client = openai_client(d, user, **client_args)
        result: str | BaseException
        try:
            result = call(local.client, prompt)
        except Exception as exc:
            local.client = openai_client(d, user, **client_args)  # its connection may be the one that broke
            result = exc
        if done_at is not None:
            done_at[prompt] = time.monotonic()
        return prompt, result

    with ThreadPoolExecutor(clients) as pool:
        return dict(pool.map(one, prompts))


def recorded_prompts(d: Daemon, expect: int) -> list[str]:
    rows = d.interceptions(expect=expect, timeout=20)
    return [p["prompt"] for r in rows for p in r["user_prompts"]]


def workers(d: Daemon) -> list[dict]:
    return d.healthz()["workers"]


@pytest.fixture(scope="module", params=BACKENDS)
def wdaemon(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
            upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    """Two workers recording into SQLite (one writer at a time across them), then into PostgreSQL."""
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
            url = stack.enter_context(fresh_database(cluster, migrated=False))  # the supervisor migrates it
        d = start_daemon(tmp_path_factory.mktemp(f"workers-{request.param}"),
                         provider_config(standin_server, upstream_pki.ca_file), extra_args=("--workers", "2"),
                         wait=False, database_url=url)
        d.wait_healthy(START_WITHIN)
        yield d
        stop_daemon(d)
    standin_server.default = Reply.json({"ok": True})
    standin_server.reset()


def test_two_workers_serve_one_port_and_metrics_sum_exactly(wdaemon: Daemon, standin_server: StandIn) -> None:
    d = wdaemon
    listed = workers(d)
    assert [w["index"] for w in listed] == [0, 1]
    assert all(w["up"] and w["ready"] and w["restarts"] == 0 for w in listed)
    pids = {w["pid"] for w in listed}
    assert len(pids) == 2 and os.getpid() not in pids and d.proc is not None and d.proc.pid not in pids
    sent: list[str] = []
    for round_ in range(5):  # until both workers have served (the kernel hands connections to whichever accepts)
        prompts = [f"serve {round_}-{i}" for i in range(24)]
        results = burst(d, standin_server, prompts)
        assert all(isinstance(v, str) for v in results.values()), results
        sent += prompts
        served = {w["pid"] for w in workers(d) if (w["written"] or 0) > 0}
        if served == pids:
            break
    assert served == pids, f"only {served} of {pids} served"
    assert sorted(recorded_prompts(d, len(sent))) == sorted(sent)
    s = wait_for(d.admin_port, lambda s: s.value(G + "interceptions_total") == len(sent)
                 and s.value(P + "inflight_mitm_requests") == 0)
    assert s.value(G + "interceptions_total") == len(sent)
    assert s.value("coder_aibridged_interceptions_total") == len(sent)  # the legacy name sums the same samples
    assert s.value(G + "interceptions_total", status="completed") == len(sent)
    assert s.value(P + "mitm_requests_total") == len(sent)
    assert s.value(G + "tokens_total", type="input") == 10 * len(sent)
    assert s.value(G + "interceptions_duration_seconds_count") == len(sent)
    assert s.value(G + "interceptions_inflight") == 0
    # Info series are not counted twice: one sample per provider, value 1.
    info = s.samples(P + "provider_info", provider_name="openai")
    assert [v for _, v in info] == [1.0]
    assert s.value("aigw_proxy_workers", state="ready") == 2
    assert s.value("aigw_proxy_worker_restarts_total") == 0
    health = d.healthz()
    assert health["status"] == "ok" and health["inflight_requests"] == 0


def test_sighup_reloads_every_worker(wdaemon: Daemon, standin_server: StandIn, upstream_pki: UpstreamPKI) -> None:
    d = wdaemon
    before = {w["pid"]: w["config_reloaded_at"] for w in workers(d)}
    acme = openai_client(d, "rita", base_url="https://origin.test/v1")
    standin_server.default = reply("chatcmpl-acme")
    with pytest.raises(openai.APIConnectionError):
        call(acme, "before")  # no provider claims origin.test yet: the tunnel is refused
    lines_before = d.log().count("providers reloaded (SIGHUP)")
    (d.data_dir.parent / "aigw.toml").write_text(provider_config(standin_server, upstream_pki.ca_file)
                                                 + ACME_PROVIDER.format(upstream=standin_server.url))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while d.log().count("providers reloaded (SIGHUP)") < lines_before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.log().count("providers reloaded (SIGHUP)") == lines_before + 2  # one per worker
    after = {w["pid"]: w["config_reloaded_at"] for w in workers(d)}
    assert after.keys() == before.keys() and all(after[pid] > before[pid] for pid in before)
    # Whichever worker takes the connection routes origin.test now.
    results = burst(d, standin_server, [f"acme {i}" for i in range(16)], user="rita",
                    base_url="https://origin.test/v1")
    assert all(v == "chatcmpl-burst" for v in results.values()), results
    s = wait_for(d.admin_port, lambda s: s.value(G + "interceptions_total", provider="acme") == 16)
    assert s.value(G + "interceptions_total", provider="acme") == 16
    assert [v for _, v in s.samples(P + "provider_info", provider_name="acme")] == [1.0]


def test_kill9_worker_mid_burst_is_restarted_and_completed_calls_recorded_once(wdaemon: Daemon,
                                                                               standin_server: StandIn) -> None:
    """Worker 0 killed -9 while it relays: restarted, and every call answered is recorded once — except that a
    call the victim answered within the durability window before the kill (its record still in the victim's
    memory: the writer's 50 ms flush interval and one commit; README, Durability, bounds it by 1 s) may be lost
    with it. Calls answered before that window, or after the kill by the other workers, must all be there."""
    d = wdaemon
    burst_began = datetime.now(UTC)
    before = workers(d)
    victim = before[0]
    prompts = [f"kill {i}" for i in range(200)]
    results: dict[str, str | BaseException] = {}
    done_at: dict[str, float] = {}
    runner = threading.Thread(target=lambda: results.update(burst(d, standin_server, prompts, delay=0.03,
                                                                  done_at=done_at)))
    began = time.monotonic()
    runner.start()
    # Mid-burst: more than the durability window in, and the victim relaying calls.
    deadline = began + 30
    while time.monotonic() < deadline:
        w = workers(d)[0]
        if time.monotonic() - began > 1.5 and (w["inflight_requests"] or 0) > 0:
            break
        time.sleep(0.02)
    killed_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    runner.join(60)
    assert not runner.is_alive()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers(d)
        if now[0]["pid"] != victim["pid"] and now[0]["ready"]:
            break
        time.sleep(0.1)
    assert now[0]["pid"] != victim["pid"] and now[0]["ready"] and now[0]["restarts"] == 1
    assert now[1]["pid"] == before[1]["pid"] and now[1]["restarts"] == 0
    completed = [p for p, v in results.items() if isinstance(v, str)]
    failed = [p for p, v in results.items() if not isinstance(v, str)]
    assert len(completed) + len(failed) == len(prompts)
    # Answered well before the kill, or well after it: bytes the victim had sent before it died may be read by a
    # client thread of this busy test process a while later (0.5 s was not always enough on a loaded machine);
    # the burst is long enough to leave most of its calls after that.
    must = {p for p in completed if done_at[p] < killed_at - 1.0 or done_at[p] > killed_at + 1.5}
    assert len(must) > len(prompts) // 3, (len(must), len(completed))
    # Wait for the calls that must be there (not for a row count: calls cut by the kill may be recorded too),
    # reading only this burst's rows (the daemon's earlier tests left hundreds).
    deadline = time.monotonic() + 20
    while True:
        rows = d.interceptions(started_after=burst_began)
        kill_prompts = [p["prompt"] for r in rows for p in r["user_prompts"] if p["prompt"].startswith("kill ")]
        if must <= set(kill_prompts) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert must <= set(kill_prompts), sorted(must - set(kill_prompts))  # every one of them recorded
    assert len(kill_prompts) == len(set(kill_prompts))  # and nothing twice
    lost = set(completed) - set(kill_prompts)
    print(f"{len(completed)} of {len(prompts)} calls answered, {len(failed)} cut by the kill, {len(lost)} answered "
          "within the durability window before it and not recorded")
    assert f"worker 0 (pid {victim['pid']}) exited with signal SIGKILL" in d.log()
    s = scrape(d.admin_port)
    assert s.value("aigw_proxy_worker_restarts_total", worker="0") == 1
    # The restarted worker serves again, with the configuration as reloaded (acme, added by the SIGHUP test), not
    # the one the supervisor started with: bursts to acme's host complete entirely, some through it.
    written = now[0]["written"] or 0
    for round_ in range(5):
        again = burst(d, standin_server, [f"after {round_}-{i}" for i in range(12)], user="rita",
                      base_url="https://origin.test/v1")
        assert all(isinstance(v, str) for v in again.values()), again
        if (workers(d)[0]["written"] or 0) > written:
            break
    assert (workers(d)[0]["written"] or 0) > written
    assert d.healthz()["status"] == "ok"


def healthz_status(d: Daemon) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/healthz", timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def kill_the_worker_and_wait_for_its_successor(d: Daemon, pid: int) -> dict:
    """kill -9 the only worker; the supervisor's /healthz must then show a new pid serving, restarted once."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        code, body = healthz_status(d)  # 503 while nothing serves
        [now] = body["workers"]
        if code == 200 and now["ready"] and now["pid"] != pid:
            break
        time.sleep(0.2)
    assert code == 200 and now["ready"] and now["pid"] != pid and now["restarts"] == 1, body
    return now


def test_healthz_is_unhealthy_when_no_worker_serves(wdaemon: Daemon) -> None:
    d = wdaemon
    pids = [w["pid"] for w in workers(d)]
    os.kill(pids[0], signal.SIGSTOP)  # one frozen: still serving on the other
    try:
        code, body = healthz_status(d)
        assert code == 200 and body["status"] == "degraded" and "workers_not_serving" in body["reasons"]
        assert [w["ready"] for w in body["workers"]] == [False, True]
        os.kill(pids[1], signal.SIGSTOP)  # both frozen: nothing relays
        code, body = healthz_status(d)
        assert code == 503 and body["status"] == "unresponsive"
        assert [w["ready"] for w in body["workers"]] == [False, False]
        assert all(w["up"] for w in body["workers"])
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    code, body = healthz_status(d)
    assert code == 200 and body["status"] == "ok"
    assert [w["pid"] for w in body["workers"]] == pids  # stopped is not dead: nothing was restarted


def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(wdaemon: Daemon, standin_server: StandIn) -> None:
    d = wdaemon
    assert d.proc is not None
    pids = [w["pid"] for w in workers(d)]
    rows_before = len(d.interceptions())
    prompts = [f"drain {i}" for i in range(6)]
    results: dict[str, str | BaseException] = {}
    # Calls that take ~1.2 s each, all in flight when SIGTERM arrives.
    runner = threading.Thread(target=lambda: results.update(burst(d, standin_server, prompts, clients=6,
                                                                  delay=0.2)))
    runner.start()
    deadline = time.monotonic() + 10
    while sum(w["inflight_requests"] or 0 for w in workers(d)) < len(prompts) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(w["inflight_requests"] or 0 for w in workers(d)) == len(prompts)
    d.proc.send_signal(signal.SIGTERM)
    runner.join(30)
    assert all(isinstance(v, str) for v in results.values()), results
    assert stop_daemon(d) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    recorded = recorded_prompts(d, rows_before + len(prompts))
    assert sorted(p for p in recorded if p.startswith("drain ")) == sorted(prompts)
    assert "shutting down 2 workers" in d.log()


def test_workers_from_the_config_file_and_the_environment(tmp_path: Path, standin_server: StandIn,
                                               upstream_pki: UpstreamPKI) -> None:
    """`workers = 2` in the config file starts two; AIGW_WORKERS wins over it; a bad value fails start-up. A
    supervisor killed -9 takes its workers with it: the port is free again."""
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file, extra="workers = 2"), wait=False)
    d.wait_healthy(START_WITHIN)
    try:
        pids = [w["pid"] for w in workers(d)]
        assert len(pids) == 2
    finally:
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", d.port))  # nothing listens on it any more
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file, extra="workers = 2"),
                     env={"AIGW_WORKERS": "1"})
    try:
        assert "workers" not in d.healthz()  # one process, as before workers existed
    finally:
        assert stop_daemon(d) == 0
    _assert_start_refused(tmp_path, 'workers = "many"', "workers must be a number >= 1 or auto")


def _assert_start_refused(tmp_path: Path, config_line: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(config_line + "\n")
    out = run_cli(tmp_path / "data", "run", "--config", str(bad), check=False)
    assert out.returncode == 1 and message in out.stderr


def _nice_values(pid: int) -> dict[int, int]:
    """Each thread of `pid` -> its nice value (Linux keeps one per thread)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = int(fields[16])  # field 19 of stat; [0] here is field 3
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_worker_under_a_supervisor(tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI) -> None:
    """`--workers 1 --supervisor` (or `supervisor = true`): the proxy runs in one worker process and the supervisor
    serves the admin listener, so the REST API's work runs in another process than the proxy's loop; the worker is
    restarted if it dies. `--no-supervisor` wins over the config file."""
    config = provider_config(standin_server, upstream_pki.ca_file, extra="supervisor = true")
    d = start_daemon(tmp_path, config, extra_args=("--workers", "1"), wait=False)
    d.wait_healthy(START_WITHIN)
    try:
        [worker] = workers(d)
        assert worker["up"] and worker["ready"] and d.proc is not None and worker["pid"] != d.proc.pid
        # The supervisor's admin thread (and the threads it starts) yields the CPU to the proxy: nicer than the
        # supervisor's main thread and every thread of the worker, which keep the niceness the daemon started with.
        supervisor, proxy = _nice_values(d.proc.pid), _nice_values(worker["pid"])
        started_with = supervisor[d.proc.pid]
        nicer = min(started_with + ADMIN_NICENESS, 19)  # 19: the most a thread can be niced
        assert set(supervisor.values()) == {started_with, nicer}
        assert set(proxy.values()) == {started_with}
        results = burst(d, standin_server, [f"one {i}" for i in range(6)], clients=2)
        assert all(isinstance(v, str) for v in results.values()), results
        assert sorted(recorded_prompts(d, 6)) == sorted(results)  # the API, served by the supervisor
        now = kill_the_worker_and_wait_for_its_successor(d, worker["pid"])
        assert set(_nice_values(now["pid"]).values()) == {started_with}  # restarted from the main thread
        results = burst(d, standin_server, ["after the restart"], clients=1)
        assert all(isinstance(v, str) for v in results.values()), results
        assert "after the restart" in recorded_prompts(d, 7)
    finally:
        assert stop_daemon(d) == 0
    d = start_daemon(tmp_path, config, extra_args=("--no-supervisor",))
    try:
        assert "workers" not in d.healthz()  # one process
    finally:
        assert stop_daemon(d) == 0
    _assert_start_refused(tmp_path, 'supervisor = "yes"', "supervisor must be true or false")


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# What shapes the proxy's processes; the paths and addresses the image and the unit set are the test's own here.
PROCESS_SHAPE = ("AIGW_SUPERVISOR", "AIGW_WORKERS", "PYTHONOPTIMIZE")


def _image_environment() -> dict[str, str]:
    """The Dockerfile's `ENV K=V \\ K=V` instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    pairs = [word.split("=", 1) for line in re.findall(r"^ENV (.+)$", text, re.M) for word in line.split()]
    return {k: v for k, v in pairs}


def _unit_environment() -> dict[str, str]:
    text = (DEPLOY / "aigw-proxy.service").read_text()
    return dict(line.split("=", 1) for line in re.findall(r"^Environment=(.+)$", text, re.M))


def test_the_deploy_kit_runs_one_worker_under_the_supervisor(tmp_path: Path, standin_server: StandIn,
                                                              upstream_pki: UpstreamPKI) -> None:
    """The image and the systemd unit give the proxy the same process shape, and started with it the proxy runs in
    a worker under a supervisor: the admin listener answers for the worker, records its calls, restarts it after
    kill -9, and SIGTERM drains it and exits 0."""
    image = {k: v for k, v in _image_environment().items() if k in PROCESS_SHAPE}
    unit = {k: v for k, v in _unit_environment().items() if k in PROCESS_SHAPE}
    assert image == unit and image.get("AIGW_SUPERVISOR") == "1", (image, unit)
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file), env=image, wait=False)
    d.wait_healthy(START_WITHIN)
    try:
        [worker] = workers(d)
        assert d.proc is not None and worker["ready"] and worker["pid"] != d.proc.pid
        results = burst(d, standin_server, ["deployed"], clients=1)
        assert all(isinstance(v, str) for v in results.values()), results
        assert recorded_prompts(d, 1) == ["deployed"]
        kill_the_worker_and_wait_for_its_successor(d, worker["pid"])
        results = burst(d, standin_server, ["after the restart"], clients=1)
        assert all(isinstance(v, str) for v in results.values()), results
    finally:
        assert stop_daemon(d) == 0
