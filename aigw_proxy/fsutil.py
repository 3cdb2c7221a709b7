"""Small file-system helpers shared by the CA store (proxy/ca.py) and the database tools (storage/): a leaf
module, it imports nothing of ours, so any package may use it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a file just created, linked or renamed in it) to disk, best effort: a
    directory that cannot be opened or synced (some filesystems refuse) is left as it is, never an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
