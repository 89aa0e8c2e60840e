"""Typed clients for the gateway's gRPC peers.

The generated ``*_pb2_grpc`` stubs are untyped; the small classes here give each method the
``grpc.aio`` multi-callable type it really has, so the rest of the gateway type-checks strictly.
Every channel is opened with :func:`orchestratex.grpc_client.open_channel` (request-id propagation,
default deadlines).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)

log = logging.getLogger(__name__)

ORCHESTRATOR_SERVICE = "orchestratex.v1.OrchestratorService"
PROVIDER_SERVICE = "orchestratex.v1.ProviderService"
ANALYTICS_SERVICE = "orchestratex.v1.AnalyticsService"

UnaryUnary = grpc.aio.UnaryUnaryMultiCallable
UnaryStream = grpc.aio.UnaryStreamMultiCallable


class OrchestratorStub:
    """``orchestratex.v1.OrchestratorService`` methods, typed."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        self.Orchestrate: UnaryStream[orchestrator_pb2.OrchestrateRequest, orchestrator_pb2.OrchestrateResponse]
        self.Orchestrate = stub.Orchestrate
        self.WatchSession: UnaryStream[orchestrator_pb2.WatchSessionRequest, orchestrator_pb2.WatchSessionResponse] = (
            stub.WatchSession
        )
        self.GetSession: UnaryUnary[orchestrator_pb2.GetSessionRequest, orchestrator_pb2.GetSessionResponse]
        self.GetSession = stub.GetSession
        self.ListSessions: UnaryUnary[orchestrator_pb2.ListSessionsRequest, orchestrator_pb2.ListSessionsResponse] = (
            stub.ListSessions
        )
        self.CancelSession: UnaryUnary[
            orchestrator_pb2.CancelSessionRequest, orchestrator_pb2.CancelSessionResponse
        ] = stub.CancelSession


class ProviderStub:
    """``orchestratex.v1.ProviderService`` methods the gateway uses, typed."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        self.ListModels: UnaryUnary[providers_pb2.ListModelsRequest, providers_pb2.ListModelsResponse]
        self.ListModels = stub.ListModels


class AnalyticsStub:
    """``orchestratex.v1.AnalyticsService`` methods, typed (used by later gateway endpoints)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        self.GetModelPerformance: UnaryUnary[
            analytics_pb2.GetModelPerformanceRequest, analytics_pb2.GetModelPerformanceResponse
        ] = stub.GetModelPerformance
        self.GetCostReport: UnaryUnary[analytics_pb2.GetCostReportRequest, analytics_pb2.GetCostReportResponse]
        self.GetCostReport = stub.GetCostReport
        self.GetSelectionAccuracy: UnaryUnary[
            analytics_pb2.GetSelectionAccuracyRequest, analytics_pb2.GetSelectionAccuracyResponse
        ] = stub.GetSelectionAccuracy
        self.SubmitFeedback: UnaryUnary[analytics_pb2.SubmitFeedbackRequest, analytics_pb2.SubmitFeedbackResponse] = (
            stub.SubmitFeedback
        )
        self.GetSatisfaction: UnaryUnary[
            analytics_pb2.GetSatisfactionRequest, analytics_pb2.GetSatisfactionResponse
        ] = stub.GetSatisfaction


@dataclass(frozen=True)
class HealthTarget:
    """One peer probed by ``/readyz``: its channel and the service name its health service reports."""

    peer: str
    service: str
    channel: grpc.aio.Channel


@dataclass(frozen=True)
class Upstream:
    """The gateway's channels and typed stubs, opened once per application."""

    orchestrator: OrchestratorStub
    providers: ProviderStub
    analytics: AnalyticsStub
    channels: dict[str, grpc.aio.Channel]
    readiness: tuple[HealthTarget, ...]

    @classmethod
    def open(cls, settings: Settings) -> Upstream:
        """Open channels to the orchestrator, providers and analytics peers (connections are lazy)."""
        channels = {
            name: open_channel(
                settings.common.peers[name],
                unary_timeout=settings.common.rpc_timeout,
                max_message_bytes=settings.common.max_message_bytes,
                connections=settings.common.connections_to(name),
            )
            for name in ("orchestrator", "providers", "analytics")
        }
        return cls(
            orchestrator=OrchestratorStub(channels["orchestrator"]),
            providers=ProviderStub(channels["providers"]),
            analytics=AnalyticsStub(channels["analytics"]),
            channels=channels,
            # The gateway cannot serve sessions or the catalogue without these two.
            readiness=(
                HealthTarget("orchestrator", ORCHESTRATOR_SERVICE, channels["orchestrator"]),
                HealthTarget("providers", PROVIDER_SERVICE, channels["providers"]),
            ),
        )

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running are cancelled after ``grace`` seconds."""
        await asyncio.gather(*(channel.close(grace) for channel in self.channels.values()))


async def check_health(target: HealthTarget, time_limit: float) -> str:
    """The peer's standard ``grpc.health.v1`` status name, or ``UNREACHABLE`` / an error code name."""
    check: Any = health_pb2_grpc.HealthStub(target.channel).Check
    try:
        response = await check(health_pb2.HealthCheckRequest(service=target.service), timeout=time_limit)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        log.info("readiness: %s health check failed: %s", target.peer, code.name)
        return "UNREACHABLE" if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else code.name
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
