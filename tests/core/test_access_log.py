"""The access log: routine polling RPCs (``ROUTINE_RPCS``) are at DEBUG so an idle suite is quiet at INFO; every
other RPC, and a routine one that fails, is still at INFO."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from orchestratex.errors import Unavailable
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import ROUTINE_RPCS, GrpcServer, ServiceBinding, create_server
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc

LIST_MODELS = "/orchestratex.v1.ProviderService/ListModels"
GENERATE = "/orchestratex.v1.ProviderService/Generate"


class Providers(providers_pb2_grpc.ProviderServiceServicer):
    """ListModels answers (or fails, once told to); Generate answers."""

    def __init__(self) -> None:
        self.failing = False

    async def ListModels(self, request: Any, ctx: Any) -> providers_pb2.ListModelsResponse:
        if self.failing:
            raise Unavailable("catalogue: not loaded")
        return providers_pb2.ListModelsResponse(models=[common_pb2.ModelInfo(id="x")])

    async def Generate(self, request: Any, ctx: Any) -> providers_pb2.GenerateResponse:
        return providers_pb2.GenerateResponse(text="hello")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Providers, providers_pb2_grpc.ProviderServiceStub]]:
    servicer = Providers()
    srv: GrpcServer = create_server(
        [
            ServiceBinding(
                providers_pb2_grpc.add_ProviderServiceServicer_to_server, servicer, "orchestratex.v1.ProviderService"
            )
        ],
        "127.0.0.1:0",
    )
    await srv.start()
    async with open_channel(f"127.0.0.1:{srv.port}") as channel:
        yield servicer, providers_pb2_grpc.ProviderServiceStub(channel)
    await srv.stop(0)


def _access(caplog: pytest.LogCaptureFixture, rpc: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "orchestratex.access" and getattr(r, "rpc", None) == rpc]


def test_the_routine_set_names_real_rpcs() -> None:
    """A renamed RPC would silently fall out of the set: each entry must be a method of a generated service."""
    from orchestratex.v1 import analytics_pb2, providers_pb2

    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (providers_pb2, analytics_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert ROUTINE_RPCS
    assert methods >= ROUTINE_RPCS


async def test_a_routine_rpc_logs_nothing_at_info(
    served: tuple[Providers, providers_pb2_grpc.ProviderServiceStub], caplog: pytest.LogCaptureFixture
) -> None:
    _, stub = served
    caplog.set_level(logging.INFO, logger="orchestratex.access")
    await stub.ListModels(providers_pb2.ListModelsRequest())
    await stub.Generate(providers_pb2.GenerateRequest(model="x"))
    # Generate's line is written once its handler has returned, as ListModels' was before it.
    assert [r.levelno for r in _access(caplog, GENERATE)] == [logging.INFO]
    assert _access(caplog, LIST_MODELS) == []


async def test_a_routine_rpc_is_still_logged_at_debug(
    served: tuple[Providers, providers_pb2_grpc.ProviderServiceStub], caplog: pytest.LogCaptureFixture
) -> None:
    _, stub = served
    caplog.set_level(logging.DEBUG, logger="orchestratex.access")
    await stub.ListModels(providers_pb2.ListModelsRequest())
    records = _access(caplog, LIST_MODELS)
    assert [(r.levelno, getattr(r, "code", None)) for r in records] == [(logging.DEBUG, "OK")]


async def test_a_failing_routine_rpc_is_logged_at_info(
    served: tuple[Providers, providers_pb2_grpc.ProviderServiceStub], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, stub = served
    servicer.failing = True
    caplog.set_level(logging.INFO, logger="orchestratex.access")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.ListModels(providers_pb2.ListModelsRequest())
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    records = _access(caplog, LIST_MODELS)
    assert [(r.levelno, getattr(r, "code", None)) for r in records] == [(logging.INFO, "UNAVAILABLE")]
