"""Several orchestrator processes on one database: who runs which session, and what the others do about it.

Every orchestrator process is an *instance*, named by its lease holder's token. It holds its own lease,
``instance:<token>``, renewed every third of ``ORX_ORCHESTRATOR_LEASE_TTL`` (losing it stops the process, as
for the database lease), and it is the *owner* of the sessions it starts (the store keeps the owner beside
each record). Any instance serves any session:

* ``WatchSession`` of a session running elsewhere replays its stored events and then follows the store
  (:func:`follow_store`) until the terminal event. Where the store pushes (MongoDB change streams on a replica
  set: :class:`ChangeFeed`, one stream per process), a follower reads again when told an event of its session
  was stored, and every :data:`FEED_SAFETY_POLL` seconds regardless; otherwise it polls the event log, 20 ms
  after an event and backing off to 250 ms while nothing comes.
* ``CancelSession`` of a session running elsewhere is written to the store as a cancel request; the owner
  looks for requests on its sessions every :data:`CANCEL_POLL` seconds and cancels as if asked directly.
* A session whose owner is gone (its instance lease expired, or provably dead: same machine, process gone)
  is *adopted* by one other instance — an atomic compare-and-set on the owner, so exactly one wins — which
  ends it as failed, with the best answer so far, in one terminal event after its last stored one
  (:meth:`Replicas.sweep`). It is not resumed: the owner's in-flight provider calls died with it, resuming
  would repeat paid calls whose results (and streamed text) clients may already have seen, and a client that
  wants another try can ask again with the same thread.

Sessions from before replicas have no owner (""). They are adopted only by the instance that holds the
database-wide lease (``orchestrator``), which a release without replicas held exclusively: while an older
orchestrator still runs, nobody touches its sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import metrics
from services.orchestrator.hub import TERMINAL_KINDS, now_timestamp
from services.orchestrator.lease import LEASE_NAME, Holder, provably_dead
from services.orchestrator.replay import stored_events
from services.orchestrator.store.base import SessionStore

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "instance:"
WATCH_POLL_MIN = 0.02
"""Seconds between reads of a session's stored events right after one arrived (another replica runs it)."""
WATCH_POLL_MAX = 0.25
"""The longest wait between two reads while nothing arrives."""
FEED_SAFETY_POLL = 2.0
"""Seconds a follower waits for a change-feed wake-up before it reads anyway (a notification lost in a stream's
reconnection costs at most this)."""
FEED_RETRY = 30.0
"""Seconds before a broken change feed is opened again (followers poll meanwhile)."""
CANCEL_POLL = 0.1
"""Seconds between an owner's looks for cancels asked for through other replicas."""
INTERRUPTED = "interrupted: the orchestrator running the session stopped"


def instance_lease(token: str) -> str:
    """The name of an instance's own lease."""
    return INSTANCE_PREFIX + token


class ChangeFeed:
    """This process's subscription to the store's change feed (:meth:`SessionStore.change_feed`), fanned out to
    the followers of each session: one server-side stream however many sessions are followed.

    :attr:`live` is true while the feed is open; when it breaks, every follower is woken (and polls until it is
    live again) and it is reopened after :data:`FEED_RETRY` seconds. A store that cannot push at all (MongoDB
    without a replica set: code 40573) is not asked again.
    """

    NOT_SUPPORTED = 40573

    def __init__(self, store: SessionStore, retry: float = FEED_RETRY) -> None:
        self.store = store
        self.retry = retry
        self.live = False
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Open the feed in the background; False when the store has none."""
        if not self.store.has_change_feed:
            return False
        self._task = asyncio.create_task(self._run(), name="change-feed")
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_live(False)

    def subscribe(self, session_id: str) -> asyncio.Event:
        """An event set whenever an event of ``session_id`` is stored (and whenever the feed breaks)."""
        wake = asyncio.Event()
        self._waiters.setdefault(session_id, set()).add(wake)
        return wake

    def unsubscribe(self, session_id: str, wake: asyncio.Event) -> None:
        waiters = self._waiters.get(session_id)
        if waiters is not None:
            waiters.discard(wake)
            if not waiters:
                del self._waiters[session_id]

    def _set_live(self, live: bool) -> None:
        if self.live and not live:
            for waiters in self._waiters.values():
                for wake in waiters:
                    wake.set()
        self.live = live
        metrics.CHANGE_FEED_LIVE.set(1 if live else 0)

    async def _run(self) -> None:
        failed = False
        while True:
            feed = self.store.change_feed()
            if feed is None:
                return
            try:
                async with contextlib.aclosing(feed):
                    async for session_id in feed:
                        if not self.live:
                            self._set_live(True)
                            if failed:
                                log.info("change feed open again: followers are woken by it, not polling")
                                failed = False
                        for wake in self._waiters.get(session_id, ()):
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_live(False)
                if getattr(exc, "code", None) == self.NOT_SUPPORTED:
                    log.info("the store offers no change streams (MongoDB needs a replica set): followers poll")
                    return
                if not failed:
                    log.warning("change feed broke (%s): followers poll until it reopens", type(exc).__name__)
                    failed = True
            else:
                self._set_live(False)
            await asyncio.sleep(self.retry)


async def follow_store(
    store: SessionStore,
    session_id: str,
    after: int,
    *,
    feed: ChangeFeed | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[pb.OrchestrationEvent, None]:
    """A session's stored events after ``after``, then new ones as they are stored, until its terminal event.

    For a session another replica runs (or ran: then the terminal event is already there). Reads are a page at
    a time. Between empty reads it waits for ``feed`` to say an event of the session was stored (at most
    :data:`FEED_SAFETY_POLL` seconds) while the feed is live; otherwise the wait doubles from
    :data:`WATCH_POLL_MIN` to :data:`WATCH_POLL_MAX`.
    """
    wake = feed.subscribe(session_id) if feed is not None else None
    delay = WATCH_POLL_MIN
    try:
        while True:
            if wake is not None:
                wake.clear()  # before the read: a store that lands during it wakes the next wait
            # Live since before the read, so a store during the read was announced (a feed that opened mid-read
            # may not have seen it: poll once more then).
            was_live = feed is not None and feed.live
            got = 0
            async for event in stored_events(store, session_id, after):
                got += 1
                after = event.sequence
                yield event
                if event.WhichOneof("kind") in TERMINAL_KINDS:
                    return
            if got:
                delay = WATCH_POLL_MIN
            if feed is not None and wake is not None and was_live and feed.live:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FEED_SAFETY_POLL):
                        await wake.wait()
                continue
            await sleep(delay)
            delay = min(delay * 2, WATCH_POLL_MAX)
    finally:
        if feed is not None and wake is not None:
            feed.unsubscribe(session_id, wake)


def best_text(events: Sequence[pb.OrchestrationEvent]) -> str:
    """The best answer a session's stored events hold: the text of the best-scored round so far (the last
    ``round_completed``'s ``best_round``), else the last answer given; "" when there is none."""
    texts: dict[int, str] = {}
    best_round = 0
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "response_completed" and not event.response_completed.shadow:
            texts[event.response_completed.round] = event.response_completed.text
        elif kind == "round_completed" and event.round_completed.best_round:
            best_round = event.round_completed.best_round
    if best_round in texts:
        return texts[best_round]
    return texts[max(texts)] if texts else ""


async def end_interrupted(store: SessionStore, record: pb.Session, reason: str = INTERRUPTED) -> pb.OrchestrationEvent:
    """Give a session that nobody runs any more its one terminal event and bring its record in line.

    A log that already ends with a terminal event (the owner died between writing it and saving the record)
    only has its record updated. Otherwise a ``session_failed`` with the best answer so far goes after the
    last stored event: watchers only ever saw stored events, so no client has seen that sequence number.
    """
    session_id = record.session_id
    events = [event async for event in stored_events(store, session_id, 0)]
    final = events[-1] if events else None
    if final is not None and final.WhichOneof("kind") in TERMINAL_KINDS:
        event = final
        log.warning("session %s had recorded its end; record brought in line", session_id)
    else:
        event = pb.OrchestrationEvent(
            session_id=session_id,
            sequence=(final.sequence if final is not None else 0) + 1,
            time=now_timestamp(),
            session_failed=pb.SessionFailed(
                reason=reason, status=pb.SESSION_STATUS_FAILED, best_text=best_text(events)
            ),
        )
        await store.append_events([(session_id, event.sequence, event.SerializeToString())])
        log.warning("session %s was interrupted (%s); marked failed", session_id, reason)
        metrics.SESSIONS_INTERRUPTED.inc()
    if event.HasField("session_completed"):
        record.status = pb.SESSION_STATUS_COMPLETED
        record.result.CopyFrom(event.session_completed)
    else:
        record.status = event.session_failed.status or pb.SESSION_STATUS_FAILED
        record.failure.CopyFrom(event.session_failed)
    record.last_sequence = event.sequence
    record.update_time.CopyFrom(event.time)
    await store.save_session(record)
    return event


class Replicas:
    """This instance's part in a set of replicas: adopting orphaned sessions, and acting on cancel requests.

    ``cancel`` is the manager's ``cancel_now`` (session id, reason); ``live`` tells whether a session runs in
    this process; ``leading`` whether this instance holds the database-wide lease (for sessions with no owner).
    """

    def __init__(
        self,
        store: SessionStore,
        holder: Holder,
        ttl: float,
        cancel: Callable[[str, str], object],
        live: Callable[[str], bool],
        leading: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.holder = holder
        self.instance = holder.token
        self.ttl = ttl
        self._cancel = cancel
        self._live = live
        self._leading = leading
        self._clock = clock
        #: Sessions this instance adopted but failed to end (the store failed): ended at the next sweep, since
        #: nobody else will (they are this live instance's now).
        self._adopted: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Adopt and end every running session whose owner is gone; returns how many this instance ended."""
        ended = 0
        for session_id in sorted(self._adopted):
            record = await self.store.get_session(session_id, "")
            if record is not None and record.status == pb.SESSION_STATUS_RUNNING:
                await end_interrupted(self.store, record)
                ended += 1
            self._adopted.discard(session_id)
        verdicts: dict[str, bool] = {}
        for running in await self.store.running_owners():
            if running.owner == self.instance or self._live(running.session_id):
                continue
            if running.owner not in verdicts:
                verdicts[running.owner] = await self._gone(running.owner)
            if not verdicts[running.owner]:
                continue
            if not await self.store.adopt_session(running.session_id, running.owner, self.instance):
                continue  # another replica adopted it first, or it ended meanwhile
            record = await self.store.get_session(running.session_id, "")
            if record is None or record.status != pb.SESSION_STATUS_RUNNING:
                continue
            owner = running.owner or "an orchestrator without replicas"
            log.warning("adopting session %s of %s, which is gone", running.session_id, owner)
            metrics.LEASE_TAKEOVERS.inc()
            try:
                await end_interrupted(self.store, record)
            except Exception:
                self._adopted.add(running.session_id)
                raise
            ended += 1
        return ended

    async def _gone(self, owner: str) -> bool:
        if not owner:
            return self._leading()
        lease = await self.store.get_lease(instance_lease(owner))
        if lease is None or lease.expires_us <= int(self._clock() * 1e6):
            return True
        other = Holder.decode(lease.holder)
        return other is not None and provably_dead(other, self.holder)

    async def apply_cancels(self) -> None:
        """Cancel this instance's sessions whose cancel was asked for through another replica."""
        for request in await self.store.cancel_requests(self.instance):
            self._cancel(request.session_id, request.cancel_reason or "cancelled by the client")

    def start(self) -> None:
        """Look for cancel requests every :data:`CANCEL_POLL` seconds and sweep every half lease time."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop looking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.ttl / 2
        while True:
            await asyncio.sleep(CANCEL_POLL)
            try:
                await self.apply_cancels()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.ttl / 2
                    await self.sweep()
            except Exception:
                log.warning("replica housekeeping failed; retrying", exc_info=True)


class Leadership:
    """Holds the database-wide lease (``orchestrator``) whenever it can, and runs a duty while it does: the
    outbox, which delivers the store's events to analytics in position order under one cursor. Several
    instances try; one leads at a time; when the leader goes, another takes over within the lease's time."""

    def __init__(
        self,
        store: SessionStore,
        ttl: float,
        holder: Holder,
        on_lead: Callable[[], None],
        on_follow: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = holder
        self.leading = False
        self._me = holder.encode()
        self._on_lead = on_lead
        self._on_follow = on_follow
        self._clock = clock
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def try_lead(self) -> bool:
        """Claim or renew the lease; start or stop the duty as the outcome changes. Returns ``leading``."""
        now = self._clock()
        try:
            record = await self.store.claim_lease(LEASE_NAME, self._me, int(now * 1e6), int((now + self.ttl) * 1e6))
            if record.holder != self._me:
                other = Holder.decode(record.holder)
                if other is not None and provably_dead(other, self.holder):
                    record = await self.store.claim_lease(
                        LEASE_NAME, self._me, int(now * 1e6), int((now + self.ttl) * 1e6), steal_from=record.holder
                    )
            mine = record.holder == self._me
        except Exception:
            # Still the leader while the lease cannot have expired: nobody else can have taken it yet.
            log.warning("could not claim the database lease; trying again", exc_info=True)
            mine = self.leading and now - self._renewed_at < self.ttl * 2 / 3
        if mine:
            self._renewed_at = now
        if mine and not self.leading:
            self.leading = True
            metrics.LEASES_HELD.inc()
            log.info("leading: this orchestrator delivers the store's events to analytics")
            self._on_lead()
        elif not mine and self.leading:
            self.leading = False
            metrics.LEASES_HELD.dec()
            log.info("no longer leading: another orchestrator delivers the events")
            await self._on_follow()
        return self.leading

    def start(self) -> None:
        """Try every third of the lease's time until :meth:`release`."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.try_lead()

    async def release(self) -> None:
        """Stop trying; stop the duty and give the lease up if held."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            self.leading = False
            metrics.LEASES_HELD.dec()
            await self._on_follow()
            with contextlib.suppress(Exception):
                await self.store.release_lease(LEASE_NAME, self._me)
