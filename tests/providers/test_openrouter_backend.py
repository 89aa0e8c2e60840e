"""OpenRouterBackend without gRPC: error classification for the resilience layer, config, parsing helpers."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from multidict import CIMultiDict

from orchestratex.config import Secret, Settings
from orchestratex.errors import ConfigError
from services.providers.backend import (
    BackendError,
    ErrorCategory,
    FailureKind,
    GenerationRequest,
    Message,
    OutputFormat,
    ResponseFormat,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
)
from services.providers.catalogue import Catalogue, load_catalogue, load_catalogue_file
from services.providers.openrouter import (
    OpenRouterBackend,
    OpenRouterConfig,
    _reasoning,
    _status_of,
    _usage,
    chat_body,
    parse_retry_after,
    resolve_keys,
)
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply, Usage, error_body, error_reply

NOW = 1_800_000_000.0


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.fixture
def settings(standin: OpenRouterStandIn, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path), "OPENROUTER_API_KEY": DEFAULT_KEY, "ORX_OPENROUTER_BASE_URL": standin.base_url}
    )


@pytest.fixture
async def backend(settings: Settings) -> AsyncIterator[OpenRouterBackend]:
    catalogue = load_catalogue(settings)
    backend = OpenRouterBackend(catalogue, resolve_keys(settings, catalogue, {}), OpenRouterConfig(idle_timeout=0.3))
    yield backend
    await backend.aclose()


def glm_request(catalogue: Catalogue, **fields: object) -> GenerationRequest:
    model = catalogue.get("z-ai/glm-4.5")
    assert model is not None
    return GenerationRequest(model=model, messages=(Message(Role.USER, "Hi"),), max_tokens=64, **fields)  # type: ignore[arg-type]


async def run(backend: OpenRouterBackend, settings: Settings) -> list[StreamEvent]:
    return [event async for event in backend.stream(glm_request(load_catalogue(settings)))]


async def fail(backend: OpenRouterBackend, settings: Settings) -> BackendError:
    with pytest.raises(BackendError) as info:
        await run(backend, settings)
    return info.value


@pytest.mark.parametrize(
    ("status", "kind", "category", "retryable"),
    [
        (400, FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, False),
        (401, FailureKind.AUTH, ErrorCategory.UNAUTHENTICATED, False),
        (402, FailureKind.CREDITS, ErrorCategory.INSUFFICIENT_CREDITS, False),
        (403, FailureKind.REFUSED, ErrorCategory.FORBIDDEN, False),
        (404, FailureKind.INVALID_REQUEST, ErrorCategory.NOT_FOUND, False),
        (408, FailureKind.TIMEOUT, ErrorCategory.TIMEOUT, True),
        (413, FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, False),
        (422, FailureKind.INVALID_REQUEST, ErrorCategory.BAD_REQUEST, False),
        (429, FailureKind.RATE_LIMITED, ErrorCategory.RATE_LIMITED, True),
        (500, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
        (502, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
        (503, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
        (504, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
        (524, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
        (529, FailureKind.UPSTREAM_ERROR, ErrorCategory.UNAVAILABLE, True),
    ],
)
async def test_http_errors_are_classified_for_retries(
    backend: OpenRouterBackend,
    settings: Settings,
    standin: OpenRouterStandIn,
    status: int,
    kind: FailureKind,
    category: ErrorCategory,
    retryable: bool,
) -> None:
    standin.script.append(error_reply(status))
    error = await fail(backend, settings)
    assert (error.http_status, error.kind, error.category, error.retryable) == (status, kind, category, retryable)
    assert error.usage is None


async def test_503_availability_retry_after_and_context_length_field(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    standin.script.extend([error_reply(503), error_reply(400, context=True), error_reply(503, retry_after="2")])
    unavailable, context, hinted = [await fail(backend, settings) for _ in range(3)]
    assert unavailable.retry_after == 5.0  # error.availability.retry_after
    assert (context.field, context.retryable) == ("messages", False)
    assert hinted.retry_after == 2.0


async def test_connection_errors_and_timeouts_are_retryable(settings: Settings) -> None:
    catalogue = load_catalogue(
        Settings.from_env(
            {"ORX_DATA_DIR": str(settings.common.data_dir), "ORX_OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1"}
        )
    )
    backend = OpenRouterBackend(catalogue, {"openrouter": Secret("k" * 20)})
    try:
        with pytest.raises(BackendError) as info:
            [e async for e in backend.stream(glm_request(catalogue))]
    finally:
        await backend.aclose()
    assert (info.value.kind, info.value.category, info.value.retryable, info.value.http_status) == (
        FailureKind.UPSTREAM_ERROR,
        ErrorCategory.UNAVAILABLE,
        True,
        None,
    )


async def test_idle_timeout_after_tokens_carries_vendor_usage_seen_so_far(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    # The usage chunk arrives (usage_on_choice sends it with the finish chunk) only at the end: before it, none.
    standin.script.append(Reply(hang_after=2, keepalive_while_hung=True))
    events: list[StreamEvent] = []
    with pytest.raises(BackendError) as info:
        async for event in backend.stream(glm_request(load_catalogue(settings))):
            events.append(event)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", " from"]
    assert (info.value.kind, info.value.category, info.value.retryable) == (
        FailureKind.TIMEOUT,
        ErrorCategory.TIMEOUT,
        True,
    )
    assert info.value.usage is None
    await standin.wait_for_disconnect()


async def test_mid_stream_error_is_mid_stream_with_usage(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(error_after=1, error_usage=True, usage=Usage(11, 1, cost=0.5e-6)))
    error = await fail(backend, settings)
    assert (error.kind, error.http_status, error.category) == (
        FailureKind.MID_STREAM_ERROR,
        502,
        ErrorCategory.UNAVAILABLE,
    )
    assert error.usage is not None and (error.usage.prompt_tokens, error.usage.cost_usd) == (11, 0.5e-6)


async def test_vendor_text_is_scrubbed_of_the_key(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    standin.script.append(error_reply(402, echo_auth=True))
    error = await fail(backend, settings)
    assert DEFAULT_KEY not in error.message and "[REDACTED]" in error.message
    assert "can only afford 1207" in error.message


async def test_success_event_order_and_end(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(content=["a", "b"], reasoning=["r"], usage=Usage(3, 3, cost=1e-6, reasoning_tokens=1)))
    events = await run(backend, settings)
    assert events[:3] == [TextDelta("", "r"), TextDelta("a"), TextDelta("b")]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.usage is not None
    assert (end.usage.reasoning_tokens, end.usage.cost_usd, end.served_model) == (1, 1e-6, "z-ai/glm-4.5")
    assert end.generation_id in standin.generations


# ------------------------------------------------------------------------------------ pure helpers


def test_parse_retry_after() -> None:
    assert parse_retry_after(CIMultiDict({"Retry-After": "17"}), NOW) == 17.0
    assert parse_retry_after(CIMultiDict({"Retry-After": "1.5"}), NOW) == 1.5
    date = email.utils.formatdate(NOW + 42, usegmt=True)
    assert parse_retry_after(CIMultiDict({"Retry-After": date}), NOW) == pytest.approx(42.0)
    assert parse_retry_after(CIMultiDict({"Retry-After": email.utils.formatdate(NOW - 5, usegmt=True)}), NOW) == 0.0
    assert parse_retry_after(CIMultiDict({"X-RateLimit-Reset": str(int((NOW + 30) * 1000))}), NOW) == pytest.approx(
        30.0
    )
    assert parse_retry_after(CIMultiDict({"X-RateLimit-Reset": str(int(NOW + 8))}), NOW) == pytest.approx(8.0)
    assert parse_retry_after(CIMultiDict({"Retry-After": "soon", "X-RateLimit-Reset": "x"}), NOW) is None
    assert parse_retry_after(CIMultiDict({}), NOW) is None


def test_error_code_as_int_string_or_name() -> None:
    assert [_status_of(c) for c in (429, "502", "server_error", "rate_limit_exceeded", "weird", None, True, 42)] == [
        429,
        502,
        500,
        429,
        None,
        None,
        None,
        None,
    ]


def test_reasoning_fields() -> None:
    assert _reasoning({"reasoning": "a", "reasoning_details": [{"type": "reasoning.text", "text": "a"}]}) == "a"
    assert _reasoning({"reasoning_content": "deepseek style"}) == "deepseek style"
    details = [
        {"type": "reasoning.summary", "summary": "S."},
        {"type": "reasoning.encrypted", "data": "opaque"},
        {"type": "reasoning.text", "text": " T."},
    ]
    assert _reasoning({"reasoning": None, "reasoning_details": details}) == "S. T."
    assert _reasoning({"content": "x"}) == ""


def test_usage_parsing_is_defensive() -> None:
    usage = _usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "cost": "0.000012",
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (10, 4, 6, 2)
    assert usage.cost_usd == 0.000012
    assert _usage(None) is None and _usage([]) is None
    broken = _usage({"prompt_tokens": "many", "completion_tokens": -3, "cost": -1, "prompt_tokens_details": None})
    assert broken is not None and (broken.prompt_tokens, broken.completion_tokens, broken.cost_usd) == (0, 0, None)


def test_chat_body(settings: Settings) -> None:
    catalogue = load_catalogue(settings)
    schema = {"type": "object"}
    req = glm_request(catalogue, response_format=ResponseFormat(OutputFormat.JSON_SCHEMA, "s", schema, strict=False))
    body = chat_body(req, stream=False, openrouter=False)
    assert body["max_tokens"] == 64 and body["stream"] is False and "stream_options" not in body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "strict": False, "schema": schema},
    }
    assert "provider" not in body and "temperature" not in body and "seed" not in body


def test_config_from_env() -> None:
    assert OpenRouterConfig.from_env({}) == OpenRouterConfig()
    config = OpenRouterConfig.from_env(
        {
            "ORX_CONNECT_TIMEOUT": "2",
            "ORX_FIRST_TOKEN_TIMEOUT": "3.5",
            "ORX_IDLE_TIMEOUT": " 4 ",
            "ORX_TOTAL_TIMEOUT": "60",
        }
    )
    assert config == OpenRouterConfig(2.0, 3.5, 4.0, 60.0)
    for var, value, problem in [
        ("ORX_CONNECT_TIMEOUT", "fast", "expected a number of seconds, got 'fast'"),
        ("ORX_FIRST_TOKEN_TIMEOUT", "0", "must be more than 0"),
        ("ORX_IDLE_TIMEOUT", "-1", "must be more than 0"),
        ("ORX_TOTAL_TIMEOUT", "inf", "must be more than 0"),
    ]:
        with pytest.raises(ConfigError, match=f"^{var}: {problem}"):
            OpenRouterConfig.from_env({var: value})


def test_keys_come_from_settings_or_the_providers_variable(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "services/providers/catalogue.toml").read_text(encoding="utf-8")
    text = text.replace(
        'api_key_env = "OPENROUTER_API_KEY"\n',
        'api_key_env = "OPENROUTER_API_KEY"\n\n[[providers]]\nname = "local"\nbase_url = "http://127.0.0.1:8000/v1"\n'
        'api_key_env = "LOCAL_KEY"\nstreaming = false\nmax_connections = 8\n',
        1,
    )
    head, _, tail = text.partition('id = "qwen/qwen3-coder"\n')
    text = head + 'id = "qwen/qwen3-coder"\n' + tail.replace('provider = "openrouter"', 'provider = "local"', 1)
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    catalogue = load_catalogue_file(path, "https://openrouter.ai/api/v1")
    local = catalogue.providers["local"]
    assert (local.streaming, local.max_connections) == (False, 8)
    qwen = catalogue.get("qwen/qwen3-coder")
    assert qwen is not None and qwen.provider == "local"
    settings = Settings.from_env({"ORX_DATA_DIR": str(tmp_path), "OPENROUTER_API_KEY": "sk-or-v1-abc"})
    keys = resolve_keys(settings, catalogue, {"LOCAL_KEY": " local-secret ", "OPENROUTER_API_KEY": "ignored"})
    assert {name: key.get() for name, key in keys.items()} == {"openrouter": "sk-or-v1-abc", "local": "local-secret"}
    backend = OpenRouterBackend(catalogue, keys)
    assert backend.name == "openrouter+local" and not backend.simulated


def test_provider_settings_are_validated(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "services/providers/catalogue.toml").read_text(encoding="utf-8")
    path = tmp_path / "catalogue.toml"
    path.write_text(
        text.replace(
            'api_key_env = "OPENROUTER_API_KEY"\n', 'api_key_env = "OPENROUTER_API_KEY"\nmax_connections = 0\n', 1
        )
    )
    with pytest.raises(ConfigError, match=r"providers\[0\]\.max_connections: must be between 1 and 10000, got 0"):
        load_catalogue_file(path, "https://openrouter.ai/api/v1")


def test_backend_error_defaults_keep_the_simulator_contract() -> None:
    assert BackendError(FailureKind.RATE_LIMITED, "x").retryable
    assert BackendError(FailureKind.UPSTREAM_ERROR, "x").retryable
    assert not BackendError(FailureKind.INVALID_REQUEST, "x").retryable
    assert not BackendError(FailureKind.REFUSED, "x").retryable
    assert not BackendError(FailureKind.UPSTREAM_ERROR, "x", category=ErrorCategory.INSUFFICIENT_CREDITS).retryable
    assert BackendError(FailureKind.UPSTREAM_ERROR, "x", category=ErrorCategory.BAD_REQUEST, retryable=True).retryable
    plain = BackendError(FailureKind.TIMEOUT, "x")
    assert (plain.http_status, plain.category, plain.field) == (None, None, "")


async def test_200_error_body_with_error_code_string(
    backend: OpenRouterBackend, settings: Settings, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(error_in_200=True, error=error_body(429, "busy", code="rate_limit_exceeded")))
    error = await fail(backend, settings)
    assert (error.kind, error.http_status, error.retryable) == (FailureKind.RATE_LIMITED, 429, True)
