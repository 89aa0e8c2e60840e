"""The backend-neutral parts of the analytics store, without a database: the bucketing scheme, the named
counters and their columns, and the planner, run over an in-memory adapter (:class:`MemoryStore`).

The planner's central property: the counters its plans add up, batch after batch, whatever the order and
duplication of the events, equal the counters recounted from the raw facts at the end (``plan_rebuild``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from services.analytics.store.buckets import ALL_TENANTS, DAY_LEVELS, LEVELS, cover
from services.analytics.store.counters import (
    MODEL_COLUMNS,
    CounterRows,
    DayCounters,
    DayKey,
    ModelCounters,
    ModelKey,
    SessionCounters,
    SessionKey,
)
from services.analytics.store.model import (
    NANOS_PER_HOUR,
    CallFact,
    CritiqueFact,
    EventFacts,
    FeedbackRecord,
    IngestResult,
    RatingCounts,
    SessionFacts,
    SessionState,
    TokenUsage,
)
from services.analytics.store.planner import (
    PendingRating,
    StoredRating,
    WritePlan,
    admit,
    plan_feedback,
    plan_ingest,
    plan_rebuild,
)
from tests.analytics.builders import DAY, HOUR, SECOND, day_start, random_session

BASE = day_start(1_780_000_000 * SECOND)


def facts(events: Sequence[pb.OrchestrationEvent]) -> list[EventFacts]:
    return [f for f in (facts_from_event(e) for e in events) if f is not None]


class MemoryStore:
    """The planner's reading protocols over dicts, and its plans applied to them: a backend with no database."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.states: dict[str, SessionState] = {}
        self.calls: dict[str, list[CallFact]] = {}
        self.critiques: dict[str, list[CritiqueFact]] = {}
        self.rated: dict[str, dict[str, StoredRating]] = {}
        self.waiting: dict[tuple[str, str], PendingRating] = {}
        self.counters = CounterRows()

    # planner.StoredState
    async def seen_events(self, session_ids: Sequence[str]) -> set[tuple[str, int]]:
        return {key for key in self.seen if key[0] in session_ids}

    async def sessions(self, session_ids: Sequence[str]) -> dict[str, SessionState]:
        return {sid: dataclasses.replace(self.states[sid]) for sid in session_ids if sid in self.states}

    async def session_facts(self, session_ids: Sequence[str]) -> dict[str, SessionFacts]:
        return {sid: self.facts_of(sid) for sid in session_ids}

    async def round1_critiques(self, session_ids: Sequence[str]) -> dict[str, list[CritiqueFact]]:
        return {sid: [k for k in self.critiques.get(sid, []) if k.round == 1] for sid in session_ids}

    async def pending_ratings(self, session_ids: Sequence[str]) -> list[PendingRating]:
        return [p for (sid, _), p in self.waiting.items() if sid in session_ids]

    # planner.FeedbackState
    async def session(self, session_id: str) -> SessionState | None:
        return self.states.get(session_id)

    async def ratings(self, session_id: str) -> list[StoredRating]:
        return list(self.rated.get(session_id, {}).values())

    async def pending_rating(self, session_id: str, user_id: str) -> PendingRating | None:
        return self.waiting.get((session_id, user_id))

    def facts_of(self, sid: str) -> SessionFacts:
        ratings = [r.rating for r in self.rated.get(sid, {}).values()]
        return SessionFacts(list(self.calls.get(sid, [])), list(self.critiques.get(sid, [])), ratings)

    async def every_session(self) -> AsyncIterator[list[tuple[SessionState, SessionFacts]]]:
        yield [(dataclasses.replace(state), self.facts_of(sid)) for sid, state in sorted(self.states.items())]

    # applying plans
    def apply(self, plan: WritePlan) -> None:
        for state in plan.sessions:
            self.states[state.session_id] = state
        for event in plan.events:
            self.seen.add((event.session_id, event.sequence))
            if event.call is not None:
                self.calls.setdefault(event.session_id, []).append(event.call)
            if event.critique is not None:
                self.critiques.setdefault(event.session_id, []).append(event.critique)
        for p in plan.joined:
            self.rated.setdefault(p.session_id, {})[p.user_id] = StoredRating(p.user_id, p.rating, p.create_time_ns)
        for p in [*plan.joined, *plan.dropped]:
            del self.waiting[(p.session_id, p.user_id)]
        self.counters.add(plan.counters)

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        plan = await plan_ingest(tenant, events, self)
        self.apply(plan)
        return plan.result

    async def rate(self, sid: str, user: str, rating: int, now: int, tenant: str = "") -> tuple[FeedbackRecord, bool]:
        plan = await plan_feedback(self, sid, user, rating, "", now, tenant)
        if plan.pending is not None:
            self.waiting[(sid, user)] = plan.pending
        else:
            self.rated.setdefault(sid, {})[user] = StoredRating(user, rating, plan.record.create_time_ns)
            self.counters.add(plan.counters)
        return plan.record, plan.replaced


def call(model: str = "m/a", *, success: bool = True, kind: int = 0, latency: int = SECOND, cost: int = 7) -> CallFact:
    return CallFact(model, 1, False, 1, success, kind, TokenUsage(cost_nanos=cost, total_tokens=3), latency, None)


# -------------------------------------------------------------------------------------------- buckets


@given(st.integers(-(10**6) * HOUR, 10**6 * HOUR), st.integers(0, 400 * DAY))
def test_cover_reads_whole_hours_from_aligned_blocks_and_the_rest_raw(start: int, length: int) -> None:
    end = start + length
    plan = cover(start, end)
    hours = [h for run in plan.runs for h in range(run.first, run.end)]
    first, last = -(-start // NANOS_PER_HOUR), end // NANOS_PER_HOUR
    assert hours == list(range(first, last)) if first < last else not hours
    for run in plan.runs:
        assert run.level in LEVELS and run.first % run.level == 0 and run.end % run.level == 0
    for level in LEVELS:
        assert sum(1 for run in plan.runs if run.level == level) <= 2
    raw = sum(b - a for a, b in plan.edges)
    assert raw + len(hours) * NANOS_PER_HOUR == length
    assert all(b - a < NANOS_PER_HOUR for a, b in plan.edges) or (not plan.runs and len(plan.edges) <= 1)


def test_hour_rows_roll_up_to_every_level_and_every_tenant() -> None:
    hour_rows = CounterRows()
    state = SessionState("s", "t", BASE + 30 * HOUR + 5, primary_model="m/a", primary_domain=2)
    hour_rows.count_session(state, SessionFacts([call(), call("m/b", success=False, kind=3)], [], [5, 3]))
    rolled = hour_rows.rolled_up()
    hour = (BASE + 30 * HOUR) // NANOS_PER_HOUR
    for owner in ("t", ALL_TENANTS):
        for level in LEVELS:
            unit = hour // level * level
            assert (
                rolled.models[ModelKey(level, unit, owner, "m/a", 2)]
                == hour_rows.models[ModelKey(1, hour, "t", "m/a", 2)]
            )
            assert rolled.sessions[SessionKey(level, unit, owner, "m/a", 2)].ratings == RatingCounts((0, 0, 1, 0, 1))
        assert {k.level for k in rolled.days if k.tenant == owner} == set(DAY_LEVELS)
        assert rolled.days[DayKey(24, hour // 24 * 24, owner)] == DayCounters(2, 14, RatingCounts((0, 0, 1, 0, 1)))
    assert len(rolled.models) == 2 * len(LEVELS) * 2


def test_named_counters_round_trip_through_their_columns() -> None:
    counted = ModelCounters.of_call(call(latency=3 * SECOND)) + ModelCounters.of_call(call(success=False, kind=42))
    counted += ModelCounters(critiques_received=2, score_received_milli=15_500)
    assert list(counted.columns()) == list(MODEL_COLUMNS)
    assert ModelCounters.from_columns(counted.columns()) == counted
    assert counted.failures[0] == 1  # an unknown kind counts as unclassified
    assert not counted + -counted
    assert ModelCounters.from_columns({"attempts": 4}) == ModelCounters(attempts=4)
    session = SessionCounters.of_session(1, [4, 5, 2])
    assert (session.shadow_sample, session.shadow_hits, session.rated, session.feedback_hits) == (1, 1, 1, 0)
    assert SessionCounters.from_columns(session.columns()) == session
    assert DayCounters.from_columns(DayCounters(3, 9, RatingCounts((1, 0, 0, 0, 2))).columns()).calls == 3


# -------------------------------------------------------------------------------------------- planner


def test_admit_keeps_new_events_once_and_names_the_sessions_they_change() -> None:
    old = SessionState("s-old", "t-a", BASE + HOUR, started=True, primary_model="m/a")
    events = [
        EventFacts("s-old", 5, BASE + 2 * HOUR, "model_selected", primary_model="m/b", primary_domain=3),
        EventFacts("s-old", 4, BASE + 2 * HOUR, "x"),
        EventFacts("s-new", 2, BASE + 3 * HOUR, "critique", critique=CritiqueFact(1, "m/c", "m/a", 7.0, False)),
        EventFacts("s-new", 2, BASE + 3 * HOUR, "critique"),
    ]
    admission = admit("t-b", events, {("s-old", 4)}, {"s-old": old})
    assert [(e.session_id, e.sequence) for e in admission.new] == [("s-new", 2), ("s-old", 5)]
    assert admission.duplicates == 2
    assert admission.moved == ["s-old"] and admission.created == ["s-new"] and admission.judged == ["s-new"]
    assert admission.after["s-new"].tenant == "t-b" and admission.after["s-old"].tenant == "t-a"
    assert admission.before["s-old"].primary_model == "m/a"  # the stored row is left alone


async def test_a_late_start_moves_every_figure_of_its_session() -> None:
    store = MemoryStore()
    session = random_session(random.Random(3), BASE + DAY + HOUR)
    batch = facts(session.events)
    await store.rate(session.session_id, "u", 4, BASE, tenant="t")  # waits, then joins
    await store.ingest("t", batch[1:])
    before = dict(store.counters.nonzero().models)
    plan = await plan_ingest("t", [dataclasses.replace(batch[0], time_ns=BASE + 2 * HOUR)], store)
    store.apply(plan)
    # every old row is taken out, every figure is added under the new hour
    new_hour = (BASE + 2 * HOUR) // NANOS_PER_HOUR
    for key, value in plan.counters.models.items():
        assert key.unit == new_hour // key.level * key.level or not before.get(key, ModelCounters()) + value
    assert all(key.unit == new_hour for key in store.counters.nonzero().models if key.level == 1)
    assert (
        sum(v.ratings.total for k, v in store.counters.nonzero().sessions.items() if k.level == 1 and k.tenant == "t")
        == 1
    )


async def test_ratings_waiting_for_their_session(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    first, replaced = await store.rate("s", "u1", 2, 100, tenant="t-a")
    assert first.pending and not replaced
    again, replaced = await store.rate("s", "u1", 3, 200, tenant="t-a")
    assert replaced and again.create_time_ns == 100  # the same tenant's: keeps its creation time
    await store.rate("s", "u2", 1, 300, tenant="t-b")
    stolen, replaced = await store.rate("s", "u1", 5, 400, tenant="t-b")
    assert not replaced and stolen.create_time_ns == 400  # another tenant's is none of this caller's business
    with caplog.at_level("WARNING"):
        await store.ingest("t-a", [EventFacts("s", 1, BASE, "session_started", started=True)])
    assert not store.waiting and not store.rated.get("s")  # both waiting ratings are t-b's: dropped
    assert sum("dropped a rating of session s" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(LookupError):
        await store.rate("s", "u1", 5, 500, tenant="t-b")
    record, replaced = await store.rate("s", "u1", 5, 500, tenant="")
    assert not record.pending and not replaced


@pytest.mark.parametrize("seed", range(6))
async def test_planned_counters_equal_a_recount_from_the_raw_facts(seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore()
    deliveries: list[tuple[str, EventFacts]] = []
    sessions = [random_session(rng, BASE + rng.randrange(3 * DAY)) for _ in range(12)]
    for i, session in enumerate(sessions):
        events = facts(session.events)
        if i % 3 == 0:  # late starts: the session changes hour, day and domain after being counted
            events = events[2:] + [dataclasses.replace(e, time_ns=e.time_ns - rng.randrange(DAY)) for e in events[:2]]
        deliveries += [("t-a" if i % 2 else "t-b", e) for e in events]
    deliveries += rng.sample(deliveries, len(deliveries) // 4)
    rng.shuffle(deliveries)
    while deliveries:
        size = rng.randint(1, 25)
        chunk, deliveries = deliveries[:size], deliveries[size:]
        if rng.random() < 0.4:
            session = rng.choice(sessions)
            await store.rate(session.session_id, rng.choice("uvw"), rng.randint(1, 5), BASE)
        for tenant in ("t-a", "t-b"):
            batch = [e for t, e in chunk if t == tenant]
            if batch:
                await store.ingest(tenant, batch)
    recount = await plan_rebuild(store.every_session())
    assert not recount.sessions  # every stored shadow outcome is the one its critiques give
    assert store.counters.nonzero() == recount.counters
    assert any(v.shadow_sample for v in recount.counters.sessions.values())
