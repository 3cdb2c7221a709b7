"""The admin listener's Starlette apps: health, metrics, the REST API and the web console (`/console/`).

Every route is read-only — GET and HEAD (uvicorn sends HEAD's headers without the body), OPTIONS answered 204 with
`Allow`, any other method 405 with `Allow` — except the console's sign-in, sign-out and People forms, which take
POST (admin/console/app.py: session and CSRF checks), and the REST API's admin routes (budgets), which also take
POST and DELETE; RequestLimits' body caps apply to them as to everything. Everything here runs on the admin
thread's loop, never the proxy's.

`/metrics` exposure (`MetricsAccess`): with a token, every scrape must send `Authorization: Bearer <token>`;
without one, metrics are served only on a loopback listener, unless the operator chose `--metrics-public`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aigw_proxy.admin.api.app import ApiApp
from aigw_proxy.admin.console.app import ConsoleApp, ConsoleSettings
from aigw_proxy.admin.health import HealthMonitor, HealthReport
from aigw_proxy.admin.http import AdminLimits, RequestLimits
from aigw_proxy.spend.budgets import Budget
from aigw_proxy.storage import Database
from aigw_proxy.telemetry.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("aigw_proxy.admin")

ALLOW = "GET, HEAD, OPTIONS"
API_WRITES = ("POST", "DELETE")  # the REST API's admin routes (budgets); every other path refuses them (405)
BUSY_SWITCH_INTERVAL = 0.0002  # seconds; see ApiEndpoint

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(status: int, value: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(value).encode() + b"\n", status, headers, media_type="application/json")


class ReadOnly:
    """An ASGI route endpoint for GET/HEAD that answers OPTIONS and refuses other methods itself (Starlette's
    own 405 would list the methods in a set's arbitrary order and never answer OPTIONS). `writes`: methods also
    handed to the endpoint, which decides per path (the REST API's admin routes: budgets)."""

    def __init__(self, endpoint: Endpoint, *, writes: tuple[str, ...] = ()) -> None:
        self.endpoint = endpoint
        self.writes = writes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": ALLOW})
        elif request.method not in ("GET", "HEAD", *self.writes):
            response = json_response(405, {"message": f"method {request.method} not allowed", "allow": ALLOW},
                                     {"Allow": ALLOW})
        else:
            response = await self.endpoint(request)
        await response(scope, receive, send)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    token: str | None = None  # scrapes must send it as a bearer token
    public: bool = False  # no token and a non-loopback listener: serve anyway (the operator chose so)

    def refusal(self, request: Request, loopback_listener: bool) -> Response | None:
        """None if this scrape may read the metrics, else the answer."""
        if self.token is not None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return None
            return json_response(401, {"message": "send the metrics token: Authorization: Bearer <token>"},
                                 {"WWW-Authenticate": 'Bearer realm="aigw-proxy metrics"'})
        if loopback_listener or self.public:
            return None
        return json_response(403, {"message": "metrics name users: on a non-loopback listener they need "
                                              "--metrics-token (or --metrics-public to serve them to anyone)"})


@dataclass(slots=True)
class AdminContext:
    """What the admin apps serve; the health monitor and the metrics belong to the proxy's side."""

    health: HealthMonitor
    metrics: Metrics | None
    access: MetricsAccess
    limits: AdminLimits
    metrics_elsewhere: str | None = None  # "H:P" when --metrics-listen moves /metrics off the admin listener
    console: ConsoleSettings | None = None  # None: the web console with its defaults
    config_budgets: Callable[[], Sequence[Budget]] = tuple  # the config file's [[budgets]] now (REST API)


class ApiEndpoint:
    """`/api/...`: the REST API (its own database engines, on this thread)."""

    def __init__(self, app: ApiApp) -> None:
        self._app = app
        self._busy = 0
        self._idle_switch_interval = sys.getswitchinterval()

    async def __call__(self, request: Request) -> Response:
        scope = request.scope
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        self._busy += 1
        if self._busy == 1:
            # While this thread works, a GIL it holds keeps the proxy's loop waiting up to the switch interval
            # (5 ms by default) each time: shorten it so a heavy query adds little to proxied requests (measured
            # p95 +11 ms -> +4 ms at 1 ms; at 0.2 ms an open tunnel's p50 under the API load of
            # bench/tunnel_bench.py 2.0 -> 1.4 ms, a new tunnel's 11.9 -> 9.5 ms, the API's rate unchanged: the
            # loop waits for the GIL at every system call it makes). Only while busy: more switching costs proxy
            # throughput otherwise.
            self._idle_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(BUSY_SWITCH_INTERVAL)
        try:
            if request.method in ("GET", "HEAD"):
                resp = await self._app.handle("GET", target, dict(request.headers.items()))  # HEAD: GET, no body
            else:  # POST, DELETE: the app refuses them where a path takes none
                resp = await self._app.handle(request.method, target, dict(request.headers.items()),
                                              await request.body())
        finally:
            self._busy -= 1
            if self._busy == 0:
                sys.setswitchinterval(self._idle_switch_interval)
        return Response(resp.body, resp.status, resp.headers)


def _health_response(report: HealthReport, ok: tuple[str, ...]) -> Response:
    return json_response(200 if report.status in ok else 503, report.body(), {"Cache-Control": "no-store"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_response(404, {"message": f"no such endpoint: {request.url.path}"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response(exc.status_code, {"message": exc.detail}, dict(exc.headers or {}))


def _metrics_endpoint(ctx: AdminContext, db: Database, loopback_listener: bool) -> Endpoint:
    metrics = ctx.metrics
    assert metrics is not None

    async def serve(request: Request) -> Response:
        refused = ctx.access.refusal(request, loopback_listener)
        if refused is not None:
            return refused
        await ctx.health.check(db)  # the health gauge reflects this very scrape
        return Response(metrics.render(), 200, {"Cache-Control": "no-store"}, media_type=CONTENT_TYPE)

    return serve


def _starlette(routes: list[Route], ctx: AdminContext) -> ASGIApp:
    app = Starlette(routes=routes, exception_handlers={404: _not_found, HTTPException: _http_error})
    app.router.redirect_slashes = False
    return RequestLimits(app, ctx.limits, ALLOW)


def admin_app(ctx: AdminContext, api: ApiApp, api_db: Database, loopback_listener: bool,
              console: ConsoleApp | None = None) -> ASGIApp:
    health = ctx.health

    async def livez(request: Request) -> Response:
        return _health_response(await health.live(), ("ok",))

    async def readyz(request: Request) -> Response:
        return _health_response(await health.check(api_db), ("ok",))

    async def healthz(request: Request) -> Response:
        return _health_response(await health.check(api_db), ("ok", "degraded"))

    async def metrics_moved(request: Request) -> Response:
        return json_response(404, {"message": f"metrics are served on {ctx.metrics_elsewhere} (--metrics-listen)"})

    routes = [Route("/livez", ReadOnly(livez)), Route("/readyz", ReadOnly(readyz)),
              Route("/healthz", ReadOnly(healthz)),
              Route("/api/{rest:path}", ReadOnly(ApiEndpoint(api), writes=API_WRITES))]
    if ctx.metrics_elsewhere is not None:
        routes.append(Route("/metrics", ReadOnly(metrics_moved)))
    elif ctx.metrics is not None:
        routes.append(Route("/metrics", ReadOnly(_metrics_endpoint(ctx, api_db, loopback_listener))))
    if console is not None:
        routes.extend(console.routes())  # type: ignore[arg-type]  # Mount and Route
    return _starlette(routes, ctx)


def metrics_app(ctx: AdminContext, db: Database, loopback_listener: bool) -> ASGIApp:
    """The `--metrics-listen` listener: `/metrics` only."""
    return _starlette([Route("/metrics", ReadOnly(_metrics_endpoint(ctx, db, loopback_listener)))], ctx)
