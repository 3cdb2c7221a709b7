"""Client classification, client session ids (clients.py) and credential kind/hint (credentials.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aigw_proxy.intercept.clients import CLIENTS, classify_client, client_session_id
from aigw_proxy.intercept.credentials import credential_info, mask_secret

CLAUDE_UA = "claude-cli/2.1.197 (external, sdk-cli)"
CODEX_EXEC_UA = "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)"
CODEX_CLI_UA = "codex_cli_rs/0.87.0 (Mac OS 15.1.0; arm64) iTerm.app/3.5.10"
SESSION = "8f14e45f-ceea-467f-a0e6-6c0e9b2d4a11"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        ({"User-Agent": CLAUDE_UA}, "Claude Code"),
        ({"user-agent": CODEX_EXEC_UA, "originator": "codex_exec"}, "Codex"),
        ({"User-Agent": CODEX_CLI_UA}, "Codex"),
        ({"User-Agent": "GitHubCopilotChat/0.26.7"}, "GitHub Copilot (VS Code)"),
        ({"User-Agent": "copilot/0.0.403 (client/cli linux v22.17.0)"}, "GitHub Copilot (CLI)"),
        ({"User-Agent": "Zed/0.200.0 (macos; aarch64)"}, "Zed"),
        ({"User-Agent": "mux/0.9.1 ai-sdk/openai"}, "Mux"),
        ({"User-Agent": "xum/1.0.0"}, "Mux"),
        ({"User-Agent": "Kilo-Code/4.90.0"}, "Kilo Code"),
        ({"User-Agent": "OpenAI/JS 5.10.1", "Originator": "kilo-code"}, "Kilo Code"),
        ({"User-Agent": "roo-code/3.25.0"}, "Roo Code"),
        ({"originator": "roo-code"}, "Roo Code"),
        ({"User-Agent": "coder-agents/2.24.0"}, "Coder Agents"),
        ({"User-Agent": "Charm Crush/0.7.1"}, "Charm Crush"),
        ({"User-Agent": "charm-crush/0.8.0"}, "Charm Crush"),
        ({"User-Agent": "connect-es/1.6.1", "X-Cursor-Client-Version": "1.4.5"}, "Cursor"),
        ({"User-Agent": "connect-es/1.6.1", "x-cursor-client-version": "  "}, "Unknown"),
        ({"User-Agent": "opencode/0.15.2 ai-sdk/provider-utils/3.0.9"}, "OpenCode"),
        ({"User-Agent": "Junie:252.1 (IntelliJ IDEA)"}, "Junie"),
        ({"User-Agent": "GeminiCLI/0.18.4/gemini-2.5-pro (linux; x64; terminal)"}, "Gemini CLI"),
        ({"User-Agent": "GeminiCLI/0.1.5 (darwin; arm64)"}, "Gemini CLI"),
        ({"User-Agent": "GeminiCLI-a2a-server/0.18.4/gemini-2.5-pro (linux; x64; terminal)"}, "Gemini CLI"),
        # google-genai for Python puts its own label before a User-Agent its caller sets.
        ({"User-Agent": "google-genai-sdk/3.4.0 gl-python/3.13.1 GeminiCLI/0.18.4 (linux; x64)"}, "Gemini CLI"),
        ({"User-Agent": "google-genai-sdk/3.4.0 gl-python/3.13.1"}, "Unknown"),
        ({"User-Agent": "my-geminicli/1.0"}, "Unknown"),
        # Codex behind a wrapper that replaced the User-Agent still names itself in `originator`.
        ({"User-Agent": "reqwest/0.12", "originator": "codex_cli_rs"}, "Codex"),
        ({"User-Agent": ""}, "Unknown"),
        ({}, "Unknown"),
        ({"User-Agent": "python-httpx/0.28.1"}, "Unknown"),
        ({"User-Agent": "Anthropic/Python 0.72.0"}, "Unknown"),
    ],
)
def test_classify_client(headers: dict[str, str], client: str) -> None:
    assert classify_client(headers) == client
    assert client in CLIENTS


def test_first_match_wins() -> None:
    # A UA rule before the Cursor header rule beats it; the originator fallback comes last.
    assert classify_client({"User-Agent": CLAUDE_UA, "x-cursor-client-version": "1.0"}) == "Claude Code"
    assert classify_client({"User-Agent": "opencode/1.0", "originator": "codex_exec"}) == "OpenCode"
    assert classify_client({"User-Agent": "opencode/1.0", "x-cursor-client-version": "1.0"}) == "Cursor"


def test_clients_constant() -> None:
    assert CLIENTS[0] == "Mux" and CLIENTS[-1] == "Unknown" and len(set(CLIENTS)) == len(CLIENTS) == 15


@pytest.mark.parametrize(
    ("client", "headers", "body", "expected"),
    [
        ("Claude Code", {"X-Claude-Code-Session-Id": SESSION}, "other", SESSION),
        ("Claude Code", {}, SESSION, SESSION),
        ("Claude Code", {"x-claude-code-session-id": "  "}, f" {SESSION} ", SESSION),
        ("Codex", {"session-id": "a", "session_id": "b"}, "c", "a"),
        ("Codex", {"Session_Id": "b"}, "c", "b"),
        ("Codex", {}, "c", "c"),
        ("Codex", {}, None, None),
        ("Mux", {"X-Mux-Workspace-Id": "ws-1"}, None, "ws-1"),
        ("GitHub Copilot (VS Code)", {"X-Interaction-Id": "int-1", "vscode-sessionid": "win"}, None, "int-1"),
        ("GitHub Copilot (VS Code)", {"vscode-sessionid": "win"}, None, None),
        ("GitHub Copilot (CLI)", {"x-client-session-id": "cli-1"}, None, "cli-1"),
        ("Kilo Code", {"X-KILOCODE-TASKID": "task-1"}, None, "task-1"),
        ("Coder Agents", {"X-Coder-Chat-Id": "chat-1"}, None, "chat-1"),
        ("OpenCode", {"X-OpenCode-Session": "ses-1", "x-session-affinity": "aff"}, None, "ses-1"),
        ("OpenCode", {"x-session-affinity": "aff"}, None, "aff"),
        # Gemini CLI sends no session id on the Gemini API; its per-install id is not one.
        ("Gemini CLI", {"x-gemini-api-privileged-user-id": "install-1"}, None, None),
        # Body session ids only count for the clients that put one there.
        ("Mux", {}, "body", None),
        ("Zed", {"session-id": "x", "X-Claude-Code-Session-Id": "y"}, "body", None),
        ("Unknown", {"session_id": "x"}, "body", None),
    ],
)
def test_client_session_id(
    client: str, headers: dict[str, str], body: str | None, expected: str | None
) -> None:
    assert client_session_id(client, headers, body) == expected


def test_client_session_id_is_truncated() -> None:
    assert client_session_id("Codex", {"session-id": "x" * 1000}, None) == "x" * 256


@pytest.mark.parametrize(
    ("secret", "hint"),
    [
        ("", ""),
        ("abcd", "..."),
        ("abcde", "a...e"),
        ("abcdefghij", "ab...ij"),
        ("sk-ant-api03-abcdefg", "sk-a...defg"),
        ("sk-proj-" + "x" * 48 + "WXYZ", "sk-p...WXYZ"),
    ],
)
def test_mask_secret(secret: str, hint: str) -> None:
    assert mask_secret(secret) == hint
    assert len(mask_secret(secret)) <= 15  # the hint column is varchar(15)


JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"x-api-key": "sk-ant-api03-" + "k" * 40}, "api_key"),
        ({"api-key": "0123456789abcdef0123456789abcdef"}, "api_key"),
        ({"x-goog-api-key": "AIzaSy" + "g" * 33}, "api_key"),
        ({"Authorization": "Bearer ya29.a0AfB_byC" + "x" * 60}, "oauth"),
        ({"Authorization": "Bearer sk-proj-" + "p" * 40}, "api_key"),
        ({"Authorization": "Bearer sk-" + "p" * 40}, "api_key"),
        ({"authorization": "Bearer sk-ant-api03-" + "k" * 40}, "api_key"),
        ({"Authorization": "Bearer sk-ant-oat01-" + "o" * 40}, "oauth"),
        ({"Authorization": f"Bearer {JWT}"}, "oauth"),
        ({"Authorization": "Bearer ghu_" + "g" * 36}, "oauth"),
        ({"Authorization": "token gho_" + "g" * 36}, "oauth"),
        ({"Authorization": "Bearer ghp_" + "g" * 36}, "api_key"),
        (
            {"Authorization": "Bearer tid=abc123;exp=1763000000;sku=copilot_for_business;8kp=1:deadbeef"},
            "oauth",
        ),
        # X-Api-Key wins over Authorization when both are sent.
        (
            {"X-Api-Key": "sk-ant-api03-" + "k" * 40, "Authorization": "Bearer sk-ant-oat01-" + "o" * 40},
            "api_key",
        ),
        ({"Authorization": "Bearer "}, "none"),
        ({"x-api-key": " "}, "none"),
        ({}, "none"),
    ],
)
def test_credential_kind(headers: dict[str, str], kind: str) -> None:
    assert credential_info(headers)[0] == kind


def test_credential_hint_never_holds_the_secret() -> None:
    secret = "sk-ant-oat01-" + "s" * 60 + "TAIL"
    kind, hint = credential_info({"Authorization": f"Bearer {secret}"})
    assert (kind, hint) == ("oauth", "sk-a...TAIL")
    assert credential_info({"X-API-KEY": "sk-ant-api03-0123456789abcdef"}) == ("api_key", "sk-a...cdef")
    assert credential_info({}) == ("none", "")


@given(
    st.dictionaries(
        st.sampled_from(["User-Agent", "originator", "x-api-key", "Authorization", "session-id"]),
        st.text(max_size=40),
    )
)
def test_random_headers_never_raise(headers: dict[str, str]) -> None:
    client = classify_client(headers)
    assert client in CLIENTS
    sid = client_session_id(client, headers, None)
    assert sid is None or 0 < len(sid) <= 256
    kind, hint = credential_info(headers)
    assert kind in ("api_key", "oauth", "none") and len(hint) <= 11
