"""ProviderService over the real wire: ListModels, streaming, usage, failures, cancellation, live-mode label."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.domains import DOMAINS, from_proto
from orchestratex.errors import error_details
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import common_pb2, providers_pb2
from services.providers.catalogue import cost_usd
from tests.providers.helpers import Providers, collect, request

LABEL = re.compile(r"^_\(simulated answer · draft ([0-9a-f]{8})\)_\n\n")

FAILING_PROFILE = """
[defaults]
timeout_after_ms = 50
[models."z-ai/glm-4.5".failures]
rate_limit = 1.0
retry_after_seconds = 3.0
[models."openai/gpt-oss-120b".failures]
upstream_error = 1.0
[models."meta-llama/llama-4-maverick".failures]
timeout = 1.0
[models."moonshotai/kimi-k2".failures]
mid_stream_error = 1.0
"""

# tokens_per_second is multiplied by the tests' sim speed (1000): 0.001 -> one token per second, so a
# stream would take minutes and the cancellation test can never race its natural end.
SLOW_PROFILE = """
[models."z-ai/glm-4.5"]
ttft_ms = 0
tokens_per_second = 0.001
"""


async def test_list_models(providers: Providers) -> None:
    reply = await providers.stub.ListModels(providers_pb2.ListModelsRequest())
    assert reply.simulated
    assert [m.id for m in reply.models] == [
        "z-ai/glm-4.5",
        "openai/gpt-oss-120b",
        "meta-llama/llama-4-maverick",
        "moonshotai/kimi-k2",
        "qwen/qwen3-coder",
        "tngtech/deepseek-r1t2-chimera",
    ]
    for model in reply.models:
        assert model.simulated and model.provider == "simulated"
        assert model.health.circuit_state == common_pb2.CIRCUIT_STATE_CLOSED
        assert [from_proto(s.domain) for s in model.specialties] == list(DOMAINS)
        assert all(0 <= s.score <= 1 and s.reason for s in model.specialties)
        assert model.context_length > model.max_output_tokens > 0
        assert model.input_price_per_mtok > 0 and model.output_price_per_mtok > 0
    glm = reply.models[0]
    assert (glm.family, glm.input_price_per_mtok, glm.output_price_per_mtok) == ("glm", 0.60, 2.20)
    # Simulated speed as callers see it: the profile's 1200 ms and 55 tok/s at 1000x.
    assert glm.typical_ttft.ToNanoseconds() == 1_200_000
    assert glm.typical_tokens_per_second == pytest.approx(55_000)
    assert not reply.models[5].supports_json_mode and glm.supports_json_mode


async def test_health_and_reflection_are_registered(providers: Providers) -> None:
    channel = open_channel(f"127.0.0.1:{providers.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="orchestratex.v1.ProviderService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close(None)


async def test_stream_generate_deltas_then_completed(providers: Providers) -> None:
    req = request("qwen/qwen3-coder", "Write a Python function that parses ISO dates.")
    events, error = await collect(providers.stub, req)
    assert error is None
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("event") for e in events]
    # simulated at 1000x, the text arrives within one or two 20 ms coalescing windows
    assert kinds[-1] == "completed" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 2
    done = events[-1].completed
    assert "".join(e.delta.text for e in events[:-1]) == done.text
    match = LABEL.match(done.text)
    assert match
    assert providers.simulator.quality_of(match.group(1)) is not None
    assert (done.served_model, done.requested_model) == ("qwen/qwen3-coder", "qwen/qwen3-coder")
    assert done.simulated and done.attempts == 1
    assert done.finish_reason == providers_pb2.FINISH_REASON_STOP
    assert done.generation_id.startswith("sim-")
    assert 0 < done.time_to_first_token.ToNanoseconds() <= done.latency.ToNanoseconds()
    usage = done.usage
    assert usage.prompt_tokens == math.ceil(len(req.messages[0].content) / 4) + 4
    assert usage.completion_tokens == math.ceil(len(done.text) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Catalogue math (qwen3-coder: $0.22 in, $1.80 out per million), to the micro-dollar and beyond.
    expected = (0.22 * usage.prompt_tokens + 1.80 * usage.completion_tokens) / 1e6
    assert abs(usage.cost_usd - expected) < 1e-9
    model = providers.simulator._catalogue.get("qwen/qwen3-coder")
    assert model is not None and usage.cost_usd == cost_usd(model, usage.prompt_tokens, usage.completion_tokens)


async def test_generate_is_the_collected_stream(providers: Providers) -> None:
    reply = await providers.stub.Generate(request("moonshotai/kimi-k2", "Write a haiku about rain.", domain=4))
    assert LABEL.match(reply.text)
    assert reply.finish_reason == providers_pb2.FINISH_REASON_STOP
    assert reply.simulated and reply.attempts == 1
    assert reply.usage.completion_tokens == math.ceil(len(reply.text) / 4)
    assert reply.usage.cost_usd == pytest.approx(
        (0.57 * reply.usage.prompt_tokens + 2.30 * reply.usage.completion_tokens) / 1e6, abs=1e-9
    )


async def test_critique_over_the_wire(providers: Providers) -> None:
    answer = await providers.stub.Generate(request("qwen/qwen3-coder", "Reverse a string in Go."))
    critique = await providers.stub.Generate(
        request(
            "tngtech/deepseek-r1t2-chimera",
            f"## Task\n\nReverse a string in Go.\n\n## Response to evaluate\n\n{answer.text}",
            purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
        )
    )
    data = json.loads(critique.text)
    assert list(data) == ["rationale", "strengths", "weaknesses", "suggestions", "score"]
    assert 0 <= data["score"] <= 10


async def test_two_fresh_servers_give_the_same_text(start_providers: Callable[..., Any]) -> None:
    first, second = await start_providers(), await start_providers()
    req = request("z-ai/glm-4.5", "List five ideas for a rainy weekend.", domain=9)
    a, b = await first.stub.Generate(req), await second.stub.Generate(req)
    assert a.text == b.text and a.usage == b.usage


@pytest.mark.parametrize("streaming", [False, True])
async def test_rate_limit_is_resource_exhausted_with_retry_after(
    start_providers: Callable[..., Any], streaming: bool
) -> None:
    p: Providers = await start_providers(FAILING_PROFILE)
    req = request("z-ai/glm-4.5")
    if streaming:
        events, err = await collect(p.stub, req)
        assert events == []  # nothing was streamed: no `failed` event, just the status
    else:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await p.stub.Generate(req)
        err = info.value
    assert err is not None
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limited" in (err.details() or "")
    assert error_details(err).retry_after == pytest.approx(0.003)  # the profile's 3 s at 1000x speed


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("openai/gpt-oss-120b", grpc.StatusCode.UNAVAILABLE),
        ("meta-llama/llama-4-maverick", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
async def test_failures_before_the_first_token(
    start_providers: Callable[..., Any], streaming: bool, model: str, code: grpc.StatusCode
) -> None:
    p: Providers = await start_providers(FAILING_PROFILE)
    if streaming:
        events, err = await collect(p.stub, request(model))
        assert events == []
    else:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await p.stub.Generate(request(model))
        err = info.value
    assert err is not None and err.code() == code
    assert "simulated" in (err.details() or "")


async def test_mid_stream_failure_sends_failed_event_then_unavailable(start_providers: Callable[..., Any]) -> None:
    p: Providers = await start_providers(FAILING_PROFILE)
    events, err = await collect(p.stub, request("moonshotai/kimi-k2", "Explain TCP slow start."))
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "failed" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 2
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    failed = events[-1].failed
    streamed = "".join(e.delta.text for e in events[:-1])
    assert failed.kind == common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    assert failed.partial_text == streamed
    assert failed.usage.completion_tokens == math.ceil(len(streamed) / 4) > 0
    assert failed.usage.prompt_tokens == math.ceil(len("Explain TCP slow start.") / 4) + 4
    assert failed.usage.cost_usd == pytest.approx(
        (0.57 * failed.usage.prompt_tokens + 2.30 * failed.usage.completion_tokens) / 1e6, abs=1e-9
    )
    assert failed.attempts == 1 and failed.message
    assert 0 < failed.time_to_first_token.ToNanoseconds() <= failed.latency.ToNanoseconds()


async def test_generate_mid_stream_failure_is_unavailable(start_providers: Callable[..., Any]) -> None:
    p: Providers = await start_providers(FAILING_PROFILE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await p.stub.Generate(request("moonshotai/kimi-k2"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_healthy_model_in_a_failing_profile_still_works(start_providers: Callable[..., Any]) -> None:
    p: Providers = await start_providers(FAILING_PROFILE)
    reply = await p.stub.Generate(request("qwen/qwen3-coder"))
    assert LABEL.match(reply.text)


async def test_cancelling_the_call_stops_the_server_side_stream(
    start_providers: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.providers.server")
    p: Providers = await start_providers(SLOW_PROFILE)
    call = p.stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request("z-ai/glm-4.5")), timeout=60)
    first = await call.read()
    assert first.WhichOneof("event") == "delta"
    assert not p.backend.stopped.is_set()
    call.cancel()
    await asyncio.wait_for(p.backend.stopped.wait(), timeout=10)
    assert not p.backend.completed
    assert await call.code() == grpc.StatusCode.CANCELLED
    assert any("cancelled by the caller" in r.getMessage() for r in caplog.records)
