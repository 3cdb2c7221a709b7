"""The shared directory fsync: flushes a directory's entries, and is best effort (never raises)."""

from __future__ import annotations

from pathlib import Path

from aigw_proxy.fsutil import fsync_dir


def test_fsync_dir_flushes_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "made").write_text("x")
    fsync_dir(tmp_path)  # returns; the entry is there
    assert (tmp_path / "made").read_text() == "x"


def test_fsync_dir_is_best_effort(tmp_path: Path) -> None:
    fsync_dir(tmp_path / "missing")  # cannot be opened: nothing raised
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        fsync_dir(locked)  # root opens it anyway; otherwise the open fails quietly
    finally:
        locked.chmod(0o700)
