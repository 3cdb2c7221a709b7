"""Error bodies in each provider API's own shape, for answers the proxy gives itself (an open circuit breaker's
503, a request refused by the secrets policy's 400, a budget's or a rate limit's 429, a model policy's 403, a
capacity 503): the client's SDK reads them like the provider's own and raises its usual error for the status
(anthropic.RateLimitError, openai.PermissionDeniedError…)."""

from __future__ import annotations

import json

from aigw_proxy.policy.providers import Api

# status → (Anthropic error type, OpenAI error type, OpenAI default code, Google status)
_SHAPES: dict[int, tuple[str, str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_request_error", None, "INVALID_ARGUMENT"),
    403: ("permission_error", "invalid_request_error", "model_not_allowed", "PERMISSION_DENIED"),
    429: ("rate_limit_error", "requests", "rate_limit_exceeded", "RESOURCE_EXHAUSTED"),
    503: ("overloaded_error", "server_error", "service_unavailable", "UNAVAILABLE"),
}

# A provider type's usual API, for requests that are not model calls (passthrough paths such as /v1/models).
_TYPE_API: dict[str, Api] = {
    "anthropic": Api.ANTHROPIC_MESSAGES,
    "openai": Api.OPENAI_CHAT,
    "copilot": Api.OPENAI_CHAT,
    "gemini": Api.GEMINI_GENERATE,
}


def api_for_provider_type(provider_type: str) -> Api | None:
    """The API whose error shape a provider's clients read on any path (None: an unknown provider type)."""
    return _TYPE_API.get(provider_type)


def provider_error_body(api: Api | str | None, status: int, message: str, *, code: str | None = None,
                        openai_type: str | None = None) -> bytes:
    """The JSON error body for `status` that the SDKs of `api` understand: Anthropic's on the Messages API,
    OpenAI's on the OpenAI APIs (with `code`, and `openai_type` instead of the status's usual type), Google's on
    Gemini; `{"error": message}` otherwise."""
    anthropic_type, default_openai_type, openai_code, google_status = _SHAPES[status]
    if api == Api.ANTHROPIC_MESSAGES:
        body: dict = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    elif api in (Api.OPENAI_CHAT, Api.OPENAI_RESPONSES):
        body = {"error": {"message": message, "type": openai_type or default_openai_type, "code": code or openai_code}}
    elif api == Api.GEMINI_GENERATE:
        body = {"error": {"code": status, "message": message, "status": google_status}}
    else:
        body = {"error": message}
    return json.dumps(body, separators=(",", ":")).encode()
