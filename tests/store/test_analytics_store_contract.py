"""One contract for every AnalyticsStore: SQLite, MongoDB on the in-process double (``mongo-double``)
and, with ``ORX_TEST_MONGODB_URI``, on a real MongoDB (``mongodb``).

Besides direct expectations, every backend is checked against a reference SQLite store fed the same
events in order: the store under test gets them shuffled, split into random batches, partly twice,
with session starts arriving late (so sessions change day and domain after being counted), and every
report must come out identical for many scopes (whole days, partial days at both edges, tenants,
domains, models). Every backend also opens the databases the previous release made
(``tests/analytics/previous_release.py``) and answers what that release answered.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import bson
import pytest

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from services.analytics.store import mongo as mongo_analytics
from services.analytics.store.model import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    AnalyticsStore,
    EventFacts,
    Scope,
)
from services.analytics.store.mongo import (
    ANALYTICS_MIGRATIONS,
    DAY_COUNTERS,
    JOURNAL,
    META,
    MODEL_COUNTERS,
    SESSION_COUNTERS,
    MongoAnalyticsStore,
)
from services.analytics.store.sqlite import SqliteAnalyticsStore
from services.analytics.store.sqlite_migrations import MIGRATIONS
from tests.analytics import previous_release
from tests.analytics.builders import DAY, HOUR, SECOND, FakeSession, day_start, realistic
from tests.store.conftest import MongoTarget

Opener = Callable[[], Awaitable[AnalyticsStore]]
BASE = day_start(1_780_000_000 * SECOND)  # a fixed midnight UTC


def facts(events: Sequence[pb.OrchestrationEvent]) -> list[EventFacts]:
    return [f for f in (facts_from_event(e) for e in events) if f is not None]


@pytest.fixture
async def open_store(backend: str, tmp_path: Path, mongo_target: MongoTarget | None) -> AsyncIterator[Opener]:
    opened: list[AnalyticsStore] = []

    async def opener() -> AnalyticsStore:
        store: AnalyticsStore
        if mongo_target is None:
            store = await SqliteAnalyticsStore.open(tmp_path / "analytics.db")
        else:
            store = await mongo_target.open(MongoAnalyticsStore)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> AnalyticsStore:
    return await open_store()


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[SqliteAnalyticsStore]:
    ref = await SqliteAnalyticsStore.open(tmp_path / "reference.db")
    yield ref
    await ref.close()


def everything(tenant: str = "") -> Scope:
    return Scope(tenant, BASE - 10 * DAY, BASE + 10 * DAY)


# ------------------------------------------------------------------------------------------ direct


async def test_ingest_is_idempotent(store: AnalyticsStore) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    session = realistic(BASE + HOUR)
    batch = facts(session.events)
    first = await store.ingest(tenant, batch)
    assert (first.accepted, first.duplicates) == (len(batch), 0)
    cost = await store.cost_summary(everything(tenant), 10)
    again = await store.ingest(tenant, batch)
    assert (again.accepted, again.duplicates) == (0, len(batch))
    within = await store.ingest(tenant, [batch[0], batch[0]])
    assert (within.accepted, within.duplicates) == (0, 2)
    assert await store.cost_summary(everything(tenant), 10) == cost
    assert (await store.ingest(tenant, [])).accepted == 0


async def test_session_info_and_tenant_isolation(store: AnalyticsStore) -> None:
    session = realistic(BASE + HOUR, primary="m/a", domain=common_pb2.DOMAIN_MATH)
    batch = facts(session.events)
    await store.ingest("t-one", batch[:3])
    await store.ingest("t-two", batch[3:])  # a session keeps the tenant of its first delivery
    info = await store.get_session(session.session_id, "t-one")
    assert info is not None
    assert info.tenant == "t-one" and info.status == STATUS_COMPLETED
    assert info.primary_model == "m/a" and info.primary_domain == common_pb2.DOMAIN_MATH
    assert info.create_time_ns == BASE + HOUR
    assert info.calls == len(session.call_costs)
    assert info.usage.cost_nanos == sum(round(c * 1e9) for c in session.call_costs)
    assert await store.get_session(session.session_id, "t-two") is None
    assert await store.get_session(session.session_id, "") == info
    assert await store.get_session("nope", "") is None


async def test_terminal_status_and_late_events(store: AnalyticsStore) -> None:
    failed = FakeSession(BASE + HOUR).started().selected("m/a").failed()
    running = FakeSession(BASE + 2 * HOUR).started().selected("m/b").response("m/b", 0.01)
    await store.ingest("t", facts(failed.events))
    await store.ingest("t", facts(running.events))
    late = FakeSession(BASE + HOUR, session_id=failed.session_id, events=list(failed.events))
    late.response("m/a", 0.02)  # arrives after the end: counted, but the session stays failed
    await store.ingest("t", facts(late.events[-1:]))
    info = await store.get_session(failed.session_id, "")
    assert info is not None and info.status == STATUS_FAILED and info.calls == 1
    info = await store.get_session(running.session_id, "")
    assert info is not None and info.status == STATUS_RUNNING


async def test_feedback_insert_replace_and_unknown(store: AnalyticsStore) -> None:
    session = realistic(BASE + HOUR)
    await store.ingest("t", facts(session.events))
    record, replaced = await store.put_feedback(session.session_id, "u1", 2, "meh", BASE + 5 * HOUR)
    assert not replaced and record.create_time_ns == record.update_time_ns == BASE + 5 * HOUR
    record, replaced = await store.put_feedback(session.session_id, "u1", 5, "great", BASE + 6 * HOUR)
    assert replaced and record.rating == 5 and record.comment == "great"
    assert (record.create_time_ns, record.update_time_ns) == (BASE + 5 * HOUR, BASE + 6 * HOUR)
    await store.put_feedback(session.session_id, "u2", 3, "", BASE + 7 * HOUR)
    sat = await store.satisfaction(everything("t"))
    assert sat.overall.counts == (0, 0, 1, 0, 1)
    accuracy = await store.selection_accuracy(everything("t"))
    assert (accuracy.feedback.sample, accuracy.feedback.hits) == (1, 1)  # mean 4
    # Another tenant's session is not there for that tenant; the session's own tenant and internal
    # callers (no tenant) may rate it.
    with pytest.raises(LookupError):
        await store.put_feedback(session.session_id, "u3", 4, "", BASE, tenant="t-other")
    await store.put_feedback(session.session_id, "u3", 4, "", BASE, tenant="t")
    await store.put_feedback(session.session_id, "u4", 4, "", BASE, tenant="")
    assert (await store.satisfaction(everything("t"))).overall.counts == (0, 0, 1, 2, 1)


# ------------------------------------------------------------------- feedback before its session


async def test_feedback_before_its_session_waits_then_joins(store: AnalyticsStore) -> None:
    # The gateway checks the session exists with the orchestrator, but analytics hears of it only when
    # the outbox delivers its events: a rating given in between is kept, and counts once they arrive.
    session = realistic(BASE + HOUR, primary="m/a", domain=common_pb2.DOMAIN_MATH)
    record, replaced = await store.put_feedback(session.session_id, "u1", 2, "early", BASE + 2 * HOUR, tenant="t-a")
    assert not replaced and record.pending
    assert (record.rating, record.comment, record.create_time_ns) == (2, "early", BASE + 2 * HOUR)
    record, replaced = await store.put_feedback(session.session_id, "u1", 5, "changed", BASE + 3 * HOUR, tenant="t-a")
    assert replaced and record.pending
    assert (record.create_time_ns, record.update_time_ns) == (BASE + 2 * HOUR, BASE + 3 * HOUR)
    await store.put_feedback(session.session_id, "u2", 4, "", BASE + 3 * HOUR, tenant="")  # internal caller
    assert await store.get_session(session.session_id, "") is None
    for tenant in ("", "t-a"):  # waiting ratings are in no report
        assert (await store.satisfaction(everything(tenant))).overall.total == 0
        assert (await store.selection_accuracy(everything(tenant))).feedback.sample == 0

    batch = facts(session.events)
    await store.ingest("t-a", batch[3:])  # not the start first: the session is created by a later event
    satisfaction = await store.satisfaction(everything("t-a"))
    assert satisfaction.overall.counts == (0, 0, 0, 1, 1)
    assert not satisfaction.by_domain  # its domain comes with model_selected, not delivered yet
    accuracy = await store.selection_accuracy(everything("t-a"))
    assert (accuracy.feedback.sample, accuracy.feedback.hits) == (1, 1)
    # The joined rating is an ordinary one now.
    record, replaced = await store.put_feedback(session.session_id, "u1", 3, "", BASE + 4 * HOUR, tenant="t-a")
    assert replaced and not record.pending and record.create_time_ns == BASE + 2 * HOUR
    assert (await store.satisfaction(everything("t-a"))).overall.counts == (0, 0, 1, 1, 0)
    # The rest of the session (its start and domain among it) arrives: the ratings move with it.
    await store.ingest("t-a", batch[:3])
    satisfaction = await store.satisfaction(everything("t-a"))
    assert satisfaction.overall.counts == (0, 0, 1, 1, 0)
    assert satisfaction.by_domain == {common_pb2.DOMAIN_MATH: satisfaction.overall}
    assert (await store.satisfaction(everything("t-b"))).overall.total == 0


async def test_early_feedback_from_another_tenant_is_dropped(
    store: AnalyticsStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = realistic(BASE + HOUR)
    await store.put_feedback(session.session_id, "u1", 1, "not mine", BASE + 2 * HOUR, tenant="t-b")
    await store.put_feedback(session.session_id, "u2", 5, "mine", BASE + 2 * HOUR, tenant="t-a")
    with caplog.at_level("WARNING"):
        await store.ingest("t-a", facts(session.events))
    assert (await store.satisfaction(everything())).overall.counts == (0, 0, 0, 0, 1)
    assert (await store.satisfaction(everything("t-b"))).overall.total == 0
    assert any(session.session_id in r.getMessage() and "t-b" in r.getMessage() for r in caplog.records)
    # The dropped rating is gone for good: t-a's own user starts afresh, t-b cannot reach the session.
    record, replaced = await store.put_feedback(session.session_id, "u1", 4, "", BASE + 3 * HOUR, tenant="t-a")
    assert not replaced and record.create_time_ns == BASE + 3 * HOUR
    with pytest.raises(LookupError):
        await store.put_feedback(session.session_id, "u1", 1, "", BASE + 3 * HOUR, tenant="t-b")
    assert (await store.satisfaction(everything())).overall.counts == (0, 0, 0, 1, 1)


async def test_early_feedback_joins_whichever_batch_creates_the_session(store: AnalyticsStore) -> None:
    sessions = [realistic(BASE + i * HOUR) for i in range(3)]
    for i, s in enumerate(sessions):
        await store.put_feedback(s.session_id, "u", i + 3, "", BASE, tenant="t")
    batch = [f for s in sessions for f in facts(s.events)]
    again = await store.ingest("t", batch)
    assert again.accepted == len(batch)
    assert (await store.satisfaction(everything("t"))).overall.counts == (0, 0, 1, 1, 1)
    await store.ingest("t", batch)  # a redelivery joins nothing twice
    assert (await store.satisfaction(everything("t"))).overall.counts == (0, 0, 1, 1, 1)


async def test_a_late_start_moves_the_session_to_its_day(store: AnalyticsStore) -> None:
    session = realistic(BASE + DAY + HOUR)
    batch = facts(session.events)
    started = batch[0]
    # everything but the start arrives first, dated on day 2; then the start says day 1
    await store.ingest("t", batch[1:])
    day2 = Scope("t", BASE + DAY, BASE + 2 * DAY)
    assert (await store.cost_summary(day2, 5)).calls == len(session.call_costs)
    moved = EventFacts(
        session_id=started.session_id,
        sequence=started.sequence,
        time_ns=BASE + HOUR,
        kind=started.kind,
        started=True,
    )
    await store.ingest("t", [moved])
    assert (await store.cost_summary(day2, 5)).calls == 0
    day1 = await store.cost_summary(Scope("t", BASE, BASE + DAY), 5)
    assert day1.calls == len(session.call_costs) and day1.session_count == 1
    assert [d.calls for d in day1.days] == [len(session.call_costs)]
    perf = await store.performance(Scope("t", BASE, BASE + DAY))
    assert sum(r.attempts for r in perf) == len(session.call_costs)


async def test_a_late_start_in_the_same_day_moves_the_session_to_its_hour(store: AnalyticsStore) -> None:
    # Counters are kept per hour on every backend: a start dated three hours before the rest of the
    # session moves it within its day, and a report of the partial hours sees it where it belongs.
    session = realistic(BASE + 5 * HOUR + 10 * SECOND, primary="m/a", domain=common_pb2.DOMAIN_MATH)
    batch = facts(session.events)
    await store.ingest("t", batch[1:])
    await store.put_feedback(session.session_id, "u", 5, "", BASE + DAY, tenant="t")
    moved = EventFacts(
        batch[0].session_id, batch[0].sequence, BASE + 2 * HOUR + 30 * SECOND, batch[0].kind, started=True
    )
    await store.ingest("t", [moved])
    calls = len(session.call_costs)
    for start, end, expected in (
        (BASE + 2 * HOUR, BASE + 3 * HOUR, calls),
        (BASE + 2 * HOUR + 29 * SECOND, BASE + 2 * HOUR + 31 * SECOND, calls),
        (BASE + 2 * HOUR + 31 * SECOND, BASE + DAY, 0),
        (BASE, BASE + 2 * HOUR, 0),
    ):
        scope = Scope("t", start, end)
        assert (await store.cost_summary(scope, 5)).calls == expected, (start - BASE, end - BASE)
        assert sum(r.attempts for r in await store.performance(scope)) == expected
        assert (await store.satisfaction(scope)).overall.total == (1 if expected else 0)
    info = await store.get_session(session.session_id, "t")
    assert info is not None and info.create_time_ns == moved.time_ns


async def test_large_batch_in_one_call(store: AnalyticsStore) -> None:
    sessions = [realistic(BASE + i * 60 * SECOND, primary=f"m/{i % 3}") for i in range(84)]
    batch = [f for s in sessions for f in facts(s.events)]
    assert len(batch) >= 1000
    result = await store.ingest("t-big", batch)
    assert result.accepted == len(batch)
    summary = await store.cost_summary(everything("t-big"), 3)
    assert summary.session_count == 84
    assert summary.usage.cost_nanos == sum(round(c * 1e9) for s in sessions for c in s.call_costs)
    assert len(summary.sessions) == 3


async def test_a_refused_write_whose_caller_went_away_leaves_no_stray_error(
    store: AnalyticsStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (found by the gRPC fuzzer: SubmitFeedback with a tiny deadline on another tenant's
    # session): the write ran on after the caller's cancellation, failed, and nobody retrieved its
    # error, which asyncio then logged as "Task exception was never retrieved".
    session = realistic(BASE + HOUR)
    await store.ingest("t-a", facts(session.events))
    attempt = asyncio.create_task(store.put_feedback(session.session_id, "u1", 3, "", BASE, tenant="t-b"))
    await asyncio.sleep(0)  # one step: the attempt starts its write and waits for it
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    # Writes are serialised: once this one is done, so is the refused one.
    await store.put_feedback(session.session_id, "u2", 4, "", BASE, tenant="t-a")
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert (await store.satisfaction(everything())).overall.counts == (0, 0, 0, 1, 0)


# ------------------------------------------------------------------------------------ differential


def scenario(seed: int) -> tuple[list[tuple[str, list[EventFacts]]], list[tuple[str, str, int, int]]]:
    """Sessions over four days and two tenants (with late starts), and ratings."""
    rng = random.Random(seed)
    sessions: list[tuple[str, list[EventFacts]]] = []
    ratings: list[tuple[str, str, int, int]] = []
    domains = [common_pb2.DOMAIN_CODING, common_pb2.DOMAIN_MATH, common_pb2.DOMAIN_CREATIVE]
    for i in range(24):
        start = BASE + rng.randrange(4 * DAY)
        primary = rng.choice(["m/a", "m/b", "m/c"])
        s = realistic(start, primary=primary, domain=rng.choice(domains))
        if i % 4 == 0:
            # shadow answers and critiques so selection accuracy has samples
            s.response("m/d", 0.003, shadow=True, latency=rng.uniform(0.5, 9))
            s.critique("m/b", "m/d", rng.choice([6.0, 8.5, 9.5]), 0.0002, shadow=True)
            s.critique("m/c", "m/d", rng.choice([6.0, 8.5, 9.5]), 0.0002, shadow=True)
        batch = facts(s.events)
        tenant = "t-a" if i % 3 else "t-b"
        sessions.append((tenant, batch))
        for u in range(rng.randrange(3)):
            ratings.append((s.session_id, f"u{u}", rng.randint(1, 5), BASE + 5 * DAY + u))
    return sessions, ratings


def scopes() -> list[Scope]:
    out = []
    for tenant in ("", "t-a", "t-b"):
        out += [
            Scope(tenant, BASE - DAY, BASE + 6 * DAY),
            Scope(tenant, BASE + 7 * HOUR, BASE + 3 * DAY + 5 * HOUR),
            Scope(tenant, BASE + DAY, BASE + 2 * DAY),
            Scope(tenant, BASE + DAY + HOUR, BASE + DAY + 20 * HOUR),
            Scope(tenant, BASE + 2 * DAY + 1, BASE + 4 * DAY - 1, domain=common_pb2.DOMAIN_MATH),
        ]
    return out


async def assert_same_reports(store: AnalyticsStore, ref: AnalyticsStore) -> None:
    for scope in scopes():
        assert await store.performance(scope) == await ref.performance(scope), scope
        assert await store.performance(scope, "m/b") == await ref.performance(scope, "m/b"), scope
        assert await store.cost_summary(scope, 5) == await ref.cost_summary(scope, 5), scope
        assert await store.selection_accuracy(scope) == await ref.selection_accuracy(scope), scope
        assert await store.satisfaction(scope) == await ref.satisfaction(scope), scope


@pytest.mark.parametrize("seed", [1, 2])
async def test_same_reports_as_the_reference_whatever_the_delivery(
    seed: int, store: AnalyticsStore, reference: SqliteAnalyticsStore
) -> None:
    sessions, ratings = scenario(seed)
    for tenant, batch in sessions:
        await reference.ingest(tenant, batch)
    rng = random.Random(seed + 100)
    # Some ratings come before their session's events (the reference gets them after, below). They
    # join the session whichever event creates it, and move with it when its start comes late.
    owner = {batch[0].session_id: tenant for tenant, batch in sessions}
    early = set(rng.sample(range(len(ratings)), len(ratings) // 3))
    for i in sorted(early):
        sid, user, rating, when = ratings[i]
        await store.put_feedback(sid, user, rating, "early", when, tenant=rng.choice([owner[sid], ""]))
    deliveries: list[tuple[str, EventFacts]] = [(t, f) for t, batch in sessions for f in batch]
    deliveries += rng.sample(deliveries, len(deliveries) // 5)  # redelivered
    rng.shuffle(deliveries)  # late starts: sessions are counted on the wrong day first, then moved
    # a session keeps the tenant of its first delivery: deliver each session's first event first
    firsts = {f.session_id: (t, f) for t, batch in sessions for f in batch[:1]}
    await store.ingest("", [])
    for tenant, first in firsts.values():
        await store.ingest(tenant, [first])
    while deliveries:
        size = rng.randint(1, 40)
        chunk, deliveries = deliveries[:size], deliveries[size:]
        by_tenant: dict[str, list[EventFacts]] = {}
        for tenant, fact in chunk:
            by_tenant.setdefault(tenant, []).append(fact)
        for tenant, batch in by_tenant.items():
            await store.ingest(tenant, batch)
    for i, (sid, user, rating, when) in enumerate(ratings):
        await reference.put_feedback(sid, user, rating, "", when)
        if i not in early:
            await store.put_feedback(sid, user, rating, "", when)
    for sid, user, rating, when in ratings[::2]:  # some users change their minds
        await reference.put_feedback(sid, user, 6 - rating, "changed", when + 1)
        await store.put_feedback(sid, user, 6 - rating, "changed", when + 1)
    for _, batch in sessions:
        sid = batch[0].session_id
        assert await store.get_session(sid, "") == await reference.get_session(sid, "")
    await assert_same_reports(store, reference)
    # the comparison is not of empty reports
    whole = everything()
    assert (await store.satisfaction(whole)).overall.total == len(ratings) > 0
    assert (await store.selection_accuracy(whole)).shadow.sample > 0
    assert len({r.domain for r in await store.performance(whole)}) == 3
    assert len((await store.cost_summary(whole, 5)).days) >= 3


# ------------------------------------------------------------------------------- MongoDB recovery


async def test_an_interrupted_mongo_write_is_finished_at_restart(
    backend: str, open_store: Opener, reference: SqliteAnalyticsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite batches are transactions; this is the MongoDB journal")
    store = await open_store()
    assert isinstance(store, MongoAnalyticsStore)
    sessions, _ = scenario(7)
    for tenant, batch in sessions[:5]:
        await store.ingest(tenant, batch)
        await reference.ingest(tenant, batch)
    tenant, batch = sessions[5]
    await reference.ingest(tenant, batch)
    real_apply = MongoAnalyticsStore._apply
    calls = 0

    async def crash_midway(self: MongoAnalyticsStore, entry: dict[str, object]) -> None:
        nonlocal calls
        calls += 1
        # write the raw facts and sessions, then "crash" before the counters
        saved = {k: entry.pop(k) for k in (MODEL_COUNTERS, SESSION_COUNTERS, DAY_COUNTERS)}
        try:
            await real_apply(self, {**entry, "_id": "not-this-one"})
        finally:
            entry.update(saved)
        raise ConnectionError("connection lost")

    monkeypatch.setattr(MongoAnalyticsStore, "_apply", crash_midway)
    with pytest.raises(ConnectionError):
        await store.ingest(tenant, batch)
    assert calls == 1
    assert await store.db[JOURNAL].count_documents({}) == 1
    monkeypatch.setattr(MongoAnalyticsStore, "_apply", real_apply)
    # a redelivery now finds the events recorded; only the journal can complete the counters
    restarted = await open_store()
    assert await restarted.db[JOURNAL].count_documents({}) == 0  # type: ignore[attr-defined]
    again = await restarted.ingest(tenant, batch)
    assert again.accepted == 0
    await assert_same_reports(restarted, reference)


async def test_a_batch_too_big_for_one_journal_document_is_recorded_in_parts(
    backend: str, store: AnalyticsStore, reference: SqliteAnalyticsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A journal document holds a whole batch, and MongoDB refuses documents over 16 MiB: 10,000 events
    # with 256-character ids come to about 40 MB (measured: 3.8 MB per 1,000). Here the limit is made
    # small instead of the batch large (the double takes some 20 s per 1,000 such events).
    if backend == "sqlite":
        pytest.skip("SQLite batches are transactions; this is the MongoDB journal")
    limit = 20_000
    monkeypatch.setattr(mongo_analytics, "JOURNAL_MAX_BYTES", limit, raising=False)
    sizes: list[int] = []
    real_commit = MongoAnalyticsStore._commit

    async def measured(self: MongoAnalyticsStore, entry: dict[str, object]) -> None:
        sizes.append(len(bson.encode(entry)))
        await real_commit(self, entry)

    monkeypatch.setattr(MongoAnalyticsStore, "_commit", measured)
    sessions, _ = scenario(3)
    batch = [f for _, events in sessions[:8] for f in events]
    await reference.ingest("t-a", batch)
    result = await store.ingest("t-a", batch)
    assert (result.accepted, result.duplicates) == (len(batch), 0)
    assert len(sizes) > 1 and max(sizes) <= limit, sizes
    await assert_same_reports(store, reference)
    again = await store.ingest("t-a", [*batch, batch[0]])
    assert (again.accepted, again.duplicates) == (0, len(batch) + 1)
    await assert_same_reports(store, reference)


# ---------------------------------------------------------------------- counters, releases, upgrades


async def _damage_counters(backend: str, path: Path, mongo_target: MongoTarget | None) -> None:
    """Wreck every counter and mark them stale, as a release that counts differently would find them."""
    if mongo_target is None:
        with sqlite3.connect(path) as raw:
            raw.execute("DELETE FROM model_counters")
            raw.execute("UPDATE session_counters SET r_5 = 99")
            raw.execute("UPDATE day_counters SET cost_nanos = 1")
            raw.execute("UPDATE meta SET value = 0 WHERE key = 'counters'")
        raw.close()
        return
    db = mongo_target.db
    await db[MODEL_COUNTERS].delete_many({})
    await db[SESSION_COUNTERS].update_many({}, {"$set": {"r_5": 99}})
    await db[DAY_COUNTERS].update_many({}, {"$set": {"cost_nanos": 1}})
    await db[META].update_one({"_id": "counters"}, {"$set": {"value": 0}})


async def test_stale_counters_are_rebuilt_from_the_raw_facts(
    backend: str, open_store: Opener, tmp_path: Path, mongo_target: MongoTarget | None
) -> None:
    store = await open_store()
    sessions, ratings = scenario(5)
    for tenant, batch in sessions:
        await store.ingest(tenant, batch)
    for sid, user, rating, when in ratings:
        await store.put_feedback(sid, user, rating, "", when)
    expected = [
        (await store.performance(scope), await store.cost_summary(scope, 5), await store.satisfaction(scope))
        for scope in scopes()
    ]
    await _damage_counters(backend, tmp_path / "analytics.db", mongo_target)
    reopened = await open_store()
    got = [
        (await reopened.performance(scope), await reopened.cost_summary(scope, 5), await reopened.satisfaction(scope))
        for scope in scopes()
    ]
    assert got == expected


def _plain(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(reports))  # type: ignore[no-any-return]


async def test_a_previous_release_database_upgrades(
    backend: str, open_store: Opener, tmp_path: Path, mongo_target: MongoTarget | None
) -> None:
    # The databases release previous_release.RELEASE made (SQLite schema 3; MongoDB analytics schema 2
    # with per-day counters and a batch left in the journal by a crash) open, are upgraded, answer what
    # that release answered, and go on like a store that never was anything else.
    if mongo_target is None:
        previous_release.load_sqlite(tmp_path / "analytics.db")
    else:
        by_collection: dict[str, list[dict[str, Any]]] = {}
        for name, doc in previous_release.mongo_documents():
            by_collection.setdefault(name, []).append(doc)
        for name, docs in by_collection.items():
            await mongo_target.db[name].insert_many(docs)
    store = await open_store()
    assert _plain(await previous_release.reports(store)) == previous_release.expected_reports()

    await previous_release.apply(store, previous_release.later())
    fresh = await SqliteAnalyticsStore.open(tmp_path / "fresh.db")
    try:
        await previous_release.apply(fresh, [*previous_release.history(), *previous_release.later()])
        assert await previous_release.reports(store) == await previous_release.reports(fresh)
        assert (await store.satisfaction(previous_release.scopes()[0])).overall.total > 0
    finally:
        await fresh.close()
    if mongo_target is None:
        with sqlite3.connect(tmp_path / "analytics.db") as raw:
            assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        raw.close()
    else:
        names = set(await mongo_target.db.list_collection_names())
        assert not names & {"analytics_model_daily", "analytics_session_daily"}
        assert await mongo_target.db[JOURNAL].count_documents({}) == 0
        meta = await mongo_target.db["schema_meta"].find_one({"_id": "analytics"})
        assert meta["version"] == len(ANALYTICS_MIGRATIONS)
