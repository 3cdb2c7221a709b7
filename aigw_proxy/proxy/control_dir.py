"""The supervisor's control directory: the private Unix sockets its workers answer on.

It lives in the temp dir (not the data dir) because AF_UNIX paths are limited to 108 bytes. A supervisor removes
its own directory on exit, but one killed with SIGKILL (or by the OOM killer) cannot, so each new supervisor first
sweeps the directories their owners left: a directory is stale when the pid it names is gone AND none of its
sockets accepts a connection (the second check keeps a live supervisor's directory even when it is in another pid
namespace sharing this temp dir).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

PREFIX = "aigw-workers-"
OWNER_FILE = "supervisor.pid"
# A directory without an owner file is stale once this old: a starting supervisor writes its file right after
# creating the directory, and directories made before owner files existed never get one.
UNOWNED_GRACE_SECONDS = 60.0

log = logging.getLogger(__name__)


def create_control_dir() -> Path:
    """A fresh control directory (mode 0700) naming this process as its owner, after sweeping stale ones."""
    sweep_stale_control_dirs()
    path = Path(tempfile.mkdtemp(prefix=PREFIX))
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return path


def sweep_stale_control_dirs(temp_dir: Path | None = None) -> list[Path]:
    """Remove this user's control directories whose supervisor is gone; return the ones removed."""
    removed: list[Path] = []
    for path in Path(temp_dir or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            if _in_use(path):
                continue
        except OSError:
            continue  # vanished or unreadable meanwhile: not ours to judge
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        log.info("removed %d control director%s left by supervisors that were killed: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", ", ".join(str(p) for p in removed))
    return removed


def _in_use(path: Path) -> bool:
    owner = path / OWNER_FILE
    try:
        pid = int(owner.read_text().strip())
    except FileNotFoundError:
        return time.time() - path.stat().st_mtime < UNOWNED_GRACE_SECONDS or _any_socket_answers(path)
    except ValueError:
        pid = 0
    return (pid > 0 and _alive(pid)) or _any_socket_answers(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds that pid now: cannot tell, so keep the directory
    return True


def _any_socket_answers(path: Path) -> bool:
    for sock_path in path.glob("*.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            with contextlib.suppress(OSError):
                probe.connect(str(sock_path))
                return True
    return False
