"""Server-Sent Events parsing, as the WHATWG HTML standard's "interpret an event stream" defines it.

The upstream reader (:mod:`services.providers.openrouter`) feeds :class:`EventStreamParser` whatever bytes
aiohttp has buffered (``StreamReader.readany``), cut anywhere: the parser splits lines and assembles events in
one pass over each piece. The reason this is not a library is given in that module's docstring: no maintained
SSE parser on PyPI fits an aiohttp POST stream. The parser is tested against the standard's own examples, its
edge cases and every way of cutting a stream into pieces in ``tests/providers/test_sse_parser.py``.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One dispatched event: its ``data`` (lines joined with ``\\n``), type and the last event id."""

    data: str
    event: str = "message"
    id: str = ""


class LineTooLong(ValueError):
    """A line of the stream is longer than the parser's ``max_line`` bytes."""


_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")
DEFAULT_MAX_LINE = 1 << 20
"""Longest line accepted (bytes, without its line ending): a bound on what one event can make the parser buffer."""


class EventStreamParser:
    """Server-Sent Events, as the WHATWG HTML standard's "interpret an event stream" defines them.

    Feed it the bytes of a ``text/event-stream`` body in pieces cut anywhere (inside a line, between the CR and
    the LF of a CRLF, inside a UTF-8 sequence); :meth:`feed` returns the events each piece completes. It ignores
    one leading BOM, decodes UTF-8 (invalid bytes become U+FFFD), accepts ``\\n``, ``\\r\\n`` and lone ``\\r``
    line endings, ignores comment lines (``:`` first), joins multi-line ``data`` with ``\\n``, keeps the last
    event id across events, ignores unknown fields and dispatches an event on each blank line that follows at
    least one ``data`` field. A line still incomplete, and an event not yet dispatched, when the stream ends are
    discarded. A line longer than ``max_line`` bytes raises :class:`LineTooLong`.
    """

    __slots__ = ("_data", "_event", "_last_id", "_max_line", "_pending", "_skip_lf", "_started", "reconnection_time")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""  # not reset by a dispatch: it carries over to later events
        self._started = False
        self._pending = b""
        """The bytes after the last line ending seen (an incomplete line)."""
        self._skip_lf = False
        """The last piece ended with a CR: a LF starting the next one belongs to it (CRLF)."""
        self._max_line = max_line
        self.reconnection_time: int | None = None
        """The last valid ``retry`` field, in milliseconds (None until one arrives)."""

    def feed(self, piece: bytes) -> list[ServerSentEvent]:
        """The events completed by ``piece``, the next bytes of the body (usually none or one)."""
        if self._skip_lf and piece:
            self._skip_lf = False
            if piece[0] == 0x0A:
                piece = piece[1:]
        buffer = self._pending + piece if self._pending else piece
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._pending = buffer  # maybe the start of a BOM: wait for more
                return []
            self._started = True
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        if b"\r" not in buffer:  # the usual case: LF line endings
            end = buffer.rfind(b"\n")
            if end < 0:
                self._keep(buffer)
                return []
            self._keep(buffer[end + 1 :])
            complete = buffer[:end]
            if len(complete) > self._max_line:
                self._check(complete)
            lines = complete.decode("utf-8", "replace").split("\n")
        else:
            end = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))  # >= 0: there is a CR
            self._keep(buffer[end + 1 :])
            self._skip_lf = buffer[end] == 0x0D and end == len(buffer) - 1
            complete = buffer[: end + 1]
            if len(complete) > self._max_line:
                self._check(complete)
            lines = _LINE_END.split(complete.decode("utf-8", "replace"))
            lines.pop()  # the empty string after the last line ending
        events: list[ServerSentEvent] = []
        for line in lines:
            if line[:5] == "data:":
                value = line[5:]
                self._data.append(value[1:] if value[:1] == " " else value)
            elif not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            else:
                self.line(line)
        return events

    def _keep(self, rest: bytes) -> None:
        if len(rest) > self._max_line:
            raise LineTooLong(f"a line longer than {self._max_line} bytes")
        self._pending = rest

    def _check(self, complete: bytes) -> None:
        if any(len(line) > self._max_line for line in _LINE_END_BYTES.split(complete)):
            raise LineTooLong(f"a line longer than {self._max_line} bytes")

    def line(self, line: str) -> ServerSentEvent | None:
        """Process one line (without its line ending); returns the event a blank line dispatches."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.reconnection_time = int(value)
        # any other field is ignored
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data = self._data
        if not data:
            self._event = ""
            return None
        event = ServerSentEvent(data[0] if len(data) == 1 else "\n".join(data), self._event or "message", self._last_id)
        self._data = []
        self._event = ""
        return event
