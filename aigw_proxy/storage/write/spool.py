"""The writer's spool: record events the database could not take yet, in an append-only file beside it.

While the database fails (locked for long, disk full, gone, not a database any more) the writer appends its
backlog here in submission order, one JSON object per line, and fsyncs each append, so the events survive the
proxy being killed or restarted; it replays them in the same order once the database takes writes again (on the
next start, too, before anything new) and deletes the file when all are written. Replaying the same events twice
(a crash during a replay) is harmless: starts already stored are skipped, ends and usage updates are idempotent.

Bounded by `max_bytes`: an append that would pass it is refused (`SpoolFull`) and the writer keeps those events
in memory, within its queue's bound. The file is private (0600): it holds prompts like the database does.

Blocking file I/O (`load`, `append`, `read`, `clear`): the writer calls them through `asyncio.to_thread`, one call
at a time.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from aigw_proxy.capture.raw import CaptureRecord
from aigw_proxy.capture.stored import SealedBody, SealedCapture
from aigw_proxy.recording.records import (
    Initiator,
    InterceptionEnded,
    InterceptionStarted,
    InterceptionUsage,
    ModelThought,
    RecordEvent,
    TokenUsage,
    ToolCall,
)

log = logging.getLogger("aigw_proxy.storage")

FORMAT: Final = 1
_KINDS: Final = {InterceptionStarted: "started", InterceptionEnded: "ended", InterceptionUsage: "usage",
                 CaptureRecord: "capture"}
SpooledEvent = RecordEvent | CaptureRecord


class SpoolFull(Exception):
    """The append would take the spool past its size bound."""


def encode(event: SpooledEvent) -> bytes:
    """One spool line (with its newline). A raw capture is sealed first (redacted, compressed): no unredacted
    body reaches the disk."""
    if isinstance(event, CaptureRecord):
        fields: dict[str, Any] = {"id": event.id, "started_at": _plain(event.started_at),
                                  "sealed": _plain(event.seal())}
    else:
        fields = _plain(event)
    body = {"v": FORMAT, "kind": _KINDS[type(event)], **fields}
    # Metadata values json cannot encode are stored as their str(), as the database does.
    return json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _plain(value: Any) -> Any:
    """Dataclasses to dicts and datetimes to tagged strings, recursively."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
        if len(value) == 1 and "$b64" in value:
            return base64.b64decode(value["$b64"])
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def decode(line: bytes) -> SpooledEvent:
    """The event of one spool line; ValueError if it is not one."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.pop("v", None) != FORMAT:
        raise ValueError("not a spool record of this format")
    body = _revive(raw)
    kind = body.pop("kind", None)
    try:
        if kind == "started":
            body["initiator"] = Initiator(**body["initiator"])
            return InterceptionStarted(**body)
        if kind == "ended":
            body["token_usages"] = [TokenUsage(**u) for u in body.get("token_usages", [])]
            body["tool_calls"] = [ToolCall(**t) for t in body.get("tool_calls", [])]
            body["thoughts"] = [ModelThought(**t) for t in body.get("thoughts", [])]
            return InterceptionEnded(**body)
        if kind == "usage":
            body["token_usages"] = [TokenUsage(**u) for u in body.get("token_usages", [])]
            return InterceptionUsage(**body)
        if kind == "capture":
            sealed = body["sealed"]
            sealed["request"] = SealedBody(**sealed["request"])
            sealed["response"] = SealedBody(**sealed["response"])
            return CaptureRecord(body["id"], body["started_at"], sealed=SealedCapture(**sealed))
    except (TypeError, KeyError) as exc:
        raise ValueError(f"bad {kind} record: {exc}") from None
    raise ValueError(f"unknown record kind {kind!r}")


@dataclass(slots=True)
class Chunk:
    events: list[SpooledEvent]
    end: int  # file offset after them: `advance(end)` once they are written
    lines: int  # lines read (events plus unreadable lines skipped)


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0  # bytes in the file
        self.pending = 0  # events in the file after the read offset (not written to the database yet)
        self.corrupt = 0  # lines skipped as unreadable
        self._offset = 0  # where the next read starts

    @property
    def bytes_pending(self) -> int:
        return self.size - self._offset

    def load(self) -> int:
        """Take over a spool left by an earlier run; return its event count. A last line cut off by a crash
        mid-append is truncated away."""
        try:
            with self.path.open("rb+") as f:
                data = f.read()
                cut = data.rfind(b"\n") + 1
                if cut < len(data):
                    log.warning("spool %s: dropping an incomplete last record (%d bytes)", self.path, len(data) - cut)
                    f.truncate(cut)
                    os.fsync(f.fileno())
        except FileNotFoundError:
            return 0
        self.size, self._offset = cut, 0
        self.pending = data[:cut].count(b"\n")
        return self.pending

    def append(self, events: list[SpooledEvent]) -> None:
        """Append (and fsync) all of `events` or none: OSError (disk full, …) or SpoolFull leaves the file as it
        was."""
        data = b"".join(encode(e) for e in events)
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"spool {self.path} would pass its bound of {self.max_bytes} bytes")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, self.size)  # no partial record left behind (best effort)
                raise
        finally:
            os.close(fd)
        self.size += len(data)
        self.pending += len(events)

    def read(self, limit: int) -> Chunk:
        """Up to `limit` events from the read offset (unreadable lines are skipped and counted)."""
        events: list[SpooledEvent] = []
        lines = 0
        end = self._offset
        with self.path.open("rb") as f:
            f.seek(self._offset)
            while len(events) < limit and end < self.size:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                lines += 1
                try:
                    events.append(decode(line))
                except ValueError as exc:
                    self.corrupt += 1
                    log.error("spool %s: skipping an unreadable record at byte %d: %s", self.path, end - len(line), exc)
        return Chunk(events, end, lines)

    def advance(self, chunk: Chunk) -> bool:
        """The events of `chunk` are in the database: the next read starts after them (no I/O). True when the
        whole file is written: `clear()` it."""
        self._offset = chunk.end
        self.pending -= chunk.lines
        return self._offset >= self.size

    def clear(self) -> None:
        """Delete the file (all of it written). If it cannot be deleted, it stays, all read: appends go after."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot delete the record spool %s (%s); its records are all written", self.path, exc)
            self._offset, self.pending = self.size, 0
            return
        self.size = self._offset = self.pending = 0
