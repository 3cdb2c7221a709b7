"""What the record writer reports once an event is committed: the facts it resolved on the way (thread lineage,
session id, error type), which the event alone does not carry. Logs, spans and metrics read them from here, so
they show what was stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aigw_proxy.recording.records import RecordEvent


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What the writer resolved for a committed event (given to listeners).

    Starts: the thread lineage and session id. Ends: the same (from the start) plus the derived error type.
    """

    thread_parent_id: str | None = None
    thread_root_id: str | None = None
    session_id: str | None = None
    error_type: str | None = None


# Called by the writer after each committed event (`RecordWriter.add_listener`).
CommitListener = Callable[[RecordEvent, CommitInfo], None]
