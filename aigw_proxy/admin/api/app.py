"""Request handling for the REST API: routing, authentication, roles, parameter checks, JSON out.

Runs on the admin thread's own event loop (see admin/server.py) with its own database engines: nothing here
touches the proxy's loop. Admins see everything; a member sees only their own records: every query a member makes
carries `visible_to = <their id>`, and another user's session answers 404 exactly like a missing one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from aigw_proxy.admin.api.collector import collector_paused
from aigw_proxy.admin.api.openapi import openapi_document
from aigw_proxy.admin.api.search import SearchError, parse_search
from aigw_proxy.aio import both
from aigw_proxy.proxy.ca import CERT_FILE
from aigw_proxy.spend.budgets import Budget, BudgetError, Scope
from aigw_proxy.storage import (
    DEFAULT_THREADS,
    MAX_THREADS,
    SPEND_GROUPINGS,
    ControlsStore,
    Database,
    GroupNotFoundError,
    InterceptionFilter,
    InvalidCursor,
    SessionCursorNotFound,
    UserNotFoundError,
    UserStore,
    count_interceptions,
    distinct_values,
    get_capture,
    get_session,
    list_interceptions,
    sessions_page,
    spend_report,
)

log = logging.getLogger("aigw_proxy.api")

PREFIXES = ("/api/v2/aibridge/", "/api/v2/ai-gateway/")
OPENAPI_PATH = "/api/v2/openapi.json"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(slots=True)
class AdminResponse:
    """A finished response (the admin app turns it into Starlette's)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: str | None = None, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.allow = allow  # a 405's Allow header when the path takes more than GET


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    username: str
    admin: bool

    @property
    def visible_to(self) -> str | None:
        return None if self.admin else self.user_id


@dataclass(slots=True)
class Request:
    method: str
    path: str  # below the prefix, percent-decoded segments joined by "/"
    query: dict[str, list[str]]
    headers: dict[str, str]

    def one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def _encode(value: object) -> bytes:
    """JSON bytes. orjson encodes a 2 MB page in a few milliseconds — several times faster than `json`, whose C
    encoder would also hold the GIL (and so the proxy's loop in the other thread) for tens of milliseconds.
    Values orjson refuses (integers beyond 64 bits) fall back to the standard encoder."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_fragment_value).encode()


def _fragment_value(value: object) -> object:
    """An orjson.Fragment (JSON text built by the database) for the standard encoder: its decoded value."""
    if isinstance(value, orjson.Fragment):
        return json.loads(orjson.dumps(value))  # orjson writes a fragment's text as it is
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(status: int, value: object) -> AdminResponse:
    return AdminResponse(status, _encode(value), {"Content-Type": "application/json"})


def _int_param(req: Request, name: str, default: int, low: int, high: int, message: str) -> int:
    raw = req.one(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, message, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, message, f"{name} must be between {low} and {high}")
    return value


def _token(headers: dict[str, str]) -> str | None:
    token = headers.get("coder-session-token", "").strip()
    if token:
        return token
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


BudgetSource = Callable[[], Sequence[Budget]]


class ApiApp:
    def __init__(self, db: Database, confdir: Path, config_budgets: BudgetSource = tuple) -> None:
        self._db = db
        self._users = UserStore(db)
        self._controls = ControlsStore(db)
        self._config_budgets = config_budgets  # the config file's [[budgets]] as the daemon has them now
        self._confdir = confdir
        self._openapi = json.dumps(openapi_document()).encode()
        self._routes: dict[str, Callable[[Request, Caller], Awaitable[AdminResponse]]] = {
            "interceptions": self._interceptions,
            "sessions": self._sessions,
            "models": self._models,
            "clients": self._clients,
            "spend": self._spend,
        }

    async def handle(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> AdminResponse:
        try:
            return await self._route(method, target, headers, body)
        except ApiError as exc:
            out: dict[str, Any] = {"message": exc.message}
            if exc.detail:
                out["detail"] = exc.detail
            resp = _json(exc.status, out)
            if exc.status == 405:
                resp.headers["Allow"] = exc.allow or "GET, HEAD, OPTIONS"  # HEAD and OPTIONS: the admin app
            return resp
        except Exception:
            log.exception("API request failed")  # the target may carry ids, never credentials: not logged
            return _json(500, {"message": "Internal error."})

    async def _route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> AdminResponse:
        parts = urlsplit(target)
        prefix = next((p for p in PREFIXES if parts.path.startswith(p)), None)
        segments = [unquote(s) for s in parts.path[len(prefix):].split("/")] if prefix else []
        if segments and segments[0] == "budgets" and len(segments) <= 2:
            return await self._budgets(method, segments[1:], headers, body)
        if method != "GET":
            raise ApiError(405, "Method not allowed.", "only GET is supported")
        if parts.path == OPENAPI_PATH:
            return AdminResponse(200, self._openapi, {"Content-Type": "application/json"})
        prefix = next((p for p in PREFIXES if parts.path.startswith(p)), None)
        if prefix is None:
            raise ApiError(404, "Not found.")
        segments = [unquote(s) for s in parts.path[len(prefix):].split("/")]
        req = Request(method, "/".join(segments), parse_qs(parts.query, keep_blank_values=True), headers)
        if segments == ["proxy", "ca-cert.pem"]:
            return await self._ca_cert()
        if segments == ["groups"]:
            return await self._groups(await self._authenticate(headers))
        if len(segments) == 3 and segments[0] == "interceptions" and segments[2] == "capture":
            return await self._capture(await self._authenticate(headers), segments[1])
        if segments[0] not in self._routes or len(segments) > 2 or (len(segments) == 2 and segments[0] != "sessions"):
            raise ApiError(404, "Not found.")
        if any("\x00" in v for values in req.query.values() for v in values):
            # Nothing stored holds one, and PostgreSQL refuses it in a query: a clear 400, never a 500.
            raise ApiError(400, "Invalid query parameter.", "a parameter contains a NUL character")
        caller = await self._authenticate(headers)
        if len(segments) == 2:
            return await self._session(req, caller, segments[1])
        return await self._routes[segments[0]](req, caller)

    async def _authenticate(self, headers: dict[str, str]) -> Caller:
        token = _token(headers)
        if token is None:
            raise ApiError(401, "You must be authenticated to use this endpoint.",
                           "send Coder-Session-Token: <token> or Authorization: Bearer <token>")
        found = await self._users.authenticate_with_role(token)
        if found is None:
            raise ApiError(401, "Invalid or revoked token.")
        who, role = found
        return Caller(who.user_id, who.username, role == "admin")

    async def _ca_cert(self) -> AdminResponse:
        pem = self._confdir / CERT_FILE
        try:
            body = pem.read_bytes()  # the API thread may do file I/O: it is not the proxy's loop
        except OSError:
            raise ApiError(404, "MITM CA certificate not configured") from None
        return AdminResponse(200, body, {"Content-Type": "application/x-pem-file",
                                         "Content-Disposition": "attachment; filename=ca-cert.pem"})

    def _filter(self, req: Request, caller: Caller) -> InterceptionFilter:
        try:
            search = parse_search(req.one("q") or "")
        except SearchError as exc:
            raise ApiError(400, f"Invalid search query: {exc}.", str(exc)) from None
        terms = dict(search.terms)
        if terms.get("initiator") == "me":
            terms["initiator"] = caller.user_id
        return InterceptionFilter(**terms, started_after=search.started_after, started_before=search.started_before,
                                  visible_to=caller.visible_to)

    def _page(self, req: Request, cursor_name: str) -> tuple[int, int, str | None]:
        limit = _int_param(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, "Invalid pagination limit value.")
        offset = _int_param(req, "offset", 0, 0, 2**31 - 1, "Invalid pagination offset value.")
        cursor = req.one(cursor_name) or None
        if cursor is not None and offset:
            raise ApiError(400, f"Cannot use both {cursor_name} and offset pagination in the same request.")
        return limit, offset, cursor

    async def _interceptions(self, req: Request, caller: Caller) -> AdminResponse:
        flt = self._filter(req, caller)
        limit, offset, after_id = self._page(req, "after_id")
        with collector_paused():
            # The count on a connection of its own meanwhile (it never saw the page's snapshot anyway).
            try:
                listed, counted = await both(
                    list_interceptions(self._db, flt, limit=limit, after_id=after_id, offset=offset, as_json=True),
                    count_interceptions(self._db, flt))
            except InvalidCursor:
                raise ApiError(400, "Invalid pagination cursor.",
                               f"after_id {after_id!r} is not a listed interception") from None
            response = _json(200, {"count": counted, "results": listed})
            del listed  # freed before the collector resumes (collector.py)
        return response

    async def _sessions(self, req: Request, caller: Caller) -> AdminResponse:
        flt = self._filter(req, caller)
        limit, offset, after = self._page(req, "after_session_id")
        with collector_paused():
            try:
                count, results = await sessions_page(self._db, flt, limit=limit, after_session_id=after,
                                                     offset=offset, as_json=True)
            except SessionCursorNotFound as exc:
                raise ApiError(400, str(exc)) from None
            response = _json(200, {"count": count, "sessions": results})
            del results  # freed before the collector resumes (collector.py)
        return response

    async def _session(self, req: Request, caller: Caller, session_id: str) -> AdminResponse:
        limit = _int_param(req, "limit", DEFAULT_THREADS, 1, MAX_THREADS, "Invalid pagination limit value.")
        after_id, before_id = req.one("after_id") or None, req.one("before_id") or None
        if after_id is not None and before_id is not None:
            raise ApiError(400, "Cannot use both after_id and before_id pagination in the same request.")
        if not session_id or "\x00" in session_id:  # no session id holds a NUL (PostgreSQL refuses one)
            raise ApiError(404, "Session not found.")
        try:
            found = await get_session(self._db, session_id, visible_to=caller.visible_to, after_id=after_id,
                                      before_id=before_id, limit=limit)
        except InvalidCursor:
            raise ApiError(400, "Invalid pagination cursor.") from None
        if found is None:
            raise ApiError(404, "Session not found.")
        return _json(200, found)

    async def _capture(self, caller: Caller, interception_id: str) -> AdminResponse:
        """One interception's raw capture (--capture-bodies); a member's request for another's answers 404."""
        found = await get_capture(self._db, interception_id, visible_to=caller.visible_to) if interception_id else None
        if found is None:
            raise ApiError(404, "Capture not found.")
        return _json(200, found)

    async def _spend(self, req: Request, caller: Caller) -> AdminResponse:
        """Token usage and cost grouped by user, model, client, provider or day (`by`), over what `q` selects;
        a member's report covers only their own records."""
        flt = self._filter(req, caller)
        by = req.one("by") or "user"
        if by not in SPEND_GROUPINGS:
            raise ApiError(400, "Invalid spend grouping.", f"by must be one of {', '.join(SPEND_GROUPINGS)}")
        return _json(200, await spend_report(self._db, flt, by=by))

    async def _distinct(self, req: Request, caller: Caller, kind: str) -> AdminResponse:
        limit = _int_param(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, "Invalid pagination limit value.")
        offset = _int_param(req, "offset", 0, 0, 2**31 - 1, "Invalid pagination offset value.")
        prefix = (req.one("q") or "").strip().replace('"', "")
        if prefix.startswith(f"{kind}:"):
            prefix = prefix[len(kind) + 1:]
        elif ":" in prefix:
            raise ApiError(400, f"Invalid search query: only {kind}:<prefix> is supported.")
        values = await distinct_values(self._db, kind, prefix=prefix, visible_to=caller.visible_to, limit=limit,
                                       offset=offset)
        return _json(200, values)

    async def _models(self, req: Request, caller: Caller) -> AdminResponse:
        return await self._distinct(req, caller, "model")

    async def _clients(self, req: Request, caller: Caller) -> AdminResponse:
        return await self._distinct(req, caller, "client")

    # -- spend controls: groups and budgets (docs/spend.md#budgets) ----------------------------------------------
    async def _groups(self, caller: Caller) -> AdminResponse:
        if not caller.admin:
            raise ApiError(403, "Only admins can list groups.")
        return _json(200, await self._controls.list_groups())

    async def _budgets(self, method: str, rest: list[str], headers: dict[str, str], body: bytes) -> AdminResponse:
        """GET budgets (admins: all; members: those that apply to them), POST budgets (admins: set one),
        DELETE budgets/{scope} (admins: delete a database budget)."""
        allow = _BUDGET_ALLOW[bool(rest)]
        if method not in allow.split(", "):
            raise ApiError(405, "Method not allowed.", f"use {allow}", allow=allow)
        caller = await self._authenticate(headers)
        if method == "GET":
            return await self._list_budgets(caller)
        if not caller.admin:
            raise ApiError(403, "Only admins can change budgets.")
        if method == "POST":
            return await self._set_budget(body)
        try:
            scope = Scope.parse(rest[0])
        except BudgetError as exc:
            raise ApiError(400, "Invalid budget scope.", str(exc)) from None
        try:
            cleared = await self._controls.clear_budget(scope)
        except (UserNotFoundError, GroupNotFoundError) as exc:
            raise ApiError(404, str(exc)) from None
        if not cleared:
            raise ApiError(404, f"No budget for {scope} in the database.")
        return AdminResponse(204, b"")

    async def _list_budgets(self, caller: Caller) -> AdminResponse:
        stored = await self._controls.list_budgets()
        replaced = {b.scope for b in stored}
        budgets = [*(b for b in self._config_budgets() if b.scope not in replaced), *stored]
        if not caller.admin:
            data = await self._controls.snapshot()
            mine = {Scope("default"), Scope("user", caller.username),
                    *(Scope("group", data.groups[g]) for g in data.members.get(caller.user_id, ()))}
            budgets = [b for b in budgets if b.scope in mine]
        return _json(200, [b.to_json() for b in budgets])

    async def _set_budget(self, body: bytes) -> AdminResponse:
        try:
            raw = json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "Invalid JSON body.") from None
        if not isinstance(raw, dict) or not set(raw) <= {"scope", "daily", "monthly", "soft_fraction"}:
            raise ApiError(400, "Invalid budget.", "send a JSON object with scope and daily and/or monthly (USD), "
                                                   "optionally soft_fraction")
        try:
            budget = Budget.build(raw.get("scope", ""), daily=raw.get("daily"), monthly=raw.get("monthly"),
                                  soft_fraction=raw.get("soft_fraction"), source="database")
        except BudgetError as exc:
            raise ApiError(400, "Invalid budget.", str(exc)) from None
        try:
            stored = await self._controls.set_budget(budget)
        except (UserNotFoundError, GroupNotFoundError) as exc:
            raise ApiError(404, str(exc)) from None
        return _json(200, stored.to_json())


_BUDGET_ALLOW = {False: "GET, POST, HEAD, OPTIONS", True: "DELETE, OPTIONS"}  # budgets, budgets/{scope}
