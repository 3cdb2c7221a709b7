"""Incremental splitting of a streamed JSON array (`[{…}\\n,{…}\\n]`) into its elements, for APIs that stream a JSON
array instead of SSE (Gemini's `:streamGenerateContent` without `alt=sse`).

Chunk boundaries are arbitrary: the splitter only tracks string and nesting state, and hands on each element's bytes
once the element is complete. A body that is one JSON object instead of an array (an error reply) is handed on as
its single element. Scanning UTF-8 byte by byte is safe: no multi-byte sequence contains an ASCII byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from aigw_proxy.intercept.parsing.jsonwalk import loads_object
from aigw_proxy.intercept.parsing.sse import MAX_EVENT, EventAccumulator, EventStreamParser
from aigw_proxy.recording.records import ResponseFacts

# One element larger than this is skipped (counted as malformed), so memory stays bounded whatever upstream sends.
MAX_ELEMENT = MAX_EVENT

# Inside an object or array: everything up to the next bracket, complete strings included, in one match (a bracket
# costs a Python step, a string does not). Possessive quantifiers: no backtracking, whatever the input.
_SKIP = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
# The rest of a string: to its closing quote, or to the end of the bytes so far (perhaps ending in a backslash).
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+(?:(?P<closed>")|(?P<escape>\\)?\Z)', re.DOTALL)
# JSON's whitespace is exactly these four bytes; `\s` would also stop a scalar at \f or \v, which the between-elements
# state does not skip: an empty scalar there, again and again, for ever.
_WHITESPACE = b" \t\r\n"
_SCALAR_END = re.compile(rb"[,\] \t\r\n]")
_OPENERS = b"{["
_BOM = b"\xef\xbb\xbf"

# States.
_BEFORE = 0  # nothing but whitespace yet
_BETWEEN = 1  # inside the top-level array, between elements
_ELEMENT = 2  # inside an element
_DONE = 3  # the array (or the single top-level object) is closed: the rest is ignored
_BROKEN = 4  # the body is not a JSON array or object: nothing more is read


class JSONArraySplitter:
    """Feed bytes, get each complete top-level element as bytes. Never raises; `malformed` counts what it skipped."""

    __slots__ = ("_buf", "_depth", "_escape", "_in_string", "_oversize", "_pos", "_scalar", "_single", "_start",
                 "_state", "malformed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where scanning resumes in _buf
        self._start = 0  # where the current element starts in _buf
        self._state = _BEFORE
        self._depth = 0
        self._in_string = False
        self._escape = False  # the previous byte was a backslash inside a string
        self._scalar = False  # the current element is a number, true, false or null
        self._single = False  # the body is a lone object, not an array
        self._oversize = False  # the current element outgrew MAX_ELEMENT: its bytes are dropped
        self.malformed = 0

    @property
    def complete(self) -> bool:
        """The closing bracket (or the end of a lone object) arrived."""
        return self._state == _DONE

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if not chunk or self._state in (_DONE, _BROKEN):
            return
        self._buf += chunk
        yield from self._scan()
        self._compact()

    def _scan(self) -> Iterator[bytes]:
        buf, n = self._buf, len(self._buf)
        while self._pos < n and self._state not in (_DONE, _BROKEN):
            if self._state == _ELEMENT:
                end = self._scan_element(buf, n)
                if end is None:
                    return
                element = self._finish_element(end)
                if element is not None:
                    yield element
            elif not self._between(buf):
                return

    def _between(self, buf: bytearray) -> bool:
        """Outside any element: whitespace, commas, the array's brackets, or the first byte of an element.
        False when more bytes are needed first."""
        pos = self._pos
        c = buf[pos]
        if c in _WHITESPACE:
            self._pos = pos + 1
        elif self._state == _BEFORE:
            head = bytes(buf[pos:pos + len(_BOM)])
            if head == _BOM:
                self._pos = pos + len(_BOM)
            elif _BOM.startswith(head):  # the start of a byte order mark: wait for the rest
                return False
            elif c == ord("["):
                self._state, self._pos = _BETWEEN, pos + 1
            elif c == ord("{"):
                self._single = True
                self._start_element(pos)
            else:
                self._state = _BROKEN
                self.malformed += 1
        elif c == ord(","):
            self._pos = pos + 1
        elif c == ord("]"):
            self._state, self._pos = _DONE, pos + 1
        else:
            self._start_element(pos)
        return True

    def _start_element(self, pos: int) -> None:
        c = self._buf[pos]
        self._state, self._start, self._oversize = _ELEMENT, pos, False
        self._depth = 1 if c in _OPENERS else 0
        self._in_string = c == ord('"')
        self._scalar = not self._depth and not self._in_string
        self._pos = pos if self._scalar else pos + 1

    def _scan_element(self, buf: bytearray, n: int) -> int | None:
        """Advance through the current element; its end offset once it is complete, else None (needs more)."""
        pos = self._pos
        while pos < n:
            if self._scalar:
                m = _SCALAR_END.search(buf, pos)
                if m is None:
                    break
                return m.start()
            if self._in_string:
                if self._escape:  # the chunk before ended in a backslash: this byte is escaped
                    self._escape, pos = False, pos + 1
                    continue
                m = _STRING_REST.match(buf, pos)
                if m is None or m["closed"] is None:  # (it always matches)
                    self._escape = m is not None and m["escape"] is not None
                    break
                pos, self._in_string = m.end(), False
                if self._depth == 0:  # a string element
                    return pos
                continue
            m = _SKIP.match(buf, pos)
            pos = m.end() if m else pos
            if pos >= n:
                break
            c = buf[pos]
            pos += 1
            if c == ord('"'):  # a string the bytes so far end in
                self._in_string = True
            elif c in _OPENERS:
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return pos
        self._pos = n
        return None

    def _finish_element(self, end: int) -> bytes | None:
        element = None if self._oversize else bytes(self._buf[self._start:end])
        if self._oversize:
            self.malformed += 1
        self._pos = end
        self._state = _DONE if self._single else _BETWEEN
        return element

    def _compact(self) -> None:
        """Drop the bytes already handed on; an element outgrowing MAX_ELEMENT keeps only its scan state."""
        keep_from = self._start if self._state == _ELEMENT else self._pos
        if self._state == _ELEMENT and self._pos - self._start > MAX_ELEMENT:
            self._oversize = True
            keep_from = self._pos
        if keep_from:
            del self._buf[:keep_from]
            self._pos -= keep_from
            self._start = max(self._start - keep_from, 0)


class JSONArrayStreamParser(EventStreamParser):
    """Glue: a streamed JSON array → JSON objects → an API's accumulator. Never raises into the proxy."""

    __slots__ = ("_splitter",)

    def __init__(self, accumulator: EventAccumulator) -> None:
        super().__init__(accumulator)
        self._splitter = JSONArraySplitter()

    def feed(self, chunk: bytes) -> None:
        for element in self._splitter.feed(chunk):
            self._dispatch(element)

    def finish(self) -> ResponseFacts:
        return self._facts(self._splitter.malformed)

    def _dispatch(self, element: bytes) -> None:
        obj, _why = loads_object(element)
        if obj is None:
            self._malformed += 1
            return
        self._deliver(obj)
