"""The web console in a real browser: Debian's headless Chromium (/usr/bin/chromium, installed by
scripts/ensure-chromium.sh) driven by Playwright's Python client, never a downloaded browser. Without the browser
these tests skip, except in CI (CI=true), where that is a failure.

One daemon for the module (its own data directory), an admin `root` and members `alice` and `bob`, SDK traffic
through the proxy against the stand-in upstream; every test saves a screenshot under
`${AIGW_TEST_ARTIFACTS:-build/test-artifacts}/console/`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, UpstreamPKI, provider_config, run_cli, start_daemon, stop_daemon
from tests.support.standin import StandIn

CHROMIUM = os.environ.get("AIGW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("AIGW_TEST_ARTIFACTS", "build/test-artifacts")) / "console"


def _need_browser() -> None:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        message = f"no Chromium at {CHROMIUM} (scripts/ensure-chromium.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def console_daemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
                   upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    _need_browser()
    tmp = tmp_path_factory.mktemp("console")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file))
    d.tokens["root"] = run_cli(d.data_dir, "users", "add", "root", "--role", "admin").stdout.strip()
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def browser(console_daemon: Daemon) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Iterator[object]:
    """`shot(page, name)`: save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: object, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path

    yield take
