"""Live sessions and the batched event log.

Every event gets its session's next sequence number, goes to the session's in-memory log, and is
queued for the store. Watchers see an event only once it is durable: a client can never have seen
an event that a crash then loses, or a sequence number that recovery then gives to another event.
:class:`EventWriter` writes queued events in one transaction per batch (group commit: while one
batch is being written the next one accumulates, so batches grow with load). A small batch may
also linger up to ``linger`` seconds for company; the orchestrator runs with no linger, since every
event a client waits for waits for its commit (docs/architecture.md has the measured cost). Each commit's
size and time are observed (``orx_orchestrator_event_writer_batch_size``, ``..._commit_seconds``).

:class:`StoreHealth` records whether the store takes writes: the server reports NOT_SERVING while
it does not, and the writer probes it until a write succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.aio import uncancellable
from orchestratex.store.sqlite import storage_problem
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import metrics
from services.orchestrator.store.base import SessionStore

log = logging.getLogger(__name__)

TERMINAL_KINDS = frozenset({"session_completed", "session_failed"})


def now_timestamp() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class StoreHealth:
    """Whether the store takes writes; each listener hears every change (``True`` = writable again)."""

    def __init__(self) -> None:
        self.ok = True
        self.problem = ""
        self.listeners: list[Callable[[bool], None]] = []

    def report(self, failure: BaseException | None) -> None:
        """Record the outcome of a write: ``None`` for success, else the exception it raised."""
        ok = failure is None
        if failure is not None:
            self.problem = storage_problem(failure) or f"{type(failure).__name__}"
        if ok == self.ok:
            return
        self.ok = ok
        if ok:
            log.warning("the store takes writes again")
        else:
            log.error("the store cannot write (%s): reporting NOT_SERVING until it can", self.problem)
        for listener in self.listeners:
            listener(ok)


PROBE_CURSOR = "write-probe"
"""A cursor the writer sets while the store is failing and it has nothing else to write."""


class EventWriter:
    """Queues events and writes them in batches, one transaction each."""

    def __init__(
        self,
        store: SessionStore,
        max_batch: int = 1000,
        min_batch: int = 64,
        linger: float = 0.0,
        health: StoreHealth | None = None,
        probe_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.health = health or StoreHealth()
        self.probe_interval = probe_interval
        #: Called with each committed batch (the hub makes those events visible to watchers).
        self.on_durable: Callable[[list[tuple[str, int, bytes]]], None] | None = None
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
            if self.health.ok:
                await self._wake.wait()
            else:
                # Failing and idle: probe now and then, so health comes back without a client's write.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.probe_interval):
                        await self._wake.wait()
                if not self._pending:
                    await self._probe()
                    continue
            self._wake.clear()
            while self._pending:
                if len(self._pending) < self.min_batch and not self._waiters and self.linger > 0:
                    # Wait a little for company; a full batch or a flush ends the wait early.
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.linger):
                            await self._full.wait()
                batch = self._pending[: self.max_batch]
                started = time.perf_counter()
                try:
                    await self.store.append_events(batch)
                except Exception as exc:
                    metrics.EVENT_WRITE_FAILURES.inc()
                    self.failures += 1
                    self.health.report(exc)
                    log.warning("writing %d events failed (%s); retrying", len(batch), self.health.problem)
                    await asyncio.sleep(min(5.0, 0.1 * self.failures))
                    continue
                metrics.EVENT_COMMIT_SECONDS.observe(time.perf_counter() - started)
                metrics.EVENT_BATCH_SIZE.observe(len(batch))
                self.failures = 0
                self.health.report(None)
                del self._pending[: len(batch)]
                self.batches += 1
                if self.on_durable is not None:
                    self.on_durable(batch)
                async with self._progress:
                    self._written += len(batch)
                    self._progress.notify_all()

    async def _probe(self) -> None:
        try:
            await self.store.set_cursor(PROBE_CURSOR, time.time_ns())
        except Exception as exc:
            self.health.report(exc)
        else:
            self.health.report(None)


class LiveSession:
    """The in-memory event log of a session running in this process.

    ``events`` holds every event the session has emitted; watchers see them only up to ``durable``,
    the highest sequence the store has committed.
    """

    def __init__(self, session_id: str, tenant: str) -> None:
        self.session_id = session_id
        self.tenant = tenant
        self.events: list[pb.OrchestrationEvent] = []
        self.durable = 0
        self.done = False
        self.task: asyncio.Task[None] | None = None
        #: Set once by the first cancel; later cancels of the same session do nothing.
        self.cancel_requested = False
        #: Set when the session's task has begun (a cancel before then is delivered by the task itself).
        self.running = False
        #: Set when the loop has ended and the session records its end: too late to cancel.
        self.ending = False
        self.cancel_reason = "cancelled by the client"
        self.cancel_status: pb.SessionStatus = pb.SESSION_STATUS_CANCELLED
        self._changed = asyncio.Event()

    @property
    def next_sequence(self) -> int:
        """The sequence the next event will get."""
        return len(self.events) + 1

    @property
    def last_sequence(self) -> int:
        """Sequence of the newest event a watcher can see (0 when none)."""
        return min(self.durable, len(self.events))

    def publish(self, event: pb.OrchestrationEvent) -> None:
        """Append an event; watchers see it once :meth:`mark_durable` reaches its sequence."""
        self.events.append(event)
        if event.sequence <= self.durable:
            self._wake()

    def mark_durable(self, sequence: int) -> None:
        """Events up to ``sequence`` are committed: show them to watchers."""
        if sequence > self.durable:
            self.durable = sequence
            self._wake()

    def finish(self) -> None:
        """No more events will come."""
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after_sequence: int) -> AsyncIterator[pb.OrchestrationEvent]:
        """Durable events after ``after_sequence``: the ones already there, then new ones until the end."""
        index = max(0, after_sequence)
        while True:
            while index < self.last_sequence:
                event = self.events[index]
                index += 1
                yield event
                if event.WhichOneof("kind") in TERMINAL_KINDS:
                    return
            if self.done:
                return
            await self._changed.wait()


class Hub:
    """Assigns sequences, fans durable events out to watchers and queues every event for the store."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self.sessions: dict[str, LiveSession] = {}
        writer.on_durable = self._durable

    def open(self, session_id: str, tenant: str) -> LiveSession:
        """Register a new live session."""
        live = LiveSession(session_id, tenant)
        self.sessions[session_id] = live
        return live

    def get(self, session_id: str) -> LiveSession | None:
        """The live session, if it runs in this process."""
        return self.sessions.get(session_id)

    def _durable(self, batch: list[tuple[str, int, bytes]]) -> None:
        newest: dict[str, int] = {}
        for session_id, sequence, _ in batch:
            if sequence > newest.get(session_id, 0):
                newest[session_id] = sequence
        for session_id, sequence in newest.items():
            live = self.sessions.get(session_id)
            if live is not None:
                live.mark_durable(sequence)

    @staticmethod
    def _stamp(live: LiveSession, event: pb.OrchestrationEvent) -> pb.OrchestrationEvent:
        event.session_id = live.session_id
        event.sequence = live.next_sequence
        event.time.CopyFrom(now_timestamp())
        return event

    def emit(self, live: LiveSession, event: pb.OrchestrationEvent) -> pb.OrchestrationEvent:
        """Make ``event`` (its kind set) the session's next: number it, log it and queue it for the store.

        Sessions emit through :class:`services.orchestrator.events.Emitter`, one typed method per kind.
        """
        self._stamp(live, event)
        live.publish(event)
        self.writer.append(event)
        return event

    async def finish(
        self,
        live: LiveSession,
        terminal: pb.OrchestrationEvent,
        save: Callable[[pb.OrchestrationEvent], Awaitable[None]],
    ) -> None:
        """End a session with ``terminal`` (a ``session_completed`` or ``session_failed`` event, numbered
        here): make it durable, ``save`` the record, then publish it and forget the session.

        Watchers see the terminal event only once the record says the session has ended, so a client
        that calls GetSession right after the last event always reads the final state. Nothing can
        cut this short: a cancellation that lands meanwhile is raised only after the end is recorded.
        """
        event = self._stamp(live, terminal)
        await uncancellable(self._finish(live, event, save))

    async def _finish(
        self,
        live: LiveSession,
        event: pb.OrchestrationEvent,
        save: Callable[[pb.OrchestrationEvent], Awaitable[None]],
    ) -> None:
        try:
            self.writer.append(event)
            await self.writer.flush()
            await save(event)
        finally:
            live.publish(event)
            live.finish()
            self.sessions.pop(live.session_id, None)
