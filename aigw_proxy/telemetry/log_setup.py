"""Logging for the daemon: every log line goes to stderr as text or as one JSON object, with secrets masked.

Lines are formatted and written by a background thread (a QueueHandler in front of the stream handler): a slow
or blocked stderr, or a large structured record, never holds up the event loop that relays traffic.

Masking is defence in depth: nothing should log a credential in the first place, and records are redacted
before they are logged, but every string that reaches a line, structured fields included, goes through the same
redaction engine as the records (`aigw_proxy.redaction.engine`): provider keys, cloud and VCS tokens, this
proxy's tokens (`aigw_…`), Bearer and Basic credentials, credential headers' values, private keys, `password=`
assignments and the config file's extra patterns become `[REDACTED:<kind>]`.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import TYPE_CHECKING, Any, Final

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from aigw_proxy.redaction.engine import Redactor

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_redactor: Redactor | None = None


def set_redactor(redactor: Redactor) -> None:
    """Mask log lines with `redactor` (the daemon's, with the config file's extra patterns and allow-list)."""
    global _redactor
    _redactor = redactor


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by `[REDACTED:<kind>]`."""
    global _redactor
    if _redactor is None:
        from aigw_proxy.redaction.engine import Redactor

        _redactor = Redactor()
    return _redactor.redact(text).text


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

