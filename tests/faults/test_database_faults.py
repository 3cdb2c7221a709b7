"""The database failing under a real daemon while real SDK traffic flows: the disk full, another process holding
the write lock, the file deleted or replaced; a database that cannot be opened at start; `db check` and
`db backup` while the proxy runs. Each asserts what a user would check: the calls went through, every one of them
is recorded (prompt and tokens), what /healthz and the metrics said, what was counted."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bursts import burst, default_reply, stored_by_prompt, stream_reply
from tests.support.daemon import AIGW, Daemon, UpstreamPKI, provider_config, run_cli, start_daemon, stop_daemon
from tests.support.metrics import scrape
from tests.support.polling import poll
from tests.support.standin import StandIn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK on the stand-in's model name

@pytest.fixture
def daemon(tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    d.token("alice")
    with default_reply(standin_server, stream_reply()):
        yield d
    stop_daemon(d)


def healthz(d: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.admin_port}/healthz", timeout=10) as r:
        return json.loads(r.read())




def db_file(d: Daemon) -> Path:
    return d.data_dir / "aigw-proxy.db"


def assert_all_recorded(d: Daemon, prompts: list[str], timeout: float = 30.0) -> None:
    """Every prompt has one completed interception with its prompt and tokens, in the file at the path."""
    stored = poll(lambda: stored_by_prompt(db_file(d)),
                      lambda s: all(p in s and s[p].ended for p in prompts), "every call to be recorded", timeout)
    bad = {p: stored[p] for p in prompts if stored[p].status != "completed" or not stored[p].input_tokens}
    assert not bad, bad


def prompts(tag: str, n: int, size: int = 0) -> list[str]:
    return [f"{tag} {i} " + "x" * size for i in range(n)]


# -- the disk full -----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs as the data directory; skipped where the machine does not let tests mount one."""
    mount = tmp_path / "data"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the disk-full test runs where that is allowed)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> Path:
    filler = path / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    try:  # the last few kilobytes too
        with filler.open("ab") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def test_a_full_disk_delays_records_and_loses_none(
    small_disk: Path, tmp_path: Path, standin_server: StandIn, upstream_pki: UpstreamPKI
) -> None:
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file))
    try:
        d.token("alice")
        with default_reply(standin_server, stream_reply()):
            assert all(c.done for c in burst(d, prompts("before", 5), workers=2))
            filler = fill(small_disk)
            calls = burst(d, prompts("disk full", 60, size=40_000), workers=4)  # ~2.4 MB of prompts to store
            assert [c.error for c in calls if c.done is None] == []  # relayed although they cannot be stored
            doc = poll(lambda: healthz(d), lambda h: "writer_failing" in h["reasons"],
                           "healthz to report the failing writer")
            assert doc["status"] == "degraded" and "full" in doc["reasons"]["writer_failing"]
            assert doc["recorder"]["spooled"] == 0  # the spool is on the same full disk: kept in memory
            assert doc["recorder"]["queue_depth"] > 0 and doc["recorder"]["dropped"] == {}
            filler.unlink()
            assert_all_recorded(d, [c.prompt for c in calls])
        doc = poll(lambda: healthz(d), lambda h: h["status"] == "ok", "healthz to recover")
        assert doc["recorder"]["dropped"] == {} and doc["recorder"]["queue_depth"] == 0
        assert scrape(d.admin_port).samples("aigw_proxy_records_dropped") == []
    finally:
        stop_daemon(d)


# -- another process holds the write lock ------------------------------------------------------------------------


def test_a_database_locked_for_seconds_loses_nothing(daemon: Daemon) -> None:
    written_before = healthz(daemon)["recorder"]["written"]
    locker = sqlite3.connect(db_file(daemon), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # e.g. a long report or backup tool writing to the file
    try:
        calls = burst(daemon, prompts("locked", 30), workers=4)
        assert [c.error for c in calls if c.done is None] == []
        doc = poll(lambda: healthz(daemon), lambda h: h["recorder"]["spooled"] >= 60,
                       "the records to wait in the spool for the lock")
        assert doc["recorder"]["written"] == written_before  # nothing counted as written while nothing could be
        [(_, spooled)] = scrape(daemon.admin_port).samples("aigw_proxy_recorder_spooled")
        assert spooled >= 60
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert_all_recorded(daemon, [c.prompt for c in calls])
    doc = poll(lambda: healthz(daemon), lambda h: h["recorder"]["spooled"] == 0, "the spool to drain")
    assert doc["recorder"]["dropped"] == {} and doc["recorder"]["written"] >= written_before + 60
    assert not (daemon.data_dir / "aigw-proxy.db-spool.jsonl").exists()


# -- the file deleted or replaced ----------------------------------------------------------------------------------


def test_a_deleted_database_file_is_restored_with_everything_in_it(daemon: Daemon) -> None:
    before = burst(daemon, prompts("before delete", 10), workers=2)
    assert_all_recorded(daemon, [c.prompt for c in before])
    for suffix in ("", "-wal", "-shm"):  # `rm aigw-proxy.db*`, a clean-up script, a tmp reaper…
        Path(f"{db_file(daemon)}{suffix}").unlink(missing_ok=True)
    after = burst(daemon, prompts("after delete", 30), workers=3)  # new tunnels: users are still known
    assert [c.error for c in after if c.done is None] == []
    assert_all_recorded(daemon, [c.prompt for c in before + after])
    assert "alice" in run_cli(daemon.data_dir, "users", "list").stdout
    doc = poll(lambda: healthz(daemon), lambda h: h["status"] == "ok", "healthz to be ok")
    assert doc["recorder"]["dropped"] == {}
    assert "restored it from the handle" in daemon.log()
    assert run_cli(daemon.data_dir, "db", "check").returncode == 0


def test_a_database_replaced_by_a_backup_takes_the_records_from_then_on(daemon: Daemon, tmp_path: Path) -> None:
    """An operator restores a backup under the running proxy: what comes after goes into the restored file."""
    backup = tmp_path / "restore-me.db"
    run_cli(daemon.data_dir, "db", "backup", str(backup))
    lost = burst(daemon, prompts("only in the old file", 5), workers=1)  # made after the backup was taken
    assert_all_recorded(daemon, [c.prompt for c in lost])
    os.replace(backup, db_file(daemon))
    calls = burst(daemon, prompts("after the restore", 60), workers=4)
    assert [c.error for c in calls if c.done is None] == []
    assert_all_recorded(daemon, [c.prompt for c in calls])
    stored = stored_by_prompt(db_file(daemon))
    assert not any(c.prompt in stored for c in lost)  # they are in the file that was replaced, as asked
    doc = poll(lambda: healthz(daemon), lambda h: h["status"] == "ok", "healthz to be ok")
    assert doc["recorder"]["dropped"] == {}
    assert doc["recorder"]["written"] >= 2 * (5 + 60)  # the writes to the old file before the switch count too


# -- a database that cannot be opened at start --------------------------------------------------------------------


def run_daemon(data_dir: Path, *, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *AIGW, "run", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AIGW_LOG_LEVEL": "warning"})


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("aigw-proxy: error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_a_file_that_is_no_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "aigw-proxy.db").write_bytes(b"PK\x03\x04 this is a zip, not a database" * 200)
    assert_one_clear_line(run_daemon(data), "aigw-proxy.db", "not a SQLite database")
    check = run_cli(data, "db", "check", check=False)
    assert check.returncode == 1 and "file is not a database" in check.stderr


def test_a_database_the_proxy_may_not_read_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_cli(data, "users", "add", "alice")
    (data / "aigw-proxy.db").chmod(0)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root reads any file: drop the capability that lets it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot take away the right to read any file")
        prefix = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search")
    assert_one_clear_line(run_daemon(data, prefix=prefix), "aigw-proxy.db", "permission denied")


# -- db check and db backup while the proxy runs -----------------------------------------------------------------


def test_backup_and_check_while_records_are_written(daemon: Daemon, tmp_path: Path) -> None:
    done = threading.Event()
    made: list = []

    def keep_calling() -> None:
        n = 0
        while not done.is_set():
            made.extend(burst(daemon, [f"during backup {n}-{i}" for i in range(4)], workers=2))
            n += 1

    worker = threading.Thread(target=keep_calling)
    worker.start()
    try:
        time.sleep(1.0)
        target = tmp_path / "backups" / "aigw.db"
        target.parent.mkdir()
        out = run_cli(daemon.data_dir, "db", "backup", str(target))
        assert "integrity_check ok" in out.stdout
    finally:
        done.set()
        worker.join(60)
    assert target.stat().st_mode & 0o777 == 0o600
    check = run_cli(daemon.data_dir, "db", "check", str(target))
    assert check.returncode == 0 and ": ok (integrity_check" in check.stdout
    snapshot = stored_by_prompt(target)
    assert 0 < len(snapshot) <= len(made)
    # A consistent snapshot: each call in it completed, or in flight at that moment (its start only).
    assert all(s.status == "completed" if s.ended else s.status is None for s in snapshot.values())
    assert_all_recorded(daemon, [c.prompt for c in made])  # the proxy went on recording through it
    assert run_cli(daemon.data_dir, "db", "check", "--quick").returncode == 0
