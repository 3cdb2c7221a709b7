"""The interception page's "Raw capture" in a real headless Chromium: a call made through a daemon with
`--capture-bodies` (the anthropic SDK against the stand-in), its headers without credentials, the request JSON
pretty-printed, the event stream, sizes; an attacker's `<script>` in the bodies rendered as text; no section for a
call without a capture, and none of another member's."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.console.conftest import _need_browser
from tests.console.helpers import base, signed_in
from tests.support.daemon import Daemon, UpstreamPKI, provider_config, run_cli, start_daemon, stop_daemon
from tests.support.payloads import anthropic_stream, anthropic_usage
from tests.support.standin import StandIn

MODEL = "claude-sonnet-4-5-20250929"
API_KEY = "sk-ant-api03-" + "w" * 80
XSS = '<script>alert("pwned")</script><img src=x onerror="alert(2)">'


@pytest.fixture(scope="module")
def console_daemon(tmp_path_factory: pytest.TempPathFactory, standin_server: StandIn,
                   upstream_pki: UpstreamPKI) -> Iterator[Daemon]:
    """This module's daemon records bodies (the `browser` fixture drives it)."""
    _need_browser()
    tmp = tmp_path_factory.mktemp("console-capture")
    d = start_daemon(tmp, provider_config(standin_server, upstream_pki.ca_file), extra_args=("--capture-bodies",))
    d.tokens["root"] = run_cli(d.data_dir, "users", "add", "root", "--role", "admin").stdout.strip()
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def call(console_daemon: Daemon, standin_server: StandIn) -> dict[str, Any]:
    d = console_daemon
    reply = anthropic_stream("msg_console_cap", MODEL, [{"type": "text", "text": f"Here it is: {XSS}"}],
                             anthropic_usage(321, 9))
    standin_server.queue(reply)
    http = anthropic.DefaultHttpxClient(proxy=d.proxy_url("alice"),
                                        verify=ssl.create_default_context(cafile=str(d.ca_bundle)))
    client = anthropic.Anthropic(api_key=API_KEY, max_retries=0, http_client=http)
    with client.messages.stream(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": f"echo this back: {XSS}"}]) as s:
        s.get_final_message()
    iid = d.one(response_id="msg_console_cap")["id"]
    d.token("bob")
    standin_server.reset()
    return {"id": iid, "stream": b"".join(reply.chunks).decode()}


def test_the_interception_page_shows_its_raw_capture(call: dict[str, Any], browser: Any,
                                                     console_daemon: Daemon, shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "alice")
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    for _ in range(50):  # the capture is written right after the interception's end
        page.goto(base(d) + f"/console/requests/{call['id']}")
        if page.locator("section.capture").count():
            break
        page.wait_for_timeout(100)
    section = page.locator("section.capture")
    assert section.locator("h2").inner_text() == "Raw capture"
    assert "POST /v1/messages" in section.inner_text()
    section.locator("details.capture-headers").first.click()
    headers = section.locator("details.capture-headers").first.inner_text()
    assert "[REDACTED:credential-header]" in headers and "content-type" in headers
    request = section.locator("pre[data-part=request]").inner_text()
    assert json.loads(request)["messages"][0]["content"] == f"echo this back: {XSS}"
    assert '\n  "model": ' in request  # pretty-printed
    stream = section.locator("pre[data-part=response]").inner_text()
    assert stream.strip() == call["stream"].strip() and "event: message_stop" in stream
    sizes = section.locator("p.capture-size").all_inner_texts()
    assert len(sizes) == 2 and all("bytes" in s for s in sizes) and "truncated" not in " ".join(sizes)
    assert API_KEY not in page.content()
    # Attacker-controlled text in both bodies stays text: no dialog, no element made of it.
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0
    shot(page, "20-raw-capture")
    raw = page.request.get(base(d) + f"/console/requests/{call['id']}/capture")
    assert raw.status == 200 and raw.json()["response"]["body"] == call["stream"]
    page.close()


def test_another_members_capture_is_not_found(call: dict[str, Any], browser: Any, console_daemon: Daemon,
                                              shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "bob")
    resp = page.goto(base(d) + f"/console/requests/{call['id']}")
    assert resp.status == 404
    assert page.request.get(base(d) + f"/console/requests/{call['id']}/capture").status == 404
    shot(page, "21-raw-capture-other-member")
    page.close()

