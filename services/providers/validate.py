"""Validation of ``GenerateRequest`` messages, before any generation starts.

Every problem raises :class:`InvalidArgument` whose field is a dotted path RELATIVE TO THE RPC'S
REQUEST MESSAGE: ``messages[0].role`` for ``Generate`` and ``request.messages[0].role`` for
``StreamGenerate`` (whose request wraps the ``GenerateRequest`` in its ``request`` field). An unknown
model raises :class:`NotFound` listing the valid ids. ``RESPONSE_FORMAT_TYPE_JSON_SCHEMA`` for a model
whose catalogue entry lacks ``supports_structured_outputs`` is refused (``response_format.type``),
never downgraded in silence: the caller picks JSON mode or text itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

from orchestratex.domains import from_proto as domain_from_proto
from orchestratex.errors import InvalidArgument, NotFound
from orchestratex.v1 import common_pb2, providers_pb2
from orchestratex.validation import check_enum, check_max_len, check_range, require_text
from services.providers.backend import (
    GenerationRequest,
    Message,
    OutputFormat,
    Purpose,
    ResponseFormat,
    Role,
    estimate_prompt_tokens,
)
from services.providers.catalogue import Catalogue

_ROLES = {
    common_pb2.ROLE_SYSTEM: Role.SYSTEM,
    common_pb2.ROLE_USER: Role.USER,
    common_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
}
_PURPOSES: dict[int, Purpose] = {
    common_pb2.CALL_PURPOSE_UNSPECIFIED: Purpose.OTHER,
    common_pb2.CALL_PURPOSE_ANSWER: Purpose.ANSWER,
    common_pb2.CALL_PURPOSE_CRITIQUE: Purpose.CRITIQUE,
    common_pb2.CALL_PURPOSE_REFINE: Purpose.REFINE,
    common_pb2.CALL_PURPOSE_CLASSIFY: Purpose.CLASSIFY,
    common_pb2.CALL_PURPOSE_OTHER: Purpose.OTHER,
}
# OpenAI-compatible APIs accept schema names of this shape.
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_SESSION_ID = 128


class _NoMetaSchema:
    """Sentinel: ``validator_for`` found no known ``$schema``."""


def parse_generate_request(
    msg: providers_pb2.GenerateRequest,
    catalogue: Catalogue,
    *,
    max_prompt_chars: int,
    prefix: str = "",
) -> GenerationRequest:
    """Validate ``msg`` and return the backend request. ``prefix`` is ``"request."`` for StreamGenerate."""

    def field(name: str) -> str:
        return prefix + name

    if not msg.model.strip():
        raise InvalidArgument(field("model"), f"is required; expected one of {', '.join(catalogue.ids())}")
    model = catalogue.get(msg.model)
    if model is None:
        raise NotFound(f"unknown model {msg.model[:200]!r}; valid ids: {', '.join(catalogue.ids())}")
    if not msg.messages:
        raise InvalidArgument(field("messages"), "must contain at least one message")
    messages: list[Message] = []
    for i, item in enumerate(msg.messages):
        check_enum(item.role, common_pb2.Role.DESCRIPTOR, field(f"messages[{i}].role"), allow_unspecified=False)
        require_text(item.content, field(f"messages[{i}].content"), max_prompt_chars)
        messages.append(Message(_ROLES[item.role], item.content))
    total_chars = sum(len(m.content) for m in messages)
    if total_chars > max_prompt_chars:
        raise InvalidArgument(field("messages"), f"total {total_chars:,} characters; the limit is {max_prompt_chars:,}")

    if msg.max_tokens < 0:
        raise InvalidArgument(field("max_tokens"), f"must be >= 0 (0 means the model default), got {msg.max_tokens}")
    if msg.max_tokens > model.max_output_tokens:
        raise InvalidArgument(
            field("max_tokens"), f"is {msg.max_tokens:,}; {model.id} allows at most {model.max_output_tokens:,}"
        )
    temperature = check_range(msg.temperature, field("temperature"), 0.0, 2.0) if msg.HasField("temperature") else None
    top_p = check_range(msg.top_p, field("top_p"), 0.0, 1.0, low_open=True) if msg.HasField("top_p") else None
    response_format = _response_format(msg.response_format, field)
    if response_format.type is OutputFormat.JSON_SCHEMA and not model.supports_structured_outputs:
        # Explicit rather than a silent downgrade: the caller chooses what to do instead, from ModelInfo.
        raise InvalidArgument(
            field("response_format.type"),
            f"{model.id} does not support structured outputs (ModelInfo.supports_structured_outputs is false); "
            "ask it for RESPONSE_FORMAT_TYPE_JSON_OBJECT (when supports_json_mode) or plain text and describe the "
            "format in the prompt",
        )
    purpose = check_enum(
        msg.context.purpose, common_pb2.CallPurpose.DESCRIPTOR, field("context.purpose"), allow_unspecified=True
    )
    domain = check_enum(
        msg.context.domain, common_pb2.Domain.DESCRIPTOR, field("context.domain"), allow_unspecified=True
    )
    check_max_len(msg.context.session_id, field("context.session_id"), _MAX_SESSION_ID)

    prompt_tokens = estimate_prompt_tokens([m.content for m in messages])
    if msg.max_tokens:
        if prompt_tokens + msg.max_tokens > model.context_length:
            raise InvalidArgument(
                field("max_tokens"),
                f"the prompt is about {prompt_tokens:,} tokens and max_tokens is {msg.max_tokens:,}; together "
                f"{prompt_tokens + msg.max_tokens:,} exceed the {model.context_length:,}-token context window "
                f"of {model.id}",
            )
        max_tokens = msg.max_tokens
    else:
        room = model.context_length - prompt_tokens
        if room < 1:
            raise InvalidArgument(
                field("messages"),
                f"the prompt is about {prompt_tokens:,} tokens; it does not fit the {model.context_length:,}-token "
                f"context window of {model.id}",
            )
        max_tokens = min(model.default_max_tokens, room)

    return GenerationRequest(
        model=model,
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=msg.seed if msg.HasField("seed") else None,
        response_format=response_format,
        purpose=_PURPOSES[purpose],
        domain=domain_from_proto(domain),
        session_id=msg.context.session_id,
    )


def _response_format(rf: providers_pb2.ResponseFormat, field: Callable[[str], str]) -> ResponseFormat:
    kind = check_enum(
        rf.type, providers_pb2.ResponseFormatType.DESCRIPTOR, field("response_format.type"), allow_unspecified=True
    )
    if kind != providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        for name in ("schema_name", "json_schema"):
            if getattr(rf, name):
                raise InvalidArgument(
                    field(f"response_format.{name}"), "is only allowed when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA"
                )
        if kind == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
            return ResponseFormat(OutputFormat.JSON_OBJECT, strict=rf.strict)
        return ResponseFormat()
    name_field = field("response_format.schema_name")
    require_text(rf.schema_name, name_field)
    if not _SCHEMA_NAME.match(rf.schema_name):
        raise InvalidArgument(name_field, "must be 1-64 letters, digits, underscores or dashes")
    schema = parse_json_schema(rf.json_schema, field("response_format.json_schema"))
    return ResponseFormat(OutputFormat.JSON_SCHEMA, rf.schema_name, schema, rf.strict)


def parse_json_schema(text: str, field: str) -> Mapping[str, Any]:
    """Parse and check a JSON Schema for an object (root ``"type": "object"``), raising InvalidArgument."""
    if not text.strip():
        raise InvalidArgument(field, "is required when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidArgument(field, f"is not valid JSON ({detail})") from None
    if not isinstance(schema, dict):
        raise InvalidArgument(field, f"must be a JSON object (a JSON Schema document), got {type(schema).__name__}")
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):
        raise InvalidArgument(field, "$schema must be a string")
    # An explicit default makes validator_for return it (rather than warn) for an unknown $schema.
    validator: Any = jsonschema.validators.validator_for(schema, default=_NoMetaSchema)
    if validator is _NoMetaSchema:
        if declared is not None:
            raise InvalidArgument(field, f"$schema {declared[:200]!r} is not a supported JSON Schema draft")
        validator = jsonschema.Draft202012Validator
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(field, f"is not a valid JSON Schema: {exc.message[:200]}") from None
    if schema.get("type") != "object":
        raise InvalidArgument(field, 'must describe a JSON object (top-level "type": "object")')
    return schema
