"""Groups and budgets in the web console through a real headless Chromium: an admin creates a group, adds a
member, sets the group's budget, a user budget and the default, and sees them listed with the group's spend
beside its budget (a call charged to the group, its cost as the record has it); the CLI sees the same groups;
renaming, removing a member and deleting are audited; a member never reaches the page; a CSRF-less POST is
refused and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aigw_proxy.spend.budgets import format_usd
from tests.console.helpers import base, claude_turn, signed_in
from tests.support.daemon import Daemon
from tests.support.metrics import wait_for
from tests.support.standin import StandIn


def _off_loop(fn: Callable[[], Any]) -> Any:
    """Run `fn` on another thread: the daemon helpers' asyncio.run cannot run inside Playwright's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def _groups(d: Daemon) -> dict[str, list[str]]:
    return {g["name"]: [m["username"] for m in g["members"]] for g in json.loads(d.cli("groups", "list").stdout)}


def test_create_group_add_member_set_budgets_and_see_spend(browser: Any, console_daemon: Daemon,
                                                           standin_server: StandIn, shot: Any) -> None:
    d = console_daemon
    for user in ("alice", "bob"):
        d.token(user)
    page = signed_in(browser, d, "root")
    page.click("nav >> text=Groups")
    assert page.inner_text("h1") == "Groups and budgets"
    assert "No groups yet." in page.inner_text("table.groups")
    page.fill("#new-group", "platform")
    page.click("button:text('Create group')")
    row = page.locator("tr#group-platform")
    assert row.count() == 1 and "No budget." in row.inner_text()
    gid = row.locator("input[name=group_id]").first.get_attribute("value")
    page.fill(f"#member-{gid}", "alice")
    row.locator("button:text('Add member')").click()
    assert row.locator("ul.members li").all_inner_texts()[0].startswith("alice")
    page.fill(f"#daily-{gid}", "5")
    page.fill(f"#monthly-{gid}", "100")
    row.locator("button:text('Set budget')").click()
    limits = row.locator("dl.limits").inner_text()
    assert "Today\n$0.00 of $5.00" in limits and "This month\n$0.00 of $100.00" in limits
    assert _groups(d) == {"platform": ["alice"]}  # the CLI reads the same store
    budgets = {b["scope"]: b for b in json.loads(d.cli("budgets", "list").stdout)}
    assert budgets["group:platform"]["daily"] == 5 and budgets["group:platform"]["monthly"] == 100

    # A user budget and the default, from the same page.
    page.fill("#budget-user", "bob")
    page.fill("#daily-new-user", "2.50")
    page.locator("#user-budgets form.budget").last.locator("button:text('Set budget')").click()
    assert "Today\n$0.00 of $2.50" in page.inner_text("tr#user-bob")
    page.fill("#monthly-default", "40")
    page.locator("#budget-default button:text('Set budget')").click()
    assert "$40.00" in page.inner_text("#budget-default dl.limits")

    # Once the proxy enforces the group's budget, alice's calls are charged to it: its spend shows beside it.
    wait_for(d.admin_port, lambda s: s.value("aigw_proxy_budget_limit_usd", scope="group:platform",
                                             window="daily") == 5)
    record = _off_loop(lambda: d.one(response_id=claude_turn(d, standin_server, "alice", "sess-groups-1",
                                                              "charge this to platform", "msg_groups_1") and
                                     "msg_groups_1"))
    cost = record["cost"]["cost_micros"]
    assert cost > 0
    page.goto(base(d) + "/console/groups")
    limits = page.locator("tr#group-platform dl.limits").inner_text()
    assert f"Today\n{format_usd(cost)} of $5.00" in limits and f"This month\n{format_usd(cost)} of $100.00" in limits
    shot(page, "16-groups")

    # Rename, take the member out, delete: each audited, each visible to the CLI.
    page.fill(f"#rename-{gid}", "platform-team")
    page.locator("tr#group-platform button:text('Rename')").click()
    assert page.locator("tr#group-platform-team").count() == 1
    assert "$5.00" in page.inner_text("tr#group-platform-team dl.limits")  # the budget follows the group
    page.click("button[aria-label='Remove alice from platform-team']")
    assert "No members." in page.inner_text("tr#group-platform-team ul.members")
    assert _groups(d) == {"platform-team": []}
    page.click("button[aria-label='Delete group platform-team']")
    assert "No groups yet." in page.inner_text("table.groups") and _groups(d) == {}
    page.click("nav >> text=Audit log")
    audit = page.inner_text("table")
    for action in ("group.create", "group.member_add", "budget.set", "group.rename", "group.member_remove",
                   "group.delete"):
        assert action in audit
    assert "group:platform" in audit and "user:bob" in audit and "default" in audit
    assert "audit group.create by root on platform" in d.log()
    shot(page, "17-groups-audit")
    page.close()


def test_member_cannot_reach_groups(browser: Any, console_daemon: Daemon, shot: Any) -> None:
    d = console_daemon
    page = signed_in(browser, d, "bob")
    assert "Groups" not in page.inner_text("header nav")
    resp = page.goto(base(d) + "/console/groups")
    assert resp.status == 404 and "Not found." in page.inner_text("main")
    csrf = page.get_attribute("header form.signout input[name=csrf]", "value")
    r = page.request.post(base(d) + "/console/groups", form={"action": "create", "name": "by-bob", "csrf": csrf})
    assert r.status == 404  # a member's own valid CSRF token does not open the admin page either
    assert "by-bob" not in _groups(d)
    shot(page, "18-groups-member-404")
    page.close()


def test_csrf_less_group_post_refused(browser: Any, console_daemon: Daemon) -> None:
    d = console_daemon
    page = signed_in(browser, d, "root")
    for form in ({"action": "create", "name": "sneaky"}, {"action": "create", "name": "sneaky", "csrf": "guessed"},
                 {"action": "set_budget", "kind": "default", "daily": "0"}):
        r = page.request.post(base(d) + "/console/groups", form=form)
        assert r.status == 403 and "CSRF" in r.text()
    assert "sneaky" not in _groups(d)
    assert all(b["daily"] != 0 for b in json.loads(d.cli("budgets", "list").stdout))  # no $0 default set
    page.close()
