"""`aigw-proxy run` on PostgreSQL: where it says it records, the password nowhere, a database it cannot use a
one-line failure. (What it records and answers is tested by the SDK and API tests, which run on both backends.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.daemon import AIGW, Daemon
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster


def test_the_daemon_names_its_database_without_the_password(postgres_daemon: Daemon,
                                                             postgres_cluster: PostgresCluster) -> None:
    assert postgres_daemon.healthz()["status"] in ("ok", "degraded")
    log = postgres_daemon.log()
    assert f"records in postgresql://aigw:***@127.0.0.1:{postgres_cluster.port}/" in log
    assert postgres_cluster.password not in log


def test_a_database_it_cannot_use_fails_the_start_in_one_line(tmp_path: Path,
                                                              postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url.replace(postgres_cluster.password, "not-the-password")
    proc = subprocess.run(
        [*AIGW, "run", "--listen", f"127.0.0.1:{free_port()}", "--admin-listen", f"127.0.0.1:{free_port()}",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIGW_DATABASE_URL": url,
             "PYTHONPATH": ":".join(sys.path)},
    )
    assert proc.returncode == 1
    assert "aigw-proxy: error: cannot open the database postgresql://aigw:***@" in proc.stderr
    assert "password authentication failed" in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
