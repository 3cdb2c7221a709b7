"""Which coding agent sent a request, and its own session id: pure functions over request headers.

Classification follows Coder's AI Gateway so recorded client names match (docs/compatibility.md#clients), and
so do the session id headers (docs/compatibility.md#session-ids).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_SESSION_ID_LEN = 256

# (User-Agent prefixes, originator header values, client name) in match order: first match wins.
_UA_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("mux/", "xum/"), (), "Mux"),
    (("claude",), (), "Claude Code"),
    (("codex",), (), "Codex"),
    (("zed/",), (), "Zed"),
    (("githubcopilotchat/",), (), "GitHub Copilot (VS Code)"),
    (("copilot/",), (), "GitHub Copilot (CLI)"),
    (("kilo-code/",), ("kilo-code",), "Kilo Code"),
    (("roo-code/",), ("roo-code",), "Roo Code"),
    (("coder-agents/",), (), "Coder Agents"),
    (("charm crush/", "charm-crush/"), (), "Charm Crush"),
)
_LATE_UA_RULES: tuple[tuple[str, str], ...] = (("opencode/", "OpenCode"), ("junie:", "Junie"))
# Gemini CLI: `GeminiCLI/<version>[/<model>] (<platform>; <arch>[; <surface>])`, `GeminiCLI-<client>/…` when
# embedded. A token anywhere in the UA, not only a prefix: google-genai for Python puts its own label in front of
# a User-Agent its caller sets (the JS SDK, which Gemini CLI uses, does not).
_GEMINI_CLI_UA = re.compile(r"(?:^|\s)geminicli[/-]")

CLIENTS: tuple[str, ...] = (
    *(name for _, _, name in _UA_RULES),
    "Cursor",
    *(name for _, name in _LATE_UA_RULES),
    "Gemini CLI",
    "Unknown",
)

# Session id headers per client, in preference order (lower-case: lookups go through `lower_names`).
_SESSION_HEADERS: dict[str, tuple[str, ...]] = {
    "Claude Code": ("x-claude-code-session-id",),
    "Codex": ("session-id", "session_id"),
    "Mux": ("x-mux-workspace-id",),
    "GitHub Copilot (VS Code)": ("x-interaction-id",),
    "GitHub Copilot (CLI)": ("x-client-session-id",),
    "Kilo Code": ("x-kilocode-taskid",),
    "Coder Agents": ("x-coder-chat-id",),
    "OpenCode": ("x-opencode-session", "x-session-affinity"),
    # Gemini CLI: none. On the Gemini API it sends no session header (its session id only goes into Code Assist
    # request bodies on cloudcode-pa.googleapis.com); `x-gemini-api-privileged-user-id` is a per-install id.
}
# Clients whose session id may also come from the request body (Claude Code metadata, Codex client_metadata).
_BODY_SESSION_CLIENTS = frozenset({"Claude Code", "Codex"})


def lower_names(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased, so a plain dict works like mitmproxy's case-insensitive Headers. A strange
    mapping gives an empty dict: it must not break classification."""
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:
        return {}


def classify_client(headers: Mapping[str, str]) -> str:
    h = lower_names(headers)
    ua = h.get("user-agent", "").strip().lower()
    originator = h.get("originator", "").strip().lower()
    for prefixes, originators, name in _UA_RULES:
        if ua.startswith(prefixes) or originator in originators:
            return name
    if h.get("x-cursor-client-version", "").strip():
        return "Cursor"
    for prefix, name in _LATE_UA_RULES:
        if ua.startswith(prefix):
            return name
    if _GEMINI_CLI_UA.search(ua):
        return "Gemini CLI"
    # Codex names itself in `originator` (codex_exec, codex_cli_rs) even when a wrapper replaces the UA.
    if originator.startswith("codex"):
        return "Codex"
    return "Unknown"


def client_session_id(client: str, headers: Mapping[str, str], body_session_id: str | None) -> str | None:
    h = lower_names(headers)
    candidates = [h.get(name) for name in _SESSION_HEADERS.get(client, ())]
    if client in _BODY_SESSION_CLIENTS:
        candidates.append(body_session_id)
    for value in candidates:
        if isinstance(value, str) and (value := value.strip()):
            return value[:MAX_SESSION_ID_LEN]
    return None
