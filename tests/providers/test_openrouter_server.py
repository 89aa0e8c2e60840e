"""The real providers gRPC server in live mode, with the OpenRouter stand-in as OpenRouter, over real HTTP.

Every behaviour and fault of ``docs/openrouter.md``: success with usage and cost to the micro-dollar,
reasoning, a served model that differs, the error table mapped to gRPC status codes, 200 bodies that
are errors, mid-stream failures (with the usage they used), timeouts, cancellation latency, request shape.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.errors import ConfigError, error_details
from orchestratex.usage import estimate_tokens
from orchestratex.v1 import common_pb2, providers_pb2
from services.providers.backend import estimate_prompt_tokens
from services.providers.server import build
from tests.providers.helpers import collect, request, user
from tests.providers.openrouter_standin import (
    DEFAULT_KEY,
    ERROR_STATUSES,
    LiveProviders,
    OpenRouterStandIn,
    Reply,
    Usage,
    error_body,
    error_reply,
    live_providers,
)

GLM = "z-ai/glm-4.5"
CATALOGUE_IDS = (
    "z-ai/glm-4.5, openai/gpt-oss-120b, meta-llama/llama-4-maverick, moonshotai/kimi-k2, qwen/qwen3-coder, "
    "tngtech/deepseek-r1t2-chimera"
)


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.fixture
async def live(standin: OpenRouterStandIn, tmp_path: Path) -> AsyncIterator[LiveProviders]:
    async with live_providers(standin, tmp_path) as providers:
        yield providers


async def call(
    live: LiveProviders, req: providers_pb2.GenerateRequest, streaming: bool
) -> tuple[list[Any], grpc.aio.AioRpcError | None]:
    """StreamGenerate events, or [GenerateResponse]; and the error the call ended with."""
    if streaming:
        return await collect(live.stub, req)
    try:
        return [await live.stub.Generate(req, timeout=30)], None
    except grpc.aio.AioRpcError as err:
        return [], err


def completed(events: list[Any], streaming: bool) -> providers_pb2.GenerateResponse:
    if not streaming:
        reply: providers_pb2.GenerateResponse = events[0]
        return reply
    assert events[-1].WhichOneof("event") == "completed"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    done: providers_pb2.GenerateResponse = events[-1].completed
    assert "".join(e.delta.text for e in events[:-1]) == done.text
    assert "".join(e.delta.reasoning for e in events[:-1]) == done.reasoning
    return done


# ------------------------------------------------------------------------------------------ success


@pytest.mark.parametrize("streaming", [True, False])
async def test_success_reports_vendor_usage_and_cost(
    live: LiveProviders, standin: OpenRouterStandIn, streaming: bool
) -> None:
    standin.script.append(
        Reply(content=["Hash", " maps", " chain."], usage=Usage(1234, 56, cost=0.00012345, cached_tokens=1000))
    )
    events, err = await call(live, request(GLM), streaming)
    assert err is None
    done = completed(events, streaming)
    assert done.text == "Hash maps chain."
    assert not done.simulated and done.attempts == 1
    assert (done.served_model, done.requested_model) == (GLM, GLM)
    assert done.finish_reason == providers_pb2.FINISH_REASON_STOP
    gen_id = next(iter(standin.generations))
    assert done.generation_id == gen_id
    usage = done.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (1234, 56, 1000)
    assert usage.total_tokens == 1290
    assert abs(usage.cost_usd - 0.00012345) < 1e-9  # OpenRouter's own figure, to the micro-dollar and beyond
    assert 0 < done.time_to_first_token.ToNanoseconds() <= done.latency.ToNanoseconds()


async def test_cost_is_priced_from_the_catalogue_when_the_vendor_omits_it(
    live: LiveProviders, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(usage=Usage(1000, 500, cost=None, reasoning_tokens=120)))
    done = await live.stub.Generate(request(GLM))
    # glm-4.5 in the catalogue: $0.60 in, $2.20 out per million tokens.
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.reasoning_tokens) == (1000, 500, 120)
    assert abs(done.usage.cost_usd - 0.0017) < 1e-12


async def test_no_usage_at_all_falls_back_to_the_estimate(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(send_usage=False))
    req = request(GLM, "Count to three.")
    done = await live.stub.Generate(req)
    prompt, completion = estimate_prompt_tokens(["Count to three."]), estimate_tokens(done.text)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (prompt, completion)
    assert abs(done.usage.cost_usd - (0.60 * prompt + 2.20 * completion) / 1e6) < 1e-12


async def test_byok_cost_adds_the_upstream_charge(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(usage=Usage(10, 5, cost=0.000002, is_byok=True, upstream_inference_cost=0.00004)))
    done = await live.stub.Generate(request(GLM))
    assert abs(done.usage.cost_usd - 0.000042) < 1e-12


@pytest.mark.parametrize("streaming", [True, False])
async def test_reasoning_and_a_served_model_that_differs(
    live: LiveProviders, standin: OpenRouterStandIn, streaming: bool
) -> None:
    standin.script.append(
        Reply(
            reasoning=["Collisions", " chain."],
            reasoning_details=True,
            content=["Use", " chaining."],
            model="z-ai/glm-4.5-air",
        )
    )
    events, err = await call(live, request(GLM), streaming)
    assert err is None
    done = completed(events, streaming)
    # `reasoning` and `reasoning_details` carry the same text: it must not be doubled.
    assert (done.reasoning, done.text) == ("Collisions chain.", "Use chaining.")
    assert (done.served_model, done.requested_model) == ("z-ai/glm-4.5-air", GLM)
    if streaming:
        # deltas may be batched when they arrive faster than they are sent; the text is what counts
        deltas = [e.delta for e in events if e.HasField("delta")]
        assert "".join(d.reasoning for d in deltas) == "Collisions chain."
        assert "".join(d.text for d in deltas) == "Use chaining."


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(crlf=True), id="crlf"),
        pytest.param(Reply(usage_on_choice=True), id="usage-on-a-chunk-with-a-choice"),
        pytest.param(Reply(keepalives_before=5, keepalives_between=3), id="many-keepalives"),
        pytest.param(Reply(first_token_delay=0.15), id="slow-first-token"),
        pytest.param(Reply(send_done=False), id="finish-reason-but-no-done"),
    ],
)
async def test_stream_variants_all_succeed(live: LiveProviders, standin: OpenRouterStandIn, reply: Reply) -> None:
    standin.script.append(reply)
    events, err = await collect(live.stub, request(GLM, "Say hello."))
    assert err is None
    done = completed(events, True)
    assert done.text == "Hello from the stand-in."
    expected = standin.generations[done.generation_id]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (
        expected["tokens_prompt"],
        expected["tokens_completion"],
    )
    assert abs(done.usage.cost_usd - expected["total_cost"]) < 1e-12


async def test_finish_reason_length(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(finish_reason="length"))
    done = await live.stub.Generate(request(GLM))
    assert done.finish_reason == providers_pb2.FINISH_REASON_LENGTH


# ------------------------------------------------------------------------------------ request shape


async def test_request_body_and_headers(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    schema = '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}'
    req = request(
        GLM,
        "Answer in JSON.",
        max_tokens=0,  # 0 = the model default: still sent explicitly upstream
        temperature=0.3,
        top_p=0.9,
        seed=7,
        response_format=providers_pb2.ResponseFormat(
            type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_name="answer", json_schema=schema, strict=True
        ),
        messages=[
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content="Be brief."),
            user("Answer in JSON."),
        ],
    )
    await live.stub.Generate(req)
    (sent,) = standin.chat_requests()
    assert sent.body == {
        "model": GLM,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Answer in JSON."}],
        "max_tokens": 4096,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
            },
        },
        "provider": {"require_parameters": True},
    }
    assert sent.headers["Authorization"] == f"Bearer {DEFAULT_KEY}"
    assert sent.headers["X-OpenRouter-Title"] == "OrchestrateX"
    assert "HTTP-Referer" not in sent.headers  # sent only when ORX_APP_URL names the deployment
    assert sent.headers["Accept"] == "text/event-stream"


async def test_json_object_and_max_tokens_always_sent(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    # With a low balance, OpenRouter answers 402 to any request that omits max_tokens.
    standin.affordable_tokens = 3000
    async with live_providers(standin, tmp_path) as live:
        json_mode = providers_pb2.ResponseFormat(type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
        await live.stub.Generate(request(GLM, max_tokens=250, response_format=json_mode))
        await live.stub.Generate(request("qwen/qwen3-coder", max_tokens=2000))
        events, err = await collect(live.stub, request("openai/gpt-oss-120b", max_tokens=1))
        assert err is None and events
    bodies = [r.body for r in standin.chat_requests()]
    assert [b["max_tokens"] for b in bodies] == [250, 2000, 1]
    assert bodies[0]["response_format"] == {"type": "json_object"}
    assert "response_format" not in bodies[1] and "provider" not in bodies[1]


async def test_connections_are_pooled_and_reused(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.extend([Reply(), error_reply(429), Reply(crlf=True)])
    await collect(live.stub, request(GLM))
    await collect(live.stub, request(GLM))
    await live.stub.Generate(request("qwen/qwen3-coder"))
    peers = [r.peer for r in standin.chat_requests()]
    assert len(peers) == 3 and peers[0]
    # Streams are read to the end (past [DONE]) and error bodies in full, so one connection serves all three.
    assert len(set(peers)) == 1


async def test_list_models_is_labelled_live(live: LiveProviders) -> None:
    reply = await live.stub.ListModels(providers_pb2.ListModelsRequest())
    assert not reply.simulated
    assert len(reply.models) == 6
    assert all(not m.simulated and m.provider == "openrouter" for m in reply.models)


# ---------------------------------------------------------------------------- failures before tokens

STATUS_CASES = [
    (
        error_reply(400),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request: z-ai/glm-4.5: openrouter rejected the request (400): Invalid request: temperature",
    ),
    (
        error_reply(400, context=True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "{p}messages: z-ai/glm-4.5: the prompt is 135,904 tokens and max_tokens is 4,096; together 140,000 exceed "
        "the 131,072-token context window",
    ),
    (
        error_reply(400, message="z-ai/glm-4.5 is not a valid model ID"),
        grpc.StatusCode.NOT_FOUND,
        f"valid ids: {CATALOGUE_IDS}",
    ),
    (error_reply(401), grpc.StatusCode.UNAUTHENTICATED, "openrouter rejected the API key"),
    (
        error_reply(402),
        grpc.StatusCode.FAILED_PRECONDITION,
        "insufficient credits on openrouter: This request requires more credits, or fewer max_tokens. You requested "
        "up to 4096 tokens, but can only afford 1207.",
    ),
    (
        error_reply(403, reasons=["violence", "hate"]),
        grpc.StatusCode.PERMISSION_DENIED,
        "z-ai/glm-4.5: refused by moderation (reasons: violence, hate)",
    ),
    (error_reply(404), grpc.StatusCode.NOT_FOUND, f"No endpoints found for z-ai/glm-4.5.); valid ids: {CATALOGUE_IDS}"),
    (error_reply(408), grpc.StatusCode.DEADLINE_EXCEEDED, "openrouter timed out (408)"),
    (error_reply(413), grpc.StatusCode.INVALID_ARGUMENT, "{p}messages: z-ai/glm-4.5: the request is too large"),
    (
        error_reply(422),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request: z-ai/glm-4.5: openrouter rejected the request (422)",
    ),
    (error_reply(500), grpc.StatusCode.UNAVAILABLE, "openrouter error 500: Internal Server Error"),
    (
        error_reply(502),
        grpc.StatusCode.UNAVAILABLE,
        "openrouter error 502: Provider returned error (Chutes: upstream model is overloaded)",
    ),
    (error_reply(503), grpc.StatusCode.UNAVAILABLE, "openrouter error 503: No allowed providers"),
    (error_reply(504), grpc.StatusCode.UNAVAILABLE, "openrouter error 504"),
    (error_reply(524), grpc.StatusCode.UNAVAILABLE, "openrouter error 524"),
    (error_reply(529), grpc.StatusCode.UNAVAILABLE, "openrouter error 529: Provider overloaded"),
    # A 200 whose body is an error; error.code as an int, as a string, and as a 4xx.
    (
        Reply(error_in_200=True, error=error_body(502, "Provider returned error")),
        grpc.StatusCode.UNAVAILABLE,
        "openrouter error 502",
    ),
    (
        Reply(error_in_200=True, error=error_body(500, "Internal error", code="server_error")),
        grpc.StatusCode.UNAVAILABLE,
        "openrouter error 500: Internal error",
    ),
    (
        Reply(error_in_200=True, error=error_body(401, "User not found.")),
        grpc.StatusCode.UNAUTHENTICATED,
        "rejected the API key",
    ),
    # A bare error event before any token, and streams with nothing usable in them.
    (
        Reply(error_after=0, bare_error=True),
        grpc.StatusCode.UNAVAILABLE,
        "openrouter error 502: Provider returned error",
    ),
    (Reply(content=[]), grpc.StatusCode.UNAVAILABLE, "z-ai/glm-4.5: openrouter returned an empty reply"),
    (Reply(end_after=0), grpc.StatusCode.UNAVAILABLE, "stream ended before the reply was complete"),
]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(("reply", "code", "fragment"), STATUS_CASES)
async def test_failures_before_the_first_token_map_to_status_codes(
    live: LiveProviders,
    standin: OpenRouterStandIn,
    reply: Reply,
    code: grpc.StatusCode,
    fragment: str,
    streaming: bool,
) -> None:
    standin.script.append(reply)
    events, err = await call(live, request(GLM), streaming)
    assert err is not None, events
    assert events == []  # nothing was streamed: no `failed` event, just the status
    assert err.code() == code
    assert fragment.format(p="request." if streaming else "") in (err.details() or "")
    # a wait hint travels only with the statuses a caller may retry, and only when the vendor gave one
    if error_details(err).retry_after is not None:
        assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        assert "Retry-After" in reply.headers or "retry_after" in str(reply.error)


def test_every_status_of_the_error_table_is_covered() -> None:
    statuses = {case[0].status for case in STATUS_CASES}
    assert set(ERROR_STATUSES) <= statuses | {429}  # 429 has its own tests below


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    ("reply", "code", "kind"),
    [
        pytest.param(error_reply(400), grpc.StatusCode.INVALID_ARGUMENT, "FAILURE_KIND_INVALID_REQUEST", id="400"),
        pytest.param(error_reply(401), grpc.StatusCode.UNAUTHENTICATED, "FAILURE_KIND_AUTH", id="401"),
        pytest.param(
            Reply(error_in_200=True, error=error_body(401, "Incorrect API key", code="invalid_api_key")),
            grpc.StatusCode.UNAUTHENTICATED,
            "FAILURE_KIND_AUTH",
            id="401-string-code-in-200",
        ),
        pytest.param(error_reply(402), grpc.StatusCode.FAILED_PRECONDITION, "FAILURE_KIND_CREDITS", id="402"),
        pytest.param(
            Reply(error_in_200=True, error=error_body(402, "You exceeded your quota", code="insufficient_quota")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "FAILURE_KIND_CREDITS",
            id="402-string-code-in-200",
        ),
        pytest.param(error_reply(403), grpc.StatusCode.PERMISSION_DENIED, "FAILURE_KIND_REFUSED", id="403-moderation"),
        pytest.param(error_reply(404), grpc.StatusCode.NOT_FOUND, "FAILURE_KIND_INVALID_REQUEST", id="404"),
        pytest.param(error_reply(408), grpc.StatusCode.DEADLINE_EXCEEDED, "FAILURE_KIND_TIMEOUT", id="408"),
        pytest.param(error_reply(429), grpc.StatusCode.RESOURCE_EXHAUSTED, "FAILURE_KIND_RATE_LIMITED", id="429"),
        pytest.param(error_reply(502), grpc.StatusCode.UNAVAILABLE, "FAILURE_KIND_UPSTREAM_ERROR", id="502"),
        pytest.param(Reply(content=[]), grpc.StatusCode.UNAVAILABLE, "FAILURE_KIND_INVALID_OUTPUT", id="empty"),
    ],
)
async def test_401_and_402_have_their_own_failure_kinds_in_the_details(
    live: LiveProviders, standin: OpenRouterStandIn, reply: Reply, code: grpc.StatusCode, kind: str, streaming: bool
) -> None:
    """Every failed call names its FailureKind as the reason of an ``ErrorInfo`` detail, so callers need not
    guess it from the status code (FAILED_PRECONDITION, for one, is not only ever credits)."""
    standin.script.append(reply)
    events, err = await call(live, request(GLM), streaming)
    assert err is not None and events == []
    details = error_details(err)
    assert (err.code(), details.reason, details.domain) == (code, kind, "orchestratex.v1")
    assert details.metadata == {"model": GLM, "origin": "upstream"}


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    ("reply", "low", "high"),
    [
        pytest.param(error_reply(429, retry_after="17"), 17.0, 17.0, id="retry-after-seconds"),
        pytest.param(error_reply(429), 0.0, 0.0, id="no-hint"),
        pytest.param(error_reply(429, retry_after="12", reset_ms=1), 12.0, 12.0, id="retry-after-wins"),
        pytest.param(
            error_reply(429, metadata={"retry_after_seconds": 9, "headers": {"Retry-After": "9"}}),
            9.0,
            9.0,
            id="older-metadata-shape",
        ),
    ],
)
async def test_rate_limits_are_resource_exhausted_with_retry_after(
    live: LiveProviders, standin: OpenRouterStandIn, reply: Reply, low: float, high: float, streaming: bool
) -> None:
    standin.script.append(reply)
    events, err = await call(live, request(GLM), streaming)
    assert err is not None and events == []
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "z-ai/glm-4.5: rate limited by openrouter: Rate limit exceeded" in (err.details() or "")
    retry_after = error_details(err).retry_after
    if high == 0.0:
        assert retry_after is None
    else:
        assert retry_after is not None and low <= retry_after <= high


@pytest.mark.parametrize("header", ["reset", "date"])
async def test_rate_limit_reset_and_http_date(live: LiveProviders, standin: OpenRouterStandIn, header: str) -> None:
    if header == "reset":
        standin.script.append(error_reply(429, reset_ms=int((time.time() + 30) * 1000)))
    else:
        standin.script.append(error_reply(429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await live.stub.Generate(request(GLM))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 20.0 <= (error_details(info.value).retry_after or 0.0) <= 30.0


async def test_unknown_model_upstream_is_not_found_listing_ids(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.models = [m for m in standin.models if m["id"] != "moonshotai/kimi-k2"]  # e.g. delisted upstream
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await live.stub.Generate(request("moonshotai/kimi-k2"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"moonshotai/kimi-k2 is not a valid model ID); valid ids: {CATALOGUE_IDS}" in (info.value.details() or "")


async def test_connection_refused_is_unavailable(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    async with live_providers(standin, tmp_path, ORX_OPENROUTER_BASE_URL="http://127.0.0.1:9/api/v1") as live:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await live.stub.Generate(request(GLM))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "z-ai/glm-4.5: connection to openrouter failed (ClientConnectorError)" in (info.value.details() or "")


# ------------------------------------------------------------------------------- mid-stream failures


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        pytest.param(Reply(error_after=2), "openrouter error 502: Upstream provider disconnected", id="error-event"),
        pytest.param(Reply(error_after=2, bare_error=True), "openrouter error 502: Provider returned error", id="bare"),
        pytest.param(
            Reply(error_after=2, error=error_body(500, "boom", code="server_error")),
            "error 500: boom",
            id="string-code",
        ),
        pytest.param(Reply(finish_reason="error"), 'finish_reason "error"', id="finish-reason-error"),
        pytest.param(Reply(end_after=2), "stream ended before the reply was complete", id="dropped"),
    ],
)
async def test_mid_stream_failure_sends_failed_event_with_estimated_usage(
    live: LiveProviders, standin: OpenRouterStandIn, reply: Reply, fragment: str
) -> None:
    standin.script.append(reply)
    events, err = await collect(live.stub, request(GLM, "Explain TCP slow start."))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert fragment in (err.details() or "")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "failed" and set(kinds[:-1]) == {"delta"}
    failed = events[-1].failed
    streamed = "".join(e.delta.text for e in events[:-1])
    assert streamed.startswith("Hello from") and failed.partial_text == streamed
    assert failed.kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    assert error_details(err).reason == "FAILURE_KIND_MID_STREAM_ERROR"
    # The vendor sent no usage: what was streamed is estimated and priced from the catalogue.
    prompt, completion = estimate_prompt_tokens(["Explain TCP slow start."]), estimate_tokens(streamed)
    assert (failed.usage.prompt_tokens, failed.usage.completion_tokens) == (prompt, completion)
    assert abs(failed.usage.cost_usd - (0.60 * prompt + 2.20 * completion) / 1e6) < 1e-12


async def test_mid_stream_failure_keeps_the_vendor_usage(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(error_after=3, error_usage=True, usage=Usage(321, 3, cost=0.00004567, cached_tokens=7)))
    events, err = await collect(live.stub, request(GLM))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    failed = events[-1].failed
    assert failed.partial_text == "Hello from the"
    assert (failed.usage.prompt_tokens, failed.usage.completion_tokens, failed.usage.cached_tokens) == (321, 3, 7)
    assert abs(failed.usage.cost_usd - 0.00004567) < 1e-12


async def test_generate_mid_stream_failure_is_unavailable(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    standin.script.append(Reply(error_after=2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await live.stub.Generate(request(GLM))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the stream failed after output had started" in (info.value.details() or "")


# ----------------------------------------------------------------------------- timeouts, cancellation


async def test_hung_stream_is_cut_by_the_idle_timeout(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    # OpenRouter keeps a hung stream "alive" with comments: they must not count as progress.
    standin.script.append(Reply(hang_after=2, keepalive_while_hung=True))
    async with live_providers(standin, tmp_path, ORX_IDLE_TIMEOUT="0.3") as live:
        started = time.perf_counter()
        events, err = await collect(live.stub, request(GLM))
        elapsed = time.perf_counter() - started
        record = await standin.wait_for_disconnect()
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert "z-ai/glm-4.5: the stream stalled for 0.3s" in (err.details() or "")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "failed" and set(kinds[:-1]) == {"delta"}
    assert "".join(e.delta.text for e in events[:-1]) == "Hello from"
    assert events[-1].failed.partial_text == "Hello from"
    assert 0.3 <= elapsed < 5
    assert record.disconnected_at is not None


@pytest.mark.parametrize("streaming", [False, True])
async def test_no_first_token_in_time_is_deadline_exceeded(
    standin: OpenRouterStandIn, tmp_path: Path, streaming: bool
) -> None:
    standin.script.append(Reply(hang_after=0, keepalive_while_hung=True))
    async with live_providers(standin, tmp_path, ORX_FIRST_TOKEN_TIMEOUT="0.3") as live:
        events, err = await call(live, request(GLM), streaming)
        await standin.wait_for_disconnect()
    assert err is not None and events == []
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "z-ai/glm-4.5: no output within 0.3s (time to first token)" in (err.details() or "")


async def test_total_timeout_is_deadline_exceeded(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(Reply(hang_after=0))
    async with live_providers(standin, tmp_path, ORX_TOTAL_TIMEOUT="0.3") as live:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await live.stub.Generate(request(GLM))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "exceeded its total timeout of 0.3s" in (info.value.details() or "")


async def test_bad_timeout_setting_names_the_variable(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ORX_IDLE_TIMEOUT: expected a number of seconds, got 'soon'"):
        async with live_providers(standin, tmp_path, ORX_IDLE_TIMEOUT="soon"):
            pass


async def test_cancelling_stream_generate_closes_upstream_within_100ms(
    live: LiveProviders, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(hang_after=2))
    rpc = live.stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM)), timeout=30)
    text = ""
    while text != "Hello from":  # the two chunks may come as one batched delta
        text += (await rpc.read()).delta.text
    assert not standin.disconnected.is_set()
    cancelled_at = time.perf_counter()
    rpc.cancel()
    record = await standin.wait_for_disconnect()
    assert record.disconnected_at is not None
    latency = record.disconnected_at - cancelled_at
    assert 0 <= latency < 0.1, f"upstream closed {latency * 1000:.1f} ms after the cancel"
    assert await rpc.code() == grpc.StatusCode.CANCELLED
    assert next(iter(standin.generations.values()))["cancelled"] is True


async def test_cancelling_generate_closes_upstream_within_100ms(
    live: LiveProviders, standin: OpenRouterStandIn
) -> None:
    standin.script.append(Reply(hang_after=1))
    rpc = live.stub.Generate(request(GLM), timeout=30)
    await standin.wait_for_requests(1)
    cancelled_at = time.perf_counter()
    rpc.cancel()
    record = await standin.wait_for_disconnect()
    assert record.disconnected_at is not None
    assert record.disconnected_at - cancelled_at < 0.1
    with pytest.raises(asyncio.CancelledError):
        await rpc
    assert rpc.cancelled()


# ----------------------------------------------------------------------------------- configuration


async def test_live_mode_without_a_key_fails_fast(tmp_path: Path) -> None:
    settings = Settings.from_env({"ORX_DATA_DIR": str(tmp_path), "ORX_PROVIDER_MODE": "live"})
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY: required for live models"):
        await build(settings, "127.0.0.1:0")


async def test_key_from_a_key_file(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    key_file = tmp_path / "openrouter.key"
    key_file.write_text(f"{DEFAULT_KEY}\n", encoding="utf-8")
    async with live_providers(standin, tmp_path, key="", ORX_OPENROUTER_API_KEY_FILE=str(key_file)) as live:
        done = await live.stub.Generate(request(GLM))
    assert done.text == "Hello from the stand-in."
    assert standin.chat_requests()[0].headers["Authorization"] == f"Bearer {DEFAULT_KEY}"


def local_catalogue(base_url: str, streaming: bool) -> str:
    specialties = "\n".join(f'specialties.{d} = {{ score = 0.5, reason = "Because." }}' for d in DOMAINS)
    return f"""
[[providers]]
name = "local-vllm"
base_url = "{base_url}"
api_key_env = "LOCAL_VLLM_API_KEY"
streaming = {str(streaming).lower()}
max_connections = 4

[[models]]
id = "acme/tiny"
display_name = "Tiny"
family = "acme"
provider = "local-vllm"
context_length = 8192
max_output_tokens = 1024
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
supports_json_mode = false
typical_ttft_ms = 10
typical_tokens_per_second = 100
{specialties}
"""


@pytest.fixture
async def local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[OpenRouterStandIn, LiveProviders]]:
    """A plain OpenAI-compatible endpoint (non-streaming) with its own key variable, as a catalogue provider."""
    key = f"local-{uuid.uuid4().hex}"
    monkeypatch.setenv("LOCAL_VLLM_API_KEY", key)
    async with OpenRouterStandIn(
        api_key=key, models=[{"id": "acme/tiny", "pricing": {"prompt": "0", "completion": "0"}}]
    ) as server:
        path = tmp_path / "catalogue.toml"
        path.write_text(local_catalogue(server.base_url, streaming=False), encoding="utf-8")
        async with live_providers(server, tmp_path, key="", ORX_CATALOGUE=str(path)) as live:
            yield server, live


async def test_any_openai_compatible_endpoint_non_streaming(local: tuple[OpenRouterStandIn, LiveProviders]) -> None:
    server, live = local
    server.script.append(Reply(reasoning=["Think."], usage=Usage(40, 6, cost=None), model="tiny-q4"))
    events, err = await collect(live.stub, request("acme/tiny", max_tokens=100))
    assert err is None
    done = completed(events, True)
    assert (done.text, done.reasoning, done.served_model) == ("Hello from the stand-in.", "Think.", "tiny-q4")
    assert abs(done.usage.cost_usd - (40 * 1.0 + 6 * 2.0) / 1e6) < 1e-12
    (sent,) = server.chat_requests()
    assert sent.body["stream"] is False and "stream_options" not in sent.body and sent.body["max_tokens"] == 100
    assert sent.headers["Authorization"] == f"Bearer {server.api_key}"
    assert "X-OpenRouter-Title" not in sent.headers and "HTTP-Referer" not in sent.headers
    models = await live.stub.ListModels(providers_pb2.ListModelsRequest())
    assert [(m.id, m.provider, m.simulated) for m in models.models] == [("acme/tiny", "local-vllm", False)]


@pytest.mark.parametrize(
    ("reply", "code", "fragment"),
    [
        (
            Reply(finish_reason="error", usage=Usage(40, 2, cost=0.0001)),
            grpc.StatusCode.UNAVAILABLE,
            'finish_reason "error"',
        ),
        (Reply(error_in_200=True, error=error_body(429, "slow down")), grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"),
        (error_reply(503, retry_after="3"), grpc.StatusCode.UNAVAILABLE, "local-vllm error 503"),
        (Reply(hang_after=0), grpc.StatusCode.DEADLINE_EXCEEDED, "total timeout of 0.4s"),
    ],
)
async def test_non_streaming_failures(
    local: tuple[OpenRouterStandIn, LiveProviders],
    tmp_path: Path,
    reply: Reply,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    server, _ = local
    path = tmp_path / "catalogue.toml"
    async with live_providers(server, tmp_path / "b", key="", ORX_CATALOGUE=str(path), ORX_TOTAL_TIMEOUT="0.4") as live:
        server.script.append(reply)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await live.stub.Generate(request("acme/tiny", max_tokens=100))
    assert info.value.code() == code
    assert fragment in (info.value.details() or "")
