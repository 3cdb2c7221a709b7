"""The REST API of a test daemon, as a client sees it: GETs with a user's token, JSON decoded."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlencode

from tests.support.api_seed import Dataset
from tests.support.daemon import Daemon

PREFIX = "/api/v2/ai-gateway"


@dataclass
class Api:
    daemon: Daemon
    data: Dataset
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.admin_port}"

    def get(self, path: str, user: str | None = "root", *, prefix: str = PREFIX, headers: dict[str, str] | None = None,
            **params: Any) -> tuple[int, Any, Message]:
        """(status, JSON body or raw bytes, headers: case-insensitive) of a GET; `user=None` sends no token."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        req = urllib.request.Request(self.url + prefix + path + (f"?{query}" if query else ""))
        if user is not None:
            req.add_header("Coder-Session-Token", self.tokens[user])
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, body, hdrs = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, body, hdrs = exc.code, exc.read(), exc.headers
        if hdrs.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(body), hdrs
        return status, body, hdrs

    def ok(self, path: str, user: str | None = "root", **params: Any) -> Any:
        status, body, _ = self.get(path, user, **params)
        assert status == 200, body
        return body

    def uid(self, user: str) -> str:
        return self.data.user_ids[user]
