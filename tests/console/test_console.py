"""The web console through a real headless Chromium: sign-in, the overview, filtering sessions, a session made by
real SDK traffic through the proxy (prompt, thinking, tool call), the request log and raw JSON, People (add a user,
revoke a token, the audit log), a member's view (another user's session is 404), CSRF, and an attacker's
`<script>` prompt rendered as text."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.console.helpers import MODEL, base, claude_turn, resign_session, session_cookie, signed_in
from tests.support.daemon import AIGW, Daemon, UpstreamPKI, provider_config, start_daemon, stop_daemon
from tests.support.standin import StandIn

XSS = '<script>alert("pwned")</script><img src=x onerror="alert(2)"> tell me a joke'


def api_calls(d: Daemon) -> dict[str, dict]:
    """The recorded calls by id, as the REST API lists them."""
    req = urllib.request.Request(base(d) + "/api/v2/aibridge/interceptions",
                                 headers={"Coder-Session-Token": d.token("root")})
    with urllib.request.urlopen(req, timeout=30) as r:
        rows = json.loads(r.read())["results"]
    assert len(rows) == 3
    return {row["id"]: row for row in rows}


def spend_per_user(d: Daemon) -> dict[str, int]:
    """Micro-USD per username, summed from each recorded call's own cost as the REST API lists it."""
    out: dict[str, int] = {}
    for row in api_calls(d).values():
        name = row["initiator"]["username"]
        out[name] = out.get(name, 0) + int(row["cost"]["cost_micros"])
    return out


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.4f}"  # as the console's Cost columns write it


@pytest.fixture(scope="module")
def traffic(console_daemon: Daemon, standin_server: StandIn) -> dict[str, str]:
    d = console_daemon
    alice_call = claude_turn(d, standin_server, "alice", "sess-alice-1", "list the files in the repo",
                             "msg_console_a1")
    claude_turn(d, standin_server, "bob", "sess-bob-1", "what is in this folder", "msg_console_b1")
    claude_turn(d, standin_server, "alice", "sess-alice-xss", XSS, "msg_console_x1")
    d.token("root")
    standin_server.reset()
    return {"alice": "sess-alice-1", "bob": "sess-bob-1", "xss": "sess-alice-xss", "alice_call": alice_call}


def test_sign_in_overview_and_headers(traffic: dict[str, str], browser: Any, console_daemon: Daemon,
                                      shot: Any) -> None:
    d = console_daemon
    page = browser.new_page()
    resp = page.goto(base(d) + "/console/signin")
    headers = resp.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"]
    shot(page, "01-signin")
    page.fill("#token", "aigw_not-a-real-token")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("main")
    page.fill("#username", "root")
    page.fill("#token", d.token("root"))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "aigw_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert d.token("root") not in cookie["value"]  # the session holds the token's id, never the token
    assert page.inner_text("h1") == "Overview"
    cards = page.inner_text("dl.cards")
    assert "Interceptions\n3" in cards and "Active users\n2" in cards
    assert "Input tokens\n3\u202f702" in cards  # 3 × 1234, grouped
    board = page.inner_text("section:has(h2:text('User leaderboard')) table")
    assert "alice" in board and "bob" in board
    assert MODEL in page.inner_text("section:has(h2:text('Top models'))")
    assert "Claude Code" in page.inner_text("section:has(h2:text('Top clients'))")
    assert page.locator("svg.chart rect").count() >= 1
    # Money: what each user's calls cost, summed from the calls' own stored prices (the request log's Cost).
    cost = spend_per_user(d)
    assert set(cost) == {"alice", "bob"} and all(v > 0 for v in cost.values())
    assert f"Spend\n{usd(sum(cost.values()))}" in cards
    spenders = page.locator("#spend-by-user tbody tr")
    assert spenders.count() == 2
    assert spenders.nth(0).inner_text().split("\t")[::3] == ["alice", usd(cost["alice"])]  # most first
    assert spenders.nth(1).inner_text().split("\t")[::3] == ["bob", usd(cost["bob"])]
    models = page.locator("#spend-by-model tbody tr")
    assert models.count() == 1 and models.first.inner_text().split("\t")[::3] == [MODEL, usd(sum(cost.values()))]
    # Times are localised by the script (Europe/Paris), UTC stays on hover.
    first = page.locator("main time").first
    assert "UTC" in first.get_attribute("title") and "UTC" not in first.inner_text()
    page.click("a.pill:text('7d')")
    assert page.locator("a.pill[aria-current=true]").inner_text() == "7d"
    shot(page, "02-overview")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "03-overview-phone")
    page.close()


def test_filter_sessions_and_open_one_from_sdk_traffic(browser: Any, console_daemon: Daemon,
                                                       traffic: dict[str, str], shot: Any) -> None:
    page = signed_in(browser, console_daemon, "root", with_username=True)
    page.click("nav >> text=Sessions")
    assert page.locator("table.list tbody tr").count() == 3
    page.fill("#q", "alice")
    page.press("#q", "Enter")
    assert page.locator("table.list tbody tr").count() == 2
    assert "initiator: alice" in page.inner_text("ul.chips")
    page.fill("#q", 'initiator:bob client:"Claude Code"')
    page.press("#q", "Enter")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 1 and "what is in this folder" in rows.first.inner_text()
    page.click("ul.chips a[aria-label='Remove initiator filter']")
    assert page.locator("table.list tbody tr").count() == 3
    page.fill("#q", "model:nope")
    page.press("#q", "Enter")
    assert "No sessions match." in page.inner_text("table.list")
    page.fill("#q", "colour:blue")
    page.press("#q", "Enter")
    assert "unknown search key" in page.inner_text("p.error")
    shot(page, "04-sessions-filtered")
    page.goto(base(console_daemon) + "/console/sessions?q=alice")
    page.click(f"a.rowlink[href$='/sessions/{traffic['alice']}']")
    main = page.locator("main")
    text = main.inner_text()
    assert "list the files in the repo" in text  # the prompt
    assert "I should run ls." in page.inner_text("section.thinking")
    tool = page.inner_text("section.tool")
    assert "Bash" in tool and '"command": "ls -la"' in tool  # pretty JSON
    tokens = page.inner_text("li.call dl.tokens")
    assert "Input\n1\u202f234" in tokens and "Cache read\n20\u202f480" in tokens
    # The session's one call: its cost, the thread's and the session's, as the REST API prices the call.
    cost = usd(api_calls(console_daemon)[traffic["alice_call"]]["cost"]["cost_micros"])
    assert cost != usd(0) and f"Cost\n{cost}" in tokens
    assert page.inner_text("#cost") == f"Cost\n{cost}" and page.inner_text("article.thread p.meta").endswith(cost)
    shot(page, "05-session-detail")
    page.click("li.call .callhead a")
    assert "Interception" in page.inner_text("h1")
    assert page.inner_text("#cost") == f"Cost\n{cost}"
    assert page.locator("table tbody tr").first.inner_text().split("\t")[-1] == cost  # its one token row
    page.click("text=Show the record's JSON")
    raw = page.inner_text("details pre.json")
    assert json.loads(raw)["session_id"] == traffic["alice"]
    shot(page, "06-interception")
    page.click("text=as JSON")
    assert json.loads(page.inner_text("body"))["model"] == MODEL
    page.close()


def test_request_log(traffic: dict[str, str], browser: Any, console_daemon: Daemon, shot: Any) -> None:
    page = signed_in(browser, console_daemon, "root")
    page.click("nav >> text=Request log")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 3
    assert "tell me a joke" in rows.nth(0).inner_text()  # newest first
    page.fill("#q", "bob")
    page.press("#q", "Enter")
    assert page.locator("table.list tbody tr").count() == 1
    shot(page, "07-request-log")
    page.close()


def test_people_add_user_revoke_token_and_audit(traffic: dict[str, str], browser: Any, console_daemon: Daemon,
                                                shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "root")
    page.click("nav >> text=People")
    page.fill("#new-username", "carol")
    page.click("button:text('Add user')")
    token = page.inner_text("#new-token").strip()
    assert token.startswith("aigw_")
    assert f"export HTTPS_PROXY=http://carol:{token}@{d.address}" in page.inner_text("section.shown")
    assert "NODE_EXTRA_CA_CERTS" in page.inner_text("section.shown")
    shot(page, "08-people-token-shown")
    # The new token works for the API; revoke it from the page and it no longer does.
    api = base(d) + "/api/v2/aibridge/sessions"

    def api_status(tok: str) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(api, headers={"Authorization": f"Bearer {tok}"})):
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    assert api_status(token) == 200
    page.goto(base(d) + "/console/people")
    page.click("tr#u-carol button.danger")
    assert "revoked" in page.inner_text("tr#u-carol")
    assert api_status(token) == 401
    page.select_option("#role-" + page.get_attribute("tr#u-carol input[name=user_id]", "value"), "admin")
    page.click("tr#u-carol button:text('Change role')")
    assert page.locator("tr#u-carol select").input_value() == "admin"
    shot(page, "09-people")
    page.click("nav >> text=Audit log")
    audit = page.inner_text("table")
    for action in ("user.create", "token.revoke", "user.role"):
        assert action in audit
    assert "root" in audit and "carol" in audit and token not in audit
    assert "audit user.create by root on carol" in d.log()  # the structured log record
    shot(page, "10-audit-log")
    page.close()


def test_member_sees_only_their_own(traffic: dict[str, str], browser: Any, console_daemon: Daemon,
                                    shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "bob")
    assert "People" not in page.inner_text("header nav")
    assert "Interceptions\n1" in page.inner_text("dl.cards")
    assert f"Spend\n{usd(spend_per_user(d)['bob'])}" in page.inner_text("dl.cards")  # their own calls only
    assert page.locator("#spend-by-user tbody tr").all_inner_texts()[0].startswith("bob\t")
    assert page.locator("#spend-by-user tbody tr").count() == 1
    page.click("nav >> text=Sessions")
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 1 and "bob" in rows.first.inner_text()
    resp = page.goto(base(d) + f"/console/sessions/{traffic['alice']}")
    assert resp.status == 404 and "Session not found." in page.inner_text("main")
    shot(page, "11-member-404")
    alice_call = traffic["alice_call"]
    assert page.goto(base(d) + f"/console/requests/{alice_call}").status == 404
    assert page.goto(base(d) + f"/console/requests/{alice_call}/raw").status == 404
    assert page.goto(base(d) + "/console/people").status == 404
    page.close()


def test_csrf_less_post_refused(traffic: dict[str, str], browser: Any, console_daemon: Daemon, shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "root")
    before = d.cli("users", "list").stdout
    # The signed-in browser's cookie, but no CSRF token in the form: refused.
    r = page.request.post(base(d) + "/console/people", form={"action": "add", "username": "mallory"})
    assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(base(d) + "/console/people", form={"action": "add", "username": "mallory",
                                                             "csrf": "guessed"})
    assert r.status == 403
    # The right token from another origin: refused too.
    page.goto(base(d) + "/console/people")
    csrf = page.get_attribute("input[name=csrf]", "value")
    r = page.request.post(base(d) + "/console/people", form={"action": "add", "username": "mallory", "csrf": csrf},
                          headers={"Origin": "http://evil.example"})
    assert r.status == 403
    # No session at all: refused; sign-in without its CSRF token: refused.
    fresh = browser.new_page()
    r = fresh.request.post(base(d) + "/console/people", form={"action": "add", "username": "mallory"})
    assert r.status == 403
    r = fresh.request.post(base(d) + "/console/signin", form={"token": d.token("root")})
    assert r.status == 403
    assert "mallory" not in d.cli("users", "list").stdout and before
    fresh.set_content(r.text())
    shot(fresh, "12-csrf-refused")
    # The admin listener's body cap applies to the console's forms too.
    r = page.request.post(base(d) + "/console/people", form={"action": "add", "username": "x" * (2 << 20),
                                                             "csrf": csrf})
    assert r.status == 413
    # Other methods stay refused outside the console's forms.
    assert page.request.fetch(base(d) + "/api/v2/aibridge/sessions", method="POST").status == 405
    fresh.close()
    page.close()


def test_script_prompt_rendered_inert(traffic: dict[str, str], browser: Any, console_daemon: Daemon,
                                      shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "root")
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base(d) + f"/console/sessions/{traffic['xss']}")
    assert XSS in page.inner_text("section.prompt")
    page.goto(base(d) + "/console/requests")
    assert '<script>alert("pwned")' in page.inner_text("table.list")
    page.click("table.list tbody tr >> nth=0 >> a.rowlink")
    assert XSS in page.inner_text("section.prompt")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0
    shot(page, "13-script-prompt-inert")
    page.close()


def test_setup_page_and_signout(traffic: dict[str, str], browser: Any, console_daemon: Daemon, shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "alice")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("nav >> text=Set-up")
    assert d.address in page.inner_text("#proxy-address")
    with page.expect_download() as dl:
        page.click("text=Download the CA certificate")
    assert "BEGIN CERTIFICATE" in open(dl.value.path()).read()
    page.click("#selftest")
    page.wait_for_function("document.getElementById('selftest-result').textContent.includes('proxy')")
    assert "reachable" in page.inner_text("#selftest-result")
    page.click("button.copybtn[data-copy=s-proxy]")
    assert page.evaluate("navigator.clipboard.readText()").startswith("export HTTPS_PROXY=http://alice:")
    shot(page, "14-setup")
    page.click("header button:text('Sign out')")
    page.wait_for_url(re.compile(r"/console/signin"))
    assert page.goto(base(d) + "/console/sessions").url.startswith(base(d) + "/console/signin")
    page.close()


def test_idle_session_expires(traffic: dict[str, str], browser: Any, console_daemon: Daemon, shot: Any) -> None:
    """A session cookie last signed more than 30 minutes ago is refused: back to sign-in. The signing secret sits
    in the data directory, readable by its owner only."""
    import stat

    d = console_daemon
    secret_file = d.data_dir / "ca" / "console-secret.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    page = signed_in(browser, d, "alice")
    assert not session_cookie(page)["secure"]  # plain http, no --console-secure-cookie
    resign_session(page, d, 29 * 60)
    assert page.goto(base(d) + "/console/sessions").url.endswith("/console/sessions")  # still within the window
    resign_session(page, d, 31 * 60)
    page.goto(base(d) + "/console/sessions")
    assert "/console/signin" in page.url and page.inner_text("h1") == "Sign in"
    shot(page, "15-idle-expired")
    page.close()


def test_idle_timeout_and_secure_cookie_flags(browser: Any, tmp_path: Path, standin_server: StandIn,
                                              upstream_pki: UpstreamPKI) -> None:
    """`--console-idle-timeout 2m --console-secure-cookie` (a TLS terminator in front): the session cookie is
    Secure and lives 2 minutes, a session unused for longer is refused, and a bad value fails start-up."""
    d = start_daemon(tmp_path, provider_config(standin_server, upstream_pki.ca_file),
                     extra_args=("--console-idle-timeout", "2m", "--console-secure-cookie"))
    try:
        page = signed_in(browser, d, "alice")  # a new user, made for the test
        cookie = session_cookie(page)
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert 100 < cookie["expires"] - time.time() <= 120
        resign_session(page, d, 90)
        assert page.goto(base(d) + "/console/sessions").url.endswith("/console/sessions")
        resign_session(page, d, 150)
        page.goto(base(d) + "/console/sessions")
        assert "/console/signin" in page.url
        page.close()
    finally:
        assert stop_daemon(d) == 0
    refused = subprocess.run([*AIGW, "run", "--data-dir", str(tmp_path / "data"), "--console-idle-timeout", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--console-idle-timeout" in refused.stderr and "longer than 0" in refused.stderr
