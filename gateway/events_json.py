"""Canonical proto3 JSON for the gateway's wire formats, built fast.

Every protobuf message the gateway sends to clients (events, sessions, models, reports) goes through
:func:`message_to_dict`. Its output equals
``json_format.MessageToDict(message, preserving_proto_field_name=True)``, which is also what grpcurl
prints for the same message, so gRPC and browser clients share one schema:

* the original proto field names (``session_id``, ``response_delta``);
* enum value names; 64-bit integers as decimal strings;
* ``Timestamp`` as RFC 3339 (``Z``, 0/3/6/9 fractional digits), ``Duration`` as ``"1.500s"``;
* fields at their default value omitted (proto3 ``optional`` fields are kept when set).

Speed: ``json_format`` inspects every field descriptor of every message it converts. Here each message
type is compiled once into a table (field -> output name and value converter) and a conversion only
walks ``ListFields()`` (the set fields, in C) through that table. The tests check equality with
``json_format`` over generated messages of every type the gateway sends.

Encode once: an event relayed to many clients (several sockets and SSE streams watching one session) is
wrapped once in an :class:`EncodedEvent`, which builds its JSON, its WebSocket frame and its SSE frame the
first time each is asked for and hands the same bytes to every client after that.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from orchestratex.v1 import orchestrator_pb2

ToDict = Callable[[Message], dict[str, Any]]
"""A function returning a message's canonical proto3 JSON as Python data."""

Convert = Callable[[Any], Any]

_INT64_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_EPOCH: Final = datetime(1970, 1, 1)  # naive: isoformat() without an offset
# Well-known types with a special JSON form that this module formats itself.
_TIMESTAMP: Final = "google.protobuf.Timestamp"
_DURATION: Final = "google.protobuf.Duration"
TERMINAL_KINDS: Final = frozenset({"session_completed", "session_failed"})
_WS_TEXT_FINAL: Final = 0x81  # FIN bit + opcode 1 (text)
_WS_HEADER_16: Final = struct.Struct("!BBH")
_WS_HEADER_64: Final = struct.Struct("!BBQ")


def json_format_to_dict(message: Message) -> dict[str, Any]:
    """The reference converter: ``json_format.MessageToDict`` with proto field names (grpcurl's output)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _identity(value: Any) -> Any:
    return value


def _int64(value: int) -> str:
    return str(value)


def _double(value: float) -> float | str:
    # json_format writes non-finite numbers as strings; finite ones stay JSON numbers.
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _float32(value: float) -> float | str:
    if not math.isfinite(value):
        return _double(value)
    # json_format prints 32-bit floats with the shortest text that round-trips as a float32.
    return float(json_format.type_checkers.ToShortestFloat(value))  # type: ignore[attr-defined]


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _fraction(nanos: int) -> str:
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1000 == 0:
        return f".{nanos // 1000:06d}"
    return f".{nanos:09d}"


def _timestamp(value: Any) -> str:
    seconds: int = value.seconds
    nanos: int = value.nanos
    if not (-62135596800 <= seconds <= 253402300799 and 0 <= nanos < 1_000_000_000):
        # Out of range: let json_format report (or format) it exactly as it would.
        return str(json_format.MessageToDict(value))
    return _whole_seconds(seconds) + _fraction(nanos) + "Z"


@lru_cache(maxsize=256)
def _whole_seconds(seconds: int) -> str:
    # Events come many to a second: the date and time are formatted once per second seen. isoformat() pads the
    # year to four digits, as json_format does.
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()


def _duration(value: Any) -> str:
    seconds: int = value.seconds
    nanos: int = value.nanos
    if seconds < 0 or nanos < 0:
        if seconds > 0 or nanos > 0:
            return str(json_format.MessageToDict(value))  # mixed signs: invalid, json_format's call
        sign, seconds, nanos = "-", -seconds, -nanos
    else:
        sign = ""
    if seconds > 315_576_000_000 or nanos >= 1_000_000_000:
        return str(json_format.MessageToDict(value))
    return f"{sign}{seconds}{_fraction(nanos)}s"


def _reference(value: Any) -> Any:
    return json_format.MessageToDict(value, preserving_proto_field_name=True)


class _Compiler:
    """Builds (once) and caches one converter per message type."""

    def __init__(self) -> None:
        self._converters: dict[str, ToDict] = {}

    def converter(self, descriptor: Any) -> ToDict:
        name = descriptor.full_name
        found = self._converters.get(name)
        if found is None:
            found = self._compile(descriptor)
        return found

    def _compile(self, descriptor: Any) -> ToDict:
        table: dict[int, tuple[str, Convert]] = {}

        def convert(message: Message) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for field, value in message.ListFields():
                name, fn = table[field.number]
                out[name] = fn(value)
            return out

        # Registered before the fields are compiled: recursive message types refer to themselves.
        self._converters[descriptor.full_name] = convert
        for field in descriptor.fields:
            table[field.number] = (field.name, self._field(field))
        return convert

    def _field(self, field: Any) -> Convert:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            return self._map(field)
        single = self._single(field)
        if field.is_repeated:
            if single is _identity:
                return list
            return lambda values: [single(v) for v in values]
        return single

    def _map(self, field: Any) -> Convert:
        entry = field.message_type
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        value_fn = self._single(value_field)
        if key_field.type == FieldDescriptor.TYPE_BOOL:
            return lambda mapping: {("true" if k else "false"): value_fn(v) for k, v in mapping.items()}
        return lambda mapping: {str(k): value_fn(v) for k, v in mapping.items()}

    def _single(self, field: Any) -> Convert:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            full_name = field.message_type.full_name
            if full_name == _TIMESTAMP:
                return _timestamp
            if full_name == _DURATION:
                return _duration
            if full_name.startswith("google.protobuf."):
                return _reference  # other well-known types (none in our protos today)
            compiler = self
            message_type = field.message_type

            def nested(value: Message) -> dict[str, Any]:
                return compiler.converter(message_type)(value)

            return nested
        if kind == FieldDescriptor.TYPE_ENUM:
            names = {v.number: v.name for v in field.enum_type.values}
            # Unknown numbers (a newer peer) stay numbers, as in json_format.
            return lambda number: names.get(number, number)
        if kind in _INT64_TYPES:
            return _int64
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return _double
        if kind == FieldDescriptor.TYPE_FLOAT:
            return _float32
        if kind == FieldDescriptor.TYPE_BYTES:
            return _bytes
        return _identity  # strings, bools, 32-bit integers


_COMPILER: Final = _Compiler()


def fast_to_dict(message: Message) -> dict[str, Any]:
    """The compiled converter (equal to :func:`json_format_to_dict`, several times faster)."""
    return _COMPILER.converter(message.DESCRIPTOR)(message)


_converter: ToDict = fast_to_dict


def set_converter(converter: ToDict) -> ToDict:
    """Install another converter (tests compare them); returns the previous one."""
    global _converter  # one process-wide strategy, swapped at start-up or in tests
    previous, _converter = _converter, converter
    return previous


def message_to_dict(message: Message) -> dict[str, Any]:
    """``message`` as canonical proto3 JSON data (dicts, lists, str, int, float, bool)."""
    return _converter(message)


def event_to_dict(event: orchestrator_pb2.OrchestrationEvent) -> dict[str, Any]:
    """One orchestration event as canonical proto3 JSON data."""
    return _converter(event)


def dumps(data: Any) -> bytes:
    """JSON text (UTF-8 bytes) for ``data``; orjson keeps non-ASCII characters as they are."""
    return orjson.dumps(data)


def event_json(event: orchestrator_pb2.OrchestrationEvent) -> bytes:
    """The canonical JSON text of one event."""
    return orjson.dumps(_converter(event))


def event_frame(event: orchestrator_pb2.OrchestrationEvent) -> bytes:
    """The WebSocket server message for one event: ``{"type": "event", "event": {...}}``."""
    return orjson.dumps({"type": "event", "event": _converter(event)})


def is_terminal(event: orchestrator_pb2.OrchestrationEvent) -> bool:
    """True for the last event of a session (completed or failed)."""
    return event.WhichOneof("kind") in TERMINAL_KINDS


def websocket_text_frame(payload: bytes) -> bytes:
    """One complete, unfragmented WebSocket text frame as a server sends it (RFC 6455 5.2: no mask, no
    extension bits), ``payload`` being UTF-8 text. The same bytes can be written to every socket."""
    size = len(payload)
    if size < 126:
        header = bytes((_WS_TEXT_FINAL, size))
    elif size < 65536:
        header = _WS_HEADER_16.pack(_WS_TEXT_FINAL, 126, size)
    else:
        header = _WS_HEADER_64.pack(_WS_TEXT_FINAL, 127, size)
    return header + payload


class EncodedEvent:
    """One orchestration event and its encodings, each built on first use and then shared by every client
    that receives the event: :attr:`json` (its canonical JSON), :attr:`ws_frame` (the WebSocket server
    message ``{"type": "event", "event": ...}`` framed, ready to write) and :attr:`sse_frame`."""

    __slots__ = ("_json", "_sse_frame", "_ws_frame", "event", "sequence", "session_id", "terminal")

    def __init__(self, event: orchestrator_pb2.OrchestrationEvent) -> None:
        self.event = event
        self.sequence: int = event.sequence
        self.session_id: str = event.session_id
        #: The session's last event (completed or failed).
        self.terminal = is_terminal(event)
        self._json: bytes | None = None
        self._ws_frame: bytes | None = None
        self._sse_frame: bytes | None = None

    @property
    def json(self) -> bytes:
        """The canonical JSON text of the event (:func:`event_json`)."""
        if self._json is None:
            self._json = event_json(self.event)
        return self._json

    @property
    def ws_message(self) -> bytes:
        """The WebSocket server message, byte for byte :func:`event_frame`'s."""
        return b'{"type":"event","event":' + self.json + b"}"

    @property
    def ws_frame(self) -> bytes:
        """:attr:`ws_message` as a complete WebSocket text frame (:func:`websocket_text_frame`)."""
        if self._ws_frame is None:
            self._ws_frame = websocket_text_frame(self.ws_message)
        return self._ws_frame

    @property
    def sse_frame(self) -> bytes:
        """The Server-Sent Event for the event: ``id: <sequence>`` and ``data: <JSON>``."""
        if self._sse_frame is None:
            self._sse_frame = b"id: %d\ndata: %s\n\n" % (self.sequence, self.json)
        return self._sse_frame
