"""OrchestratorService on the wire: the servicer, the server's health, and ``build``.

:class:`OrchestratorServicer` validates each RPC's fields and hands it to the
:class:`~services.orchestrator.manager.SessionManager`, which owns the sessions. ``build`` binds, opens
the store, takes its lease and wires the manager, the event writer and the outbox together.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from orchestratex import context
from orchestratex.config import Settings
from orchestratex.errors import InvalidArgument
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, building
from orchestratex.v1 import analytics_pb2_grpc, orchestrator_pb2_grpc, providers_pb2_grpc, selector_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.validation import check_enum, check_timestamp, require_text
from services.orchestrator.catalogue import CatalogueCache
from services.orchestrator.hub import EventWriter, Hub, StoreHealth
from services.orchestrator.lease import Holder, OrchestratorLease
from services.orchestrator.manager import SessionManager
from services.orchestrator.outbox import Outbox
from services.orchestrator.prompts import load_prompts
from services.orchestrator.replicas import ChangeFeed, Leadership, Replicas, instance_lease
from services.orchestrator.store import open_session_store
from services.orchestrator.store.base import SessionQuery, decode_page_token

log = logging.getLogger(__name__)

SERVICE_NAME = "orchestratex.v1.OrchestratorService"
MAX_PROMPT_SEARCH_CHARS = 200
"""The longest ``ListSessionsRequest.prompt_contains``."""


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """gRPC surface over :class:`SessionManager`."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    async def Orchestrate(
        self, request: pb.OrchestrateRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.OrchestrateResponse]:
        live = await self.manager.start(request, context.tenant.get())
        finished = False
        try:
            async for event in live.follow(0):
                yield pb.OrchestrateResponse(event=event)
            finished = True
        finally:
            if not finished and not request.detached:
                self.manager.cancel_now(live.session_id)

    async def WatchSession(
        self, request: pb.WatchSessionRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchSessionResponse]:
        require_text(request.session_id, "session_id", 128)
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence", f"must be >= 0, got {request.after_sequence}")
        async for event in self.manager.events(request.session_id, request.after_sequence, context.tenant.get()):
            yield pb.WatchSessionResponse(event=event)

    async def GetSession(
        self, request: pb.GetSessionRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetSessionResponse:
        require_text(request.session_id, "session_id", 128)
        return pb.GetSessionResponse(session=await self.manager.get(request.session_id, context.tenant.get()))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSessionsResponse:
        page_size = request.page_size or 20
        if not 1 <= page_size <= 100:
            raise InvalidArgument("page_size", f"must be between 1 and 100, got {request.page_size}")
        check_enum(request.status, pb.SessionStatus.DESCRIPTOR, "status", allow_unspecified=True)
        if request.page_token:
            try:
                decode_page_token(request.page_token)
            except ValueError:
                raise InvalidArgument("page_token", "is not a token returned by ListSessions") from None
        bounds = request.range
        start: int | None = None
        end: int | None = None
        if bounds.HasField("start_time"):
            start = check_timestamp(bounds.start_time, "range.start_time") // 1000
        if bounds.HasField("end_time"):
            end = check_timestamp(bounds.end_time, "range.end_time") // 1000
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("range", "start_time must be before end_time")
        if len(request.prompt_contains) > MAX_PROMPT_SEARCH_CHARS:
            raise InvalidArgument(
                "prompt_contains",
                f"must be at most {MAX_PROMPT_SEARCH_CHARS} characters, got {len(request.prompt_contains)}",
            )
        page = await self.manager.store.list_sessions(
            SessionQuery(
                tenant=context.tenant.get(),
                page_size=page_size,
                page_token=request.page_token,
                status=request.status,
                thread_id=request.thread_id,
                start_us=start,
                end_us=end,
                prompt_contains=request.prompt_contains.casefold(),
            )
        )
        for record in page.sessions:
            live = self.manager.hub.get(record.session_id)
            if live is not None:
                record.last_sequence = live.last_sequence
        return pb.ListSessionsResponse(sessions=page.sessions, next_page_token=page.next_token)

    async def CancelSession(
        self, request: pb.CancelSessionRequest, ctx: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelSessionResponse:
        require_text(request.session_id, "session_id", 128)
        if len(request.reason) > 1000:
            raise InvalidArgument("reason", "must be at most 1,000 characters")
        session = await self.manager.cancel(request.session_id, context.tenant.get(), request.reason)
        return pb.CancelSessionResponse(session=session)


def follow_store_health(srv: GrpcServer, health: StoreHealth) -> None:
    """Report NOT_SERVING (standard health service, so also the gateway's ``/readyz``) while the
    store cannot write, and SERVING again once it can."""
    pending: set[asyncio.Task[None]] = set()

    def changed(ok: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in (SERVICE_NAME, ""):
            task = asyncio.ensure_future(srv.health.set(name, status))
            pending.add(task)
            task.add_done_callback(pending.discard)

    health.listeners.append(changed)


async def build(settings: Settings, listen: str | None = None) -> GrpcServer:
    """Bind, open the store, take its lease, recover interrupted sessions, start the writer and outbox.

    The port is bound first and the lease taken before any session is touched, so neither a start that
    cannot listen nor a second orchestrator on the same database changes anything (see
    :mod:`services.orchestrator.lease`). Everything is released, last first, if a step fails.
    """
    common, own = settings.common, settings.orchestrator
    async with building(listen or str(common.listen["orchestrator"]), common.max_message_bytes) as (srv, res):
        store = await open_session_store(settings)
        res.push_async_callback(store.close)
        holder = Holder.this_process()
        # This instance's own lease: the sessions it owns are adopted by another replica once it expires.
        instance = OrchestratorLease(store, own.lease_ttl, holder=holder, name=instance_lease(holder.token))
        await instance.acquire()
        res.push_async_callback(instance.release)
        instance.start()
        watch_lease(srv, instance, res)
        writer = EventWriter(store)
        writer.start()
        res.push_async_callback(writer.close)
        channels = {
            name: open_channel(
                common.peers[name], unary_timeout=common.rpc_timeout, connections=common.connections_to(name)
            )
            for name in ("providers", "selector", "analytics")
        }
        for channel in channels.values():
            res.push_async_callback(channel.close, None)
        providers = providers_pb2_grpc.ProviderServiceStub(channels["providers"])
        manager = SessionManager(
            settings,
            store,
            Hub(writer),
            providers,
            selector_pb2_grpc.SelectorServiceStub(channels["selector"]),
            CatalogueCache(providers),
            load_prompts(),
        )
        manager.instance = holder.token
        analytics = analytics_pb2_grpc.AnalyticsServiceStub(channels["analytics"])

        def lead() -> None:
            manager.outbox = Outbox(store, analytics, own.outbox_interval)
            manager.outbox.start()

        async def follow() -> None:
            outbox, manager.outbox = manager.outbox, None
            if outbox is not None:
                await outbox.stop()

        leadership = Leadership(store, own.lease_ttl, holder, lead, follow)
        await leadership.try_lead()
        leadership.start()
        res.push_async_callback(leadership.release)

        def leading() -> bool:
            return leadership.leading

        def live_here(session_id: str) -> bool:
            return manager.hub.get(session_id) is not None

        feed = ChangeFeed(store)
        if own.change_feed and feed.start():
            manager.feed = feed
            res.push_async_callback(feed.stop)
        replicas = Replicas(store, holder, own.lease_ttl, manager.cancel_now, live_here, leading)
        await replicas.sweep()
        replicas.start()
        res.push_async_callback(replicas.stop)
        # Released first: running sessions end (recorded as interrupted) while the outbox still runs.
        res.push_async_callback(manager.shutdown)
        follow_store_health(srv, writer.health)
        srv.on_drain.append(functools.partial(_drain, manager, instance, srv.hurry))
        srv.add(
            ServiceBinding(
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                OrchestratorServicer(manager),
                SERVICE_NAME,
            )
        )
    return srv


async def _drain(manager: SessionManager, lease: OrchestratorLease, hurry: asyncio.Event, deadline: float) -> None:
    """On SIGTERM: refuse new sessions, let running ones finish until ``deadline`` (``ORX_SHUTDOWN_GRACE``) or a
    second signal, then interrupt the rest. Not after a lost lease: another orchestrator may own the database, so
    they end at once."""
    await manager.drain(0.0 if lease.lost.is_set() else deadline, hurry)


def watch_lease(srv: GrpcServer, lease: OrchestratorLease, resources: AsyncExitStack) -> None:
    """Once the lease is lost: NOT_SERVING at once, then stop (as on SIGTERM)."""

    async def watch() -> None:
        await lease.lost.wait()
        for name in (SERVICE_NAME, ""):
            await srv.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        srv.stopping.set()

    task = asyncio.ensure_future(watch())
    resources.callback(task.cancel)
