"""Delivery of session events to analytics: the event log is the outbox.

A cursor (the store position of the last delivered event) is persisted; the forwarder sends every
event after it with ``IngestEvents`` — periodically, and soon after a session ends (kicks that come
faster than ``min_gap`` are folded into one delivery, so a busy orchestrator sends fewer, larger
batches). If analytics is down, nothing is lost: the cursor does not move and delivery resumes
when it is back. Analytics de-duplicates by (session_id, sequence), so a batch delivered twice
(crash between send and cursor update) counts once. Text deltas are skipped: analytics does not need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from itertools import groupby

import grpc

from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SessionStore, StoredEvent

log = logging.getLogger(__name__)

CURSOR = "analytics"


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

    def start(self) -> None:
        """Start the background forwarder."""
        self._task = asyncio.create_task(self._run(), name="outbox")

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
        except (TimeoutError, grpc.aio.AioRpcError):
            log.warning("final outbox delivery did not finish; it resumes at next start")

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
                if not self._failing:
                    log.warning("analytics unavailable (%s); events stay in the outbox", err.code().name)
                self._failing = True
            except Exception:
                log.exception("outbox delivery failed")

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
        cursor = await self.store.get_cursor(CURSOR)
        sent = 0
        while True:
            rows = await self.store.events_after(cursor, self.batch_size)
            if not rows:
                break
            for tenant, group in groupby(rows, key=lambda r: r.tenant):
                events = _useful(list(group))
                if events:
                    sent += await self._send(tenant, events)
            cursor = rows[-1].position
            await self.store.set_cursor(CURSOR, cursor)
            if len(rows) < self.batch_size:
                break
        if self._failing:
            log.info("analytics reachable again; outbox drained")
            self._failing = False
        self.delivered += sent
        return sent


def _useful(rows: list[StoredEvent]) -> list[pb.OrchestrationEvent]:
    events = []
    for row in rows:
        event = pb.OrchestrationEvent.FromString(row.payload)
        if event.WhichOneof("kind") != "response_delta":
            events.append(event)
    return events
