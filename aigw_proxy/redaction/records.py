"""What a record may keep: every recorded text field capped in size and redacted of secrets, before any consumer
sees the record.

Applied once per record event, where the interceptions hand their events to the recorder (`RecordPolicy.wrap`
around the recorder's `submit`), so the database, the structured logs, the spans and the metrics all get the same
redacted, capped form. It runs on the proxy's event loop, after the response has been relayed: the cap bounds
the work to a few milliseconds for a field at the 256 KiB default (`bench/redaction_bench.py`), and keeping it
in line keeps the records' order without a hand-off to another thread, which would not run Python regexes in
parallel anyway.

Fields: the prompt, each tool call's input, each thought and the error text. The request and response relayed
are never touched.

- Cap: a field longer than `max_field_bytes` (UTF-8) keeps its first part followed by
  `…[truncated: N bytes]`; `metadata.truncated` maps the field to its original size in bytes.
- Redaction: each secret becomes `[REDACTED:<kind>]`; `metadata.redactions` counts them per kind over the record,
  and so does the `aigw_proxy_redactions_total{kind}` metric. A secret cut in two by the cap is still found: the
  field is redacted a little beyond the cut before it is cut.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aigw_proxy.recording.records import InterceptionEnded, InterceptionUsage, RecordEvent

if TYPE_CHECKING:
    from aigw_proxy.redaction.engine import Redactor, Rule

DEFAULT_MAX_FIELD_BYTES = 256 * 1024
MIN_MAX_FIELD_BYTES = 1024
TRUNCATION_MARKER = "…[truncated: {size} bytes]"
# How far past the cut a capped field is redacted, so that a secret straddling the cut is recognised whole (a
# 4096-bit RSA key in PEM is ~3.3 KB).
REDACT_MARGIN = 8 * 1024
_PLACEHOLDER_START = "[REDACTED:"
# Starts whose prompt is kept for their end (calls in flight), and the longest prompt kept: a prompt longer than
# that is cleaned again at the end rather than held here too.
_STARTED_CAP = 4096
_STARTED_MAX_CHARS = 8192


@dataclass(slots=True)
class RedactionConfig:
    """`[redaction]` in the config file, with `--redaction` / `--max-field-bytes` applied by Settings."""

    mode: str = "redact"  # off | redact | block
    max_field_bytes: int | None = None  # None: DEFAULT_MAX_FIELD_BYTES
    patterns: tuple[Rule, ...] = ()  # extra rules ([[redaction.patterns]])
    allow: tuple[re.Pattern[str], ...] = ()  # secrets matching one of these are kept


Submit = Callable[[RecordEvent], object]


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _cut(text: str, limit: int) -> str:
    """The longest prefix of `text` of at most `limit` UTF-8 bytes that does not end inside a placeholder."""
    if text.isascii():
        head = text[:limit]
    else:
        head = text[:limit].encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")
    start = head.rfind(_PLACEHOLDER_START)
    if start >= 0 and "]" not in head[start:]:
        head = head[:start]
    return head


class RecordPolicy:
    """Cap and redact the text fields of record events. `redactor` None: caps only (`--redaction off`)."""

    def __init__(self, redactor: Redactor | None, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
                 on_redactions: Callable[[Counter[str]], None] | None = None) -> None:
        self.redactor = redactor
        self.max_field_bytes = max_field_bytes
        self.on_redactions = on_redactions
        # The prompt of each start, as it was cleaned, until its end (which carries the same prompt, cleaned once
        # instead of twice): interception id → (prompt, cleaned, its counts, its original size when capped). Ends
        # always come; bounded anyway.
        self._started: dict[str, tuple[str, str, Counter[str], int | None]] = {}

    @classmethod
    def from_config(cls, cfg: RedactionConfig,
                    on_redactions: Callable[[Counter[str]], None] | None = None) -> RecordPolicy:
        redactor = None
        if cfg.mode != "off":
            from aigw_proxy.redaction.engine import Redactor

            redactor = Redactor(cfg.patterns, cfg.allow)
        return cls(redactor, cfg.max_field_bytes or DEFAULT_MAX_FIELD_BYTES, on_redactions)

    def wrap(self, submit: Submit) -> Submit:
        """`submit` that hands on each event once this policy has applied to it."""

        def submit_applied(event: RecordEvent) -> object:
            return submit(self.apply(event))

        return submit_applied

    def apply(self, event: RecordEvent) -> RecordEvent:
        """Cap and redact `event`'s text fields in place; returns it."""
        if isinstance(event, InterceptionUsage):  # figures only: nothing to redact
            return event
        counts: Counter[str] = Counter()
        truncated: dict[str, int] = {}

        def clean(value: str | None, name: str) -> str | None:
            return self.text(value, name, counts, truncated) if value else value

        if isinstance(event, InterceptionEnded):
            event.prompt = self._end_prompt(event.id, event.prompt, counts, truncated)
            event.error = clean(event.error, "error")
            for i, call in enumerate(event.tool_calls):
                call.input = clean(call.input, f"tool_calls[{i}].input") or call.input
            for i, thought in enumerate(event.thoughts):
                thought.content = clean(thought.content, f"thoughts[{i}]") or thought.content
        elif isinstance(prompt := getattr(event, "prompt", None), str):  # a start record that carries the prompt
            cleaned = clean(prompt, "prompt")
            object.__setattr__(event, "prompt", cleaned)
            if cleaned and len(prompt) <= _STARTED_MAX_CHARS:
                if len(self._started) >= _STARTED_CAP:
                    del self._started[next(iter(self._started))]
                self._started[event.id] = (prompt, cleaned, +counts, truncated.get("prompt"))
        if counts or truncated:
            metadata: dict[str, Any] = event.metadata
            if counts:
                metadata["redactions"] = dict(sorted(counts.items()))
                if self.on_redactions is not None:
                    self.on_redactions(counts)
            if truncated:  # beside what the interception noted there (bodies too large to parse)
                metadata["truncated"] = {**(metadata.get("truncated") or {}), **truncated}
        return event

    def _end_prompt(self, interception_id: str, prompt: str | None, counts: Counter[str],
                    truncated: dict[str, int]) -> str | None:
        """The end's prompt cleaned: as its start's was, when it is the same text (counted again, as it is the
        end record's too), else cleaned here."""
        started = self._started.pop(interception_id, None)
        if not prompt:
            return prompt
        if started is not None and started[0] == prompt:
            _raw, cleaned, found, size = started
            counts.update(found)
            if size is not None:
                truncated["prompt"] = size
            return cleaned
        return self.text(prompt, "prompt", counts, truncated)

    def text(self, value: str, name: str, counts: Counter[str], truncated: dict[str, int]) -> str:
        """One field: capped (its original size noted in `truncated[name]`), then redacted (counted)."""
        limit = self.max_field_bytes
        size = len(value) if len(value) * 4 <= limit else utf8_size(value)
        if size <= limit:
            text, found = self._redact(value)
            counts.update(found)
            return text
        # Redact a little beyond the cut first, so that a secret across the cut is replaced whole; count only
        # the placeholders that are kept.
        head, found = self._redact(value[: limit + REDACT_MARGIN])
        kept = _cut(head, limit)
        for kind, n in found.items():
            if kept_n := min(n, kept.count(f"{_PLACEHOLDER_START}{kind}]")):
                counts[kind] += kept_n
        truncated[name] = size
        return kept + TRUNCATION_MARKER.format(size=size)

    def _redact(self, value: str) -> tuple[str, Counter[str]]:
        if self.redactor is None:
            return value, Counter()
        result = self.redactor.redact(value)
        return result.text, result.counts
