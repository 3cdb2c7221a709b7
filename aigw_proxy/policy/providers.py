"""AI providers: which hosts are decrypted, where their traffic goes, and which paths are model calls.

A provider's type names the API shapes it speaks; its `base_path` says where the model routes live on its hosts
(the ChatGPT-plan Codex backend is an OpenAI-typed provider under `/backend-api/codex`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote, urlsplit


class Api(StrEnum):
    """One provider API = one parser module."""

    ANTHROPIC_MESSAGES = "anthropic.messages"
    OPENAI_CHAT = "openai.chat_completions"
    OPENAI_RESPONSES = "openai.responses"
    GEMINI_GENERATE = "gemini.generate_content"


PROVIDER_TYPES = ("anthropic", "openai", "copilot", "gemini")
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# Model-call endpoints per provider type, relative to the provider's base path.
ENDPOINTS: dict[str, dict[str, Api]] = {
    "anthropic": {"/v1/messages": Api.ANTHROPIC_MESSAGES},
    "openai": {"/chat/completions": Api.OPENAI_CHAT, "/responses": Api.OPENAI_RESPONSES},
    "copilot": {
        "/chat/completions": Api.OPENAI_CHAT,
        "/responses": Api.OPENAI_RESPONSES,
        "/v1/messages": Api.ANTHROPIC_MESSAGES,
    },
    "gemini": {},
}
# Model-call endpoints whose path names the model (`{model}`: one path segment), relative to the base path:
# (pattern, API, whether the route itself streams). Tried only when no exact route matched.
PATTERN_ENDPOINTS: dict[str, tuple[tuple[str, Api, bool], ...]] = {
    "gemini": tuple(
        (f"/{version}/models/{{model}}:{method}", Api.GEMINI_GENERATE, method == "streamGenerateContent")
        for version in ("v1beta", "v1", "v1alpha")
        for method in ("generateContent", "streamGenerateContent")
    ),
}
DEFAULT_BASE_PATH = {"anthropic": "", "openai": "/v1", "copilot": "", "gemini": ""}


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What a model route's path says: the API, and for path-named models (Gemini) the model and streaming."""

    api: Api
    model: str | None = None  # named by the path, for bodies that carry none
    streaming: bool = False  # the route itself streams (Gemini `:streamGenerateContent`), whatever the body says


def _compile_pattern(base_path: str, pattern: str) -> re.Pattern[str]:
    before, _, after = pattern.partition("{model}")
    return re.compile(re.escape(base_path + before) + r"(?P<model>[^/:]+)" + re.escape(after))


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where decrypted requests go instead of the original host (TLS; the original Host header is kept)."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ValueError(f"upstream {url!r} must be an https:// URL")
        if not parts.hostname:
            raise ValueError(f"upstream {url!r} has no host")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"upstream {url!r} must be scheme://host[:port] only (no path, query or credentials)")
        try:
            port = parts.port or 443
        except ValueError as exc:
            raise ValueError(f"upstream {url!r} has an invalid port") from exc
        return cls(parts.hostname, port)

    def __str__(self) -> str:
        return f"https://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str
    hosts: tuple[str, ...]
    base_path: str = ""
    upstream: Upstream | None = None
    enabled: bool = True
    routes: dict[str, Api] = field(default_factory=dict, compare=False)
    patterns: tuple[tuple[re.Pattern[str], Api, bool], ...] = field(default=(), compare=False)

    @classmethod
    def build(
        cls,
        name: str,
        type: str,
        hosts: list[str] | tuple[str, ...],
        *,
        base_path: str | None = None,
        upstream: str | None = None,
        enabled: bool = True,
    ) -> Provider:
        """Validate and build a provider. Raises ValueError with an operator-readable message."""
        if not NAME_RE.match(name):
            raise ValueError(f"provider name {name!r} must match {NAME_RE.pattern}")
        if type not in PROVIDER_TYPES:
            raise ValueError(f"provider {name!r}: unknown type {type!r} (expected one of {', '.join(PROVIDER_TYPES)})")
        clean_hosts = tuple(h.strip().lower().rstrip(".") for h in hosts if h and h.strip())
        if not clean_hosts:
            raise ValueError(f"provider {name!r} has no hosts")
        for h in clean_hosts:
            if ":" in h or "/" in h:
                raise ValueError(f"provider {name!r}: host {h!r} must be a bare hostname (no port or path)")
        bp = DEFAULT_BASE_PATH[type] if base_path is None else base_path.rstrip("/")
        if bp and not bp.startswith("/"):
            raise ValueError(f"provider {name!r}: base_path {base_path!r} must start with '/'")
        up = Upstream.parse(upstream) if upstream else None
        routes = {bp + suffix: api for suffix, api in ENDPOINTS[type].items()}
        patterns = tuple((_compile_pattern(bp, p), api, s) for p, api, s in PATTERN_ENDPOINTS.get(type, ()))
        return cls(name, type, clean_hosts, bp, up, enabled, routes, patterns)

    def api_for(self, method: str, path: str) -> Api | None:
        """The model API a request calls, or None for a passthrough path (query strings ignored)."""
        if method != "POST":
            return None
        clean = path.split("?", 1)[0].rstrip("/") or "/"
        api = self.routes.get(clean)  # the exact routes: one dict lookup
        if api is not None or not self.patterns:
            return api
        found = self._match_pattern(clean)
        return found.api if found else None

    def match_route(self, path: str) -> RouteMatch | None:
        """The model route a path is, with what the path itself says (query strings ignored)."""
        clean = path.split("?", 1)[0].rstrip("/") or "/"
        api = self.routes.get(clean)
        return RouteMatch(api) if api is not None else self._match_pattern(clean)

    def _match_pattern(self, clean: str) -> RouteMatch | None:
        for pattern, api, streaming in self.patterns:
            m = pattern.fullmatch(clean)
            if m:
                return RouteMatch(api, unquote(m["model"]) or None, streaming)
        return None


def builtin_providers() -> list[Provider]:
    return [
        Provider.build("anthropic", "anthropic", ["api.anthropic.com"]),
        Provider.build("openai", "openai", ["api.openai.com"]),
        Provider.build("chatgpt", "openai", ["chatgpt.com"], base_path="/backend-api/codex"),
        Provider.build(
            "copilot",
            "copilot",
            [
                "api.githubcopilot.com",
                "api.individual.githubcopilot.com",
                "api.business.githubcopilot.com",
                "api.enterprise.githubcopilot.com",
            ],
        ),
        Provider.build("gemini", "gemini", ["generativelanguage.googleapis.com"]),
    ]


class ProviderTable:
    """The routing snapshot: enabled providers by host. Immutable; a reload builds a new one."""

    def __init__(self, providers: list[Provider]) -> None:
        self.providers = tuple(providers)
        by_host: dict[str, Provider] = {}
        for p in providers:
            if not p.enabled:
                continue
            for h in p.hosts:
                if h in by_host:
                    raise ValueError(f"host {h!r} is claimed by providers {by_host[h].name!r} and {p.name!r}")
                by_host[h] = p
        self._by_host = by_host

    def for_host(self, host: str) -> Provider | None:
        return self._by_host.get(host.lower().rstrip("."))

    def __len__(self) -> int:
        return len(self.providers)
