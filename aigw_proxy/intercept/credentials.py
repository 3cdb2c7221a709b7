"""What kind of credential a request carries, and a masked hint of it (docs/compatibility.md#credentials). The
secret itself is never returned or stored."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aigw_proxy.intercept.clients import lower_names

# A JWT: three base64url segments (the signature may be empty for unsigned tokens). ChatGPT-plan tokens.
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Tokens obtained by a login rather than created as keys: Anthropic OAuth access tokens, GitHub user-to-server
# and OAuth app tokens, Copilot session tokens (`tid=…;exp=…`, minted from the user's GitHub login), Google OAuth
# access tokens (`ya29.`, Gemini CLI's "Login with Google"). (`ghp_`/`github_pat_` personal access tokens are keys.)
_OAUTH_PREFIXES = ("sk-ant-oat", "ghu_", "gho_", "tid=", "ya29.")


def credential_info(headers: Mapping[str, str]) -> tuple[str, str]:
    """(kind, hint): kind is "api_key", "oauth" or "none"."""
    h = lower_names(headers)
    # X-Api-Key wins over Authorization, as in the gateway; `api-key` is Azure OpenAI's, `x-goog-api-key` Gemini's.
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        key = h.get(name, "").strip()
        if key:
            return "api_key", mask_secret(key)
    token = _auth_token(h.get("authorization", ""))
    if not token:
        return "none", ""
    return credential_kind(token), mask_secret(token)


def credential_kind(token: str) -> str:
    if token.startswith(_OAUTH_PREFIXES) or _JWT.fullmatch(token):
        return "oauth"
    return "api_key"


def _auth_token(value: str) -> str:
    # `Bearer <t>` (GitHub also takes `token <t>`); a bare value without a scheme is the token itself.
    scheme, _, param = value.strip().partition(" ")
    if param or scheme.lower() in ("bearer", "token", "basic"):
        return param.strip()  # a scheme with no token (`Bearer `) carries no credential
    return scheme


def mask_secret(secret: str) -> str:
    """The secret's ends and `...` in the middle: 4 chars each end if it is ≥ 20 long, 2 if ≥ 10, 1 if ≥ 5,
    none below that (the hint is only meant to tell keys apart, never to leak one)."""
    if not secret:
        return ""
    n = len(secret)
    reveal = 4 if n >= 20 else 2 if n >= 10 else 1 if n >= 5 else 0
    if reveal == 0 or reveal * 2 >= n:
        return "..."
    return f"{secret[:reveal]}...{secret[-reveal:]}"
