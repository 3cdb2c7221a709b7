"""Console sign-in, the session cookie and CSRF.

Sign-in takes a proxy token (optionally with the username, which must then match). The session cookie is signed
with itsdangerous (a secret generated once into the data directory, mode 0600) and holds the token's *id*, never
the token: every request re-checks that the token is live, so revoking it ends the session. It is `HttpOnly`,
`SameSite=Strict`, `Path=/console`, `Secure` when the request came over https or `ConsoleSettings.secure_cookie`
says so, and re-signed on each request: idle for longer than `idle_timeout` and it is refused. Every POST needs
the session's CSRF token in its `csrf` form field (sign-in: the one of a pre-session cookie), and a present
`Origin` must be this listener's: otherwise 403.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import itsdangerous
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from aigw_proxy.storage import Database
from aigw_proxy.storage.audit import live_token

if TYPE_CHECKING:
    from aigw_proxy.admin.console.core import Console

log = logging.getLogger("aigw_proxy.console")

COOKIE = "aigw_console"
PRE_COOKIE = "aigw_console_signin"
PATH = "/console"
SECRET_FILE = "console-secret.key"
PRE_MAX_AGE = 3600  # seconds a sign-in form's CSRF token stays good


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: str
    username: str
    admin: bool
    token_id: str
    csrf: str

    @property
    def visible_to(self) -> str | None:
        return None if self.admin else self.user_id


class Forbidden(Exception):
    pass


def load_secret(directory: Path) -> bytes:
    """The session-signing secret: generated once into `directory` (mode 0600), then read back."""
    path = directory / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


class Sessions:
    """The signed session cookie, the sign-in form's pre-session cookie and the CSRF check of every POST."""

    def __init__(self, db: Database, secret: bytes, idle_timeout: float, secure_cookie: bool) -> None:
        self._db = db
        self._signer = itsdangerous.URLSafeTimedSerializer(secret, salt="aigw-console-session")
        self._pre_signer = itsdangerous.URLSafeTimedSerializer(secret, salt="aigw-console-signin")
        self._idle = max(1, round(idle_timeout))  # whole seconds: the cookie's Max-Age
        self._secure_cookie = secure_cookie

    def secure(self, request: Request) -> bool:
        return self._secure_cookie or request.url.scheme == "https"

    async def viewer(self, request: Request) -> Viewer | None:
        """The signed-in viewer, or None (no cookie, a bad or idle one, a revoked token)."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=self._idle)
        except itsdangerous.BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), str) or not isinstance(data.get("c"), str):
            return None
        found = await live_token(self._db, data["t"])
        if found is None:
            return None
        user_id, username, role = found
        return Viewer(user_id, username, role == "admin", data["t"], data["c"])

    def set_session(self, request: Request, response: Response, viewer: Viewer) -> None:
        value = self._signer.dumps({"t": viewer.token_id, "c": viewer.csrf})
        response.set_cookie(COOKIE, value, max_age=self._idle, path=PATH, httponly=True, samesite="strict",
                            secure=self.secure(request))

    def set_pre_session(self, request: Request, response: Response, csrf: str) -> None:
        response.set_cookie(PRE_COOKIE, self._pre_signer.dumps(csrf), max_age=PRE_MAX_AGE, path=PATH,
                            httponly=True, samesite="strict", secure=self.secure(request))

    def pre_session_csrf(self, request: Request) -> str:
        try:
            return str(self._pre_signer.loads(request.cookies.get(PRE_COOKIE, ""), max_age=PRE_MAX_AGE))
        except itsdangerous.BadData:
            return ""

    @staticmethod
    def check_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None:  # not sent by every client; SameSite=Strict and the CSRF token still apply
            return
        host = request.headers.get("host", "")
        if origin not in (f"http://{host}", f"https://{host}"):
            raise Forbidden("Cross-origin form posts are refused.")

    async def form(self, request: Request, csrf: str) -> FormData:
        """The POST's form, once its origin and CSRF token are checked (Forbidden otherwise)."""
        self.check_origin(request)
        form = await request.form(max_files=0, max_fields=20, max_part_size=64 << 10)
        sent = form.get("csrf")
        if not isinstance(sent, str) or not csrf or not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again.")
        return form


async def signin(console: Console, request: Request) -> Response:
    sessions = console.sessions
    nxt = request.query_params.get("next") or ""
    if not nxt.startswith(PATH + "/") or nxt.startswith("//"):
        nxt = PATH + "/"

    def form_page(username: str, error: str | None, status: int = 200) -> Response:
        csrf = secrets.token_urlsafe(24)
        response = console.render(request, None, "signin.html", {"csrf": csrf, "next": nxt, "error": error,
                                                                  "username": username}, status)
        sessions.set_pre_session(request, response, csrf)
        return response

    if request.method == "GET":
        return form_page("", None)
    try:
        form = await sessions.form(request, sessions.pre_session_csrf(request))
    except Forbidden as exc:
        return console.error(request, None, 403, str(exc))
    token = str(form.get("token") or "").strip()
    username = str(form.get("username") or "").strip()
    found = await console.users.authenticate_with_role(token)
    if found is None or (username and username != found[0].username):
        log.warning("console sign-in refused", extra={"event": "console_signin_failed",
                                                     "client": request.client.host if request.client else ""})
        return form_page(username, "That token is not valid (unknown, revoked, or not this user's).", 401)
    who, role = found
    assert who.token_id is not None
    viewer = Viewer(who.user_id, who.username, role == "admin", who.token_id, secrets.token_urlsafe(24))
    log.info("console sign-in by %s", who.username, extra={"event": "console_signin", "user": who.username})
    response = RedirectResponse(nxt, 303)
    response.delete_cookie(PRE_COOKIE, path=PATH)
    sessions.set_session(request, response, viewer)
    return response


async def signout(console: Console, request: Request) -> Response:
    viewer = await console.sessions.viewer(request)
    if viewer is not None:
        try:
            await console.sessions.form(request, viewer.csrf)
        except Forbidden as exc:
            return console.error(request, viewer, 403, str(exc))
    response = RedirectResponse(PATH + "/signin", 303)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
    return response
