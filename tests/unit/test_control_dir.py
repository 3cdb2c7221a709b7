"""The supervisor's control directories: a killed supervisor's is swept by the next one, a live one's never."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from aigw_proxy.proxy.control_dir import OWNER_FILE, PREFIX, UNOWNED_GRACE_SECONDS, sweep_stale_control_dirs


def control_dir(temp: Path, name: str, owner: int | None) -> Path:
    path = temp / f"{PREFIX}{name}"
    path.mkdir(mode=0o700)
    if owner is not None:
        (path / OWNER_FILE).write_text(f"{owner}\n")
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_supervisors_directory_is_removed_and_live_ones_are_kept(tmp_path: Path) -> None:
    killed = control_dir(tmp_path, "killed", dead_pid())
    (killed / "w0.sock").touch()  # a socket file nobody listens on any more
    live = control_dir(tmp_path, "live", os.getpid())
    unrelated = tmp_path / "aigw-other"
    unrelated.mkdir()

    assert sweep_stale_control_dirs(tmp_path) == [killed]
    assert not killed.exists()
    assert live.is_dir() and unrelated.is_dir()


def test_a_directory_whose_socket_answers_is_kept_even_if_its_pid_looks_dead(tmp_path: Path) -> None:
    """A supervisor in another pid namespace sharing the temp dir: its pid means nothing here, its socket does."""
    other_namespace = control_dir(tmp_path, "elsewhere", dead_pid())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(other_namespace / "w0.sock"))
        server.listen(1)
        assert sweep_stale_control_dirs(tmp_path) == []
    assert other_namespace.is_dir()


def test_an_unowned_directory_is_kept_while_young_and_removed_when_old(tmp_path: Path) -> None:
    """A supervisor writes its owner file right after creating the directory: a young directory without one
    may be starting; an old one was left by a version without owner files."""
    young = control_dir(tmp_path, "young", None)
    old = control_dir(tmp_path, "old", None)
    then = time.time() - UNOWNED_GRACE_SECONDS - 5
    os.utime(old, (then, then))

    assert sweep_stale_control_dirs(tmp_path) == [old]
    assert young.is_dir()
