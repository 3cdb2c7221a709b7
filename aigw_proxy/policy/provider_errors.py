"""Error bodies in each provider API's own shape, for answers the proxy gives itself (an open circuit breaker's
503, a request refused by the secrets policy's 400): the client's SDK reads them like the provider's own."""

from __future__ import annotations

import json

from aigw_proxy.policy.providers import Api

# status → (Anthropic error type, OpenAI error type, OpenAI default code, Google status)
_SHAPES: dict[int, tuple[str, str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_request_error", None, "INVALID_ARGUMENT"),
    503: ("overloaded_error", "server_error", "service_unavailable", "UNAVAILABLE"),
}


def provider_error_body(api: Api | str, status: int, message: str, *, code: str | None = None) -> bytes:
    """The JSON error body for `status` that the SDKs of `api` understand: Anthropic's on the Messages API,
    OpenAI's on the OpenAI APIs (with `code`), Google's on Gemini; `{"error": message}` otherwise."""
    anthropic_type, openai_type, openai_code, google_status = _SHAPES[status]
    if api == Api.ANTHROPIC_MESSAGES:
        body: dict = {"type": "error", "error": {"type": anthropic_type, "message": message}}
    elif api in (Api.OPENAI_CHAT, Api.OPENAI_RESPONSES):
        body = {"error": {"message": message, "type": openai_type, "code": code or openai_code}}
    elif api == Api.GEMINI_GENERATE:
        body = {"error": {"code": status, "message": message, "status": google_status}}
    else:
        body = {"error": message}
    return json.dumps(body, separators=(",", ":")).encode()
