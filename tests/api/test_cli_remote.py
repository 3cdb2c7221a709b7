"""The read commands print the same JSON from the local data dir and from a running proxy's API."""

from __future__ import annotations

import json
from typing import Any

from tests.support.api import Api
from tests.support.daemon import run_cli


def _json(api: Api, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(run_cli(api.daemon.data_dir, *args, env=env, database_url=api.daemon.database_url).stdout)


def test_local_and_remote_print_the_same(api: Api) -> None:
    remote = ("--url", api.url, "--token", api.tokens["root"])
    some = api.data.ended[30]
    for args in (
        ("interceptions", "list", "--limit", "25"),
        ("interceptions", "list", "--initiator", "alice", "--model", "gpt-5", "--client", "Codex"),
        ("interceptions", "list", "--started-after", some.started_at.isoformat(), "--limit", "1000"),
        ("interceptions", "list", "--after-id", some.id, "--limit", "5"),
        ("sessions", "list", "--limit", "30"),
        ("sessions", "list", "--provider", "openai", "--initiator", "bob"),
        ("sessions", "list", "--after-session-id", some.session_id, "--limit", "3"),
        ("sessions", "show", some.session_id, "--limit", "2"),
    ):
        local = _json(api, *args)
        assert local, args
        assert _json(api, *args, *remote) == local, args
    # AIGW_URL / AIGW_TOKEN do the same as the flags.
    env = {"AIGW_URL": api.url, "AIGW_TOKEN": api.tokens["root"]}
    assert _json(api, "sessions", "list", "--limit", "4", env=env) == _json(api, "sessions", "list", "--limit", "4")


def test_remote_mode_is_the_callers_view(api: Api) -> None:
    mine = _json(api, "interceptions", "list", "--initiator", "me", "--limit", "1000", "--url", api.url,
                 "--token", api.tokens["carol"])
    assert {r["initiator"]["username"] for r in mine} == {"carol"}
    assert mine == _json(api, "interceptions", "list", "--initiator", "carol", "--limit", "1000")
    everyone = _json(api, "sessions", "list", "--limit", "1000", "--url", api.url, "--token", api.tokens["carol"])
    assert {s["initiator"]["username"] for s in everyone} == {"carol"}


def test_errors_are_clear_and_never_echo_the_token(api: Api) -> None:
    proc = run_cli(api.daemon.data_dir, "interceptions", "list", "--url", api.url, "--token", "aigw_not_a_token",
                   check=False)
    assert proc.returncode == 1 and "401" in proc.stderr and "aigw_not_a_token" not in proc.stderr
    proc = run_cli(api.daemon.data_dir, "sessions", "show", "no-such-session", "--url", api.url, "--token",
                   api.tokens["root"], check=False)
    assert proc.returncode == 1 and "Session not found." in proc.stderr
    proc = run_cli(api.daemon.data_dir, "sessions", "show", "no-such-session", check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run_cli(api.daemon.data_dir, "interceptions", "list", "--initiator", "me", check=False)
    assert proc.returncode != 0 and "remote mode" in proc.stderr
