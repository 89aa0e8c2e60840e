"""Typed clients for the gateway's gRPC peers, and the shared session watches.

The generated ``*_pb2_grpc`` stubs are untyped; the small classes here give each method the
``grpc.aio`` multi-callable type it really has, so the rest of the gateway type-checks strictly.
Every channel is opened with :func:`orchestratex.grpc_client.open_channel` (request-id propagation,
default deadlines).

Shared watches (:class:`WatchHub`)
    Clients that watch the same session as the same tenant (WebSocket ``watch`` messages, SSE streams) share
    one upstream ``WatchSession`` call: each event is received, decoded and encoded
    (:class:`~gateway.events_json.EncodedEvent`) once, then handed to every client. The tenant is part of the
    key, so a call opened with one tenant's ``x-orx-tenant`` never serves another tenant: the orchestrator
    checks each tenant's access on its own call. Delivery never waits for a client (each has its own bounded
    queue and decides what to do when it fills), so a slow watcher cannot stall the others. A client joins a
    running call when the events it asked for are still to come or still in the call's backlog (the last
    :data:`WATCH_BACKLOG` events); otherwise it gets a call of its own. The last client to leave cancels the
    call; watching never cancels the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.events_json import EncodedEvent
from orchestratex import context
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

WATCH_BACKLOG: Final = 32
"""Events a shared watch keeps (each with its encodings) so that a client asking to resume slightly behind it
can still join it."""


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


class WatchSink(Protocol):
    """One client of a shared watch (a socket's stream, an SSE response)."""

    def deliver(self, event: EncodedEvent) -> None:
        """Take the session's next event. Must not wait: a slow client must never hold the others back."""

    def ended(self, failure: BaseException | None) -> None:
        """The upstream call ended: normally (None), failed (a ``grpc.aio.AioRpcError``, or another exception
        for a bug in the gateway), or was stopped because the gateway shuts down (``asyncio.CancelledError``)."""


class Subscription:
    """One client's place on a shared watch."""

    __slots__ = ("_watch", "active", "cursor", "sink")

    def __init__(self, watch: _SharedWatch, sink: WatchSink, after: int) -> None:
        self._watch = watch
        self.sink = sink
        #: The last sequence this client has been given (or asked to start after).
        self.cursor = after
        self.active = True

    def close(self) -> None:
        """Stop receiving; the last client to leave cancels the upstream call. Idempotent."""
        if self.active:
            self.active = False
            self._watch.leave(self)


class _SharedWatch:
    """One upstream ``WatchSession`` call and the clients it serves."""

    def __init__(self, hub: WatchHub, key: tuple[str, str], after: int) -> None:
        self._hub = hub
        self.key = key
        #: The call's ``after_sequence``, and the last sequence it has received.
        self.base = self.last = after
        self.backlog: deque[EncodedEvent] = deque(maxlen=hub.backlog_size)
        self.subscriptions: list[Subscription] = []
        self.task: asyncio.Task[None] | None = None

    def can_serve(self, after: int) -> bool:
        """Whether a client asking for the events after ``after`` can join: none of them has gone by, or
        those that have are all still in the backlog."""
        if after < self.base:
            return False
        if after >= self.last:
            return True
        return bool(self.backlog) and self.backlog[0].sequence <= after + 1

    def join(self, sink: WatchSink, after: int) -> Subscription:
        subscription = Subscription(self, sink, after)
        self.subscriptions.append(subscription)
        for event in tuple(self.backlog):
            if not subscription.active:
                break
            if event.sequence > subscription.cursor:
                subscription.cursor = event.sequence
                sink.deliver(event)
        return subscription

    def leave(self, subscription: Subscription) -> None:
        self.subscriptions.remove(subscription)
        if not self.subscriptions:
            self._hub._forget(self)
            if self.task is not None:
                self.task.cancel()

    async def pump(self) -> None:
        """Relay the call's events to the clients until it ends; then tell those still there how it ended."""
        request = orchestrator_pb2.WatchSessionRequest(session_id=self.key[1], after_sequence=self.base)
        call = self._hub.orchestrator.WatchSession(request)
        failure: BaseException | None = None
        try:
            async for response in call:
                event = EncodedEvent(response.event)
                self.last = event.sequence
                self.backlog.append(event)
                for subscription in tuple(self.subscriptions):
                    if subscription.active and event.sequence > subscription.cursor:
                        subscription.cursor = event.sequence
                        subscription.sink.deliver(event)
        except grpc.aio.AioRpcError as err:
            failure = err
        except asyncio.CancelledError as cancelled:
            failure = cancelled
            raise
        except Exception as exc:
            log.exception("shared watch of a session failed")
            failure = exc
        finally:
            call.cancel()
            self._hub._forget(self)
            for subscription in tuple(self.subscriptions):
                if subscription.active:
                    subscription.active = False
                    subscription.sink.ended(failure)


class WatchHub:
    """Upstream ``WatchSession`` calls shared by the clients watching one session as one tenant (see the
    module's docstring)."""

    def __init__(self, orchestrator: OrchestratorStub, backlog_size: int = WATCH_BACKLOG) -> None:
        self.orchestrator = orchestrator
        self.backlog_size = backlog_size
        self._watches: dict[tuple[str, str], list[_SharedWatch]] = {}

    def subscribe(self, session_id: str, after: int, sink: WatchSink) -> Subscription:
        """Deliver the events of ``session_id`` after sequence ``after`` to ``sink``, then how the stream ended.

        The tenant is the caller's (``orchestratex.context.tenant``), read here and carried by the upstream
        call. Events already in a joined call's backlog are delivered before this returns.
        """
        key = (context.tenant.get(), session_id)
        for watch in self._watches.get(key, ()):
            if watch.can_serve(after):
                return watch.join(sink, after)
        watch = _SharedWatch(self, key, after)
        self._watches.setdefault(key, []).append(watch)
        subscription = watch.join(sink, after)
        # The task copies this context: the call carries this caller's tenant (the key's) and request id.
        watch.task = asyncio.create_task(watch.pump(), name="gateway-watch")
        return subscription

    def calls(self, session_id: str, tenant: str = "") -> int:
        """Upstream calls open for ``session_id`` as ``tenant``."""
        return len(self._watches.get((tenant, session_id), ()))

    def _forget(self, watch: _SharedWatch) -> None:
        watches = self._watches.get(watch.key)
        if watches is not None and watch in watches:
            watches.remove(watch)
            if not watches:
                del self._watches[watch.key]

    async def close(self) -> None:
        """Cancel every call; clients still watching are told (``asyncio.CancelledError``)."""
        tasks = [w.task for ws in self._watches.values() for w in ws if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
    #: Session watches shared by the clients of one session and tenant.
    watches: WatchHub = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "watches", WatchHub(self.orchestrator))

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
        """Close every channel; calls still running are cancelled after ``grace`` seconds (shared watches at
        once)."""
        await self.watches.close()
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
