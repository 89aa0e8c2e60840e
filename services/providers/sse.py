"""Server-Sent Events parsing, as the WHATWG HTML standard's "interpret an event stream" defines it.

The upstream reader (:mod:`services.providers.openrouter`) lets aiohttp split the body into lines
(``StreamReader.readline``) and feeds them here. The reason this is not a library is given in that
module's docstring: no maintained SSE parser on PyPI fits an aiohttp POST stream. The parser is tested
against the standard's own examples and its edge cases in ``tests/providers/test_sse_parser.py``.
"""

from __future__ import annotations

from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One dispatched event: its ``data`` (lines joined with ``\\n``), type and the last event id."""

    data: str
    event: str = "message"
    id: str = ""


_BOM = b"\xef\xbb\xbf"
_NO_EVENTS: tuple[ServerSentEvent, ...] = ()


class EventStreamParser:
    """Server-Sent Events, as the WHATWG HTML standard's "interpret an event stream" defines them.

    Feed it the byte lines of a ``text/event-stream`` body as ``aiohttp.StreamReader.readline``
    returns them (each ending with ``\\n``, the last one possibly without). It ignores one leading
    BOM, decodes UTF-8 (invalid bytes become U+FFFD), accepts ``\\n``, ``\\r\\n`` and lone ``\\r``
    line endings (a lone ``\\r`` is only seen once the reader returns the line that contains it),
    ignores comment lines (``:`` first), joins multi-line ``data`` with ``\\n``, keeps the last
    event id across events, ignores unknown fields and dispatches an event on each blank line that
    follows at least one ``data`` field. An event cut off by the end of the stream is discarded.
    """

    __slots__ = ("_data", "_event", "_last_id", "_started", "reconnection_time")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""  # not reset by a dispatch: it carries over to later events
        self._started = False
        self.reconnection_time: int | None = None
        """The last valid ``retry`` field, in milliseconds (None until one arrives)."""

    def feed(self, raw: bytes) -> tuple[ServerSentEvent, ...]:
        """The events completed by ``raw`` (one line from the reader; usually none or one)."""
        if not self._started:
            self._started = True
            if raw.startswith(_BOM):
                raw = raw[3:]
        text = raw.decode("utf-8", "replace")
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
        if "\r" not in text:
            event = self.line(text)
            return _NO_EVENTS if event is None else (event,)
        events = [e for e in map(self.line, text.split("\r")) if e is not None]
        return tuple(events)

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
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent("\n".join(self._data), self._event or "message", self._last_id)
        self._data = []
        self._event = ""
        return event
