"""OrchestratorService: starts sessions, streams and replays their events, lists and cancels them."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from orchestratex import context
from orchestratex.config import Settings
from orchestratex.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, from_rpc_error
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, building
from orchestratex.v1 import (
    analytics_pb2_grpc,
    common_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2,
    selector_pb2_grpc,
)
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.validation import check_enum, check_timestamp, require_text
from services.orchestrator import shadow
from services.orchestrator.engine import Pricing, RunConfig, Selection, SessionRunner, estimate_tokens
from services.orchestrator.hub import TERMINAL_KINDS, EventWriter, Hub, LiveSession, StoreHealth, now_timestamp
from services.orchestrator.lease import OrchestratorLease
from services.orchestrator.outbox import Outbox
from services.orchestrator.prompts import PromptSet, load_prompts
from services.orchestrator.requests import normalise
from services.orchestrator.store import open_session_store
from services.orchestrator.store.base import SessionQuery, SessionStore, decode_page_token

log = logging.getLogger(__name__)

SERVICE_NAME = "orchestratex.v1.OrchestratorService"
SELECT_TIMEOUT = 5.0
CATALOGUE_TTL = 30.0
THREAD_TURNS = 20


class CatalogueCache:
    """The providers' catalogue, fetched lazily and kept for a while (for pricing and fallbacks)."""

    def __init__(self, providers: providers_pb2_grpc.ProviderServiceStub) -> None:
        self.providers = providers
        self.models: dict[str, common_pb2.ModelInfo] = {}
        self.simulated = False
        self._fetched = 0.0

    async def get(self) -> dict[str, common_pb2.ModelInfo]:
        """The catalogue; the last known one when providers cannot be reached."""
        if time.monotonic() - self._fetched > CATALOGUE_TTL or not self.models:
            try:
                resp = await self.providers.ListModels(
                    providers_pb2.ListModelsRequest(include_unavailable=True), timeout=5
                )
            except grpc.aio.AioRpcError as err:
                log.warning("cannot list models: %s", err.code().name)
                return self.models
            self.models = {m.id: m for m in resp.models}
            self.simulated = resp.simulated
            self._fetched = time.monotonic()
        return self.models


class SessionManager:
    """Owns running sessions: start, follow, cancel, recover."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        hub: Hub,
        providers: providers_pb2_grpc.ProviderServiceStub,
        selector: selector_pb2_grpc.SelectorServiceStub,
        catalogue: CatalogueCache,
        prompts: PromptSet,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.providers = providers
        self.selector = selector
        self.catalogue = catalogue
        self.prompts = prompts
        self.outbox: Outbox | None = None
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ start

    async def start(self, request: pb.OrchestrateRequest, tenant: str) -> LiveSession:
        """Validate, select models, persist the record and launch the loop in the background."""
        req, rules = normalise(request, self.settings.max_prompt_chars)
        self._check_writable()
        models = await self.catalogue.get()
        history, trimmed = await self._history(tenant, req.thread_id, models)
        context_tokens = sum(estimate_tokens(m.content) + 4 for m in history)
        selection = await self._select(req, models, context_tokens)
        now = now_timestamp()
        session_id = uuid.uuid4().hex
        if req.HasField("shadow_evaluation"):
            sampled = req.shadow_evaluation
        else:
            rate = shadow.sample_rate(self.settings.shadow_sample_rate, self.catalogue.simulated)
            sampled = shadow.sampled(session_id, rate)
        record = pb.Session(
            session_id=session_id,
            status=pb.SESSION_STATUS_RUNNING,
            request=req,
            create_time=now,
            update_time=now,
            thread_id=req.thread_id,
            primary_model=selection.primary,
            primary_domain=selection.analysis.primary_domain,
        )
        self._check_writable()
        try:
            await self.store.create_session(tenant, record)
        except asyncio.CancelledError:
            # The record was written (store writes run to their end) but the caller is gone: run the
            # session anyway, cancelled from the start, so it still ends with one terminal event.
            cancelled = True
        except Exception as exc:
            self.health.report(exc)
            raise
        else:
            cancelled = False
        live = self.hub.open(record.session_id, tenant)
        runner = SessionRunner(
            live=live,
            record=record,
            config=RunConfig(
                request=req,
                rules=rules,
                critic_count=req.critic_count,
                history=history,
                trimmed_turns=trimmed,
                shadow=sampled,
            ),
            selection=selection,
            providers=self.providers,
            prompts=self.prompts,
            pricing=Pricing(models),
            hub=self.hub,
            save=self.store.save_session,
            simulated=self.catalogue.simulated,
        )
        task = asyncio.create_task(self._run(runner, live, record), name=f"session-{record.session_id}")
        live.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("session %s started (primary %s)", record.session_id, selection.primary)
        if cancelled:
            self.cancel_now(live.session_id)
            raise asyncio.CancelledError
        return live

    def _check_writable(self) -> None:
        if not self.health.ok:
            raise Unavailable(f"storage: cannot write ({self.health.problem}); not accepting sessions until it can")

    @property
    def health(self) -> StoreHealth:
        """Whether the store takes writes (shared with the event writer)."""
        return self.hub.writer.health

    async def _run(self, runner: SessionRunner, live: LiveSession, record: pb.Session) -> None:
        async def save(event: pb.OrchestrationEvent) -> None:
            record.update_time.CopyFrom(event.time)
            record.last_sequence = event.sequence
            try:
                await self.store.save_session(record)
            except Exception as exc:
                self.health.report(exc)
                raise

        live.running = True
        try:
            if live.cancel_requested:
                # Cancelled before this task first ran (a task cancelled before its first step would
                # never enter this try): deliver it now, inside the loop's handlers.
                asyncio.current_task().cancel()  # type: ignore[union-attr]
            await runner.run()
        finally:
            live.ending = True
            terminal = runner.terminal or {
                "session_failed": pb.SessionFailed(reason="internal error", status=pb.SESSION_STATUS_FAILED)
            }
            try:
                await self.hub.finish(live, terminal, save)
            except Exception:
                log.exception("could not record the end of session %s", record.session_id)
            if self.outbox is not None:
                self.outbox.kick()

    async def _history(
        self, tenant: str, thread_id: str, models: dict[str, common_pb2.ModelInfo]
    ) -> tuple[list[common_pb2.ChatMessage], int]:
        """Earlier turns of the thread as messages, oldest dropped first to fit the smallest window."""
        if not thread_id:
            return [], 0
        sessions = await self.store.thread_sessions(tenant, thread_id, THREAD_TURNS)
        windows = [m.context_length for m in models.values() if m.context_length > 0]
        budget = (min(windows) if windows else 32_768) // 2
        turns = [(s.request.prompt, s.result.final_text) for s in sessions if s.result.final_text]
        trimmed = 0
        while turns and sum(estimate_tokens(p) + estimate_tokens(a) + 8 for p, a in turns) > budget:
            turns.pop(0)
            trimmed += 1
        messages: list[common_pb2.ChatMessage] = []
        for prompt, answer in turns:
            messages.append(common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=prompt))
            messages.append(common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content=answer))
        return messages, trimmed

    async def _select(
        self, req: pb.OrchestrateRequest, models: dict[str, common_pb2.ModelInfo], context_tokens: int
    ) -> Selection:
        try:
            resp = await self.selector.SelectModels(
                selector_pb2.SelectModelsRequest(
                    prompt=req.prompt,
                    preferences=req.preferences,
                    critic_count=req.critic_count,
                    context_tokens=context_tokens,
                ),
                timeout=SELECT_TIMEOUT,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise from_rpc_error(err, "selector") from None
            return self._defaults(req, models, f"selector unavailable ({err.code().name}); using catalogue defaults")
        return Selection(
            primary=resp.primary_model,
            critics=list(resp.critic_models),
            candidates=list(resp.candidates),
            analysis=resp.analysis,
        )

    def _defaults(self, req: pb.OrchestrateRequest, models: dict[str, common_pb2.ModelInfo], why: str) -> Selection:
        """Selection without the selector: catalogue order by mean specialty, other families as critics."""
        if not models:
            raise Unavailable("no model catalogue: both the selector and the providers service are unreachable")
        prefs = req.preferences
        allowed = set(prefs.allowed_models)
        eligible = [
            m
            for m in models.values()
            if (not allowed or m.id in allowed)
            and m.id not in prefs.excluded_models
            and m.health.circuit_state != common_pb2.CIRCUIT_STATE_OPEN
        ]
        if not eligible:
            raise FailedPrecondition("no eligible model: every model is excluded, not allowed or unhealthy")

        def mean_specialty(m: common_pb2.ModelInfo) -> float:
            return statistics.fmean(s.score for s in m.specialties) if m.specialties else 0.0

        eligible.sort(key=lambda m: (-mean_specialty(m), m.id))
        if prefs.pinned_model:
            pinned = [m for m in eligible if m.id == prefs.pinned_model]
            if not pinned:
                raise FailedPrecondition(f"pinned model {prefs.pinned_model} is not eligible")
            eligible = pinned + [m for m in eligible if m.id != prefs.pinned_model]
        primary = eligible[0]
        others = sorted(eligible[1:], key=lambda m: m.family == primary.family)
        candidates = [
            selector_pb2.Candidate(
                model=m.id,
                score=mean_specialty(m),
                rank=i + 1,
                family=m.family,
                reason=f"Catalogue default (selector unavailable): mean specialty {mean_specialty(m):.2f}.",
            )
            for i, m in enumerate(eligible)
        ]
        analysis = selector_pb2.PromptAnalysis(estimated_prompt_tokens=estimate_tokens(req.prompt))
        return Selection(
            primary=primary.id,
            critics=[m.id for m in others],
            candidates=candidates,
            analysis=analysis,
            from_defaults=True,
            warnings=[why],
        )

    # ---------------------------------------------------------------- follow

    async def events(self, session_id: str, after: int, tenant: str) -> AsyncIterator[pb.OrchestrationEvent]:
        """Stored events after ``after``, then live ones until the session ends."""
        live = self.hub.get(session_id)
        if live is not None and (not tenant or live.tenant == tenant):
            async for event in live.follow(after):
                yield event
            return
        if await self.store.get_session(session_id, tenant) is None:
            raise NotFound(f"session {session_id} not found")
        while True:
            rows = await self.store.read_events(session_id, after, 500)
            for payload in rows:
                event = pb.OrchestrationEvent.FromString(payload)
                after = event.sequence
                yield event
            if len(rows) < 500:
                return

    async def get(self, session_id: str, tenant: str) -> pb.Session:
        """The session record (live sequence included), or NOT_FOUND."""
        record = await self.store.get_session(session_id, tenant)
        if record is None:
            raise NotFound(f"session {session_id} not found")
        live = self.hub.get(session_id)
        if live is not None:
            record.last_sequence = live.last_sequence
        return record

    def cancel_now(self, session_id: str, reason: str = "cancelled by the client") -> asyncio.Task[None] | None:
        """Cancel a running session's loop; returns its task to await, or None if it is not running here.

        Idempotent: only the first cancel of a session reaches its task, and none does once the
        session is recording its end, so a cancel can never interrupt a terminal write.
        """
        live = self.hub.get(session_id)
        if live is None or live.task is None or live.task.done():
            return None
        if live.cancel_requested or live.ending:
            return live.task
        live.cancel_requested = True
        if self.stopping:
            reason = "interrupted: the orchestrator is shutting down"
            live.cancel_status = pb.SESSION_STATUS_FAILED
        live.cancel_reason = reason
        if live.running:
            live.task.cancel()
        return live.task

    async def cancel(self, session_id: str, tenant: str, reason: str) -> pb.Session:
        """Cancel and wait (briefly) for the session to record its end."""
        await self.get(session_id, tenant)
        task = self.cancel_now(session_id, f"cancelled: {reason}" if reason else "cancelled by the client")
        if task is not None:
            await asyncio.wait({task}, timeout=5)
        return await self.get(session_id, tenant)

    # --------------------------------------------------------------- lifecycle

    async def recover(self) -> None:
        """End sessions left running by a previous process, each with exactly one terminal event.

        A session whose log already ends with a terminal event (the process died between writing it
        and saving the record) only gets its record brought in line. Any other gets a
        ``session_failed`` after its last stored event: watchers only ever saw stored events, so no
        client can have seen that sequence number already.
        """
        for record in await self.store.running_sessions():
            last = await self.store.last_sequence(record.session_id)
            stored = await self.store.read_events(record.session_id, last - 1, 1) if last else []
            final = pb.OrchestrationEvent.FromString(stored[0]) if stored else None
            if final is not None and final.WhichOneof("kind") in TERMINAL_KINDS:
                event = final
                log.warning("session %s had recorded its end; record brought in line", record.session_id)
            else:
                reason = "interrupted: the orchestrator stopped while the session was running"
                event = pb.OrchestrationEvent(
                    session_id=record.session_id,
                    sequence=last + 1,
                    time=now_timestamp(),
                    session_failed=pb.SessionFailed(reason=reason, status=pb.SESSION_STATUS_FAILED),
                )
                await self.store.append_events([(record.session_id, event.sequence, event.SerializeToString())])
                log.warning("session %s was interrupted by a restart; marked failed", record.session_id)
            if event.HasField("session_completed"):
                record.status = pb.SESSION_STATUS_COMPLETED
                record.result.CopyFrom(event.session_completed)
            else:
                record.status = event.session_failed.status or pb.SESSION_STATUS_FAILED
                record.failure.CopyFrom(event.session_failed)
            record.last_sequence = event.sequence
            record.update_time.CopyFrom(event.time)
            await self.store.save_session(record)

    async def begin_shutdown(self) -> None:
        """From now on, sessions cut short are recorded as interrupted by the shutdown."""
        self.stopping = True

    async def shutdown(self) -> None:
        """Stop every running session (recorded as interrupted) and wait for them to save."""
        tasks = []
        for live in list(self.hub.sessions.values()):
            live.cancel_status = pb.SESSION_STATUS_FAILED
            task = self.cancel_now(live.session_id, "interrupted: the orchestrator is shutting down")
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=10)


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
        start = check_timestamp(request.start_time, "start_time") // 1000 if request.HasField("start_time") else None
        end = check_timestamp(request.end_time, "end_time") // 1000 if request.HasField("end_time") else None
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("end_time", "must be after start_time")
        page = await self.manager.store.list_sessions(
            SessionQuery(
                tenant=context.tenant.get(),
                page_size=page_size,
                page_token=request.page_token,
                status=request.status,
                thread_id=request.thread_id,
                start_us=start,
                end_us=end,
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
    async with building(listen or str(settings.listen["orchestrator"]), settings.max_message_bytes) as (srv, res):
        store = await open_session_store(settings)
        res.push_async_callback(store.close)
        lease = OrchestratorLease(store, settings.orchestrator_lease_ttl)
        await lease.acquire()
        res.push_async_callback(lease.release)
        lease.start()
        watch_lease(srv, lease, res)
        await store.take_over()
        writer = EventWriter(store)
        writer.start()
        res.push_async_callback(writer.close)
        channels = {
            name: open_channel(settings.peers[name], unary_timeout=settings.rpc_timeout)
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
        await manager.recover()
        outbox = Outbox(store, analytics_pb2_grpc.AnalyticsServiceStub(channels["analytics"]), settings.outbox_interval)
        manager.outbox = outbox
        outbox.start()
        res.push_async_callback(outbox.stop)
        # Released first: running sessions end (recorded as interrupted) while the outbox still runs.
        res.push_async_callback(manager.shutdown)
        follow_store_health(srv, writer.health)
        srv.on_drain.append(manager.begin_shutdown)
        srv.add(
            ServiceBinding(
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                OrchestratorServicer(manager),
                SERVICE_NAME,
            )
        )
    return srv


def watch_lease(srv: GrpcServer, lease: OrchestratorLease, resources: AsyncExitStack) -> None:
    """Once the lease is lost: NOT_SERVING at once, then stop (as on SIGTERM)."""

    async def watch() -> None:
        await lease.lost.wait()
        for name in (SERVICE_NAME, ""):
            await srv.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        srv.stopping.set()

    task = asyncio.ensure_future(watch())
    resources.callback(task.cancel)
