"""Validation of ``GenerateRequest`` messages, before any generation starts.

Every problem raises :class:`InvalidArgument` whose field is a dotted path RELATIVE TO THE RPC'S
REQUEST MESSAGE: ``messages[0].role`` for ``Generate`` and ``request.messages[0].role`` for
``StreamGenerate`` (whose request wraps the ``GenerateRequest`` in its ``request`` field). An unknown
model raises :class:`NotFound` listing the valid ids. ``RESPONSE_FORMAT_TYPE_JSON_SCHEMA`` for a model
whose catalogue entry lacks ``supports_structured_outputs`` is refused (``response_format.type``),
never downgraded in silence: the caller picks JSON mode or text itself. The sampling settings
(temperature, top_p, seed, stop sequences, end-user id, response format) are checked by
:func:`services.sampling.check_sampling`, as the orchestrator checks its ``author_options``.
"""

from __future__ import annotations

from orchestratex.domains import from_proto as domain_from_proto
from orchestratex.errors import InvalidArgument, NotFound
from orchestratex.v1 import common_pb2, providers_pb2
from orchestratex.validation import check_enum, check_max_len, require_text
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
from services.sampling import check_sampling

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
    common_pb2.CALL_PURPOSE_AGGREGATE: Purpose.AGGREGATE,
}
_FORMATS = {
    providers_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED: OutputFormat.TEXT,
    providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: OutputFormat.JSON_OBJECT,
    providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: OutputFormat.JSON_SCHEMA,
}
_MAX_SESSION_ID = 128


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
    sampling = check_sampling(msg, prefix)
    response_format = ResponseFormat()
    if sampling.format != providers_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED:
        rf = msg.response_format
        response_format = ResponseFormat(_FORMATS[sampling.format], rf.schema_name, sampling.schema, rf.strict)
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
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=sampling.seed,
        stop=sampling.stop,
        end_user=sampling.end_user,
        response_format=response_format,
        purpose=_PURPOSES[purpose],
        domain=domain_from_proto(domain),
        session_id=msg.context.session_id,
    )
