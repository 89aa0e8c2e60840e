"""Validation of a caller's sampling settings, shared by every service that takes them.

The providers service reads them from ``GenerateRequest`` and the orchestrator from
``OrchestrateRequest.author_options`` (``AuthorOptions``): both messages name the fields alike, so one
function checks either and both services accept and refuse exactly the same values, with the same
messages. Every problem raises :class:`InvalidArgument` naming the field as ``prefix + name``
(``temperature``, ``request.stop_sequences[1]``, ``author_options.response_format.json_schema``...).

``max_tokens`` is not checked here: its ceiling depends on the model, which only the caller knows.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import orchestrator_pb2, providers_pb2
from orchestratex.validation import check_enum, check_max_len, check_range, require_text

MAX_STOP_SEQUENCES = 4
"""Stop sequences per call, as OpenAI allows."""
MAX_STOP_CHARS = 256
"""The longest stop sequence."""
MAX_END_USER_CHARS = 128
"""The longest end-user id."""
# OpenAI-compatible APIs accept schema names of this shape.
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _NoMetaSchema:
    """Sentinel: ``validator_for`` found no known ``$schema``."""


@dataclass(frozen=True)
class Sampling:
    """Checked sampling settings (None where the caller set nothing)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    end_user: str = ""
    format: providers_pb2.ResponseFormatType = providers_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED
    """The kind of output asked for (``RESPONSE_FORMAT_TYPE_UNSPECIFIED`` is plain text)."""
    schema: Mapping[str, Any] | None = None
    """The parsed JSON Schema, for ``RESPONSE_FORMAT_TYPE_JSON_SCHEMA``."""


def check_sampling(msg: providers_pb2.GenerateRequest | orchestrator_pb2.AuthorOptions, prefix: str = "") -> Sampling:
    """Check the sampling fields of ``msg``: temperature in [0, 2], top_p in (0, 1], at most
    :data:`MAX_STOP_SEQUENCES` non-empty stop sequences of at most :data:`MAX_STOP_CHARS` characters, an
    end-user id of at most :data:`MAX_END_USER_CHARS` characters, and a well-formed response format."""
    temperature = top_p = None
    if msg.HasField("temperature"):
        temperature = check_range(msg.temperature, prefix + "temperature", 0.0, 2.0)
    if msg.HasField("top_p"):
        top_p = check_range(msg.top_p, prefix + "top_p", 0.0, 1.0, low_open=True)
    if len(msg.stop_sequences) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(
            prefix + "stop_sequences", f"at most {MAX_STOP_SEQUENCES} sequences, got {len(msg.stop_sequences)}"
        )
    for i, stop in enumerate(msg.stop_sequences):
        # Only emptiness is refused: whitespace ("\n") is a common stop sequence.
        if not stop:
            raise InvalidArgument(f"{prefix}stop_sequences[{i}]", "must not be empty")
        check_max_len(stop, f"{prefix}stop_sequences[{i}]", MAX_STOP_CHARS)
    check_max_len(msg.end_user, prefix + "end_user", MAX_END_USER_CHARS)
    kind, schema = check_response_format(msg.response_format, prefix + "response_format.")
    return Sampling(
        temperature=temperature,
        top_p=top_p,
        seed=msg.seed if msg.HasField("seed") else None,
        stop=tuple(msg.stop_sequences),
        end_user=msg.end_user,
        format=kind,
        schema=schema,
    )


def check_response_format(
    rf: providers_pb2.ResponseFormat, prefix: str = "response_format."
) -> tuple[providers_pb2.ResponseFormatType, Mapping[str, Any] | None]:
    """The kind of output ``rf`` asks for, and its parsed JSON Schema when it asks for one.

    ``schema_name`` and ``json_schema`` belong to ``RESPONSE_FORMAT_TYPE_JSON_SCHEMA`` only, which needs
    both: a name OpenAI-compatible APIs accept and a JSON Schema (see :func:`parse_json_schema`).
    """
    kind = cast(
        providers_pb2.ResponseFormatType,
        check_enum(rf.type, providers_pb2.ResponseFormatType.DESCRIPTOR, prefix + "type", allow_unspecified=True),
    )
    if kind != providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        for name in ("schema_name", "json_schema"):
            if getattr(rf, name):
                raise InvalidArgument(prefix + name, "is only allowed when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
        return kind, None
    name_field = prefix + "schema_name"
    require_text(rf.schema_name, name_field)
    if not _SCHEMA_NAME.match(rf.schema_name):
        raise InvalidArgument(name_field, "must be 1-64 letters, digits, underscores or dashes")
    return kind, parse_json_schema(rf.json_schema, prefix + "json_schema")


def parse_json_schema(text: str, field: str) -> Mapping[str, Any]:
    """Parse and check a JSON Schema for an object (root ``"type": "object"``), raising InvalidArgument.

    A valid schema is remembered by its text (the 256 most recent): the orchestrator sends the same critique
    schema with every critique, and checking it against its metaschema costs about 1.5 ms of CPU, which at 128
    concurrent sessions was two thirds of the providers service's Python time (docs/benchmarks.md). The
    returned mapping is shared between calls with the same text: read it, never change it.
    """
    try:
        return _checked_schema(text)
    except _SchemaProblem as problem:
        raise InvalidArgument(field, str(problem)) from None


class _SchemaProblem(ValueError):
    """Why a schema text is refused (the caller names the field)."""


@functools.lru_cache(maxsize=256)
def _checked_schema(text: str) -> dict[str, Any]:
    if not text.strip():
        raise _SchemaProblem("is required when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _SchemaProblem(f"is not valid JSON ({detail})") from None
    if not isinstance(schema, dict):
        raise _SchemaProblem(f"must be a JSON object (a JSON Schema document), got {type(schema).__name__}")
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):
        raise _SchemaProblem("$schema must be a string")
    # An explicit default makes validator_for return it (rather than warn) for an unknown $schema.
    validator: Any = jsonschema.validators.validator_for(schema, default=_NoMetaSchema)
    if validator is _NoMetaSchema:
        if declared is not None:
            raise _SchemaProblem(f"$schema {declared[:200]!r} is not a supported JSON Schema draft")
        validator = jsonschema.Draft202012Validator
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _SchemaProblem(f"is not a valid JSON Schema: {exc.message[:200]}") from None
    if schema.get("type") != "object":
        raise _SchemaProblem('must describe a JSON object (top-level "type": "object")')
    return schema
