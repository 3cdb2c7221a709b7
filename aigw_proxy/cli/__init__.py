"""`aigw-proxy` command line. Every flag also reads `AIGW_<FLAG>` from the environment.

One module per command group; importing them registers their commands on `main`.
"""

from aigw_proxy.cli import (  # noqa: F401  (registers the commands)
    budgets,
    ca,
    db,
    groups,
    purge,
    records,
    run,
    sessions,
    spend,
    users,
)
from aigw_proxy.cli.main import main

__all__ = ["main"]
