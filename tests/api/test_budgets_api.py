"""The budgets and groups routes of the REST API (docs/spend.md#budgets): admins set, list and delete budgets;
members see only the budgets that apply to them and change none."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.api import PREFIX, Api


def call(api: Api, method: str, path: str, user: str | None = "root", body: Any = None,
         raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(api.url + PREFIX + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user is not None:
        req.add_header("Coder-Session-Token", api.tokens[user])
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, payload, headers = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, payload, headers = exc.code, exc.read(), dict(exc.headers)
    return status, json.loads(payload) if payload else None, {k.lower(): v for k, v in headers.items()}


def test_admins_manage_budgets_and_members_see_theirs(api: Api) -> None:
    d = api.daemon
    d.cli("groups", "add", "api-team")
    d.cli("groups", "add-user", "api-team", "alice")
    try:
        status, made, _ = call(api, "POST", "/budgets", body={"scope": "group:api-team", "daily": 5, "monthly": 80,
                                                              "soft_fraction": 0.5})
        assert status == 200
        assert made == {"scope": "group:api-team", "daily": 5.0, "monthly": 80.0, "daily_micros": 5_000_000,
                        "monthly_micros": 80_000_000, "soft_fraction": 0.5, "source": "database"}
        assert call(api, "POST", "/budgets", body={"scope": "user:bob", "monthly": "12.5"})[0] == 200
        assert call(api, "POST", "/budgets", body={"scope": "default", "daily": 1})[0] == 200

        status, listed, _ = call(api, "GET", "/budgets")
        assert status == 200 and {b["scope"] for b in listed} == {"group:api-team", "user:bob", "default"}
        # alice sees the default and her group's budget, not bob's.
        status, mine, _ = call(api, "GET", "/budgets", user="alice")
        assert status == 200 and {b["scope"] for b in mine} == {"group:api-team", "default"}
        assert call(api, "GET", "/budgets", user=None)[0] == 401

        status, err, _ = call(api, "POST", "/budgets", user="alice", body={"scope": "user:alice", "daily": 1000})
        assert (status, err["message"]) == (403, "Only admins can change budgets.")
        assert call(api, "DELETE", "/budgets/user:bob", user="alice")[0] == 403

        for body, detail in (({"scope": "user:alice"}, "set daily, monthly or both"),
                             ({"scope": "team:x", "daily": 1}, "must be default, user:NAME or group:NAME"),
                             ({"scope": "default", "daily": -3}, "must be a finite amount >= 0")):
            status, err, _ = call(api, "POST", "/budgets", body=body)
            assert status == 400 and detail in err["detail"], err
        assert call(api, "POST", "/budgets", raw=b"{not json")[0] == 400
        assert call(api, "POST", "/budgets", body={"scope": "default", "daily": 1, "weekly": 2})[0] == 400
        status, err, _ = call(api, "POST", "/budgets", body={"scope": "user:nobody", "daily": 1})
        assert (status, err["message"]) == (404, "user 'nobody' not found")

        assert call(api, "PUT", "/budgets", body={"scope": "default", "daily": 1})[0] == 405
        status, _, headers = call(api, "DELETE", "/budgets")
        assert status == 405 and headers["allow"] == "GET, POST, HEAD, OPTIONS"
        status, _, headers = call(api, "GET", "/budgets/default")
        assert status == 405 and headers["allow"] == "DELETE, OPTIONS"
        assert call(api, "POST", "/interceptions", body={})[0] == 405  # the other routes stay read-only

        assert call(api, "DELETE", "/budgets/user:bob")[0] == 204
        status, err, _ = call(api, "DELETE", "/budgets/user:bob")
        assert (status, err["message"]) == (404, "No budget for user:bob in the database.")
        assert {b["scope"] for b in call(api, "GET", "/budgets")[1]} == {"group:api-team", "default"}

        status, groups, _ = call(api, "GET", "/groups")
        team = next(g for g in groups if g["name"] == "api-team")
        assert status == 200 and [m["username"] for m in team["members"]] == ["alice"]
        assert call(api, "GET", "/groups", user="alice")[0] == 403
    finally:
        for scope in ("default", "user:bob"):
            call(api, "DELETE", f"/budgets/{scope}")
        d.cli("groups", "delete", "api-team")
