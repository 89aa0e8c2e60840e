"""An OpenAI chat completion request, checked and mapped onto our contract.

:func:`parse_chat_request` checks the body against :func:`gateway.openai_schemas.chat_request` (after its own
checks for what OpenAI clients commonly send and we refuse: tools, ``n`` > 1, image parts..., each a 400 naming
the parameter). :func:`orchestrate_request` maps it onto an ``OrchestrateRequest`` (``messages``, the sampling
settings as ``author_options``, the ``orchestratex`` object as the loop's settings) and
:func:`generate_request` onto a providers ``GenerateRequest`` for a pass-through model. Each returns a
:class:`~gateway.openai_errors.ParamMap` that names, in the client's terms, the field a service refuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from google.protobuf import json_format

from gateway import openai_schemas as oas
from gateway import schemas
from gateway.errors import GatewayError
from gateway.openai_errors import OpenAIError, ParamMap, invalid
from orchestratex.v1 import common_pb2, orchestrator_pb2, providers_pb2

_ROLES: Final = {
    "system": common_pb2.ROLE_SYSTEM,
    "developer": common_pb2.ROLE_SYSTEM,
    "user": common_pb2.ROLE_USER,
    "assistant": common_pb2.ROLE_ASSISTANT,
}
_FORMATS: Final = {
    "text": providers_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED,
    "json_object": providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
_ORCHESTRATEX_MODEL: Final = re.compile(r"^orchestratex(/|$)")
#: Keys of a message OpenAI knows and we refuse (tools, audio); others are unknown.
_MESSAGE_UNSUPPORTED: Final = frozenset({"tool_calls", "tool_call_id", "function_call", "name", "audio", "refusal"})
#: The loop settings copied as they are onto OrchestrateRequest fields of the same name.
_LOOP_FIELDS: Final = (
    "max_rounds",
    "quality_threshold",
    "critic_count",
    "budget_usd",
    "plateau_epsilon",
    "patience",
    "shadow_evaluation",
)
_INTEGER_FIELDS: Final = frozenset({"max_rounds", "critic_count", "patience"})
_WEIGHTS: Final = ("quality_weight", "cost_weight", "latency_weight")


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat completion request."""

    body: dict[str, Any]
    #: The model id as sent.
    model: str
    stream: bool
    #: ``stream_options.include_usage``: a last chunk with usage.
    include_usage: bool
    #: ``reasoning_content``, ``reasoning``, or None (``none``: the answer only).
    reasoning_field: str | None

    @property
    def orchestrated(self) -> bool:
        """True for ``orchestratex`` and ``orchestratex/<id>``; false for a pass-through model."""
        return is_orchestrated(self.model)

    @property
    def pinned(self) -> str | None:
        """The catalogue id of ``orchestratex/<id>``."""
        return self.model.removeprefix(oas.PINNED_PREFIX) if self.model.startswith(oas.PINNED_PREFIX) else None


def is_orchestrated(model: str) -> bool:
    """True when ``model`` names the loop (``orchestratex`` or ``orchestratex/...``)."""
    return _ORCHESTRATEX_MODEL.match(model) is not None


def parse_chat_request(raw: bytes, max_prompt_chars: int) -> ChatRequest:
    """Decode and check a request body (raises :class:`OpenAIError`, 400 naming the parameter)."""
    if not raw.strip():
        raise invalid("body", "is required (a JSON object)", "missing_required_parameter")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", f"malformed JSON ({exc})", "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object", "invalid_json")
    schema = oas.chat_request(max_prompt_chars)
    _refuse_unsupported(body, schema["properties"])
    try:
        schemas.check(schema, body)
    except GatewayError as exc:
        code = "missing_required_parameter" if exc.message.endswith(": is required") else "invalid_value"
        if "unknown field;" in exc.message:
            code = "unknown_parameter"
        raise OpenAIError(exc.code, exc.message, field=exc.field, openai_code=code) from None
    options = body.get("orchestratex") or {}
    field = options.get("reasoning_field", oas.DEFAULT_REASONING_FIELD)
    return ChatRequest(
        body=body,
        model=body["model"],
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        reasoning_field=None if field == "none" else field,
    )


def _refuse_unsupported(body: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    """The refusals that deserve a better message than the schema's (and OpenAI's own codes)."""
    for key in body:
        if key in oas.UNSUPPORTED:
            raise invalid(key, "is not supported by OrchestrateX", "unsupported_parameter")
        if key not in known:
            raise invalid(str(key)[:60], "unrecognized request argument", "unknown_parameter")
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise invalid("n", f"only one choice is supported, got {n}", "unsupported_value")
    if body.get("logprobs") is True:
        raise invalid("logprobs", "is not supported by OrchestrateX", "unsupported_value")
    for key in ("frequency_penalty", "presence_penalty"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value != 0:
            raise invalid(key, "is not supported by OrchestrateX (0 or absent)", "unsupported_value")
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise invalid("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
    messages = body.get("messages")
    if messages == []:
        raise invalid("messages", "must contain at least one message")
    if isinstance(messages, list):
        for i, message in enumerate(messages[: oas.MAX_MESSAGES]):
            if isinstance(message, dict):
                _refuse_message(message, f"messages[{i}]")
    model, options = body.get("model"), body.get("orchestratex")
    if isinstance(model, str) and not is_orchestrated(model) and isinstance(options, dict):
        for key in oas.LOOP_SETTINGS:
            if key in options:
                raise invalid(
                    f"orchestratex.{key}",
                    f"applies only to the orchestratex models; {model[:100]!r} is one call with no critique",
                    "unsupported_parameter",
                )


def _refuse_message(message: Mapping[str, Any], where: str) -> None:
    role = message.get("role")
    if role in ("tool", "function"):
        raise invalid(f"{where}.role", f"{role} messages are not supported (no tools)", "unsupported_value")
    for key in message:
        if key in _MESSAGE_UNSUPPORTED:
            raise invalid(f"{where}.{key}", "is not supported by OrchestrateX", "unsupported_parameter")
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content[: oas.MAX_PARTS]):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise invalid(
                    f"{where}.content[{j}].type",
                    f"only text parts are supported, got {kind[:40]!r}",
                    "unsupported_value",
                )


def _text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


def _messages(body: Mapping[str, Any]) -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role=_ROLES[m["role"]], content=_text(m["content"])) for m in body["messages"]]


def _tokens_key(body: Mapping[str, Any]) -> str:
    return "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"


def _response_format(value: Mapping[str, Any]) -> providers_pb2.ResponseFormat:
    out = providers_pb2.ResponseFormat(type=_FORMATS[value["type"]])
    spec = value.get("json_schema")
    if spec is not None:
        out.schema_name = spec["name"]
        out.json_schema = orjson.dumps(spec["schema"]).decode()
        out.strict = bool(spec.get("strict"))
    return out


def _sampling(body: Mapping[str, Any], target: Any) -> None:
    """The sampling parameters onto ``target`` (AuthorOptions and GenerateRequest share these names)."""
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            setattr(target, name, body[name])
    # JSON Schema's integers include 2.0: protobuf's integer fields do not.
    if body.get("seed") is not None:
        target.seed = int(body["seed"])
    tokens = body.get(_tokens_key(body))
    if tokens is not None:
        target.max_tokens = int(tokens)
    stop = body.get("stop")
    if stop is not None:
        target.stop_sequences.extend([stop] if isinstance(stop, str) else stop)
    if body.get("response_format") is not None:
        target.response_format.CopyFrom(_response_format(body["response_format"]))
    if body.get("user"):
        target.end_user = body["user"]


def orchestrate_request(chat: ChatRequest) -> tuple[orchestrator_pb2.OrchestrateRequest, ParamMap]:
    """The ``OrchestrateRequest`` for an ``orchestratex`` model (not detached: closing the client's connection
    cancels the session), and the map from its fields to the client's parameters."""
    body = chat.body
    request = orchestrator_pb2.OrchestrateRequest(messages=_messages(body))
    _sampling(body, request.author_options)
    options: Mapping[str, Any] = body.get("orchestratex") or {}
    for name in _LOOP_FIELDS:
        if name in options:
            value = options[name]
            setattr(request, name, int(value) if name in _INTEGER_FIELDS else value)
    if "time_limit_s" in options:
        # Rounded up: any positive limit stays positive.
        request.time_limit.FromNanoseconds(math.ceil(options["time_limit_s"] * 1e9))
    preferences = request.preferences
    if "preferences" in options:
        json_format.ParseDict(options["preferences"], preferences)
    preset = oas.OPTIMIZE_FOR.get(options.get("optimize_for", ""))
    if preset is not None:
        for name, weight in zip(_WEIGHTS, preset, strict=True):
            if not preferences.HasField(name):
                setattr(preferences, name, weight)
    pinned_param = "orchestratex.preferences.pinned_model"
    if chat.pinned is not None:
        if preferences.pinned_model and preferences.pinned_model != chat.pinned:
            raise invalid(pinned_param, f"differs from the model pinned by {chat.model[:200]!r}; give one of them")
        preferences.pinned_model = chat.pinned
        pinned_param = "model"
    prefixes = {
        "prompt": "messages",
        "messages": "messages",
        "thread_id": "messages",
        "author_options.temperature": "temperature",
        "author_options.top_p": "top_p",
        "author_options.seed": "seed",
        "author_options.max_tokens": _tokens_key(body),
        "author_options.stop_sequences": "stop",
        "author_options.response_format": "response_format",
        "author_options.end_user": "user",
        "time_limit": "orchestratex.time_limit_s",
        "preferences.pinned_model": pinned_param,
        "preferences": "orchestratex.preferences",
        **{name: f"orchestratex.{name}" for name in _LOOP_FIELDS},
    }
    return request, ParamMap(prefixes)


def generate_request(chat: ChatRequest) -> tuple[providers_pb2.StreamGenerateRequest, ParamMap]:
    """The providers ``StreamGenerateRequest`` for a pass-through model, and the map from its fields (under
    ``request.``) to the client's parameters."""
    body = chat.body
    call = providers_pb2.GenerateRequest(
        model=chat.model,
        messages=_messages(body),
        context=providers_pb2.CallContext(purpose=common_pb2.CALL_PURPOSE_ANSWER),
    )
    _sampling(body, call)
    prefixes = {
        "model": "model",
        "messages": "messages",
        "max_tokens": _tokens_key(body),
        "temperature": "temperature",
        "top_p": "top_p",
        "seed": "seed",
        "stop_sequences": "stop",
        "response_format": "response_format",
        "end_user": "user",
        "context": "",
    }
    return providers_pb2.StreamGenerateRequest(request=call), ParamMap(prefixes, strip="request.")
