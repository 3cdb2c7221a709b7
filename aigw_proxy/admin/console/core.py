"""What every console page works with: the stores, the settings, the renderer, the session cookies and the audit
log (`Console`); pages/ holds the pages, app.py routes to them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aigw_proxy.admin.console.auth import PATH, Sessions, Viewer, load_secret
from aigw_proxy.admin.console.overview_cache import OverviewCache
from aigw_proxy.admin.console.render import environment
from aigw_proxy.config.settings import DEFAULT_CONSOLE_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from aigw_proxy.config.settings import Settings
from aigw_proxy.spend.budgets import Budget
from aigw_proxy.storage import ControlsStore, Database, UserStore
from aigw_proxy.storage.audit import record_action

PAGE = 50  # rows of a list page


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds without a request before a session is refused
    secure_cookie: bool = False  # mark the cookie Secure even over plain http (a TLS terminator in front)
    proxy_address: str | None = None  # "host:port" of the proxy listener, for Set-up

    @classmethod
    def of(cls, settings: Settings, proxy_address: str) -> ConsoleSettings:
        """The daemon's (`--console-idle-timeout`, `--console-secure-cookie`), with the proxy's listen address."""
        return cls(settings.console_idle_timeout, settings.console_secure_cookie, proxy_address)


class Console:
    def __init__(self, db: Database, confdir: Path, metrics_registry: Any | None = None,
                 settings: ConsoleSettings | None = None, secret_dir: Path | None = None,
                 config_budgets: Callable[[], Sequence[Budget]] = tuple) -> None:
        self.db = db
        self.users = UserStore(db)
        self.controls = ControlsStore(db)
        self.overview_cache = OverviewCache(db)  # its refresher runs on the admin loop (admin/server.py)
        self.confdir = confdir
        self.registry = metrics_registry
        self.config_budgets = config_budgets  # the config file's [[budgets]] as the daemon has them now
        self.settings = settings or ConsoleSettings()
        self.sessions = Sessions(db, load_secret(secret_dir or confdir), self.settings.idle_timeout,
                                 self.settings.secure_cookie)
        self._env = environment()

    def render(self, request: Request, viewer: Viewer | None, template: str, context: dict[str, Any],
               status: int = 200) -> Response:
        html = self._env.get_template(template).render(viewer=viewer, path=request.url.path, base=PATH, **context)
        return Response(html, status, media_type="text/html; charset=utf-8")

    def error(self, request: Request, viewer: Viewer | None, status: int, message: str) -> Response:
        return self.render(request, viewer, "error.html", {"status": status, "message": message}, status)

    def proxy_for(self, request: Request) -> str | None:
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

    async def audit(self, request: Request, viewer: Viewer, action: str, *, target: str,
                    target_user_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Record an admin's change in the console audit log (who, what, when, from where)."""
        await record_action(self.db, actor_id=viewer.user_id, actor=viewer.username, action=action,
                            target_user_id=target_user_id, target=target, detail=detail or {},
                            source=request.client.host if request.client else "")
