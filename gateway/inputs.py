"""Parsing client input (JSON data) into protobuf requests, with errors that name the field.

Shared by REST and WebSocket so both report the same problem the same way. Every function raises
:class:`gateway.errors.GatewayError` (INVALID_ARGUMENT, message ``"<field>: <problem>"``).

Names are snake_case (the proto field names), and every name a client sends may also be spelt in
lowerCamelCase: body fields (:func:`gateway.schemas.proto_names`), WebSocket message keys and query
parameters (:func:`spelt`). Errors name the field as the client spelt it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from google.protobuf import json_format, timestamp_pb2

from gateway import schemas
from gateway.errors import invalid
from orchestratex.v1 import analytics_pb2, common_pb2, orchestrator_pb2

MAX_ID_CHARS: Final = 128
_INTEGER: Final = re.compile(r"-?[0-9]{1,32}", re.ASCII)
# RFC 3339 as proto3 JSON writes it: ASCII digits, upper-case T and Z, 0-9 fractional digits, offsets to 23:59.
_RFC3339: Final = re.compile(
    r"(\d{4})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)", re.ASCII
)


def parse_json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Decode JSON text that must be an object; ``what`` names it in errors (``body``, ``message``)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(what, f"malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid(what, f"expected a JSON object, got {_json_type(data)}")
    return data


def parse_orchestrate_request(
    data: object, field: str, prompt_field: str, max_prompt_chars: int
) -> orchestrator_pb2.OrchestrateRequest:
    """An ``OrchestrateRequest`` from its proto3 JSON form; ``field`` names the object and
    ``prompt_field`` its prompt in errors. The caller decides ``detached``.

    Checked against the published schema (:func:`gateway.schemas.orchestrate_request`: types, ranges,
    lengths); rules across fields are the orchestrator's, whose INVALID_ARGUMENT details are passed on.
    """
    if data is None:
        raise invalid(field, "is required (an OrchestrateRequest object)")
    if not isinstance(data, dict):
        raise invalid(field, f"expected an OrchestrateRequest object, got {_json_type(data)}")
    where = prompt_field.removesuffix("prompt").rstrip(".")
    prompt = data.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise invalid(prompt_field, "is required and must not be blank")
    if isinstance(prompt, str) and len(prompt) > max_prompt_chars:
        raise invalid(prompt_field, f"is {len(prompt):,} characters; the limit is {max_prompt_chars:,}")
    renames: dict[str, str] = {}
    data = schemas.proto_names(data, orchestrator_pb2.OrchestrateRequest.DESCRIPTOR, renames)
    schemas.check(schemas.orchestrate_request(max_prompt_chars), data, where, renames)
    request = orchestrator_pb2.OrchestrateRequest()
    try:
        json_format.ParseDict(data, request)
    except json_format.ParseError as exc:
        raise invalid(field, _one_line(str(exc))) from None
    except (TypeError, ValueError, RecursionError) as exc:
        # ParseDict lets a few of these escape for odd shapes; they are still the client's input.
        raise invalid(field, _one_line(str(exc)) or "not a valid OrchestrateRequest") from None
    if not request.prompt.strip():
        raise invalid(prompt_field, "is required and must not be blank")
    if len(request.prompt) > max_prompt_chars:
        raise invalid(prompt_field, f"is {len(request.prompt):,} characters; the limit is {max_prompt_chars:,}")
    return request


def require_id(data: dict[str, Any], field: str) -> str:
    """A required, non-blank identifier string of at most :data:`MAX_ID_CHARS` characters."""
    value = data.get(field)
    if value is None:
        raise invalid(field, "is required")
    if not isinstance(value, str):
        raise invalid(field, f"expected a string, got {_json_type(value)}")
    return check_id(value, field)


def check_id(value: str, field: str) -> str:
    """``value`` if it is a plausible identifier (non-blank, short, printable)."""
    if not value.strip():
        raise invalid(field, "must not be blank")
    if len(value) > MAX_ID_CHARS:
        raise invalid(field, f"is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    if not value.isprintable():
        raise invalid(field, "must contain printable characters only")
    return value


def optional_int(data: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    """An optional integer given as a JSON number or a decimal string (proto3 JSON's int64 form)."""
    value = data.get(field)
    if value is None:
        return default
    return parse_int(value, field, low, high)


def parse_int(value: object, field: str, low: int, high: int) -> int:
    """An integer in ``[low, high]`` from a JSON number or a decimal string (ASCII digits, optional ``-``)."""
    if isinstance(value, bool):
        raise invalid(field, f"expected an integer, got {_json_type(value)}")
    number: int
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _INTEGER.fullmatch(value) is not None
    ):
        number = int(value)
    else:
        raise invalid(field, f"expected an integer, got {_describe(value)}")
    if not low <= number <= high:
        raise invalid(field, f"must be between {low} and {high}, got {number}")
    return number


def enum_names(descriptor: Any, prefix: str) -> list[str]:
    """The accepted spellings of an enum's values (UNSPECIFIED aside): short lower-case, then full names."""
    values = [v for v in descriptor.values if v.number != 0]
    return [v.name.removeprefix(prefix).lower() for v in values] + [v.name for v in values]


def _parse_enum(value: str, field: str, descriptor: Any, prefix: str, what: str) -> int:
    if value in enum_names(descriptor, prefix):
        name = value if value.startswith(prefix) else prefix + value.upper()
        number: int = descriptor.values_by_name[name].number
        return number
    short = ", ".join(enum_names(descriptor, prefix)[: len(descriptor.values) - 1])
    raise invalid(field, f"unknown {what} {value[:40]!r}; expected one of {short} (or the full {prefix}* name)")


def parse_session_status(value: str, field: str) -> int:
    """A ``SessionStatus`` from its full name (``SESSION_STATUS_RUNNING``) or short name (``running``)."""
    return _parse_enum(value, field, orchestrator_pb2.SessionStatus.DESCRIPTOR, "SESSION_STATUS_", "status")


def camel_case(name: str) -> str:
    """The lowerCamelCase spelling of a snake_case name (``after_sequence`` -> ``afterSequence``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def spelt(data: Mapping[str, Any], name: str) -> str | None:
    """The key under which ``data`` holds the input ``name`` (snake_case): ``name`` itself or its lowerCamelCase
    spelling, or None when it holds neither. Both spellings at once is an error."""
    camel = camel_case(name)
    if camel == name or camel not in data:
        return name if name in data else None
    if name in data:
        raise invalid(camel, f"is given twice (as {name} and {camel})")
    return camel


def query_value(query: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """A query parameter given as ``name`` (snake_case) or in lowerCamelCase: (the name used, its value)."""
    key = spelt(query, name)
    return None if key is None else (key, query[key])


def parse_timestamp(value: str, field: str) -> timestamp_pb2.Timestamp:
    """An RFC 3339 timestamp (``2025-01-31T00:00:00Z``) in the years the services can store
    (:data:`gateway.schemas.FIRST_YEAR` to :data:`gateway.schemas.LAST_YEAR`)."""
    text = value
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise invalid(field, f"expected an RFC 3339 timestamp such as 2025-01-31T00:00:00Z, got {value[:40]!r}")
    year = int(match.group(1))
    first, last = schemas.FIRST_YEAR, schemas.LAST_YEAR
    if not first <= year <= last:
        raise invalid(field, f"the year must be between {first} and {last} (what the services store), got {year}")
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError:
        raise invalid(field, f"{value[:40]!r} is not a date and time that exists") from None
    return stamp


def parse_domain(value: str, field: str) -> int:
    """A ``Domain`` from its full name (``DOMAIN_CODING``) or short name (``coding``)."""
    return _parse_enum(value, field, common_pb2.Domain.DESCRIPTOR, "DOMAIN_", "domain")


def parse_feedback(data: dict[str, Any], session_id: str) -> analytics_pb2.SubmitFeedbackRequest:
    """A ``SubmitFeedbackRequest`` from a JSON body (the session id comes from the path)."""
    rating = data.get("rating")
    if rating is None:
        raise invalid("rating", "is required (1 to 5)")
    renames: dict[str, str] = {}
    body = schemas.proto_names(data, analytics_pb2.SubmitFeedbackRequest.DESCRIPTOR, renames)
    schemas.check(schemas.FEEDBACK, body, "", renames)
    request = analytics_pb2.SubmitFeedbackRequest()
    try:
        json_format.ParseDict(body, request)
    except json_format.ParseError as exc:
        raise invalid("body", _one_line(str(exc))) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise invalid("body", _one_line(str(exc)) or "not a valid feedback object") from None
    request.session_id = session_id
    return request


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, int | float):
        return repr(value)
    return _json_type(value)
