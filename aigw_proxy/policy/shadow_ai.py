"""Shadow AI: hosts that look like AI model endpoints. A CONNECT to one of them that the proxy does not decrypt (no
provider is configured for it) is counted per host, so operators see which AI services people reach around it.

`*` stands for one or more DNS labels (`*.openai.azure.com` matches `acme.openai.azure.com`). The config file's
`shadow_ai_hosts` adds patterns. Keep AI_HOST_PATTERNS in step with the README.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

AI_HOST_PATTERNS: tuple[str, ...] = (
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.openai.com",
    "api.anthropic.com",
    "api.mistral.ai",
    "codestral.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "openrouter.ai",
    "api.together.xyz",
    "api.together.ai",
    "api.fireworks.ai",
    "api.perplexity.ai",
    "api.cerebras.ai",
    "api.ai21.com",
    "api.moonshot.ai",
    "api.voyageai.com",
    "*.cohere.com",
    "*.cohere.ai",
    "generativelanguage.googleapis.com",
    "*.aiplatform.googleapis.com",
    "bedrock-runtime.*.amazonaws.com",
    "bedrock-runtime-fips.*.amazonaws.com",
    "api-inference.huggingface.co",
    "router.huggingface.co",
    "api.replicate.com",
    "dashscope.aliyuncs.com",
    "dashscope-intl.aliyuncs.com",
    "*.cursor.sh",
    "*.codeium.com",
    "*.windsurf.com",
    "copilot-proxy.githubusercontent.com",
    "*.githubcopilot.com",
    "chatgpt.com",
    "claude.ai",
)

_PATTERN = re.compile(r"[a-z0-9*]([a-z0-9*.-]*[a-z0-9*])?")
_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"


def parse_host_patterns(value: object) -> tuple[str, ...]:
    """Validate the config file's `shadow_ai_hosts` (raises ValueError)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("shadow_ai_hosts must be a list of host patterns")
    out = tuple(v.strip().lower().rstrip(".") for v in value)
    bad = [v for v in out if not _PATTERN.fullmatch(v)]
    if bad:
        raise ValueError(f"shadow_ai_hosts: {bad[0]!r} is not a host name pattern (letters, digits, '-', '.', '*')")
    return out


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join("(?:" + re.escape(p).replace(r"\*", _LABELS) + ")" for p in patterns))


class ShadowAI:
    """Matches hosts against the built-in list plus the operator's extra patterns."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra = tuple(extra)
        self._re = compile_patterns((*AI_HOST_PATTERNS, *self.extra))

    def matches(self, host: str) -> bool:
        return self._re.fullmatch(host.lower().rstrip(".")) is not None
