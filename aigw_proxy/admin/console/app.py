"""The web console's Starlette routes, mounted at `/console/` on the admin listener (`/` redirects there).

Server-rendered Jinja2 pages (render.py: autoescape on for every template, prompts and tool inputs are
attacker-controlled), readable with JavaScript off; one small external script (static/console.js) localises
times and adds copy buttons. Every response carries a strict Content-Security-Policy (no inline script or style),
frame-ancestors 'none' / X-Frame-Options DENY, Referrer-Policy same-origin and nosniff.

Sign-in, the session cookie and CSRF: auth.py. The pages, one module per area: pages/.

Roles as in the REST API: an admin sees everything; a member sees only their own records, and another user's
session or interception answers 404 like a missing one. People, Groups and the audit log are for admins only
(404 for a member).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from aigw_proxy.admin.console import auth
from aigw_proxy.admin.console.auth import PATH, Forbidden, Viewer, load_secret
from aigw_proxy.admin.console.core import Console, ConsoleSettings
from aigw_proxy.admin.console.pages import (
    agent_setup,
    audit,
    groups,
    interception,
    overview,
    people,
    requests,
    sessions,
)
from aigw_proxy.admin.console.render import HERE
from aigw_proxy.spend.budgets import Budget
from aigw_proxy.storage import Database

__all__ = ("ConsoleApp", "ConsoleSettings", "Viewer", "load_secret")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{extra}; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")

Page = Callable[[Console, Request, Viewer], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class ConsoleApp(Console):
    def __init__(self, db: Database, confdir: Path, metrics_registry: Any | None = None,
                 settings: ConsoleSettings | None = None, secret_dir: Path | None = None,
                 config_budgets: Callable[[], Sequence[Budget]] = tuple) -> None:
        super().__init__(db, confdir, metrics_registry, settings, secret_dir, config_budgets)
        extra = ""
        if self.settings.proxy_address:  # the Set-up self-test fetches from the proxy's port
            host, _, port = self.settings.proxy_address.rpartition(":")
            extra = f" http://{host}:{port}" if host not in ("0.0.0.0", "::", "[::]", "") else f" http://*:{port}"
        self._csp = CSP.format(extra=extra)

    def routes(self) -> list[BaseRoute]:
        page, plain = self._page, self._plain
        inner = [
            Route("/", page(overview.overview_page)),
            Route("/signin", plain(auth.signin), methods=["GET", "POST"]),
            Route("/signout", plain(auth.signout), methods=["POST"]),
            Route("/sessions", page(sessions.sessions_list)),
            Route("/sessions/{sid:path}", page(sessions.session_page)),
            Route("/requests", page(requests.requests_list)),
            *(Route("/requests/{iid}" + (f"/{name}" if name else ""), page(interception.page(view)))
              for name, view in interception.VIEWS),
            Route("/people", page(people.people_page, admin=True), methods=["GET", "POST"]),
            Route("/groups", page(groups.groups_page, admin=True), methods=["GET", "POST"]),
            Route("/audit", page(audit.audit_page, admin=True)),
            Route("/setup", page(agent_setup.setup_page)),
            Route("/ca-cert.pem", page(agent_setup.ca_cert)),
            Route("/static/{name}", self._static),
        ]

        async def to_console(request: Request) -> Response:
            return RedirectResponse(PATH + "/", 303)

        return [Route("/", to_console), Route(PATH, to_console), Mount(PATH, routes=inner)]

    def _headers(self, response: Response) -> Response:
        h = response.headers
        h["Content-Security-Policy"] = self._csp
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "same-origin"  # "no-referrer" would make form posts send Origin: null
        h["X-Content-Type-Options"] = "nosniff"
        h.setdefault("Cache-Control", "no-store")
        return response

    def _plain(self, handler: Callable[[Console, Request], Awaitable[Response]]) -> Endpoint:
        """A route without a session (sign-in, sign-out): the security headers only."""
        async def endpoint(request: Request) -> Response:
            return self._headers(await handler(self, request))

        return endpoint

    def _page(self, handler: Page, admin: bool = False) -> Endpoint:
        """A signed-in page: no session redirects to sign-in (a POST: 403), a POST's form checked for its CSRF
        token first (`request.state.form`), an admin page answers a member 404; the cookie is re-signed."""
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            viewer = await self.sessions.viewer(request)
            if viewer is None:
                if request.method == "POST":
                    return self._headers(self.error(request, None, 403, "Sign in first."))
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self._headers(RedirectResponse(f"{PATH}/signin?" + urlencode({"next": target}), 303))
            if request.method == "POST":
                try:
                    request.state.form = await self.sessions.form(request, viewer.csrf)
                except Forbidden as exc:
                    return self._headers(self.error(request, viewer, 403, str(exc)))
            if admin and not viewer.admin:
                response = self.error(request, viewer, 404, "Not found.")
            else:
                response = await handler(self, request, viewer)
            self.sessions.set_session(request, response, viewer)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            return self._headers(response)

        return endpoint

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = HERE / "static" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return self._headers(Response("not found", 404, media_type="text/plain"))
        return self._headers(FileResponse(path, headers={"Cache-Control": "public, max-age=3600"}))
