"""`aigw-proxy purge`: apply the retention window now (the running proxy also does it every 10 minutes)."""

from __future__ import annotations

from pathlib import Path

import click

from aigw_proxy.cli.common import print_json, storage_call, storage_options
from aigw_proxy.cli.main import main
from aigw_proxy.cli.run import retention_window


@main.command()
@click.option("--retention", envvar="AIGW_RETENTION", default="60d", show_default=True,
              help="Delete interceptions older than this (60d, 12h, 30m); 0 deletes nothing.")
@storage_options
def purge(retention: str, data_dir: Path) -> None:
    """Delete interceptions older than the retention window and all their child rows; print what was deleted."""
    from aigw_proxy.storage import purge_now, rfc3339

    window = retention_window(retention)
    if window is None:
        print_json({"deleted_interceptions": 0, "deleted_child_rows": 0, "before": None})
        return
    result, before = storage_call(data_dir, lambda db: purge_now(db, window))
    print_json({"deleted_interceptions": result.deleted_interceptions,
                "deleted_child_rows": result.deleted_child_rows, "before": rfc3339(before)})
