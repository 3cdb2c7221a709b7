"""What the console's browser tests share: a Claude Code turn through the proxy, signing in a browser."""

from __future__ import annotations

import re
import time
from typing import Any

import anthropic

from tests.support.daemon import Daemon
from tests.support.payloads import anthropic_stream, anthropic_usage
from tests.support.standin import StandIn

MODEL = "claude-sonnet-4-5-20250929"


def claude_turn(d: Daemon, upstream: StandIn, user: str, session: str, prompt: str, msg_id: str) -> str:
    """A streamed Claude Code turn (thinking, then a Bash tool call) through the proxy with the anthropic SDK."""
    import ssl

    upstream.queue(anthropic_stream(msg_id, MODEL, [
        {"type": "thinking", "thinking": f"The user wants the files listed ({msg_id}); I should run ls."},
        {"type": "tool_use", "id": f"toolu_{msg_id}", "name": "Bash",
         "input": {"command": "ls -la", "description": "List files"}},
    ], anthropic_usage(1234, 87, cache_read=20480, cache_5m=1500), stop_reason="tool_use"))
    http = anthropic.DefaultHttpxClient(proxy=d.proxy_url(user), verify=ssl.create_default_context(
        cafile=str(d.ca_bundle)))
    client = anthropic.Anthropic(api_key="sk-ant-api03-" + "c" * 80, max_retries=0, http_client=http,
                                 default_headers={"User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
                                                  "X-Claude-Code-Session-Id": session})
    with client.messages.stream(model=MODEL, max_tokens=512, messages=[{"role": "user", "content": prompt}]) as s:
        s.get_final_message()
    return str(d.one(response_id=msg_id)["id"])  # recorded


def base(d: Daemon) -> str:
    return f"http://127.0.0.1:{d.admin_port}"


def session_cookie(page: Any) -> dict[str, Any]:
    return next(c for c in page.context.cookies() if c["name"] == "aigw_console")


def resign_session(page: Any, d: Daemon, age: float) -> None:
    """Give the page the console's session cookie as if last signed `age` seconds ago (the signing secret sits in
    the data directory)."""
    from unittest import mock

    import itsdangerous

    cookie = session_cookie(page)
    secret = (d.data_dir / "ca" / "console-secret.key").read_bytes().strip()
    signer = itsdangerous.URLSafeTimedSerializer(secret, salt="aigw-console-session")
    payload = signer.loads(cookie["value"])
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - age):
        value = signer.dumps(payload)
    page.context.add_cookies([{**cookie, "value": value}])


def signed_in(browser: Any, d: Daemon, user: str, *, with_username: bool = False) -> Any:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris")
    page = ctx.new_page()
    page.goto(base(d) + "/")
    assert page.url.startswith(base(d) + "/console/signin")
    if with_username:
        page.fill("#username", user)
    page.fill("#token", d.token(user))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/$"))
    return page
