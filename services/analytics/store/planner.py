"""The analytics store's write plans, the same for every backend.

A backend is an adapter: it loads the stored state a write touches, records it, applies a plan and reads
counter rows. Everything in between — which events are new, how sessions change, which counters move, what
a rating replaces — is decided here, once:

* :func:`plan_ingest` plans a batch of events from what a :class:`StoredState` loads (the events already
  recorded, the sessions, and for the sessions that need it their raw facts, round-1 critiques or waiting
  ratings) and returns a :class:`WritePlan`: the session rows to write whole, the new events (ledger, calls,
  critiques), the waiting ratings that join or are dropped, and the counter deltas of every level
  (:meth:`.counters.CounterRows.rolled_up`). It is made of two pure steps, :func:`admit` and :func:`plan_batch`.
* :func:`plan_feedback` plans a rating (a :class:`FeedbackPlan`) from a :class:`FeedbackState`.
* :func:`plan_rebuild` recounts every counter from the raw facts (:class:`RebuildPlan`), when a store's
  counters version differs from :data:`.counters.COUNTERS_VERSION`.

The rules are those of :mod:`.model`'s docstring.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.analytics.store.buckets import hour_of
from services.analytics.store.counters import CounterRows
from services.analytics.store.model import (
    CritiqueFact,
    EventFacts,
    FeedbackRecord,
    IngestResult,
    SessionFacts,
    SessionState,
    feedback_may_join,
    score_milli,
    shadow_outcome,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingRating:
    """A rating given before its session was known, with the caller's tenant ("" = internal)."""

    session_id: str
    user_id: str
    tenant: str
    rating: int
    comment: str
    create_time_ns: int
    update_time_ns: int


@dataclass(frozen=True, slots=True)
class StoredRating:
    """A joined rating of a known session, as stored."""

    user_id: str
    rating: int
    create_time_ns: int


def round1_outcome(critiques: Iterable[CritiqueFact]) -> int | None:
    """A session's stored shadow outcome from its critiques: 1 hit, 0 miss, None not judged (only round 1
    counts; see :func:`~.model.shadow_outcome`)."""
    outcome = shadow_outcome(
        (k.critic_model, k.author_model, k.shadow, score_milli(k.score)) for k in critiques if k.round == 1
    )
    return None if outcome is None else int(outcome)


def _counter_key(state: SessionState) -> tuple[str, int, str, int]:
    """Where a session's figures are counted; when it changes, they move."""
    return (state.tenant, hour_of(state.create_time_ns), state.primary_model, state.primary_domain)


# ------------------------------------------------------------------------------------------ ingest


class StoredState(Protocol):
    """What :func:`plan_ingest` reads, in the batch's transaction (or under the batch's lock)."""

    async def seen_events(self, session_ids: Sequence[str]) -> set[tuple[str, int]]:
        """The ``(session_id, sequence)`` of every recorded event of these sessions."""

    async def sessions(self, session_ids: Sequence[str]) -> dict[str, SessionState]:
        """The stored rows of those of these sessions that exist."""

    async def session_facts(self, session_ids: Sequence[str]) -> dict[str, SessionFacts]:
        """The raw facts (calls, critiques, joined ratings) of these existing sessions."""

    async def round1_critiques(self, session_ids: Sequence[str]) -> dict[str, list[CritiqueFact]]:
        """The stored round-1 critiques of these sessions."""

    async def pending_ratings(self, session_ids: Sequence[str]) -> list[PendingRating]:
        """The ratings waiting for these sessions."""


@dataclass(slots=True)
class Admission:
    """A batch once its new events are known, and the sessions they change (the first step of a plan).

    ``before`` holds the stored rows (untouched), ``after`` the touched sessions with the new events applied;
    ``moved`` are the stored sessions whose counter key (hour, primary model, domain) changed, ``judged``
    those with new round-1 critiques, ``created`` those the batch creates.
    """

    new: list[EventFacts]
    duplicates: int
    before: dict[str, SessionState]
    after: dict[str, SessionState]
    moved: list[str] = field(default_factory=list)
    judged: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WritePlan:
    """Everything a batch writes (see the module docstring); a backend applies it atomically."""

    sessions: Sequence[SessionState]
    events: Sequence[EventFacts]
    joined: Sequence[PendingRating]
    dropped: Sequence[PendingRating]
    counters: CounterRows
    duplicates: int

    @property
    def result(self) -> IngestResult:
        """Events newly recorded and events recorded before."""
        return IngestResult(len(self.events), self.duplicates)


def admit(
    tenant: str, events: Sequence[EventFacts], seen: set[tuple[str, int]], stored: Mapping[str, SessionState]
) -> Admission:
    """Keep the events not recorded yet (once each) and apply them to copies of their sessions; a session
    the batch creates belongs to ``tenant``."""
    unique: dict[tuple[str, int], EventFacts] = {}
    for event in events:
        unique.setdefault((event.session_id, event.sequence), event)
    new = sorted((e for key, e in unique.items() if key not in seen), key=lambda e: (e.session_id, e.sequence))
    before = {sid: dataclasses.replace(state) for sid, state in stored.items()}
    after: dict[str, SessionState] = {}
    for event in new:
        state = after.get(event.session_id)
        if state is None:
            previous = stored.get(event.session_id)
            state = after[event.session_id] = (
                SessionState(event.session_id, tenant, event.time_ns)
                if previous is None
                else dataclasses.replace(previous)
            )
        state.advance(event)
    touched = sorted(after)
    return Admission(
        new=new,
        duplicates=len(events) - len(new),
        before=before,
        after=after,
        moved=[sid for sid in touched if sid in before and _counter_key(after[sid]) != _counter_key(before[sid])],
        judged=sorted({e.session_id for e in new if e.critique is not None and e.critique.round == 1}),
        created=[sid for sid in touched if sid not in before],
    )


def plan_batch(
    admission: Admission,
    facts: Mapping[str, SessionFacts],
    round1: Mapping[str, Sequence[CritiqueFact]],
    pending: Sequence[PendingRating],
) -> WritePlan:
    """The write plan of an admitted batch, given the stored raw facts of its ``moved`` sessions, the stored
    round-1 critiques of its ``judged`` ones and the ratings waiting for its ``created`` ones."""
    before, after = admission.before, admission.after
    by_session: dict[str, list[EventFacts]] = {}
    for event in admission.new:
        by_session.setdefault(event.session_id, []).append(event)
    for sid in admission.judged:
        new_critiques = [e.critique for e in by_session[sid] if e.critique is not None]
        after[sid].shadow_state = round1_outcome([*round1.get(sid, ()), *new_critiques])

    joined: list[PendingRating] = []
    dropped: list[PendingRating] = []
    for rating in pending:
        owner = after[rating.session_id].tenant
        if feedback_may_join(owner, rating.tenant):
            joined.append(rating)
        else:
            dropped.append(rating)
            log.warning(
                "dropped a rating of session %s by tenant %r given before the session arrived: it belongs to %r",
                rating.session_id,
                rating.tenant,
                owner,
            )

    rows = CounterRows()
    moved = set(admission.moved)
    for sid in admission.moved:
        # Its key changed: every figure it had leaves the old key, and all of them, the new ones too,
        # arrive under the new key.
        stored = facts.get(sid, SessionFacts())
        rows.count_session(before[sid], stored, -1)
        events = by_session[sid]
        everything = SessionFacts(
            calls=[*stored.calls, *(e.call for e in events if e.call is not None)],
            critiques=[*stored.critiques, *(e.critique for e in events if e.critique is not None)],
            ratings=stored.ratings,
        )
        rows.count_session(after[sid], everything)
    for sid, events in by_session.items():
        if sid in moved:
            continue
        state = after[sid]
        for event in events:
            if event.call is not None:
                rows.count_call(state, event.call)
            if event.critique is not None:
                rows.count_critique(state, event.critique)
        if sid in admission.judged:
            old = before[sid].shadow_state if sid in before else None
            rows.count_outcomes(state, old, (), -1)
            rows.count_outcomes(state, state.shadow_state, (), 1)
    ratings: dict[str, list[int]] = {}
    for rating in joined:
        ratings.setdefault(rating.session_id, []).append(rating.rating)
    for sid, values in ratings.items():
        rows.count_outcomes(after[sid], None, values, 1)

    return WritePlan(
        sessions=[after[sid] for sid in sorted(after)],
        events=admission.new,
        joined=joined,
        dropped=dropped,
        counters=rows.rolled_up(),
        duplicates=admission.duplicates,
    )


async def plan_ingest(tenant: str, events: Sequence[EventFacts], state: StoredState) -> WritePlan:
    """Plan a batch of ``tenant`` from what ``state`` loads (see the module docstring)."""
    session_ids = sorted({event.session_id for event in events})
    admission = admit(tenant, events, await state.seen_events(session_ids), await state.sessions(session_ids))
    if not admission.new:
        return WritePlan((), (), (), (), CounterRows(), admission.duplicates)
    return plan_batch(
        admission,
        await state.session_facts(admission.moved) if admission.moved else {},
        await state.round1_critiques(admission.judged) if admission.judged else {},
        await state.pending_ratings(admission.created) if admission.created else [],
    )


# ---------------------------------------------------------------------------------------- feedback


class FeedbackState(Protocol):
    """What :func:`plan_feedback` reads, in the rating's transaction (or under the writer lock)."""

    async def session(self, session_id: str) -> SessionState | None:
        """The stored session, or None when it is not known (yet)."""

    async def ratings(self, session_id: str) -> list[StoredRating]:
        """The joined ratings of a known session."""

    async def pending_rating(self, session_id: str, user_id: str) -> PendingRating | None:
        """The rating of ``user_id`` waiting for ``session_id``, if any."""


@dataclass(frozen=True, slots=True)
class FeedbackPlan:
    """What a rating writes: ``pending`` (kept aside: the session is not known yet) or the rating
    ``record`` and the session counters' deltas. ``replaced``: an earlier rating is replaced."""

    record: FeedbackRecord
    replaced: bool
    pending: PendingRating | None
    counters: CounterRows


async def plan_feedback(
    state: FeedbackState, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, tenant: str
) -> FeedbackPlan:
    """Plan :meth:`~.model.AnalyticsStore.put_feedback`; raises :class:`LookupError` for another tenant's session.

    A rating replaces the same user's, keeping its creation time; a waiting one keeps it only when the rating
    it replaces came from the same tenant (another tenant's is none of this caller's business).
    """
    session = await state.session(session_id)
    if session is None:
        earlier = await state.pending_rating(session_id, user_id)
        replaced = earlier is not None and earlier.tenant == tenant
        created = earlier.create_time_ns if earlier is not None and replaced else now_ns
        pending = PendingRating(session_id, user_id, tenant, rating, comment, created, now_ns)
        record = FeedbackRecord(session_id, user_id, rating, comment, created, now_ns, pending=True)
        return FeedbackPlan(record, replaced, pending, CounterRows())
    if tenant and session.tenant != tenant:
        raise LookupError(f"no session {session_id!r}")
    stored = await state.ratings(session_id)
    before = {r.user_id: r.rating for r in stored}
    created = next((r.create_time_ns for r in stored if r.user_id == user_id), now_ns)
    after = {**before, user_id: rating}
    rows = CounterRows()
    rows.count_outcomes(session, None, list(before.values()), -1)
    rows.count_outcomes(session, None, list(after.values()), 1)
    record = FeedbackRecord(session_id, user_id, rating, comment, created, now_ns)
    return FeedbackPlan(record, user_id in before, None, rows.rolled_up())


# ----------------------------------------------------------------------------------------- rebuild


@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """Counters recounted from the raw facts: the sessions whose stored shadow outcome was wrong (to write
    back) and every counter row (to replace all the stored ones)."""

    sessions: Sequence[SessionState]
    counters: CounterRows


async def plan_rebuild(sessions: AsyncIterator[Sequence[tuple[SessionState, SessionFacts]]]) -> RebuildPlan:
    """Recount every stored session, read in chunks with its raw facts."""
    changed: list[SessionState] = []
    rows = CounterRows()
    async for chunk in sessions:
        for stored, facts in chunk:
            state = stored
            outcome = round1_outcome(facts.critiques)
            if outcome != stored.shadow_state:
                state = dataclasses.replace(stored, shadow_state=outcome)
                changed.append(state)
            rows.count_session(state, facts)
    return RebuildPlan(changed, rows.rolled_up())
