"""Retries, the circuit breaker and its health in ListModels, through the real gRPC server and the stand-in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers.resilience import Resilience
from services.providers.server import RETRY_AFTER_METADATA, USAGE_TRAILER, build
from tests.providers.helpers import request
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply, error_reply

GLM = "z-ai/glm-4.5"


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@asynccontextmanager
async def providers(
    standin: OpenRouterStandIn, tmp_path: Path, **policy_env: str
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
        {"ORX_PROVIDER_BACKOFF_BASE": "0.01", "ORX_PROVIDER_BACKOFF_MAX": "0.02", **policy_env}
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
    trailers = _trailers(err.value)
    assert float(trailers[RETRY_AFTER_METADATA]) == pytest.approx(20, abs=1)
    assert USAGE_TRAILER in trailers
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
        assert RETRY_AFTER_METADATA in _trailers(err.value)
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
