"""The session manager: starts sessions, follows and cancels them, and recovers the ones a previous
process left running.

:class:`SessionManager` validates a request, gathers what the session needs (the catalogue, its context
— the caller's earlier messages or the thread's history —, the models from
:mod:`~services.orchestrator.selection`), writes the record and launches a
:class:`~services.orchestrator.engine.SessionRunner` in the background; when the loop ends it records
the terminal event through the hub. Watching a session follows its live log here, else replays the stored
one (:mod:`~services.orchestrator.replay`).

Sessions are counted here (started, running, ended by status and stop reason, rounds, duration:
:mod:`~services.orchestrator.metrics`), and each has an ``orchestrator.session`` span
(:mod:`~services.orchestrator.tracing`) from its request to its recorded end: the span of a detached
session, or of one whose client has gone, outlives the ``Orchestrate`` RPC that started it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from orchestratex.config import Settings
from orchestratex.errors import NotFound, Unavailable
from orchestratex.usage import estimate_tokens
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import providers_pb2, providers_pb2_grpc, selector_pb2_grpc
from services.orchestrator import metrics, shadow, tracing
from services.orchestrator.catalogue import CatalogueCache, Pricing
from services.orchestrator.engine import RunConfig, SessionRunner
from services.orchestrator.hub import Hub, LiveSession, StoreHealth, now_timestamp
from services.orchestrator.outbox import Outbox
from services.orchestrator.policy import StopRules
from services.orchestrator.prompts import PromptSet
from services.orchestrator.replay import stored_events
from services.orchestrator.replicas import CANCEL_POLL, ChangeFeed, follow_store
from services.orchestrator.requests import check_for_catalogue, normalise
from services.orchestrator.selection import select, structured_author
from services.orchestrator.store.base import SessionStore
from services.orchestrator.threads import session_context

log = logging.getLogger(__name__)

#: What a new ``Orchestrate`` is told while the orchestrator drains (UNAVAILABLE: another replica, or this one
#: once restarted, will take it).
SHUTTING_DOWN = "the orchestrator is shutting down: not accepting new sessions (retry shortly)"


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
        self.draining = False
        """Set once the orchestrator is shutting down: new sessions are refused, running ones go on."""
        self.stopping = False
        """Set once the drain's deadline has passed: sessions cut short now are recorded as interrupted."""
        self.instance = ""
        """This process's instance id (its lease holder's token): the owner of the sessions it starts."""
        self.feed: ChangeFeed | None = None
        """Wakes followers of sessions that other replicas run, when the store can push (MongoDB change streams)."""
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ start

    async def start(self, request: pb.OrchestrateRequest, tenant: str) -> LiveSession:
        """Validate, select models, persist the record and launch the loop in the background.

        The session's span starts here (a child of the caller's, the ``Orchestrate`` RPC's) and covers
        the selection; the session's task then owns it and ends it once the terminal event is recorded.
        """
        if self.draining:
            raise Unavailable(SHUTTING_DOWN)
        req, rules = normalise(request, self.settings.common.max_prompt_chars)
        self._check_writable()
        began = time.monotonic()
        span = tracing.start_session(req)
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                live, runner, record, cancelled = await self._open(req, rules, tenant)
        except BaseException as exc:
            tracing.fail(span, exc)
            span.end()
            raise
        if self.outbox is not None:
            self.outbox.trace_session(record.session_id, span.get_span_context())
        task = asyncio.create_task(self._run(runner, live, record, span, began), name=f"session-{record.session_id}")
        live.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        metrics.SESSIONS_STARTED.inc()
        log.info("session %s started (primary %s)", record.session_id, runner.selection.primary)
        if cancelled:
            self.cancel_now(live.session_id)
            raise asyncio.CancelledError
        return live

    async def _open(
        self, req: pb.OrchestrateRequest, rules: StopRules, tenant: str
    ) -> tuple[LiveSession, SessionRunner, pb.Session, bool]:
        """Everything a session needs before its loop: models, context, the stored record, its runner.

        Returns whether the caller was cancelled while the record was written (the session then runs
        anyway, cancelled from the start, so it still ends with one terminal event).
        """
        models = await self.catalogue.get()
        check_for_catalogue(req, models)
        history, trimmed = await session_context(self.store, tenant, req, models)
        context_tokens = sum(estimate_tokens(m.content) + 4 for m in history)
        with tracing.span(tracing.SELECT) as select_span:
            selection = await select(self.selector, req, models, context_tokens)
            pricing = Pricing(models)
            if req.author_options.response_format.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
                selection = structured_author(selection, pricing.structured_outputs)
            if select_span.is_recording():
                select_span.set_attributes(
                    {
                        "orx.primary_model": selection.primary,
                        "orx.critic_models": selection.critics,
                        "orx.from_defaults": selection.from_defaults,
                        "orx.domain": metrics.domain_label(selection.analysis.primary_domain),
                    }
                )
        now = now_timestamp()
        session_id = uuid.uuid4().hex
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({"orx.session_id": session_id, "orx.primary_model": selection.primary})
        if req.HasField("shadow_evaluation"):
            sampled = req.shadow_evaluation
        else:
            rate = shadow.sample_rate(self.settings.orchestrator.shadow_sample_rate, self.catalogue.simulated)
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
            await self.store.create_session(tenant, record, owner=self.instance)
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
            pricing=pricing,
            hub=self.hub,
            simulated=self.catalogue.simulated,
        )
        return live, runner, record, cancelled

    def _check_writable(self) -> None:
        if not self.health.ok:
            raise Unavailable(f"storage: cannot write ({self.health.problem}); not accepting sessions until it can")

    @property
    def health(self) -> StoreHealth:
        """Whether the store takes writes (shared with the event writer)."""
        return self.hub.writer.health

    async def _run(
        self, runner: SessionRunner, live: LiveSession, record: pb.Session, span: Span, began: float
    ) -> None:
        async def save(event: pb.OrchestrationEvent) -> None:
            record.update_time.CopyFrom(event.time)
            record.last_sequence = event.sequence
            try:
                await self.store.save_session(record)
            except Exception as exc:
                self.health.report(exc)
                raise

        live.running = True
        metrics.SESSIONS_RUNNING.inc()
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                if live.cancel_requested:
                    # Cancelled before this task first ran (a task cancelled before its first step would
                    # never enter this try): deliver it now, inside the loop's handlers.
                    asyncio.current_task().cancel()  # type: ignore[union-attr]
                await runner.run()
        finally:
            live.ending = True
            terminal = runner.terminal
            if terminal is None:
                terminal = pb.OrchestrationEvent(
                    session_failed=pb.SessionFailed(reason="internal error", status=pb.SESSION_STATUS_FAILED)
                )
            try:
                await self.hub.finish(live, terminal, save)
            except Exception:
                log.exception("could not record the end of session %s", record.session_id)
            finally:
                metrics.SESSIONS_RUNNING.dec()
                _count_end(terminal, len(runner.drafts), time.monotonic() - began)
                tracing.end_session(span, terminal, len(runner.drafts))
                if self.outbox is not None:
                    self.outbox.kick()

    # ---------------------------------------------------------------- follow

    async def events(self, session_id: str, after: int, tenant: str) -> AsyncIterator[pb.OrchestrationEvent]:
        """Stored events after ``after``, then live ones until the session ends."""
        live = self.hub.get(session_id)
        if live is not None and (not tenant or live.tenant == tenant):
            async for event in live.follow(after):
                yield event
            return
        record = await self.store.get_session(session_id, tenant)
        if record is None:
            raise NotFound(f"session {session_id} not found")
        # Running elsewhere (another replica): follow its stored log until its end.
        source = (
            follow_store(self.store, session_id, after, feed=self.feed)
            if record.status == pb.SESSION_STATUS_RUNNING
            else stored_events(self.store, session_id, after)
        )
        async with aclosing(source) as stored:
            async for event in stored:
                yield event

    async def get(self, session_id: str, tenant: str) -> pb.Session:
        """The session record (live sequence included), or NOT_FOUND."""
        record = await self.store.get_session(session_id, tenant)
        if record is None:
            raise NotFound(f"session {session_id} not found")
        live = self.hub.get(session_id)
        if live is not None:
            record.last_sequence = live.last_sequence
        elif record.status == pb.SESSION_STATUS_RUNNING:
            record.last_sequence = await self.store.last_sequence(session_id)  # another replica runs it
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
        record = await self.get(session_id, tenant)
        why = f"cancelled: {reason}" if reason else "cancelled by the client"
        task = self.cancel_now(session_id, why)
        if task is not None:
            await asyncio.wait({task}, timeout=5)
        elif record.status == pb.SESSION_STATUS_RUNNING and await self.store.request_cancel(session_id, why):
            # Another replica runs it: it acts on the request within CANCEL_POLL; wait (briefly) for the end.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                record = await self.get(session_id, tenant)
                if record.status != pb.SESSION_STATUS_RUNNING:
                    return record
                await asyncio.sleep(CANCEL_POLL / 2)
        return await self.get(session_id, tenant)

    # --------------------------------------------------------------- lifecycle

    async def drain(self, deadline: float, hurry: asyncio.Event | None = None) -> None:
        """Refuse new sessions and let running ones finish until ``deadline`` (event-loop time), or until
        ``hurry`` is set (a second Ctrl-C); then end those still running, recorded as interrupted by the shutdown
        (:meth:`shutdown`).

        Runs when the orchestrator is told to stop (SIGTERM, ``ORX_SHUTDOWN_GRACE``), while the server still
        serves: running sessions keep streaming to their ``Orchestrate`` and ``WatchSession`` callers, and a
        new ``Orchestrate`` gets UNAVAILABLE. A client's own cancel during the drain is still a cancel.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        tasks = {task for task in self._tasks if not task.done()}
        if tasks:
            log.info(
                "draining: waiting up to %.1f s for %d running session(s) to finish",
                max(0.0, deadline - loop.time()),
                len(tasks),
            )
        hurried: asyncio.Future[Any] = asyncio.ensure_future((hurry or asyncio.Event()).wait())
        try:
            while tasks and not hurried.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.wait({*tasks, hurried}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                tasks = {task for task in self._tasks if not task.done()}
        finally:
            hurried.cancel()
        if tasks:
            log.warning("draining: interrupting %d session(s) still running", len(tasks))
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every running session (recorded as interrupted) and wait for them to save."""
        self.draining = True
        self.stopping = True
        tasks = []
        for live in list(self.hub.sessions.values()):
            live.cancel_status = pb.SESSION_STATUS_FAILED
            task = self.cancel_now(live.session_id, "interrupted: the orchestrator is shutting down")
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=10)


def _count_end(terminal: pb.OrchestrationEvent, rounds: int, seconds: float) -> None:
    if terminal.HasField("session_completed"):
        metrics.session_ended(pb.SESSION_STATUS_COMPLETED, terminal.session_completed.stop_reason, rounds, seconds)
    else:
        metrics.session_ended(terminal.session_failed.status or pb.SESSION_STATUS_FAILED, None, rounds, seconds)
