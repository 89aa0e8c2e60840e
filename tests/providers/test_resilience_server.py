"""Retries, the circuit breaker and its health in ListModels, through the real gRPC server and the stand-in."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.errors import error_details
from orchestratex.grpc_client import open_channel
from orchestratex.usage import USAGE_TRAILER
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers.resilience import SYSTEM_CLOCK, Clock, ManualClock, Resilience
from services.providers.server import build
from tests.providers.helpers import request
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply, error_reply

GLM = "z-ai/glm-4.5"


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@asynccontextmanager
async def providers(
    standin: OpenRouterStandIn, tmp_path: Path, clock: Clock = SYSTEM_CLOCK, **policy_env: str
) -> AsyncIterator[providers_pb2_grpc.ProviderServiceStub]:
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_PROVIDER_MODE": "live",
            "OPENROUTER_API_KEY": DEFAULT_KEY,
            "ORX_OPENROUTER_BASE_URL": standin.base_url,
        }
    )
    policy = Resilience.from_env(
        {"ORX_PROVIDER_BACKOFF_BASE": "0.01", "ORX_PROVIDER_BACKOFF_MAX": "0.02", **policy_env}, clock=clock
    )
    server = await build(settings, "127.0.0.1:0", resilience=policy)
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}", unary_timeout=30)
    try:
        yield providers_pb2_grpc.ProviderServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(0)


def _trailers(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    metadata: Any = err.trailing_metadata() or ()
    return {str(key): value for key, value in metadata}


def _health(resp: providers_pb2.ListModelsResponse, model: str) -> common_pb2.ModelHealth:
    return next(m.health for m in resp.models if m.id == model)


async def test_a_retryable_failure_is_retried_and_reported(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(error_reply(503))
    async with providers(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="3") as stub:
        done = await stub.Generate(request(GLM))
    assert done.text == "Hello from the stand-in."
    assert done.attempts == 2
    assert len(standin.chat_requests()) == 2


async def test_a_client_error_is_never_retried(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(error_reply(401))
    async with providers(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="3") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GLM))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(standin.chat_requests()) == 1


async def test_retry_after_past_the_deadline_fails_at_once(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(error_reply(429, retry_after=20))
    async with providers(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="3") as stub:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GLM), timeout=5)
        elapsed = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(err.value).retry_after == pytest.approx(20, abs=1)
    assert USAGE_TRAILER in _trailers(err.value)
    assert elapsed < 4, "it waited for a retry that could not finish before the deadline"
    assert len(standin.chat_requests()) == 1


async def test_the_circuit_opens_shows_in_list_models_and_refuses_calls(
    standin: OpenRouterStandIn, tmp_path: Path
) -> None:
    standin.script.extend([error_reply(502), error_reply(502)])
    async with providers(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="1", ORX_PROVIDER_BREAKER_THRESHOLD="2") as stub:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(request(GLM))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        everything = await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True))
        health = _health(everything, GLM)
        assert health.circuit_state == common_pb2.CIRCUIT_STATE_OPEN
        assert health.consecutive_failures == 2
        assert health.cooldown_remaining.ToNanoseconds() > 0
        healthy = await stub.ListModels(providers_pb2.ListModelsRequest())
        assert GLM not in [m.id for m in healthy.models]
        assert len(healthy.models) == len(everything.models) - 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GLM))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit open" in (err.value.details() or "")
        assert error_details(err.value).retry_after is not None
        assert error_details(err.value).reason == "FAILURE_KIND_CIRCUIT_OPEN"
    assert len(standin.chat_requests()) == 2


async def test_the_callers_cancellation_never_counts_against_a_model(
    standin: OpenRouterStandIn, tmp_path: Path
) -> None:
    standin.script.append(Reply(hang_after=1))
    async with providers(standin, tmp_path, ORX_PROVIDER_BREAKER_THRESHOLD="1") as stub:
        call = stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM)))
        assert (await call.read()).HasField("delta")
        call.cancel()
        await standin.wait_for_disconnect()
        health = _health(await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True)), GLM)
        assert health.circuit_state == common_pb2.CIRCUIT_STATE_CLOSED
        assert health.consecutive_failures == 0
        assert health.in_flight == 0


class _CancelledCallRecords(logging.Handler):
    """Collects the usage records of cancelled calls and signals the first one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "cancelled", False):
            self.records.append(record)
            self.seen.set()


async def test_a_cancelled_stream_still_reports_what_it_used(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(Reply(hang_after=3))
    handler = _CancelledCallRecords()
    logger = logging.getLogger("services.providers.generation")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with providers(standin, tmp_path) as stub:
            call = stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM)))
            text = ""
            while text != "Hello from the":  # three chunks, possibly batched into fewer deltas
                text += (await call.read()).delta.text
            call.cancel()
            await asyncio.wait_for(handler.seen.wait(), 5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert len(handler.records) == 1
    assert handler.records[0].__dict__["completion_tokens"] > 0
    assert handler.records[0].__dict__["cost_usd"] > 0


# -- issue 12: the vendor's rate-limit window, provider-wide key failures ---------------------------------

QWEN = "qwen/qwen3-coder"


def _list(resp: providers_pb2.ListModelsResponse) -> list[str]:
    return [m.id for m in resp.models]


@pytest.mark.parametrize("header", ["retry-after-seconds", "retry-after-http-date", "x-ratelimit-reset"])
async def test_a_long_rate_limit_window_holds_the_model_until_it_ends(
    standin: OpenRouterStandIn, tmp_path: Path, header: str
) -> None:
    """A 429 whose window (120 s) is longer than ORX_PROVIDER_MAX_RETRY_AFTER (30 s): the call fails at once,
    and the model stays unavailable for the vendor's whole window — calls fail fast without reaching the
    vendor and ListModels shows it OPEN — then it is called again. The window is timed on a manual clock."""
    if header == "retry-after-seconds":
        standin.script.append(error_reply(429, retry_after="120"))
    elif header == "retry-after-http-date":
        standin.script.append(error_reply(429, retry_after=email.utils.formatdate(time.time() + 121, usegmt=True)))
    else:
        standin.script.append(error_reply(429, reset_ms=int((time.time() + 120.5) * 1000)))
    clock = ManualClock()
    async with providers(standin, tmp_path, clock, ORX_PROVIDER_MAX_ATTEMPTS="3") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GLM))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(standin.chat_requests()) == 1  # not retried: the window is longer than anyone waits

        everything = await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True))
        health = _health(everything, GLM)
        assert health.circuit_state == common_pb2.CIRCUIT_STATE_OPEN
        assert health.unavailable_reason == common_pb2.FAILURE_KIND_RATE_LIMITED
        assert 118 <= health.cooldown_remaining.ToNanoseconds() / 1e9 <= 121
        assert GLM not in _list(await stub.ListModels(providers_pb2.ListModelsRequest()))

        clock.advance(117)
        for streaming in (False, True):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                if streaming:
                    async for _ in stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request(GLM))):
                        pass
                else:
                    await stub.Generate(request(GLM))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate-limit window" in (err.value.details() or "")
            details = error_details(err.value)
            assert details.retry_after is not None and 1 <= details.retry_after <= 4
            assert details.reason == "FAILURE_KIND_RATE_LIMITED"
            assert details.metadata == {"model": GLM, "origin": "vendor_hold"}
        assert len(standin.chat_requests()) == 1  # the vendor never saw them

        done = await stub.Generate(request(QWEN))  # the other models are not held
        assert done.text == "Hello from the stand-in."

        clock.advance(5)
        assert (await stub.Generate(request(GLM))).text == "Hello from the stand-in."
        health = _health(await stub.ListModels(providers_pb2.ListModelsRequest()), GLM)
        assert health.circuit_state == common_pb2.CIRCUIT_STATE_CLOSED
    assert [r.body["model"] for r in standin.chat_requests()] == [GLM, QWEN, GLM]


async def test_the_window_is_bounded_by_the_configured_maximum(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    standin.script.append(error_reply(429, retry_after="86400"))  # "come back tomorrow"
    clock = ManualClock()
    async with providers(standin, tmp_path, clock, ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW="600") as stub:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(request(GLM))
        health = _health(await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True)), GLM)
        assert health.cooldown_remaining.ToNanoseconds() == 600 * 10**9
        clock.advance(600)
        assert (await stub.Generate(request(GLM))).text == "Hello from the stand-in."


async def test_a_short_retry_after_still_queues_instead_of_failing(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    """Within ORX_PROVIDER_MAX_RETRY_AFTER the old behaviour stays: wait for the window, then retry."""
    standin.script.append(error_reply(429, retry_after="0.05"))
    async with providers(standin, tmp_path, ORX_PROVIDER_MAX_ATTEMPTS="2") as stub:
        done = await stub.Generate(request(GLM))
        health = _health(await stub.ListModels(providers_pb2.ListModelsRequest()), GLM)
    assert (done.attempts, health.circuit_state) == (2, common_pb2.CIRCUIT_STATE_CLOSED)


async def test_a_rejected_key_makes_every_model_of_the_provider_unavailable(
    standin: OpenRouterStandIn, tmp_path: Path
) -> None:
    """A 401 says the provider's key is bad: every model of that provider would fail the same way. For
    ORX_PROVIDER_AUTH_COOLDOWN (60 s) no call goes to that provider; then one call finds out again."""
    standin.script.append(error_reply(401))
    clock = ManualClock()
    async with providers(standin, tmp_path, clock) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as first:
            await stub.Generate(request(GLM))
        assert first.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(QWEN))  # another model, same provider, same key
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "rejected the API key" in (err.value.details() or "")
        assert len(standin.chat_requests()) == 1
        for failed in (first.value, err.value):
            assert error_details(failed).reason == "FAILURE_KIND_AUTH"

        everything = await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True))
        assert {m.health.circuit_state for m in everything.models} == {common_pb2.CIRCUIT_STATE_OPEN}
        assert {m.health.unavailable_reason for m in everything.models} == {common_pb2.FAILURE_KIND_AUTH}
        assert _list(await stub.ListModels(providers_pb2.ListModelsRequest())) == []

        clock.advance(60)
        assert (await stub.Generate(request(QWEN))).text == "Hello from the stand-in."  # the key works again
        healthy = await stub.ListModels(providers_pb2.ListModelsRequest())
        assert len(healthy.models) == len(everything.models)
    assert len(standin.chat_requests()) == 2


async def test_insufficient_credits_hold_nothing(standin: OpenRouterStandIn, tmp_path: Path) -> None:
    """A 402 can depend on the request (max_tokens over what the balance affords) and the model (free variants
    cost nothing), and a top-up fixes it at once: it fails that call only, with its own kind."""
    standin.script.append(error_reply(402))
    async with providers(standin, tmp_path) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request(GLM))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(err.value).reason == "FAILURE_KIND_CREDITS"
        assert (await stub.Generate(request(QWEN))).text == "Hello from the stand-in."
        assert (await stub.Generate(request(GLM))).text == "Hello from the stand-in."
        everything = await stub.ListModels(providers_pb2.ListModelsRequest(include_unavailable=True))
    assert {m.health.circuit_state for m in everything.models} == {common_pb2.CIRCUIT_STATE_CLOSED}
    assert len(standin.chat_requests()) == 3
