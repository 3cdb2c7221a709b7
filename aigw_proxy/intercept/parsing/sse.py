"""Incremental Server-Sent Events framing (WHATWG EventSource rules), shared by every streaming API parser.

Chunk boundaries are arbitrary: bytes are buffered until a blank line ends an event. Both LF and CRLF (and lone
CR) line endings are accepted. Bytes that are not UTF-8 are replaced, never raised. Memory and time stay bounded
whatever upstream sends: a line or an event longer than `MAX_EVENT` is dropped and counted (`overlong`), and a long
line arriving in many chunks is joined once, when it ends, not copied again with each chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aigw_proxy.recording.records import ResponseFacts

# One event (a line, or an event's data lines together) larger than this is dropped and counted as malformed, so
# memory stays bounded whatever upstream sends. The JSON-array transport uses the same bound for an element.
MAX_EVENT = 16 * 1024 * 1024


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Feed bytes, get complete events. `close()` flushes an event left without its final blank line."""

    __slots__ = ("_buf", "_data", "_data_size", "_discarding", "_event", "_has_data", "_held", "_parts", "_skipping",
                 "max_event", "overlong")

    def __init__(self, max_event: int = MAX_EVENT) -> None:
        self.max_event = max_event
        self.overlong = 0  # lines or events dropped for outgrowing max_event
        self._buf = b""  # the start of an unfinished line
        self._parts: list[bytes] = []  # chunks that continued it without ending it (joined once, when it ends)
        self._held = 0  # bytes in _buf and _parts
        self._skipping = False  # inside an overlong line: its bytes are dropped up to its end
        self._discarding = False  # inside an event being dropped: its lines are read up to its end, not kept
        self._event: str | None = None
        self._data: list[str] = []
        self._data_size = 0  # characters in _data (bounded by max_event like a line)
        self._has_data = False

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        if not chunk:
            return
        if b"\n" not in chunk and b"\r" not in chunk:
            self._hold(chunk)  # the line goes on
            return
        if self._skipping:
            nl = _next_line_end(chunk, 0)
            assert nl is not None  # the chunk holds a line end
            self._skipping = False
            chunk = chunk[nl[1]:]
            if not chunk:
                return
        if self._parts:
            buf = b"".join([self._buf, *self._parts, chunk])
            self._parts = []
        else:
            buf = self._buf + chunk if self._buf else chunk
        data_before, lines_before = self._data, len(self._data)
        if b"\r" not in buf:  # LF line endings only, as every provider sends: whole lines at once
            yield from self._feed_lf(buf)
        else:
            yield from self._feed_any(buf)
        self._held = len(self._buf)
        # An event whose data lines go on past this chunk: add up only the lines this chunk brought (linear in
        # the stream, however many chunks the event spans).
        data = self._data
        if not data:
            self._data_size = 0
        elif data is data_before:
            self._data_size += sum(map(len, data[lines_before:]))
        else:
            self._data_size = sum(map(len, data))
        if self._held > self.max_event:
            self._drop_overlong()
        elif self._data_size > self.max_event:
            self._drop_overlong(skip_line=False)
        elif self._discarding and data:
            data.clear()  # the rest of a dropped event's lines: read to find its end, never kept
            self._data_size = 0

    def _hold(self, chunk: bytes) -> None:
        if self._skipping:
            return
        self._held += len(chunk)
        if self._held > self.max_event:
            self._drop_overlong()
        elif self._buf:
            self._parts.append(chunk)
        else:
            self._buf = chunk

    def _drop_overlong(self, skip_line: bool = True) -> None:
        """Drop the event being read (a line of it, or its data lines so far, outgrew max_event): its unfinished
        line is skipped up to its end, and its remaining lines up to the blank line that ends it."""
        if not self._discarding:
            self.overlong += 1
            self._discarding = True
        if skip_line:
            self._buf, self._parts, self._held, self._skipping = b"", [], 0, True
        self._data.clear()
        self._data_size = 0

    def _drop_event(self, ev: SSEEvent) -> None:
        """An event ended that is dropped: outgrown while read (already counted), or longer than max_event."""
        if not self._discarding:
            self.overlong += 1
        self._discarding = False
        self._data_size = 0

    def _feed_any(self, buf: bytes) -> Iterator[SSEEvent]:
        """`feed` for a buffer with CR line ends (CRLF or lone CR), line by line."""
        start = 0
        n = len(buf)
        while start < n:
            nl = _next_line_end(buf, start)
            if nl is None:
                break
            end, after = nl
            if buf[end:end + 1] == b"\r" and after == n:
                # A CR at the very end may be the first half of CRLF: wait for the next byte.
                break
            line = buf[start:end]
            start = after
            ev = self._line(line)
            if ev is not None:
                yield ev
        self._buf = buf[start:]

    def _feed_lf(self, buf: bytes) -> Iterator[SSEEvent]:
        """`feed` for a buffer without CR: the same rules as `_line`, inlined (this runs for every relayed event)."""
        last = buf.rfind(b"\n")
        if last < 0:
            self._buf = buf
            return
        self._buf = buf[last + 1:]
        event, data, has_data = self._event, self._data, self._has_data
        limit = self.max_event
        for raw in buf[:last].split(b"\n"):
            if not raw:
                if not has_data and event is None:
                    continue
                ev = SSEEvent(event, "\n".join(data))
                event, data, has_data = None, [], False
                if self._discarding or len(ev.data) > limit:
                    self._drop_event(ev)
                    continue
                if ev.data or ev.event:
                    self._event, self._data, self._has_data = event, data, has_data
                    yield ev
                continue
            if raw.startswith(b"data:"):  # the common field first; the same as _line's partition
                value = raw[5:].decode("utf-8", "replace")
                data.append(value[1:] if value.startswith(" ") else value)
                has_data = True
                continue
            line = raw.decode("utf-8", "replace")
            if line.startswith(":"):
                continue
            name, sep, value = line.partition(":")
            if sep and value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
                has_data = True
            elif name == "event":
                event = value
        self._event, self._data, self._has_data = event, data, has_data

    def close(self) -> Iterator[SSEEvent]:
        if self._parts:
            self._buf = b"".join([self._buf, *self._parts])
            self._parts = []
        if self._buf:
            ev = self._line(self._buf.rstrip(b"\r"))
            self._buf = b""
            if ev is not None:
                yield ev
        ev = self._line(b"")
        if ev is not None:
            yield ev

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            if not self._has_data and self._event is None:
                return None
            ev = SSEEvent(self._event, "\n".join(self._data))
            self._event, self._data, self._has_data = None, [], False
            if self._discarding or len(ev.data) > self.max_event:
                self._drop_event(ev)
                return None
            return ev if ev.data or ev.event else None
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        return None


def _next_line_end(buf: bytes, start: int) -> tuple[int, int] | None:
    """(end of line, start of next line) for the first line ending at or after `start`."""
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start)
    if cr < 0 and lf < 0:
        return None
    if cr < 0 or (0 <= lf < cr):
        return lf, lf + 1
    if cr + 1 < len(buf) and buf[cr + 1:cr + 2] == b"\n":
        return cr, cr + 2
    return cr, cr + 1


class EventAccumulator(Protocol):
    """One provider API's streaming state: JSON events in, facts out. Used by SSE and WebSocket transports."""

    def on_event(self, event: dict) -> None: ...

    def result(self) -> ResponseFacts: ...

    # Optional: `on_done()` is called on Chat Completions' `data: [DONE]`; `ignores(event_name, data) -> bool`
    # lets an accumulator skip events it never uses (streamed answer text, most of a stream) without decoding
    # their JSON.


class EventStreamParser:
    """What every streamed-body parser shares: JSON events go to an API's accumulator, whose failures (like
    malformed events) are counted, never raised into the proxy. A transport subclass frames the bytes."""

    __slots__ = ("_acc", "_malformed")

    def __init__(self, accumulator: EventAccumulator) -> None:
        self._acc = accumulator
        self._malformed = 0

    def _facts(self, skipped: int) -> ResponseFacts:
        """The accumulator's facts, with the events it could not take and the transport's ``skipped`` counted."""
        try:
            facts = self._acc.result()
        except Exception as exc:  # a bug in an accumulator must not reach the proxy
            facts = ResponseFacts(error=f"stream parser failed: {exc!r}")
            facts.parse_errors += 1
        facts.parse_errors += self._malformed + skipped
        return facts

    def snapshot(self) -> ResponseFacts | None:
        """What the events so far say, the stream going on (partial usage is stored as it is seen); None if the
        accumulator fails."""
        try:
            return self._acc.result()
        except Exception:
            return None

    def _deliver(self, obj: dict) -> None:
        try:
            self._acc.on_event(obj)
        except Exception:
            self._malformed += 1


class SSEStreamParser(EventStreamParser):
    """Glue: SSE bytes → JSON events → an API's accumulator. Never raises into the proxy."""

    __slots__ = ("_decoder", "_ignores")

    def __init__(self, accumulator: EventAccumulator) -> None:
        super().__init__(accumulator)
        self._decoder = SSEDecoder()
        self._ignores = getattr(accumulator, "ignores", None)

    def feed(self, chunk: bytes) -> None:
        for ev in self._decoder.feed(chunk):
            self._dispatch(ev)

    def finish(self) -> ResponseFacts:
        for ev in self._decoder.close():
            self._dispatch(ev)
        return self._facts(self._decoder.overlong)

    def _dispatch(self, ev: SSEEvent) -> None:
        data = ev.data.strip()
        if not data:
            return
        if data == "[DONE]":
            # Chat Completions' end-of-stream marker: not JSON, but it tells the accumulator the stream ended.
            on_done = getattr(self._acc, "on_done", None)
            if on_done is not None:
                try:
                    on_done()
                except Exception:
                    self._malformed += 1
            return
        if self._ignores is not None and self._ignores(ev.event, data):
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            self._malformed += 1
            return
        if not isinstance(obj, dict):
            self._malformed += 1
            return
        if ev.event and "type" not in obj:
            obj["type"] = ev.event
        self._deliver(obj)
