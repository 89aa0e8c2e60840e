"""Canonical proto3 JSON for the gateway's wire formats.

Every protobuf message the gateway sends to clients (events, sessions, models) goes through
:func:`message_to_dict`, which returns exactly what
``google.protobuf.json_format.MessageToDict(message)`` returns with default options: lowerCamelCase
names, enum value names, 64-bit integers as strings, ``Timestamp``/``Duration`` as RFC 3339 / ``"1.5s"``
strings, fields at their default value omitted. JSON text is produced with orjson.

The conversion is a swappable strategy (:data:`ToDict`): a faster converter can be installed with
:func:`set_converter` as long as it passes the equality tests against ``json_format``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from orchestratex.v1 import orchestrator_pb2

ToDict = Callable[[Message], dict[str, Any]]
"""A function returning a message's canonical proto3 JSON as Python data."""


def json_format_to_dict(message: Message) -> dict[str, Any]:
    """The reference converter: ``json_format.MessageToDict`` with default options."""
    return json_format.MessageToDict(message)


_converter: ToDict = json_format_to_dict


def set_converter(converter: ToDict) -> ToDict:
    """Install another converter (e.g. a compiled one); returns the previous one."""
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
    return event.WhichOneof("kind") in ("session_completed", "session_failed")
