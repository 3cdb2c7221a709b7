"""The REST API against a live daemon: filters, pagination, sessions, roles and errors, checked against what a
user would work out by hand from the seeded interceptions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.api_seed import Seeded

RFC = "%Y-%m-%dT%H:%M:%S.%fZ"


def _z(t) -> str:
    return t.strftime(RFC)


def _ids(api: Api, user: str = "root", **params: object) -> tuple[list[str], int]:
    body = api.ok("/interceptions", user, limit=1000, **params)
    return [r["id"] for r in body["results"]], body["count"]


def _matching(api: Api, **want: object) -> list[str]:
    rows = [r for r in api.data.ended if all(getattr(r, k) == v for k, v in want.items())]
    return api.data.newest_first(rows)


def test_every_filter_matches_what_was_recorded(api: Api) -> None:
    d = api.data
    everything = d.newest_first(d.ended)
    assert len(everything) > 100
    assert _ids(api) == (everything, len(everything))
    some = d.ended[40]
    cases = {
        "initiator:alice": _matching(api, user="alice"),
        "bob": _matching(api, user="bob"),  # a bare word means initiator
        f"initiator:{api.uid('carol')}": _matching(api, user="carol"),
        "initiator:nobody": [],
        "provider:openai": _matching(api, provider="openai"),
        "provider_name:chatgpt": _matching(api, provider_name="chatgpt"),
        "model:gpt-5": _matching(api, model="gpt-5"),
        'client:"GitHub Copilot (VS Code)"': _matching(api, client="GitHub Copilot (VS Code)"),
        "client:Unknown": _matching(api, client="Unknown"),
        f"session_id:{some.session_id}": [r.id for r in sorted(
            (r for r in d.ended if r.session_id == some.session_id), key=lambda r: (r.started_at, r.id),
            reverse=True)],
        "provider:anthropic initiator:alice model:claude-haiku-4-5": _matching(
            api, provider="anthropic", user="alice", model="claude-haiku-4-5"),
        f"started_after:{_z(some.started_at)}": d.newest_first([r for r in d.ended if r.started_at >= some.started_at]),
        f"started_before:{_z(some.started_at)}": d.newest_first(
            [r for r in d.ended if r.started_at <= some.started_at]),
    }
    for q, want in cases.items():
        got, count = _ids(api, q=q)
        assert got == want, q
        assert count == len(want), q
    assert _ids(api, "alice", q="initiator:me")[0] == _matching(api, user="alice")
    # The same instant in another timezone; a window of whole days and parts of days (counts use day summaries).
    ny = timezone(timedelta(hours=-5))
    lo, hi = d.ended[10].started_at, d.ended[120].started_at
    want = d.newest_first([r for r in d.ended if lo <= r.started_at <= hi])
    q = f"started_after:{lo.astimezone(ny).isoformat()} started_before:{hi.isoformat()}"
    assert _ids(api, q=q) == (want, len(want))
    want = d.newest_first([r for r in d.ended if lo <= r.started_at <= hi and r.provider == "anthropic"])
    assert _ids(api, q=f"{q} provider:anthropic") == (want, len(want))


@pytest.mark.parametrize(("q", "says"), [
    ("colour:red", "unknown search key 'colour'"),
    ("started_after:yesterday", "started_after: 'yesterday' is not an RFC 3339 time"),
    ("started_before:2025-01-01", "started_before"),
    ("started_after:2025-03-02T00:00:00Z started_before:2025-03-01T00:00:00Z", "started_before must be after"),
    ('model:"gpt', "unterminated quote"),
    ("model:", "is not key:value"),
    ("model:a model:b", "'model' is given more than once"),
])
def test_bad_search_queries_say_what_is_wrong(api: Api, q: str, says: str) -> None:
    for path in ("/interceptions", "/sessions"):
        status, body, _ = api.get(path, q=q)
        assert status == 400
        assert says in body["message"]


def test_interception_pages_lose_and_repeat_nothing(api: Api) -> None:
    everything, _ = _ids(api)
    for size in (1, 7, 50):
        seen, after = [], None
        for _ in range(len(everything) + 1):
            page = api.ok("/interceptions", limit=size, after_id=after)["results"]
            if not page:
                break
            seen += [r["id"] for r in page]
            after = page[-1]["id"]
        assert seen == everything
    by_offset = []
    for offset in range(0, len(everything), 20):
        by_offset += [r["id"] for r in api.ok("/interceptions", limit=20, offset=offset)["results"]]
    assert by_offset == everything
    # Filtered pages follow the filter.
    alice = _matching(api, user="alice")
    first = api.ok("/interceptions", q="initiator:alice", limit=5)["results"]
    rest = api.ok("/interceptions", q="initiator:alice", limit=1000, after_id=first[-1]["id"])["results"]
    assert [r["id"] for r in first + rest] == alice


@pytest.mark.parametrize("path", ["/interceptions", "/sessions"])
def test_pagination_errors(api: Api, path: str) -> None:
    cursor = "after_id" if path == "/interceptions" else "after_session_id"
    for bad in ("0", "1001", "-1", "ten"):
        status, body, _ = api.get(path, limit=bad)
        assert (status, body["message"]) == (400, "Invalid pagination limit value.")
    status, body, _ = api.get(path, offset="-3")
    assert status == 400
    known = api.data.ended[0].id if path == "/interceptions" else api.data.ended[0].session_id
    at_known: dict[str, Any] = {cursor: known}  # query parameters (get()'s own keywords are not among them)
    status, body, _ = api.get(path, offset=5, **at_known)
    assert (status, body["message"]) == (
        400, f"Cannot use both {cursor} and offset pagination in the same request.")
    at_unknown: dict[str, Any] = {cursor: "no-such-thing"}
    status, body, _ = api.get(path, **at_unknown)
    assert status == 400
    assert body["message"] == ("Invalid pagination cursor." if path == "/interceptions"
                               else 'after_session_id: session "no-such-thing" not found')
    in_flight = next(r for r in api.data.rows if r.ended_at is None)
    if path == "/interceptions":
        assert api.get(path, after_id=in_flight.id)[0] == 400


def _ended(r: Seeded) -> datetime:
    assert r.ended_at is not None, r  # only ended interceptions are listed
    return r.ended_at


def _expected_sessions(api: Api, rows: list[Seeded]) -> list[dict]:
    whole = api.data.sessions()
    out = []
    for key, mine in api.data.sessions(rows).items():
        session = sorted(whole[key], key=lambda r: (r.started_at, r.id))
        prompted = [r for r in mine if r.prompt]
        last_prompt = max((r for r in session if r.prompt), key=_ended, default=None)
        out.append({
            "id": key[0],
            "initiator": key[1],
            "providers": sorted({r.provider for r in session}),
            "models": sorted({r.model for r in session}),
            "client": session[0].client,
            "started_at": _z(min(r.started_at for r in mine)),
            "ended_at": _z(max(_ended(r) for r in mine)),
            "threads": sum(1 for r in mine if r.root is None),
            "tokens": [sum(r.tokens[n] for r in session) for n in range(4)],
            "last_prompt": last_prompt.prompt if last_prompt else None,
            "last_active_at": _z(max(_ended(r) for r in prompted) if prompted else min(r.started_at for r in mine)),
        })
    out.sort(key=lambda s: (s["last_active_at"], s["id"]), reverse=True)
    return out


def _shown(sessions: list[dict]) -> list[dict]:
    t = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
    return [{
        "id": s["id"], "initiator": s["initiator"]["id"], "providers": s["providers"], "models": s["models"],
        "client": s["client"], "started_at": s["started_at"], "ended_at": s["ended_at"], "threads": s["threads"],
        "tokens": [s["token_usage_summary"][k] for k in t], "last_prompt": s["last_prompt"],
        "last_active_at": s["last_active_at"],
    } for s in sessions]


def test_sessions_group_count_and_order_as_recorded(api: Api) -> None:
    d = api.data
    body = api.ok("/sessions", limit=1000)
    want = _expected_sessions(api, d.ended)
    assert body["count"] == len(want) > 20
    assert _shown(body["sessions"]) == want
    # Filtered by what was called: grouped over the matching interceptions only (Coder's semantics).
    for q, rows in {
        "model:gpt-5": [r for r in d.ended if r.model == "gpt-5"],
        "initiator:bob": [r for r in d.ended if r.user == "bob"],
        f"started_after:{_z(d.ended[60].started_at)}": [r for r in d.ended if r.started_at >= d.ended[60].started_at],
    }.items():
        body = api.ok("/sessions", q=q, limit=1000)
        want = _expected_sessions(api, rows)
        assert (body["count"], _shown(body["sessions"])) == (len(want), want), q


def test_session_pages_lose_and_repeat_nothing(api: Api) -> None:
    everything = [s["id"] for s in api.ok("/sessions", limit=1000)["sessions"]]
    for q in (None, "client:Codex"):
        full = [s["id"] for s in api.ok("/sessions", q=q, limit=1000)["sessions"]]
        for size in (1, 6):
            seen, after = [], None
            for _ in range(len(everything) + 1):
                page = api.ok("/sessions", q=q, limit=size, after_session_id=after)["sessions"]
                if not page:
                    break
                seen += [s["id"] for s in page]
                after = page[-1]["id"]
            assert seen == full
        by_offset = []
        for offset in range(0, len(full), 4):
            by_offset += [s["id"] for s in api.ok("/sessions", q=q, limit=4, offset=offset)["sessions"]]
        assert by_offset == full


def test_session_detail_lists_threads_with_their_actions(api: Api) -> None:
    d = api.data
    sessions = d.sessions()
    key, rows = max(sessions.items(), key=lambda kv: len({r.root or r.id for r in kv[1]}))
    roots = sorted((r for r in rows if r.root is None), key=lambda r: (r.started_at, r.id))
    assert len(roots) >= 3
    body = api.ok(f"/sessions/{key[0]}")
    assert body["id"] == key[0] and body["initiator"]["id"] == key[1]
    assert [t["id"] for t in body["threads"]] == [r.id for r in roots]
    for thread, root in zip(body["threads"], roots, strict=True):
        members = sorted((r for r in rows if (r.root or r.id) == root.id), key=lambda r: (r.started_at, r.id))
        assert thread["prompt"] == root.prompt
        assert thread["model"] == root.model
        assert thread["interceptions"] == len(members)
        assert thread["token_usage"]["input_tokens"] == sum(r.tokens[0] for r in members)
        assert thread["token_usage"]["metadata"] == {"web_search_requests": len(members)}
        acting = [r for r in members if r.tool_call or r.thought]
        assert [a["interception_id"] for a in thread["agentic_actions"]] == [r.id for r in acting]
        for action, r in zip(thread["agentic_actions"], acting, strict=True):
            assert [c["provider_tool_call_id"] for c in action["tool_calls"]] == ([r.tool_call] if r.tool_call else [])
            assert [t["text"] for t in action["thinking"]] == ([r.thought] if r.thought else [])
    assert body["token_usage_summary"]["output_tokens"] == sum(r.tokens[1] for r in rows)
    # Threads page forwards and backwards.
    forward, after = [], None
    for _ in range(len(roots) + 1):
        page = api.ok(f"/sessions/{key[0]}", limit=2, after_id=after)["threads"]
        if not page:
            break
        forward += [t["id"] for t in page]
        after = page[-1]["id"]
    assert forward == [r.id for r in roots]
    backward: list[str] = []
    before = roots[-1].id
    for _ in range(len(roots) + 1):
        page = api.ok(f"/sessions/{key[0]}", limit=2, before_id=before)["threads"]
        if not page:
            break
        backward = [t["id"] for t in page] + backward
        before = page[0]["id"]
    assert backward == [r.id for r in roots[:-1]]
    assert api.get(f"/sessions/{key[0]}", after_id=roots[0].id, before_id=roots[1].id)[0] == 400
    assert api.get(f"/sessions/{key[0]}", after_id="nope")[1]["message"] == "Invalid pagination cursor."
    for bad in ("0", "201", "x"):
        assert api.get(f"/sessions/{key[0]}", limit=bad)[1]["message"] == "Invalid pagination limit value."
    status, body, _ = api.get("/sessions/does-not-exist")
    assert (status, body["message"]) == (404, "Session not found.")


def test_a_member_never_sees_another_users_records(api: Api) -> None:
    d = api.data
    for user in ("alice", "bob"):
        mine = _matching(api, user=user)
        assert _ids(api, user) == (mine, len(mine))
        assert _ids(api, user, q="initiator:carol") == ([], 0)
        assert _ids(api, user, q=f"initiator:{api.uid('carol')}") == ([], 0)
        sessions = api.ok("/sessions", user, limit=1000)
        assert {s["initiator"]["id"] for s in sessions["sessions"]} == {api.uid(user)}
        assert sessions["count"] == len([k for k in d.sessions() if k[1] == api.uid(user)])
        theirs = next(r for r in d.ended if r.user == "carol")
        assert api.get(f"/sessions/{theirs.session_id}", user)[0] == 404
        assert api.get("/interceptions", user, after_id=theirs.id)[0] == 400
        assert api.get("/sessions", user, after_session_id=theirs.session_id)[0] == 400
        assert set(api.ok("/models", user)) == {r.model for r in d.ended if r.user == user}
        assert set(api.ok("/clients", user)) == {r.client for r in d.ended if r.user == user}
    assert set(api.ok("/models")) == {r.model for r in d.ended}
    assert api.ok("/models", q="gpt-5") == sorted({r.model for r in d.ended if r.model.startswith("gpt-5")})
    assert api.ok("/clients", q="client:Co") == sorted({r.client for r in d.ended if r.client.startswith("Co")})


def test_authentication(api: Api) -> None:
    for path in ("/interceptions", "/sessions", "/sessions/x", "/models", "/clients", "/spend"):
        assert api.get(path, None)[0] == 401
        assert api.get(path, None, headers={"Coder-Session-Token": "aigw_wrong"})[0] == 401
        assert api.get(path, None, headers={"Authorization": "Bearer nope"})[0] == 401
    assert api.get("/interceptions", None, headers={"Authorization": f"Bearer {api.tokens['alice']}"})[0] == 200
    status, body, hdrs = api.get("/proxy/ca-cert.pem", None, prefix="/api/v2/aibridge")
    assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE-----")
    assert hdrs["Content-Type"] == "application/x-pem-file"
    assert body.decode() == api.daemon.cli("ca", "export").stdout
    # A revoked token stops working at once; the error never echoes it.
    extra = api.daemon.cli("users", "token", "carol").stdout.strip()
    assert api.get("/interceptions", None, headers={"Coder-Session-Token": extra})[0] == 200
    token_id = next(t["id"] for u in __import__("json").loads(api.daemon.cli("users", "list").stdout)
                    if u["username"] == "carol" for t in u["tokens"] if t["hint"][-4:] == extra[-4:])
    api.daemon.cli("users", "revoke", "--token-id", token_id)
    status, body, _ = api.get("/interceptions", None, headers={"Coder-Session-Token": extra})
    assert status == 401 and extra not in str(body)


def test_both_prefixes_and_unknown_routes(api: Api) -> None:
    a = api.ok("/sessions", limit=5)
    status, b, _ = api.get("/sessions", limit=5, prefix="/api/v2/aibridge")
    assert status == 200 and a == b
    assert api.get("/nothing-here")[0] == 404
    assert api.get("/sessions/a/b")[0] == 404
    status, doc, _ = api.get("", None, prefix="/api/v2/openapi.json")
    assert status == 200 and "/api/v2/aibridge/sessions/{session_id}" in doc["paths"]


def _spend_by_hand(items: list[dict], key: str) -> dict[str, tuple[int, int, int | None, int]]:
    """(records, input tokens, API cost or None when every row is unpriced, unpriced rows) per group."""
    rows: dict[str, list[dict]] = {}
    for ix in items:
        group = {"user": ix["initiator"]["username"], "model": ix["model"], "client": ix["client"],
                 "provider": ix["provider_name"], "day": ix["started_at"][:10]}[key]
        rows.setdefault(group, []).extend(ix["token_usages"])
    out = {}
    for group, tus in rows.items():
        unpriced = sum(t["cost_micros"] is None for t in tus)
        cost = None if unpriced == len(tus) else sum(t["cost_micros"] or 0 for t in tus)
        out[group] = (len(tus), sum(t["input_tokens"] for t in tus), cost, unpriced)
    return out


def _spend_groups(report: dict) -> dict[str, tuple[int, int, int | None, int]]:
    return {g["key"]: (g["records"], g["input_tokens"], g["cost"]["cost_micros"], g["cost"]["unpriced_records"])
            for g in report["groups"]}


@pytest.mark.parametrize("by", ["user", "model", "client", "provider", "day"])
def test_the_spend_report_sums_the_stored_prices(api: Api, by: str) -> None:
    everything = api.ok("/interceptions", limit=1000)["results"]
    report = api.ok("/spend", by=by)
    assert report["by"] == by and _spend_groups(report) == _spend_by_hand(everything, by)
    priced = [t["cost_micros"] for ix in everything for t in ix["token_usages"] if t["cost_micros"] is not None]
    assert report["total"]["cost"]["cost_micros"] == sum(priced) > 0
    assert report["total"]["records"] == sum(len(ix["token_usages"]) for ix in everything)
    # The q filters apply, and a member's report covers their own records only, whatever q says.
    openai_only = [ix for ix in everything if ix["provider"] == "openai"]
    assert _spend_groups(api.ok("/spend", by=by, q="provider:openai")) == _spend_by_hand(openai_only, by)
    alices = [ix for ix in everything if ix["initiator"]["username"] == "alice"]
    assert _spend_groups(api.ok("/spend", "alice", by=by)) == _spend_by_hand(alices, by)
    assert api.ok("/spend", "alice", by=by, q="initiator:carol")["groups"] == []
    assert api.get("/spend", by=by, prefix="/api/v2/aibridge")[1] == report


def test_spend_report_errors(api: Api) -> None:
    status, body, _ = api.get("/spend", by="week")
    assert (status, body["message"]) == (400, "Invalid spend grouping.") and "user, model" in body["detail"]
    status, body, _ = api.get("/spend", q="started_after:yesterday")
    assert status == 400 and "started_after" in body["message"]
    assert api.ok("/spend")["by"] == "user"  # the default grouping


@pytest.mark.parametrize("path", ["/interceptions", "/sessions", "/spend", "/models"])
def test_a_nul_character_in_a_parameter_is_a_400_on_every_backend(api: Api, path: str) -> None:
    """Nothing stored holds a NUL and PostgreSQL refuses one in a query: a 400 that says so, never a 500."""
    for name in ("q", "after_id", "after_session_id"):
        query: dict[str, Any] = {name: "x\x00y"}
        status, body, _ = api.get(path, **query)
        assert (status, body["message"]) == (400, "Invalid query parameter."), name
    for route in ("/sessions/x%00y", "/interceptions/x%00y/capture"):
        assert api.get(route)[0] == 404
