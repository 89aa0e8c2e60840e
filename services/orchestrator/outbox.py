"""Delivery of session events to analytics: the event log is the outbox.

A cursor (the store position of the last delivered event) is persisted; the forwarder sends every
event after it with ``IngestEvents`` — periodically, and soon after a session ends (kicks that come
faster than ``min_gap`` are folded into one delivery, so a busy orchestrator sends fewer, larger
batches). If analytics is down, nothing is lost: the cursor does not move and delivery resumes
when it is back. Analytics de-duplicates by (session_id, sequence), so a batch delivered twice
(crash between send and cursor update) counts once. Text deltas are skipped: analytics does not need them.

Metrics: the backlog (stored events after the cursor, measured after every delivery attempt), events
delivered and rejected, and failed attempts by status code (:mod:`~services.orchestrator.metrics`).

Traces: each batch sent is an ``orchestrator.outbox.deliver`` span, the root of its own trace (delivery
runs in the background, for many sessions at once), so the ``IngestEvents`` call and analytics'
``analytics.ingest`` span are its children. It links to the ``orchestrator.session`` span of every
session in the batch: the manager hands each session's span context to :meth:`Outbox.trace_session`,
which keeps it in memory (bounded by :data:`MAX_TRACED_SESSIONS`, oldest dropped first) until the
session's terminal event is delivered. Nothing is persisted (the session record has no field for it),
so batches delivered after a restart carry no links for sessions of the previous process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from itertools import groupby

import grpc
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext

from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import metrics, tracing
from services.orchestrator.hub import TERMINAL_KINDS
from services.orchestrator.store.base import SessionStore, StoredEvent

log = logging.getLogger(__name__)

CURSOR = "analytics"
#: How many sessions' span contexts the outbox keeps for its links (oldest dropped first).
MAX_TRACED_SESSIONS = 10_000


class Outbox:
    """Forwards stored events to the analytics service, at least once, in order."""

    def __init__(
        self,
        store: SessionStore,
        analytics: analytics_pb2_grpc.AnalyticsServiceStub,
        interval: float,
        batch_size: int = 500,
        timeout: float = 10.0,
        min_gap: float = 0.1,
    ) -> None:
        self.store = store
        self.analytics = analytics
        self.interval = interval
        self.batch_size = batch_size
        self.timeout = timeout
        self.min_gap = min(min_gap, interval)
        self._last = 0.0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._stopping = False
        self.delivered = 0
        self.rejected = 0
        self._cursor: int | None = None
        self._traced: OrderedDict[str, SpanContext] = OrderedDict()

    def start(self) -> None:
        """Start the background forwarder."""
        self._task = asyncio.create_task(self._run(), name="outbox")

    def trace_session(self, session_id: str, span_context: SpanContext) -> None:
        """Link the batches that carry this session's events to its span (a no-op when tracing is off)."""
        if not span_context.is_valid:
            return
        self._traced[session_id] = span_context
        while len(self._traced) > MAX_TRACED_SESSIONS:
            self._traced.popitem(last=False)

    def kick(self) -> None:
        """Deliver soon (a session just ended)."""
        self._wake.set()

    async def stop(self) -> None:
        """Try one last delivery, then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._stop.set()
        self._wake.set()
        await self._task
        self._task = None
        try:
            await asyncio.wait_for(self.deliver(), timeout=self.timeout)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            metrics.OUTBOX_FAILURES.labels(_code(exc)).inc()
            log.warning("final outbox delivery did not finish; it resumes at next start")
        await self._measure_backlog()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            if self._stopping:
                return
            loop = asyncio.get_running_loop()
            gap = self._last + self.min_gap - loop.time()
            if gap > 0:
                # Kicked again right after a delivery: let a few more sessions end first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(gap):
                        await self._stop.wait()
                if self._stopping:
                    return
            self._wake.clear()
            self._last = loop.time()
            try:
                await self.deliver()
            except grpc.aio.AioRpcError as err:
                metrics.OUTBOX_FAILURES.labels(_code(err)).inc()
                if not self._failing:
                    log.warning("analytics unavailable (%s); events stay in the outbox", err.code().name)
                self._failing = True
            except Exception as exc:
                metrics.OUTBOX_FAILURES.labels(_code(exc)).inc()
                log.exception("outbox delivery failed")
            await self._measure_backlog()

    async def _measure_backlog(self) -> None:
        """Set the backlog gauge: stored events after the cursor (one cheap query: the newest position)."""
        try:
            newest = await self.store.newest_position()
            cursor = self._cursor if self._cursor is not None else await self.store.get_cursor(CURSOR)
        except Exception as exc:
            log.debug("could not measure the outbox backlog (%s)", type(exc).__name__)
            return
        metrics.OUTBOX_BACKLOG.set(max(0, newest - cursor))

    async def _send(self, tenant: str, events: list[pb.OrchestrationEvent]) -> int:
        """Send a batch. A batch analytics rejects as invalid is retried event by event and only the
        events it rejects are set aside (logged), so one bad event cannot block delivery forever."""
        request = analytics_pb2.IngestEventsRequest(events=events, tenant=tenant)
        try:
            await self.analytics.IngestEvents(request, timeout=self.timeout)
            return len(events)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.INVALID_ARGUMENT or len(events) == 1:
                if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    self.rejected += 1
                    metrics.OUTBOX_REJECTED.inc()
                    log.error(
                        "analytics rejected event %s#%d: %s",
                        events[0].session_id,
                        events[0].sequence,
                        err.details(),
                    )
                    return 0
                raise
        sent = 0
        for event in events:
            sent += await self._send(tenant, [event])
        return sent

    async def deliver(self) -> int:
        """Send everything after the cursor. Returns the number of events delivered."""
        cursor = self._cursor = await self.store.get_cursor(CURSOR)
        sent = 0
        while True:
            rows = await self.store.events_after(cursor, self.batch_size)
            if not rows:
                break
            for tenant, group in groupby(rows, key=lambda r: r.tenant):
                events = _useful(list(group))
                if events:
                    sent += await self._deliver_batch(tenant, events)
            cursor = rows[-1].position
            await self.store.set_cursor(CURSOR, cursor)
            self._cursor = cursor
            if len(rows) < self.batch_size:
                break
        if self._failing:
            log.info("analytics reachable again; outbox drained")
            self._failing = False
        self.delivered += sent
        return sent

    async def _deliver_batch(self, tenant: str, events: list[pb.OrchestrationEvent]) -> int:
        """Send one batch in its ``orchestrator.outbox.deliver`` span, linked to its sessions' spans."""
        sessions = dict.fromkeys(e.session_id for e in events)
        links = [Link(self._traced[sid]) for sid in sessions if sid in self._traced]
        attributes = {"orx.batch_size": len(events), "orx.sessions": len(sessions)}
        with tracing.tracer.start_as_current_span(
            tracing.DELIVER,
            context=Context(),
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                sent = await self._send(tenant, events)
            except BaseException as exc:
                tracing.fail(span, exc)
                raise
            span.set_attribute("orx.delivered", sent)
        metrics.OUTBOX_DELIVERED.inc(sent)
        for event in events:
            if event.WhichOneof("kind") in TERMINAL_KINDS:
                self._traced.pop(event.session_id, None)
        return sent


def _useful(rows: list[StoredEvent]) -> list[pb.OrchestrationEvent]:
    events = []
    for row in rows:
        event = pb.OrchestrationEvent.FromString(row.payload)
        if event.WhichOneof("kind") != "response_delta":
            events.append(event)
    return events


def _code(exc: BaseException) -> str:
    """A delivery failure as a label: the gRPC status code lowercased, ``deadline_exceeded`` for a timeout,
    ``internal`` for anything else (a local error)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name).lower()
    if isinstance(exc, TimeoutError):
        return "deadline_exceeded"
    return "internal"
