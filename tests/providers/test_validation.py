"""Every bad input is rejected before any generation, with the right code and a message naming the field.

Field paths are relative to the RPC's request message: ``messages[0].role`` for Generate and
``request.messages[0].role`` for StreamGenerate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import common_pb2, providers_pb2
from services.providers.catalogue import Catalogue
from services.providers.validate import parse_generate_request
from services.sampling import _checked_schema, parse_json_schema
from tests.providers.helpers import Providers, collect, request, user

CRITIQUE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 10}},
    "required": ["score"],
    "additionalProperties": False,
}
UNKNOWN_ENUM_7: Any = 7  # enum numbers no .proto defines (typed Any: the stubs only accept known values)
UNKNOWN_ENUM_9: Any = 9
LIMIT = 1_000_000  # ORX_MAX_PROMPT_CHARS for these tests, so prompts can overflow a context window


def schema_format(name: str = "critique", schema: str = json.dumps(CRITIQUE_SCHEMA)) -> providers_pb2.ResponseFormat:
    return providers_pb2.ResponseFormat(
        type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_name=name, json_schema=schema
    )


def with_context(**fields: Any) -> providers_pb2.CallContext:
    return providers_pb2.CallContext(**fields)


def system(text: str) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=text)


# (case id, request, expected code, field path relative to GenerateRequest, text the message must contain)
CASES: list[tuple[str, providers_pb2.GenerateRequest, grpc.StatusCode, str, str]] = [
    ("empty model", request(model=""), grpc.StatusCode.INVALID_ARGUMENT, "model", "is required"),
    ("unknown model", request(model="acme/gpt-9"), grpc.StatusCode.NOT_FOUND, "", "qwen/qwen3-coder"),
    ("no messages", request(messages=[]), grpc.StatusCode.INVALID_ARGUMENT, "messages", "at least one"),
    (
        "unspecified role",
        request(messages=[common_pb2.ChatMessage(content="hi")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages[0].role",
        "is required",
    ),
    (
        "unknown role",
        request(messages=[system("be nice"), common_pb2.ChatMessage(role=UNKNOWN_ENUM_9, content="hi")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages[1].role",
        "unknown value 9",
    ),
    (
        "blank content",
        request(messages=[system("be nice"), user("  \n\t")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages[1].content",
        "must not be blank",
    ),
    (
        "message over the prompt limit",
        request(messages=[user("x" * (LIMIT + 1))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages[0].content",
        "1,000,001 characters; the limit is 1,000,000",
    ),
    (
        "prompt over the prompt limit",
        request(messages=[user("x" * 600_000), user("y" * 600_000)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages",
        "total 1,200,000 characters",
    ),
    ("negative max_tokens", request(max_tokens=-1), grpc.StatusCode.INVALID_ARGUMENT, "max_tokens", ">= 0"),
    (
        "max_tokens above the model's output limit",
        request(model="meta-llama/llama-4-maverick", max_tokens=16_385),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_tokens",
        "allows at most 16,384",
    ),
    (
        "prompt plus max_tokens over the context window",
        request(messages=[user("x" * 200_000)], max_tokens=98_304),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_tokens",
        "about 50,004 tokens and max_tokens is 98,304; together 148,308 exceed the 131,072-token context window",
    ),
    (
        "prompt alone over the context window",
        request(messages=[user("x" * 600_000)], max_tokens=0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages",
        "about 150,004 tokens; it does not fit the 131,072-token context window",
    ),
    ("temperature below 0", request(temperature=-0.1), grpc.StatusCode.INVALID_ARGUMENT, "temperature", "[0, 2]"),
    ("temperature above 2", request(temperature=2.5), grpc.StatusCode.INVALID_ARGUMENT, "temperature", "[0, 2]"),
    ("temperature NaN", request(temperature=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "temperature", "finite"),
    ("top_p zero", request(top_p=0.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p", "(0, 1]"),
    ("top_p above 1", request(top_p=1.5), grpc.StatusCode.INVALID_ARGUMENT, "top_p", "(0, 1]"),
    (
        "unknown response format type",
        request(response_format=providers_pb2.ResponseFormat(type=UNKNOWN_ENUM_7)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.type",
        "unknown value 7",
    ),
    (
        "json_schema without a name",
        request(response_format=schema_format(name="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.schema_name",
        "is required",
    ),
    (
        "json_schema with a bad name",
        request(response_format=schema_format(name="my schema!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.schema_name",
        "letters, digits",
    ),
    (
        "json_schema missing",
        request(response_format=schema_format(schema="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        "is required",
    ),
    (
        "json_schema not JSON",
        request(response_format=schema_format(schema="{type: object")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        "is not valid JSON",
    ),
    (
        "json_schema not a JSON object",
        request(response_format=schema_format(schema="[1, 2]")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        "must be a JSON object",
    ),
    (
        "json_schema invalid per the meta-schema",
        request(response_format=schema_format(schema='{"type": "object", "properties": 5}')),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        "is not a valid JSON Schema",
    ),
    (
        "json_schema not describing an object",
        request(response_format=schema_format(schema='{"type": "string"}')),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        '"type": "object"',
    ),
    (
        "json_schema with an unknown $schema",
        request(response_format=schema_format(schema='{"$schema": "https://example.com/s", "type": "object"}')),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.json_schema",
        "not a supported JSON Schema draft",
    ),
    (
        "schema fields without JSON_SCHEMA type",
        request(response_format=providers_pb2.ResponseFormat(schema_name="critique")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "response_format.schema_name",
        "only allowed when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
    ),
    (
        "five stop sequences",
        request(stop_sequences=["a", "b", "c", "d", "e"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stop_sequences",
        "at most 4 sequences, got 5",
    ),
    (
        "empty stop sequence",
        request(stop_sequences=["\n", ""]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stop_sequences[1]",
        "must not be empty",
    ),
    (
        "stop sequence too long",
        request(stop_sequences=["x" * 257]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stop_sequences[0]",
        "257 characters; the limit is 256",
    ),
    (
        "end user too long",
        request(end_user="u" * 129),
        grpc.StatusCode.INVALID_ARGUMENT,
        "end_user",
        "129 characters; the limit is 128",
    ),
    (
        "unknown purpose",
        request(context=with_context(purpose=42)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "context.purpose",
        "unknown value 42",
    ),
    (
        "unknown domain",
        request(context=with_context(domain=42)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "context.domain",
        "unknown value 42",
    ),
    (
        "session id too long",
        request(context=with_context(session_id="s" * 129)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "context.session_id",
        "the limit is 128",
    ),
]


@pytest.fixture
async def strict_providers(start_providers: Callable[..., Any]) -> Providers:
    result: Providers = await start_providers(ORX_MAX_PROMPT_CHARS=str(LIMIT))
    return result


@pytest.mark.parametrize("streaming", [False, True], ids=["Generate", "StreamGenerate"])
@pytest.mark.parametrize(("req", "code", "field", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_rejected_naming_the_field(
    strict_providers: Providers,
    streaming: bool,
    req: providers_pb2.GenerateRequest,
    code: grpc.StatusCode,
    field: str,
    text: str,
) -> None:
    if streaming:
        events, err = await collect(strict_providers.stub, req)
        assert events == []
    else:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await strict_providers.stub.Generate(req, timeout=30)
        err = info.value
    assert err is not None
    assert err.code() == code
    details = err.details() or ""
    if field:
        prefix = "request." if streaming else ""
        assert details.startswith(f"{prefix}{field}: "), details
    assert text in details, details
    assert strict_providers.backend.calls == 0  # rejected before any generation


async def test_a_valid_json_schema_request_is_accepted(strict_providers: Providers) -> None:
    reply = await strict_providers.stub.Generate(
        request(response_format=schema_format(), temperature=0.0, top_p=1.0, seed=7, max_tokens=0)
    )
    assert reply.text


def test_stop_sequences_and_the_end_user_reach_the_backend_request(catalogue: Catalogue) -> None:
    # whitespace is a stop sequence like any other (only empty ones are refused)
    parsed = parse_generate_request(
        request(stop_sequences=["\n", " ", "END"], end_user="u" * 128), catalogue, max_prompt_chars=LIMIT
    )
    assert parsed.stop == ("\n", " ", "END")
    assert parsed.end_user == "u" * 128
    plain = parse_generate_request(request(), catalogue, max_prompt_chars=LIMIT)
    assert (plain.stop, plain.end_user) == ((), "")


def test_max_tokens_zero_means_the_model_default(catalogue: Catalogue) -> None:
    parsed = parse_generate_request(request(max_tokens=0), catalogue, max_prompt_chars=LIMIT)
    glm = catalogue.get("z-ai/glm-4.5")
    assert glm is not None and parsed.max_tokens == glm.default_max_tokens == 4096
    assert parsed.domain == "coding" and parsed.purpose.value == "answer"
    unspecified = parse_generate_request(request(purpose=0, domain=0), catalogue, max_prompt_chars=LIMIT)
    assert (unspecified.purpose.value, unspecified.domain) == ("other", "")


def test_default_max_tokens_shrinks_to_fit_the_window(catalogue: Catalogue) -> None:
    big = request(messages=[user("x" * 520_000)], max_tokens=0)  # 130,004 tokens of a 131,072 window
    assert parse_generate_request(big, catalogue, max_prompt_chars=LIMIT).max_tokens == 1068


def test_schema_checker_accepts_critique_schemas() -> None:
    assert parse_json_schema(json.dumps(CRITIQUE_SCHEMA), "f")["type"] == "object"
    # The orchestrator's real critique schema (when that package is present) must pass too.
    shipped = Path(__file__).parents[2] / "services" / "orchestrator" / "prompts" / "v1" / "critique.schema.json"
    if shipped.exists():
        assert parse_json_schema(shipped.read_text(encoding="utf-8"), "f")["type"] == "object"
    with pytest.raises(InvalidArgument, match=r"^f: \$schema must be a string"):
        parse_json_schema('{"$schema": 3, "type": "object"}', "f")


def test_a_schema_is_checked_once_per_text_and_errors_name_each_callers_field() -> None:
    text = '{"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]}'
    _checked_schema.cache_clear()
    first = parse_json_schema(text, "a")
    again = parse_json_schema(text, "b")
    assert again is first and _checked_schema.cache_info().hits == 1
    bad = '{"type": "object", "properties": {"x": {"type": 3}}}'
    for field in ("request.response_format.json_schema", "author_options.response_format.json_schema"):
        with pytest.raises(InvalidArgument) as raised:
            parse_json_schema(bad, field)
        assert raised.value.field == field and "not a valid JSON Schema" in str(raised.value)
