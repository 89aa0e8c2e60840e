"""Live sessions and the batched event log.

Every event gets its session's next sequence number, goes at once to the session's in-memory log
(watchers follow it there, so live streaming never waits on the disk), and is queued for the store.
:class:`EventWriter` writes queued events in one transaction per batch (group commit: while one
batch is being written the next one accumulates, so batches grow with load). A small batch also
lingers up to ``linger`` seconds for company, so a round trip to the store carries at least
``min_batch`` events whenever the load allows it; a caller waiting on :meth:`EventWriter.flush`
(a session ending) cuts the linger short, so durability never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.store.sessions import SessionStore
from orchestratex.v1 import orchestrator_pb2 as pb

log = logging.getLogger(__name__)

TERMINAL_KINDS = frozenset({"session_completed", "session_failed"})


def now_timestamp() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class EventWriter:
    """Queues events and writes them in batches, one transaction each."""

    def __init__(self, store: SessionStore, max_batch: int = 1000, min_batch: int = 64, linger: float = 0.05) -> None:
        self.store = store
        self.max_batch = max_batch
        self.min_batch = min_batch
        self.linger = linger
        self._pending: list[tuple[str, int, bytes]] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._waiters = 0
        self._written = 0
        self._queued = 0
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.failures = 0

    def start(self) -> None:
        """Start the background writer."""
        self._task = asyncio.create_task(self._run(), name="event-writer")

    def append(self, event: pb.OrchestrationEvent) -> None:
        """Queue an event for writing (returns at once)."""
        self._pending.append((event.session_id, event.sequence, event.SerializeToString()))
        self._queued += 1
        self._wake.set()
        if len(self._pending) >= self.min_batch:
            self._full.set()

    async def flush(self) -> None:
        """Wait until every event queued before this call is durable."""
        target = self._queued
        self._waiters += 1
        self._full.set()
        try:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)
        finally:
            self._waiters -= 1

    async def close(self) -> None:
        """Write what is pending, then stop."""
        if self._task is None:
            return
        await asyncio.wait_for(self.flush(), timeout=10)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if len(self._pending) < self.min_batch and not self._waiters and self.linger > 0:
                    # Wait a little for company; a full batch or a flush ends the wait early.
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.linger):
                            await self._full.wait()
                batch = self._pending[: self.max_batch]
                try:
                    await self.store.append_events(batch)
                except Exception:
                    self.failures += 1
                    log.exception("writing %d events failed; retrying", len(batch))
                    await asyncio.sleep(min(5.0, 0.1 * self.failures))
                    continue
                self.failures = 0
                del self._pending[: len(batch)]
                self.batches += 1
                async with self._progress:
                    self._written += len(batch)
                    self._progress.notify_all()


class LiveSession:
    """The in-memory event log of a session running in this process."""

    def __init__(self, session_id: str, tenant: str) -> None:
        self.session_id = session_id
        self.tenant = tenant
        self.events: list[pb.OrchestrationEvent] = []
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason = "cancelled by the client"
        self.cancel_status: pb.SessionStatus = pb.SESSION_STATUS_CANCELLED
        self._changed = asyncio.Event()

    @property
    def last_sequence(self) -> int:
        """Sequence of the newest event (0 when none)."""
        return len(self.events)

    def publish(self, event: pb.OrchestrationEvent) -> None:
        """Append and wake every watcher."""
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self) -> None:
        """No more events will come."""
        self.done = True
        self._changed.set()

    async def follow(self, after_sequence: int) -> AsyncIterator[pb.OrchestrationEvent]:
        """Events after ``after_sequence``: the ones already there, then live ones until the end."""
        index = max(0, after_sequence)
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if event.WhichOneof("kind") in TERMINAL_KINDS:
                    return
            if self.done:
                return
            await self._changed.wait()


class Hub:
    """Assigns sequences, fans events out to watchers and queues them for the store."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.sessions: dict[str, LiveSession] = {}

    def open(self, session_id: str, tenant: str) -> LiveSession:
        """Register a new live session."""
        live = LiveSession(session_id, tenant)
        self.sessions[session_id] = live
        return live

    def get(self, session_id: str) -> LiveSession | None:
        """The live session, if it runs in this process."""
        return self.sessions.get(session_id)

    @staticmethod
    def _make(live: LiveSession, kind: dict[str, object]) -> pb.OrchestrationEvent:
        return pb.OrchestrationEvent(
            session_id=live.session_id,
            sequence=live.last_sequence + 1,
            time=now_timestamp(),
            **kind,  # type: ignore[arg-type]
        )

    def emit(self, live: LiveSession, **kind: object) -> pb.OrchestrationEvent:
        """Create the session's next event (exactly one oneof field in ``kind``), publish and queue it."""
        event = self._make(live, kind)
        live.publish(event)
        self.writer.append(event)
        return event

    async def finish(
        self,
        live: LiveSession,
        terminal: dict[str, object],
        save: Callable[[pb.OrchestrationEvent], Awaitable[None]],
    ) -> None:
        """End a session: make the terminal event durable, ``save`` the record, then publish and forget.

        Watchers see the terminal event only once the record says the session has ended, so a client
        that calls GetSession right after the last event always reads the final state.
        """
        event = self._make(live, terminal)
        self.writer.append(event)
        await self.writer.flush()
        try:
            await save(event)
        finally:
            live.publish(event)
            live.finish()
            self.sessions.pop(live.session_id, None)
