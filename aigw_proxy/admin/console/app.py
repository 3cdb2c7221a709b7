"""The web console's Starlette routes, mounted at `/console/` on the admin listener (`/` redirects there).

Server-rendered Jinja2 pages (autoescape on for every template: prompts and tool inputs are attacker-controlled),
readable with JavaScript off; one small external script (static/console.js) localises times and adds copy
buttons. Every response carries a strict Content-Security-Policy (no inline script or style), frame-ancestors
'none' / X-Frame-Options DENY, Referrer-Policy same-origin and nosniff.

Sign-in takes a proxy token (optionally with the username, which must then match). The session cookie is signed
with itsdangerous (a secret generated once into the data directory, mode 0600) and holds the token's *id*, never
the token: every request re-checks that the token is live, so revoking it ends the session. It is `HttpOnly`,
`SameSite=Strict`, `Path=/console`, `Secure` when the request came over https or `ConsoleSettings.secure_cookie`
says so, and re-signed on each request: idle for longer than `idle_timeout` and it is refused. Every POST needs
the session's CSRF token in its `csrf` form field (sign-in: the one of a pre-session cookie), and a present
`Origin` must be this listener's: otherwise 403.

Roles as in the REST API: an admin sees everything; a member sees only their own records, and another user's
session or interception answers 404 like a missing one. People and the audit log are for admins only.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import itsdangerous
import jinja2
import sqlalchemy as sa
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from aigw_proxy.admin.api.search import SearchError, parse_search
from aigw_proxy.admin.console import columns as cols
from aigw_proxy.admin.console.overview import WINDOWS, cached_overview, metric_samples
from aigw_proxy.proxy.ca import CERT_FILE
from aigw_proxy.storage import (
    Database,
    InterceptionFilter,
    InvalidCursor,
    SessionCursorNotFound,
    StorageError,
    UserExistsError,
    UserStore,
    get_session,
    list_interceptions,
    sessions_page,
)
from aigw_proxy.storage.audit import list_actions, live_token, record_action, set_role, token_owner
from aigw_proxy.storage.schema.tables import ROLES, interceptions

log = logging.getLogger("aigw_proxy.console")

HERE = Path(__file__).parent
COOKIE = "aigw_console"
PRE_COOKIE = "aigw_console_signin"
PATH = "/console"
SECRET_FILE = "console-secret.key"
PAGE = 50
PEOPLE_PAGE = 100
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'{extra}; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
FOLD = 600  # characters of a prompt or tool input shown before folding it into <details>


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    idle_timeout: int = 30 * 60  # seconds without a request before a session is refused
    secure_cookie: bool = False  # mark the cookie Secure even over plain http (a TLS terminator in front)
    proxy_address: str | None = None  # "host:port" of the proxy listener, for Set-up


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


def _group(value: Any) -> str:
    try:
        return f"{int(value):,}".replace(",", "\u202f")
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return ""
    ms = (b - a).total_seconds() * 1000
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _utc(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(group=_group, pretty=_pretty, utc=_utc)
    env.globals.update(duration=_duration, FOLD=FOLD, TOKEN_KINDS=cols.TOKEN_KINDS,
                       reasoning=cols.reasoning_tokens)
    return env


class ConsoleApp:
    def __init__(self, db: Database, confdir: Path, metrics_registry: Any | None = None,
                 settings: ConsoleSettings | None = None, secret_dir: Path | None = None) -> None:
        self._db = db
        self._users = UserStore(db)
        self._confdir = confdir
        self._registry = metrics_registry
        self.settings = settings or ConsoleSettings()
        secret = load_secret(secret_dir or confdir)
        self._signer = itsdangerous.URLSafeTimedSerializer(secret, salt="aigw-console-session")
        self._pre_signer = itsdangerous.URLSafeTimedSerializer(secret, salt="aigw-console-signin")
        self._env = _environment()
        extra = ""
        if self.settings.proxy_address:  # the Set-up self-test fetches from the proxy's port
            host, _, port = self.settings.proxy_address.rpartition(":")
            extra = f" http://{host}:{port}" if host not in ("0.0.0.0", "::", "[::]", "") else f" http://*:{port}"
        self._csp = CSP.format(extra=extra)

    # -- routing ----------------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        page = self._page
        inner = [
            Route("/", page(self.overview_page)),
            Route("/signin", self._signin, methods=["GET", "POST"]),
            Route("/signout", self._signout, methods=["POST"]),
            Route("/sessions", page(self.sessions_page)),
            Route("/sessions/{sid:path}", page(self.session_page)),
            Route("/requests", page(self.requests_page)),
            Route("/requests/{iid}", page(self.interception_page)),
            Route("/requests/{iid}/raw", page(self.interception_raw)),
            Route("/people", page(self.people_page, admin=True), methods=["GET", "POST"]),
            Route("/audit", page(self.audit_page, admin=True)),
            Route("/setup", page(self.setup_page)),
            Route("/ca-cert.pem", page(self.ca_cert)),
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

    def _secure(self, request: Request) -> bool:
        return self.settings.secure_cookie or request.url.scheme == "https"

    def _page(self, handler: Any, admin: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            viewer = await self._viewer(request)
            if viewer is None:
                if request.method == "POST":
                    return self._headers(self._error(request, None, 403, "Sign in first."))
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self._headers(RedirectResponse(f"{PATH}/signin?" + urlencode({"next": target}), 303))
            if request.method == "POST":
                try:
                    form = await self._form(request, viewer.csrf)
                except Forbidden as exc:
                    return self._headers(self._error(request, viewer, 403, str(exc)))
                request.state.form = form
            if admin and not viewer.admin:
                response = self._error(request, viewer, 404, "Not found.")
            else:
                response = await handler(request, viewer)
            self._set_session(request, response, viewer)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            return self._headers(response)

        return endpoint

    # -- sessions, CSRF ---------------------------------------------------------------------------------------

    async def _viewer(self, request: Request) -> Viewer | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=int(self.settings.idle_timeout))
        except itsdangerous.BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), str) or not isinstance(data.get("c"), str):
            return None
        found = await live_token(self._db, data["t"])
        if found is None:
            return None
        user_id, username, role = found
        return Viewer(user_id, username, role == "admin", data["t"], data["c"])

    def _set_session(self, request: Request, response: Response, viewer: Viewer) -> None:
        value = self._signer.dumps({"t": viewer.token_id, "c": viewer.csrf})
        response.set_cookie(COOKIE, value, max_age=int(self.settings.idle_timeout), path=PATH, httponly=True,
                            samesite="strict", secure=self._secure(request))

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None:  # not sent by every client; SameSite=Strict and the CSRF token still apply
            return
        host = request.headers.get("host", "")
        if origin not in (f"http://{host}", f"https://{host}"):
            raise Forbidden("Cross-origin form posts are refused.")

    async def _form(self, request: Request, csrf: str) -> FormData:
        self._check_origin(request)
        form = await request.form(max_files=0, max_fields=20, max_part_size=64 << 10)
        sent = form.get("csrf")
        if not isinstance(sent, str) or not csrf or not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again.")
        return form

    async def _signin(self, request: Request) -> Response:
        nxt = request.query_params.get("next") or ""
        if not nxt.startswith(PATH + "/") or nxt.startswith("//"):
            nxt = PATH + "/"
        if request.method == "GET":
            csrf = secrets.token_urlsafe(24)
            response = self._render(request, None, "signin.html", {"csrf": csrf, "next": nxt, "error": None,
                                                                   "username": ""})
            response.set_cookie(PRE_COOKIE, self._pre_signer.dumps(csrf), max_age=3600, path=PATH, httponly=True,
                                samesite="strict", secure=self._secure(request))
            return self._headers(response)
        pre = request.cookies.get(PRE_COOKIE, "")
        try:
            expected = str(self._pre_signer.loads(pre, max_age=3600))
        except itsdangerous.BadData:
            expected = ""
        try:
            form = await self._form(request, expected)
        except Forbidden as exc:
            return self._headers(self._error(request, None, 403, str(exc)))
        token = str(form.get("token") or "").strip()
        username = str(form.get("username") or "").strip()
        found = await self._users.authenticate_with_role(token)
        if found is None or (username and username != found[0].username):
            log.warning("console sign-in refused", extra={"event": "console_signin_failed",
                                                         "client": request.client.host if request.client else ""})
            csrf = secrets.token_urlsafe(24)
            response = self._render(request, None, "signin.html", {
                "csrf": csrf, "next": nxt, "username": username,
                "error": "That token is not valid (unknown, revoked, or not this user's)."}, status=401)
            response.set_cookie(PRE_COOKIE, self._pre_signer.dumps(csrf), max_age=3600, path=PATH, httponly=True,
                                samesite="strict", secure=self._secure(request))
            return self._headers(response)
        who, role = found
        assert who.token_id is not None
        viewer = Viewer(who.user_id, who.username, role == "admin", who.token_id, secrets.token_urlsafe(24))
        log.info("console sign-in by %s", who.username, extra={"event": "console_signin", "user": who.username})
        response = RedirectResponse(nxt, 303)
        response.delete_cookie(PRE_COOKIE, path=PATH)
        self._set_session(request, response, viewer)
        return self._headers(response)

    async def _signout(self, request: Request) -> Response:
        viewer = await self._viewer(request)
        if viewer is not None:
            try:
                await self._form(request, viewer.csrf)
            except Forbidden as exc:
                return self._headers(self._error(request, viewer, 403, str(exc)))
        response = RedirectResponse(PATH + "/signin", 303)
        response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
        return self._headers(response)

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = HERE / "static" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return self._headers(Response("not found", 404, media_type="text/plain"))
        response = FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})
        return self._headers(response)

    # -- rendering --------------------------------------------------------------------------------------------

    def _render(self, request: Request, viewer: Viewer | None, template: str, context: dict[str, Any],
                status: int = 200) -> Response:
        html = self._env.get_template(template).render(viewer=viewer, path=request.url.path, base=PATH, **context)
        return Response(html, status, media_type="text/html; charset=utf-8")

    def _error(self, request: Request, viewer: Viewer | None, status: int, message: str) -> Response:
        return self._render(request, viewer, "error.html", {"status": status, "message": message}, status)

    def _filter(self, request: Request, viewer: Viewer) -> tuple[InterceptionFilter, str, str | None]:
        q = (request.query_params.get("q") or "").strip()
        try:
            search = parse_search(q)
        except SearchError as exc:
            return InterceptionFilter(visible_to=viewer.visible_to), q, str(exc)
        terms = dict(search.terms)
        if terms.get("initiator") == "me":
            terms["initiator"] = viewer.user_id
        return (InterceptionFilter(**terms, started_after=search.started_after, started_before=search.started_before,
                                   visible_to=viewer.visible_to), q, None)

    @staticmethod
    def _chips(q: str) -> list[dict[str, str]]:
        """The `q` terms as removable chips: each with the query without it."""
        try:
            search = parse_search(q)
        except SearchError:
            return []
        terms = dict(search.terms)
        if search.started_after is not None:
            terms["started_after"] = search.started_after.isoformat().replace("+00:00", "Z")
        if search.started_before is not None:
            terms["started_before"] = search.started_before.isoformat().replace("+00:00", "Z")

        def render(items: dict[str, str]) -> str:
            return " ".join(f'{k}:"{v}"' if " " in v else f"{k}:{v}" for k, v in items.items())

        return [{"key": k, "value": v, "without": render({a: b for a, b in terms.items() if a != k})}
                for k, v in terms.items()]

    # -- pages ------------------------------------------------------------------------------------------------

    async def overview_page(self, request: Request, viewer: Viewer) -> Response:
        window = request.query_params.get("window") or "24h"
        now = datetime.now(UTC)
        error = None
        if window == "custom":
            try:
                start = datetime.fromisoformat(request.query_params.get("from") or "").replace(tzinfo=UTC)
                end = datetime.fromisoformat(request.query_params.get("to") or "").replace(tzinfo=UTC)
                end = end + timedelta(days=1) - timedelta(microseconds=1)
                if end < start:
                    raise ValueError("the end is before the start")
                if end - start > timedelta(days=366):
                    raise ValueError("at most a year")
            except ValueError as exc:
                error = f"Custom window: {exc}"
                window, start, end = "24h", now - WINDOWS["24h"], now
        else:
            window = window if window in WINDOWS else "24h"
            start, end = now - WINDOWS[window], now
        by = request.query_params.get("by") or "model"
        data = await cached_overview(self._db, window, start, end, viewer.visible_to, by)
        peak = max((p["total"] for p in data.series), default=0) or 1
        providers, reload_at, shadow = None, None, None
        if self._registry is not None and viewer.admin:
            providers = [labels for labels, value in metric_samples(self._registry, "coder_ai_gateway_provider_info")
                         if value]
            stamps = metric_samples(self._registry, "coder_ai_gateway_providers_last_reload_timestamp_seconds")
            reload_at = (datetime.fromtimestamp(stamps[0][1], UTC).isoformat().replace("+00:00", "Z")
                         if stamps and stamps[0][1] else None)
            shadow = sorted(((labels.get("host", ""), int(value)) for labels, value in
                             metric_samples(self._registry, "aigw_proxy_shadow_ai_connects_total") if value),
                            key=lambda kv: -kv[1])[:20]
        return self._render(request, viewer, "overview.html", {
            "window": window, "windows": list(WINDOWS), "data": data, "peak": peak, "error": error,
            "by": data.series_by,
            "from": request.query_params.get("from") or (now - timedelta(days=7)).date().isoformat(),
            "to": request.query_params.get("to") or now.date().isoformat(),
            "providers": providers, "reload_at": reload_at, "shadow": shadow,
            "leader_columns": cols.LEADERBOARD_COLUMNS, "metrics": self._registry is not None,
        })

    async def sessions_page(self, request: Request, viewer: Viewer) -> Response:
        flt, q, error = self._filter(request, viewer)
        after = request.query_params.get("after") or None
        count: int | None = 0
        rows: list[dict[str, Any]] = []
        if error is None:
            try:
                count, rows = await sessions_page(self._db, flt, limit=PAGE, after_session_id=after)
            except SessionCursorNotFound as exc:
                error = str(exc)
        nxt = rows[-1]["id"] if len(rows) == PAGE else None
        return self._render(request, viewer, "sessions.html", {
            "q": q, "error": error, "count": count, "rows": rows, "columns": cols.SESSION_COLUMNS,
            "next": nxt, "chips": self._chips(q), "paged": after is not None})

    async def session_page(self, request: Request, viewer: Viewer) -> Response:
        sid = request.path_params["sid"]
        after = request.query_params.get("after") or None
        try:
            found = await get_session(self._db, sid, visible_to=viewer.visible_to, after_id=after, limit=50)
        except InvalidCursor:
            found = None
        if found is None:
            return self._error(request, viewer, 404, "Session not found.")
        # Every call of the page's threads, with its children, for the timeline.
        calls = await list_interceptions(self._db, InterceptionFilter(
            session_id=sid, initiator=found["initiator"]["id"], visible_to=viewer.visible_to,
            started_after=_parse(found["page_started_at"]), started_before=_parse(found["page_ended_at"])),
            limit=1000)
        calls.reverse()  # oldest first
        by_thread: dict[str, list[dict[str, Any]]] = {}
        for c in calls:
            by_thread.setdefault(c["thread_root_id"] or c["id"], []).append(c)
        call_ids = {c["id"] for c in calls}
        children: dict[str, list[str]] = {}
        top: list[str] = []
        for t in found["threads"]:
            root = by_thread.get(t["id"], [{}])[0]
            parent = root.get("thread_parent_id")
            if parent and parent in call_ids:
                children.setdefault(parent, []).append(t["id"])
            else:
                top.append(t["id"])
        threads = {t["id"]: t for t in found["threads"]}
        last = found["threads"][-1]["id"] if found["threads"] else None
        more = last is not None and len(found["threads"]) == 50
        return self._render(request, viewer, "session.html", {
            "s": found, "top": top, "threads": threads, "calls": by_thread, "children": children,
            "next": last if more else None})

    async def requests_page(self, request: Request, viewer: Viewer) -> Response:
        flt, q, error = self._filter(request, viewer)
        after = request.query_params.get("after") or None
        rows: list[dict[str, Any]] = []
        if error is None:
            try:
                rows = await list_interceptions(self._db, flt, limit=PAGE, after_id=after)
            except InvalidCursor:
                error = "That page no longer exists: start again from the newest."
        nxt = rows[-1]["id"] if len(rows) == PAGE else None
        return self._render(request, viewer, "requests.html", {
            "q": q, "error": error, "rows": rows, "columns": cols.INTERCEPTION_COLUMNS, "next": nxt,
            "chips": self._chips(q), "paged": after is not None})

    async def _interception(self, request: Request, viewer: Viewer) -> dict[str, Any] | None:
        iid = request.path_params["iid"]
        t = interceptions
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(sa.select(t.c.started_at, t.c.initiator_id).where(
                t.c.id == iid, t.c.ended_at.is_not(None)))).first()
        if row is None or (viewer.visible_to is not None and row.initiator_id != viewer.visible_to):
            return None
        found = await list_interceptions(self._db, InterceptionFilter(
            initiator=row.initiator_id, started_after=row.started_at, started_before=row.started_at,
            visible_to=viewer.visible_to), limit=1000)
        return next((r for r in found if r["id"] == iid), None)

    async def interception_page(self, request: Request, viewer: Viewer) -> Response:
        found = await self._interception(request, viewer)
        if found is None:
            return self._error(request, viewer, 404, "Interception not found.")
        return self._render(request, viewer, "interception.html", {
            "r": found, "raw": json.dumps(found, indent=2, ensure_ascii=False),
            "call_columns": cols.CALL_TOKEN_COLUMNS})

    async def interception_raw(self, request: Request, viewer: Viewer) -> Response:
        found = await self._interception(request, viewer)
        if found is None:
            return self._error(request, viewer, 404, "Interception not found.")
        return Response(json.dumps(found, indent=2, ensure_ascii=False).encode(), 200,
                        media_type="application/json")

    async def people_page(self, request: Request, viewer: Viewer) -> Response:
        shown: dict[str, Any] | None = None
        error = None
        status = 200
        if request.method == "POST":
            try:
                shown = await self._people_action(request, viewer, request.state.form)
            except (StorageError, ValueError) as exc:
                error, status = str(exc), 400
            if shown is None and error is None:
                return RedirectResponse(PATH + "/people", 303)
        people = await self._users.list_users()
        find = (request.query_params.get("find") or "").strip()
        if find:
            people = [p for p in people if find.lower() in p["username"].lower()]
        try:
            page_no = max(1, int(request.query_params.get("page") or 1))
        except ValueError:
            page_no = 1
        pages = max(1, -(-len(people) // PEOPLE_PAGE))
        page_no = min(page_no, pages)
        return self._render(request, viewer, "people.html", {
            "people": people[(page_no - 1) * PEOPLE_PAGE:page_no * PEOPLE_PAGE], "total": len(people),
            "page_no": page_no, "pages": pages, "find": find, "roles": ROLES, "shown": shown, "error": error,
            "proxy": self._proxy_for(request) or "PROXY_HOST:8888"}, status)

    async def _people_action(self, request: Request, viewer: Viewer, form: FormData) -> dict[str, Any] | None:
        action = str(form.get("action") or "")
        source = request.client.host if request.client else ""
        audit = {"actor_id": viewer.user_id, "actor": viewer.username, "source": source}
        if action == "add":
            username = str(form.get("username") or "").strip()
            role = str(form.get("role") or "member")
            try:
                user, token = await self._users.create_user(username, role)
            except UserExistsError as exc:
                raise ValueError(str(exc)) from None
            hint = user["tokens"][0]["hint"] if user.get("tokens") else ""
            await record_action(self._db, action="user.create", target_user_id=user["id"], target=username,
                                detail={"role": role, "token_hint": hint}, **audit)
            return {"username": username, "token": token, "new_user": True}
        if action == "issue":
            found = await self._users.get_user(str(form.get("user_id") or ""))
            if found is None:
                raise ValueError("no such user")
            user = found
            name = str(form.get("name") or "").strip() or None
            token_id, token = await self._users.create_token(user["id"], name)
            await record_action(self._db, action="token.issue", target_user_id=user["id"], target=user["username"],
                                detail={"token_id": token_id, "name": name}, **audit)
            return {"username": user["username"], "token": token, "new_user": False}
        if action == "revoke":
            token_id = str(form.get("token_id") or "")
            owner = await token_owner(self._db, token_id)
            if owner is None:
                raise ValueError("no such token")
            await self._users.revoke_token(token_id)
            await record_action(self._db, action="token.revoke", target_user_id=owner[0], target=owner[1],
                                detail={"token_id": token_id, "hint": owner[2]}, **audit)
            return None
        if action == "role":
            role = str(form.get("role") or "")
            found = await self._users.get_user(str(form.get("user_id") or ""))
            if found is None:
                raise ValueError("no such user")
            user = found
            if user["id"] == viewer.user_id and role != "admin":
                raise ValueError("you cannot take away your own admin role (ask another admin)")
            old = await set_role(self._db, user["id"], role)
            await record_action(self._db, action="user.role", target_user_id=user["id"], target=user["username"],
                                detail={"from": old, "to": role}, **audit)
            return None
        raise ValueError(f"unknown action {action!r}")

    async def audit_page(self, request: Request, viewer: Viewer) -> Response:
        before = None
        at, aid = request.query_params.get("before_at"), request.query_params.get("before_id")
        if at and aid:
            before = (at, aid)
        try:
            rows = await list_actions(self._db, limit=PAGE, before=before)
        except ValueError:
            rows = []
        nxt = {"before_at": rows[-1]["at"], "before_id": rows[-1]["id"]} if len(rows) == PAGE else None
        return self._render(request, viewer, "audit.html", {"rows": rows, "next": urlencode(nxt) if nxt else None})

    async def setup_page(self, request: Request, viewer: Viewer) -> Response:
        have_ca = (self._confdir / CERT_FILE).is_file()
        return self._render(request, viewer, "setup.html", {"proxy": self._proxy_for(request), "have_ca": have_ca})

    def _proxy_for(self, request: Request) -> str | None:
        """The proxy's address as this browser would reach it: a wildcard listen address becomes the host name
        the browser used for the console."""
        address = self.settings.proxy_address
        if address is None:
            return None
        host, _, port = address.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = request.url.hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
        return f"{host}:{port}"

    async def ca_cert(self, request: Request, viewer: Viewer) -> Response:
        pem = self._confdir / CERT_FILE
        if not pem.is_file():
            return self._error(request, viewer, 404, "The MITM CA certificate is not configured.")
        return Response(pem.read_bytes(), 200, {"Content-Disposition": "attachment; filename=aigw-proxy-ca.pem"},
                        media_type="application/x-pem-file")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
