"""From what a call's relay collected (`RawCapture`) to what is stored (`SealedCapture`), and back.

Runs on the record writer's thread (or the spool's worker thread), never on the proxy's event loop: redacting a
megabyte of prompt text is milliseconds of regex work.

- Headers: every credential header (`Authorization`, `Proxy-Authorization`, `X-Api-Key`, `X-Goog-Api-Key`,
  `Api-Key`, cookies, and any header whose name says it holds a token, key, secret, password or session) keeps
  its name with the value replaced by `[REDACTED:credential-header]`; any other header whose value the redaction
  rules find a secret in has that secret replaced, as in a body.
- Bodies: decoded (Content-Encoding undone), redacted by the same `Redactor` the records use (`--redaction off`:
  bodies as they were, headers still scrubbed), cut to `max_bytes` (the original size is kept beside, and
  `truncated` says it was cut; a secret across the cut is still found: the relay keeps a margin past the bound and
  the cut comes after redaction), then compressed with zstd.
- Text is handled as UTF-8 with undecodable bytes carried through unchanged (`surrogateescape`), so a capture
  without secrets is byte for byte what was relayed.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Final

from aigw_proxy.capture.raw import DEFAULT_CAPTURE_MAX_BYTES, MIN_CAPTURE_MAX_BYTES
from aigw_proxy.capture.stored import ENCODING, SealedBody, SealedCapture, compress, decompress
from aigw_proxy.redaction.engine import PLACEHOLDER

if TYPE_CHECKING:
    from aigw_proxy.capture.raw import RawCapture
    from aigw_proxy.redaction.engine import Redactor

__all__ = ["DEFAULT_CAPTURE_MAX_BYTES", "ENCODING", "MIN_CAPTURE_MAX_BYTES", "CaptureBuilder", "SealedBody",
           "SealedCapture", "compress", "decompress"]


HEADER_KIND: Final = "credential-header"
CREDENTIAL_HEADERS: Final = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "set-cookie",
    "x-auth-token", "private-token",
})
# Header names that say what their value is: a token, key, secret, password, session credential.
_SECRET_NAME: Final = re.compile(r"auth|token|secret|passw|api-?key|apikey|cookie|credential|session-key", re.I)
_PLACEHOLDER_START: Final = b"[REDACTED:"


def scrub_headers(headers: dict[str, str], redactor: Redactor | None, counts: Counter[str]) -> dict[str, str]:
    """`headers` (lower-case names) with credentials removed: see the module's docstring."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name in CREDENTIAL_HEADERS or _SECRET_NAME.search(name):
            if value:
                out[name] = PLACEHOLDER.format(kind=HEADER_KIND)
                counts[HEADER_KIND] += 1
            else:
                out[name] = value
            continue
        if redactor is not None and value:
            found = redactor.redact(value)
            counts.update(found.counts)
            value = found.text
        out[name] = value
    return out


class CaptureBuilder:
    """Seal raw captures: `redactor` None leaves bodies unredacted (`--redaction off`); headers are scrubbed
    either way."""

    def __init__(self, redactor: Redactor | None, max_bytes: int = DEFAULT_CAPTURE_MAX_BYTES) -> None:
        if max_bytes < MIN_CAPTURE_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_CAPTURE_MAX_BYTES}")
        self.redactor = redactor
        self.max_bytes = max_bytes

    def seal(self, raw: RawCapture) -> SealedCapture:
        counts: Counter[str] = Counter()
        return SealedCapture(
            method=raw.method,
            route=raw.route,
            transport=raw.transport,
            request_headers=scrub_headers(raw.request_headers, self.redactor, counts),
            request=self.body(bytes(raw.request.data), raw.request.size, counts),
            response_status=raw.response_status,
            response_headers=scrub_headers(raw.response_headers, self.redactor, counts),
            response=self.body(bytes(raw.response.data), raw.response.size, counts),
            streamed=raw.streamed,
            redactions=dict(sorted(counts.items())),
        )

    def body(self, kept: bytes, size: int, counts: Counter[str]) -> SealedBody:
        """One body: `kept` is its start (up to max_bytes plus a margin), `size` its whole size."""
        found: Counter[str] = Counter()
        if self.redactor is not None and kept:
            result = self.redactor.redact(kept.decode("utf-8", "surrogateescape"))
            if result.counts:
                kept = result.text.encode("utf-8", "surrogateescape")
                found = result.counts
        truncated = size > self.max_bytes
        if truncated:
            kept = _cut(kept, self.max_bytes)
            for kind, n in found.items():  # count only the placeholders kept
                found[kind] = min(n, kept.count(PLACEHOLDER.format(kind=kind).encode()))
        counts.update({k: n for k, n in found.items() if n})
        return SealedBody(compress(kept), size, len(kept), truncated)


def _cut(data: bytes, limit: int) -> bytes:
    """The first `limit` bytes of `data`, not ending inside a placeholder."""
    head = data[:limit]
    start = head.rfind(_PLACEHOLDER_START)
    if start >= 0 and b"]" not in head[start:]:
        head = head[:start]
    return head
