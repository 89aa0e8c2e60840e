"""The shared gRPC bootstrap: health, reflection, request ids across services, errors, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orchestratex import context
from orchestratex.errors import InvalidArgument
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.logging import JsonFormatter, register_secret
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc, selector_pb2, selector_pb2_grpc

SELECTOR = "orchestratex.v1.SelectorService"
PROVIDERS = "orchestratex.v1.ProviderService"


class Downstream(providers_pb2_grpc.ProviderServiceServicer):
    """Records the request id it sees; streams slowly on request."""

    def __init__(self) -> None:
        self.seen_ids: list[str] = []
        self.release = asyncio.Event()
        self.streaming = asyncio.Event()

    async def ListModels(self, request: Any, ctx: Any) -> providers_pb2.ListModelsResponse:
        self.seen_ids.append(context.request_id.get())
        return providers_pb2.ListModelsResponse(models=[common_pb2.ModelInfo(id="x")])

    async def StreamGenerate(self, request: Any, ctx: Any) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        yield providers_pb2.StreamGenerateResponse(sequence=1)
        self.streaming.set()
        await self.release.wait()
        yield providers_pb2.StreamGenerateResponse(sequence=2)


class Upstream(selector_pb2_grpc.SelectorServiceServicer):
    """Calls the downstream service, so propagation can be observed."""

    def __init__(self, target: str) -> None:
        self.stub = providers_pb2_grpc.ProviderServiceStub(open_channel(target))
        self.seen_ids: list[str] = []

    async def AnalyzePrompt(self, request: Any, ctx: Any) -> selector_pb2.AnalyzePromptResponse:
        self.seen_ids.append(context.request_id.get())
        if request.prompt == "bad":
            raise InvalidArgument("prompt", "is bad")
        if request.prompt == "crash":
            raise RuntimeError("database password is hunter2")
        await self.stub.ListModels(providers_pb2.ListModelsRequest())
        return selector_pb2.AnalyzePromptResponse()


async def _start(binding: ServiceBinding) -> GrpcServer:
    srv = create_server([binding], "127.0.0.1:0")
    await srv.start()
    return srv


@pytest.fixture
async def pair() -> AsyncIterator[tuple[GrpcServer, GrpcServer, Downstream, Upstream]]:
    down = Downstream()
    dsrv = await _start(ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, down, PROVIDERS))
    up = Upstream(f"127.0.0.1:{dsrv.port}")
    usrv = await _start(ServiceBinding(selector_pb2_grpc.add_SelectorServiceServicer_to_server, up, SELECTOR))
    yield usrv, dsrv, down, up
    await usrv.stop(0)
    await dsrv.stop(0)


async def test_health_and_reflection(pair: tuple[GrpcServer, GrpcServer, Downstream, Upstream]) -> None:
    usrv = pair[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{usrv.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SELECTOR):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for resp in refl.ServerReflectionInfo(ask(), timeout=5):
            names = {s.name for s in resp.list_services_response.service}
        assert {SELECTOR, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_request_id_propagates_and_is_generated(
    pair: tuple[GrpcServer, GrpcServer, Downstream, Upstream],
) -> None:
    usrv, _, down, up = pair
    async with grpc.aio.insecure_channel(f"127.0.0.1:{usrv.port}") as ch:
        stub = selector_pb2_grpc.SelectorServiceStub(ch)
        await stub.AnalyzePrompt(
            selector_pb2.AnalyzePromptRequest(prompt="hi"), metadata=(("x-request-id", "req-123"),), timeout=5
        )
        await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt="hi"), timeout=5)
    assert up.seen_ids[0] == "req-123" and down.seen_ids[0] == "req-123"
    assert len(up.seen_ids[1]) == 32 and down.seen_ids[1] == up.seen_ids[1]


async def test_errors_map_to_status_and_never_leak(
    pair: tuple[GrpcServer, GrpcServer, Downstream, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    usrv = pair[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{usrv.port}") as ch:
        stub = selector_pb2_grpc.SelectorServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt="bad"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "prompt: is bad"
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzePrompt(
                selector_pb2.AnalyzePromptRequest(prompt="crash"), metadata=(("x-request-id", "r-9"),), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == "internal error (request id r-9)"
        assert "hunter2" not in str(err.value.debug_error_string())
        assert any("hunter2" in (r.exc_text or str(r.exc_info)) for r in caplog.records)
        raw = ch.unary_unary(f"/{SELECTOR}/AnalyzePrompt", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw(b"\x0a\xff\xff\xff\xff", timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("request:")


async def test_graceful_shutdown_drains_in_flight_streams() -> None:
    down = Downstream()
    srv = await _start(ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, down, PROVIDERS))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = providers_pb2_grpc.ProviderServiceStub(ch)
        call = stub.StreamGenerate(providers_pb2.StreamGenerateRequest(), timeout=10)
        assert (await call.read()).sequence == 1
        await down.streaming.wait()
        stopping = asyncio.create_task(srv.stop(grace=5))
        health = health_pb2_grpc.HealthStub(ch)
        for _ in range(200):
            try:
                status = (await health.Check(health_pb2.HealthCheckRequest(service=PROVIDERS), timeout=1)).status
            except grpc.aio.AioRpcError:
                break
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.01)
        down.release.set()
        assert (await call.read()).sequence == 2
        assert await call.code() == grpc.StatusCode.OK
        await stopping


def test_json_logs_redact_registered_secrets() -> None:
    register_secret("sk-or-v1-abcdef0123456789")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key is %s", ("sk-or-v1-abcdef0123456789",), None)
    line = JsonFormatter("test").format(record)
    assert "abcdef0123456789" not in line and "[REDACTED]" in line
