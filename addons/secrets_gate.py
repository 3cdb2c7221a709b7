"""`--redaction block`: refuse a model call whose request carries a secret, before it reaches the provider.

Registered before the Interceptor (and the circuit breaker). The request body is decoded and scanned with the
redaction engine before it is forwarded: the whole body, as JSON text, so a key in the prompt, in an earlier
turn, in a tool result (a file the agent read) or in the system prompt counts. A request with a secret gets a
400 in its API's own error shape (the SDK raises its usual bad-request error) whose message names the kinds of
secret found, never the secret; the upstream is not contacted, and the Interceptor records the call as failed
(upstream status 400, `metadata.blocked_secrets` = {kind: count}), its prompt redacted like any record.

Speed: a body of up to `INLINE_SCAN_BYTES` is scanned on the event loop (well under a millisecond for typical
bodies); a larger one on a worker thread while the flow waits, so other traffic keeps moving. A body larger than
the parse limit (`MAX_PARSED_BODY`), or one that decompresses to more than it, is not scanned and is relayed
(logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from mitmproxy import http

from aigw_proxy.addons.intercept import INTERCEPTION
from aigw_proxy.intercept.interception import MAX_PARSED_BODY, Interception
from aigw_proxy.intercept.parsing.decoding import decode_body
from aigw_proxy.policy.provider_errors import provider_error_body
from aigw_proxy.redaction.engine import Redactor

log = logging.getLogger("aigw_proxy.secrets")

INLINE_SCAN_BYTES = 256 * 1024
BLOCKED = "aigw.secrets.blocked"
ERROR_CODE = "secret_detected"


def blocked_message(kinds: Counter[str]) -> str:
    """Why the call was refused: the kinds of secret and how many, never the secrets."""
    found = ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in sorted(kinds.items()))
    return (f"{ERROR_CODE}: aigw-proxy DLP policy refused this request: it carries a secret ({found}). "
            "Remove it from the conversation and retry.")


class SecretsGate:
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    async def request(self, flow: http.HTTPFlow) -> None:
        ix: Interception | None = flow.metadata.get(INTERCEPTION)
        if ix is None or flow.response is not None:
            return
        raw = flow.request.raw_content or b""
        encoding = flow.request.headers.get("content-encoding")
        ix.request_received(raw, encoding)
        ix.parse_request()  # never raises; records the start before anything else happens to the call
        kinds = await self._scan(ix, raw, encoding)
        if not kinds:
            return
        flow.metadata[BLOCKED] = True
        ix.metadata["blocked_secrets"] = dict(sorted(kinds.items()))
        log.warning("interception %s: request refused, it carries %s", ix.id,
                    ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        flow.response = http.Response.make(
            400, provider_error_body(ix.api, 400, blocked_message(kinds), code=ERROR_CODE),
            {"Content-Type": "application/json"},
        )

    async def _scan(self, ix: Interception, raw: bytes, encoding: str | None) -> Counter[str]:
        if len(raw) > MAX_PARSED_BODY:
            log.warning("interception %s: request body of %d bytes is too large to scan for secrets; relayed",
                        ix.id, len(raw))
            return Counter()
        body, err = decode_body(raw, encoding, MAX_PARSED_BODY)  # a decompression bomb stops at the limit
        if err is not None:
            log.warning("interception %s: request body cannot be scanned for secrets (%s); relayed",
                        ix.id, err)
            return Counter()
        text = body.decode("utf-8", "replace")
        if len(body) <= INLINE_SCAN_BYTES:
            return self.redactor.kinds(text)
        return await asyncio.to_thread(self.redactor.kinds, text)
