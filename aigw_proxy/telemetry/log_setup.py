"""Logging for the daemon: every log line goes to stderr as text or as one JSON object, with secrets masked.

Lines are formatted and written by a background thread (a QueueHandler in front of the stream handler): a slow
or blocked stderr, or a large structured record, never holds up the event loop that relays traffic.

Masking is defence in depth: nothing should log a credential in the first place, but anything that looks like a
provider key (`sk-…`, `sk-ant-…`), a proxy token (`aigw_…`), a Bearer value, Basic credentials or a credential
header's value is replaced by `***` in every string that reaches a line, structured fields included.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import copy
import json
import logging
import queue
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Final

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK: Final = "***"

def _keep_group(name: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(name) + MASK


def _mask_basic(m: re.Match[str]) -> str:
    # Only real credentials, `Basic base64(user:secret)`: "Basic setup" stays readable.
    try:
        decoded = base64.b64decode(m.group("b64"), validate=True)
    except (binascii.Error, ValueError):
        return m.group(0)
    return m.group("scheme") + MASK if b":" in decoded else m.group(0)


# (lower-case markers, pattern, replacement), applied in this order. A pattern only runs when one of its markers
# is in the text: the check is a plain substring search, so a long prompt without any costs well under a ms.
_FAMILIES: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], Callable[[re.Match[str]], str]], ...]] = (
    # A credential header's value, whatever its shape: `authorization: …`, `"x-api-key": "…"`, `api_key=…`.
    (("authorization", "api-key", "api_key"), re.compile(
        r"(?P<head>(?:\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]key)[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:bearer|basic)\s+)?)[^\s\"',;}]+", re.IGNORECASE), _keep_group("head")),
    # An Authorization scheme followed by something credential-sized (prose such as "Bearer of" is left alone).
    (("bearer",), re.compile(r"(?P<scheme>\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*", re.IGNORECASE),
     _keep_group("scheme")),
    (("basic",), re.compile(r"(?P<scheme>\bbasic\s+)(?P<b64>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])",
                            re.IGNORECASE), _mask_basic),
    # Known key and token shapes.
    (("sk-", "aigw_"), re.compile(r"(?<![A-Za-z0-9])(?P<prefix>sk-ant-|sk-(?:proj-|svcacct-|admin-)?|aigw_)"
                                  r"[A-Za-z0-9_-]{12,}"), _keep_group("prefix")),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by `***` (the key prefix or scheme is kept)."""
    lowered = text.lower()
    for markers, pattern, replace in _FAMILIES:
        if any(m in lowered for m in markers):
            text = pattern.sub(replace, text)
    return text


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


_STANDARD_ATTRS: Final = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields passed with `extra=` (everything that is not a standard LogRecord attribute)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then the structured fields (if any) as compact JSON; secrets masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = redact(super().formatMessage(record))
        fields = extra_fields(record)
        if fields:
            line += " " + json.dumps(redact_value(fields), default=str, ensure_ascii=False, separators=(",", ":"))
        return line

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        # exc_text may come pre-formatted from the queue (see _Enqueue): mask it too.
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return super().format(record)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: `time` (RFC 3339, UTC), `level`, `logger`, `message`, then the structured fields."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_default=str,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Mask the values, not the serialized line: inside JSON a newline is `\n` and would hide a key's start.
        return redact_value(log_data)


class _Enqueue(QueueHandler):
    """Hand the record to the writer thread with its message and traceback already rendered (args and
    tracebacks may reference objects that change or die once this call returns)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.message = record.getMessage()
        record.msg, record.args = record.message, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return JsonLineFormatter() if log_format == "json" else TextFormatter()


_listener: QueueListener | None = None


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send every log record to stderr in `log_format` from a background writer thread (flushed at exit)."""
    global _listener
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    if _listener is not None:  # configured before: replace, do not duplicate lines
        _listener.stop()
        for h in [h for h in root.handlers if isinstance(h, _Enqueue)]:
            root.removeHandler(h)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(records, stream)
    _listener.start()
    atexit.register(_listener.stop)
    root.addHandler(_Enqueue(records))
    root.setLevel(level.upper())
    logging.getLogger("mitmproxy").setLevel(max(logging.WARNING, root.level))

