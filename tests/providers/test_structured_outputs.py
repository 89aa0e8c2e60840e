"""Structured outputs: the catalogue flag, ListModels, refusal for models without it, and the translation of
``RESPONSE_FORMAT_TYPE_JSON_SCHEMA`` into each endpoint's form (OpenAI's, or llama-cpp-python's)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.errors import ConfigError
from orchestratex.v1 import providers_pb2
from services.providers.backend import GenerationRequest, Message, OutputFormat, ResponseFormat, Role
from services.providers.catalogue import SchemaStyle, load_catalogue, load_catalogue_file
from services.providers.openrouter import chat_body
from tests.providers.helpers import Providers, catalogue_text, collect, request
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply, live_providers

LOCAL_CATALOGUE = Path(__file__).parents[2] / "services/providers/catalogue.local.toml"
SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": [1, 2, 3]}},
    "required": ["score"],
    "additionalProperties": False,
}


def schema_format(name: str = "verdict") -> providers_pb2.ResponseFormat:
    return providers_pb2.ResponseFormat(
        type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        schema_name=name,
        json_schema=json.dumps(SCHEMA),
        strict=True,
    )


# ---------------------------------------------------------------------------- the catalogue


def test_packaged_flags(make_settings: Callable[..., Settings]) -> None:
    catalogue = load_catalogue(make_settings())
    flags = {m.id: m.supports_structured_outputs for m in catalogue}
    assert flags.pop("tngtech/deepseek-r1t2-chimera") is False
    assert all(flags.values()) and len(flags) == 5
    assert catalogue.providers["openrouter"].schema_style is SchemaStyle.JSON_SCHEMA
    assert not catalogue.providers["openrouter"].probe_broken_streams


def test_provider_and_model_options(write_file: Callable[..., Path]) -> None:
    defaults = load_catalogue_file(write_file(catalogue_text("http://127.0.0.1:9/v1")), "http://x")
    assert defaults.providers["local"].schema_style is SchemaStyle.JSON_SCHEMA
    assert not defaults.providers["local"].probe_broken_streams
    tiny = defaults.get("acme/tiny")
    assert tiny is not None and not tiny.supports_structured_outputs
    text = catalogue_text(
        "http://127.0.0.1:9/v1",
        'schema_style = "json_object"\nprobe_broken_streams = true',
        "supports_structured_outputs = true",
    )
    custom = load_catalogue_file(write_file(text), "http://x")
    assert custom.providers["local"].schema_style is SchemaStyle.JSON_OBJECT
    assert custom.providers["local"].probe_broken_streams
    tiny = custom.get("acme/tiny")
    assert tiny is not None and tiny.supports_structured_outputs


@pytest.mark.parametrize(
    ("provider_options", "model_options", "expected"),
    [
        ('schema_style = "grammar"', "", "providers[0].schema_style: expected 'json_schema' or 'json_object'"),
        ("probe_broken_streams = 1", "", "providers[0].probe_broken_streams: expected true or false"),
        ("", 'supports_structured_outputs = "yes"', "models[0].supports_structured_outputs: expected true or false"),
    ],
)
def test_bad_options_name_the_key(
    write_file: Callable[..., Path], provider_options: str, model_options: str, expected: str
) -> None:
    path = write_file(catalogue_text("http://127.0.0.1:9/v1", provider_options, model_options))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_catalogue_file(path, "http://x")


def test_the_local_catalogue_for_users_is_valid() -> None:
    catalogue = load_catalogue_file(LOCAL_CATALOGUE, "https://openrouter.ai/api/v1")
    assert list(catalogue.providers) == ["llama-cpp"]
    provider = catalogue.providers["llama-cpp"]
    assert provider.base_url == "http://127.0.0.1:8081/v1"
    assert provider.schema_style is SchemaStyle.JSON_OBJECT and provider.probe_broken_streams
    (model,) = catalogue.models
    assert model.provider == "llama-cpp" and model.supports_structured_outputs and model.supports_json_mode
    assert model.context_length == 2048  # the --n_ctx of the command in its header
    assert (model.input_price_per_mtok, model.output_price_per_mtok) == (0.0, 0.0)
    text = LOCAL_CATALOGUE.read_text(encoding="utf-8")
    for url in ("http://127.0.0.1:11434/v1", "http://127.0.0.1:8000/v1", "--n_ctx 2048"):
        assert url in text


# ---------------------------------------------------------------------------- the service


async def test_list_models_reports_the_flag(providers: Providers) -> None:
    reply = await providers.stub.ListModels(providers_pb2.ListModelsRequest())
    flags = {m.id: m.supports_structured_outputs for m in reply.models}
    assert flags["z-ai/glm-4.5"] is True and flags["tngtech/deepseek-r1t2-chimera"] is False


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_schema_for_a_model_without_structured_outputs_is_refused(
    providers: Providers, streaming: bool
) -> None:
    req = request("tngtech/deepseek-r1t2-chimera", response_format=schema_format())
    if streaming:
        events, err = await collect(providers.stub, req)
        assert events == [] and err is not None
    else:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await providers.stub.Generate(req, timeout=10)
        err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    field = "request.response_format.type" if streaming else "response_format.type"
    assert (err.details() or "").startswith(f"{field}: tngtech/deepseek-r1t2-chimera does not support structured")
    assert "RESPONSE_FORMAT_TYPE_JSON_OBJECT" in (err.details() or "")
    assert providers.backend.calls == 0


async def test_json_mode_for_the_same_model_is_still_passed_on(providers: Providers) -> None:
    rf = providers_pb2.ResponseFormat(type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    reply = await providers.stub.Generate(request("tngtech/deepseek-r1t2-chimera", response_format=rf), timeout=10)
    assert reply.text and providers.backend.calls == 1


# ---------------------------------------------------------------------------- the wire


def test_chat_body_in_llama_cpp_pythons_form(make_settings: Callable[..., Settings]) -> None:
    catalogue = load_catalogue(make_settings())
    model = catalogue.get("z-ai/glm-4.5")
    assert model is not None
    req = GenerationRequest(
        model=model,
        messages=(Message(Role.USER, "hi"),),
        max_tokens=8,
        response_format=ResponseFormat(OutputFormat.JSON_SCHEMA, "verdict", SCHEMA, strict=True),
    )
    body = chat_body(req, stream=True, openrouter=False, schema_style=SchemaStyle.JSON_OBJECT)
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert "provider" not in body
    openai = chat_body(req, stream=True, openrouter=True)
    assert openai["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "strict": True, "schema": SCHEMA},
    }
    assert openai["provider"] == {"require_parameters": True}


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.mark.parametrize("streaming", [False, True])
async def test_openrouter_gets_the_openai_form_and_the_reply_comes_back(
    standin: OpenRouterStandIn, tmp_path: Path, streaming: bool
) -> None:
    standin.script.append(Reply(content=['{"score"', ": 2}"]))
    async with live_providers(standin, tmp_path) as live:
        req = request("z-ai/glm-4.5", response_format=schema_format())
        if streaming:
            events, err = await collect(live.stub, req)
            assert err is None
            text = events[-1].completed.text
        else:
            text = (await live.stub.Generate(req, timeout=10)).text
    assert json.loads(text) == {"score": 2}
    (sent,) = standin.chat_requests()
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "strict": True, "schema": SCHEMA},
    }
    assert sent.body["provider"] == {"require_parameters": True}


async def test_a_local_endpoint_gets_llama_cpp_pythons_form(
    standin: OpenRouterStandIn, tmp_path: Path, write_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_KEY", DEFAULT_KEY)
    text = catalogue_text(standin.base_url, 'schema_style = "json_object"', "supports_structured_outputs = true")
    standin.script.append(Reply(content=['{"score": 3}']))
    async with live_providers(standin, tmp_path, key="", ORX_CATALOGUE=str(write_file(text))) as live:
        req = request("acme/tiny", max_tokens=100, response_format=schema_format())
        reply = await live.stub.Generate(req, timeout=10)
    assert json.loads(reply.text) == {"score": 3}
    (sent,) = standin.chat_requests()
    assert sent.body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert "provider" not in sent.body


# ---------------------------------------------------------------------------- the stand-in, like OpenRouter


async def _post(standin: OpenRouterStandIn, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{standin.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {DEFAULT_KEY}"}
        ) as reply,
    ):
        return reply.status, await reply.json()


@pytest.mark.parametrize(
    ("model", "response_format", "require", "status", "fragment"),
    [
        ("z-ai/glm-4.5", {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}}, True, 200, ""),
        ("z-ai/glm-4.5", {"type": "json_schema", "json_schema": {"schema": SCHEMA}}, False, 400, "needs a name"),
        ("z-ai/glm-4.5", {"type": "json_schema", "json_schema": {"name": "v"}}, False, 400, "schema object"),
        ("z-ai/glm-4.5", {"type": "grammar"}, False, 400, "must be one of"),
        (
            "tngtech/deepseek-r1t2-chimera",
            {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}},
            True,
            404,
            "No endpoints found that can handle the requested parameters",
        ),
        ("tngtech/deepseek-r1t2-chimera", {"type": "json_object"}, True, 200, ""),
        (
            "tngtech/deepseek-r1t2-chimera",
            {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}},
            False,
            200,
            "",
        ),
    ],
)
async def test_the_standin_checks_response_format_like_openrouter(
    standin: OpenRouterStandIn,
    model: str,
    response_format: dict[str, object],
    require: bool,
    status: int,
    fragment: str,
) -> None:
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}],
        "max_tokens": 8,
        "response_format": response_format,
    }
    if require:
        body["provider"] = {"require_parameters": True}
    code, payload = await _post(standin, body)
    assert code == status
    if fragment:
        error = payload["error"]
        assert isinstance(error, dict) and fragment in error["message"]
