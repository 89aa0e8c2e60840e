"""SqliteAnalyticsStore against a real SQLite file: idempotency, out-of-order delivery, counters, scopes."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from orchestratex.store.sqlite import SqliteDatabase
from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from services.analytics.store.model import (
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    STATUS_RUNNING,
    EventFacts,
    Proportion,
    Scope,
    TokenUsage,
    histogram_bucket,
)
from services.analytics.store.sqlite import SqliteAnalyticsStore
from services.analytics.store.sqlite_migrations import MIGRATIONS
from tests.analytics.builders import DAY, DOMAINS, HOUR, SECOND, FakeSession, now_ns, random_session, realistic
from tests.analytics.oracle import Oracle


def facts(events: Sequence[pb.OrchestrationEvent]) -> list[EventFacts]:
    out = [facts_from_event(e) for e in events]
    return [f for f in out if f is not None]


def everything(tenant: str = "") -> Scope:
    now = now_ns()
    return Scope(tenant=tenant, start_ns=now - 30 * DAY, end_ns=now + DAY)


def nanos(costs: Sequence[float]) -> int:
    return sum(round(c * 1e9) for c in costs)


async def test_duplicate_in_the_same_batch_counts_once(store: SqliteAnalyticsStore) -> None:
    session = FakeSession(now_ns() - HOUR).started().selected("m/a").response("m/a", 0.25).completed()
    batch = facts(session.events)
    result = await store.ingest("", [batch[0], batch[2], batch[2], *batch])
    assert (result.accepted, result.duplicates) == (4, 3)
    summary = await store.cost_summary(everything(), 10)
    assert summary.calls == 1
    assert summary.usage.cost_nanos == 250_000_000
    assert summary.usage.prompt_tokens == 100


async def test_duplicates_across_batches_change_nothing(store: SqliteAnalyticsStore) -> None:
    session = realistic(now_ns() - HOUR)
    batch = facts(session.events)
    first = await store.ingest("", batch)
    assert (first.accepted, first.duplicates) == (len(batch), 0)
    before = await store.cost_summary(everything(), 10)
    perf_before = await store.performance(everything())
    again = await store.ingest("", batch[3:] + batch[:3])
    assert (again.accepted, again.duplicates) == (0, len(batch))
    after = await store.cost_summary(everything(), 10)
    assert after == before
    assert await store.performance(everything()) == perf_before
    assert sum(r.critiques_received for r in perf_before) == 3
    assert after.usage.cost_nanos == nanos(session.call_costs)


async def test_deltas_are_not_facts() -> None:
    session = FakeSession(now_ns()).delta("m/a")
    assert facts_from_event(session.events[0]) is None


async def test_out_of_order_delivery_creates_the_session_lazily(store: SqliteAnalyticsStore) -> None:
    start = now_ns() - 2 * HOUR
    session = realistic(start)
    batch = facts(session.events)
    end, rest = batch[-1], batch[:-1]

    # The session's end arrives first: the session exists, ended, dated by the only event seen.
    assert (await store.ingest("t1", [end])).accepted == 1
    info = await store.get_session(session.session_id, "")
    assert info is not None
    assert info.status == STATUS_COMPLETED
    assert info.create_time_ns == end.time_ns
    assert info.calls == 0

    # Calls before session_started: counted; creation time moves back to the earliest event.
    calls_only = [f for f in rest if f.call is not None]
    await store.ingest("t1", list(reversed(calls_only)))
    info = await store.get_session(session.session_id, "")
    assert info is not None
    assert info.calls == len(calls_only)
    assert info.create_time_ns == min(f.time_ns for f in calls_only)
    assert info.status == STATUS_COMPLETED

    # session_started (and the rest) arrive last: they fix the creation time and keep the status.
    result = await store.ingest("t1", list(reversed(rest)))
    assert result.accepted == len(rest) - len(calls_only)
    assert result.duplicates == len(calls_only)
    info = await store.get_session(session.session_id, "")
    assert info is not None
    assert info.create_time_ns == start
    assert info.status == STATUS_COMPLETED
    assert info.primary_model == "m/a"
    assert info.primary_domain == common_pb2.DOMAIN_CODING
    assert info.tenant == "t1"
    assert info.usage.cost_nanos == nanos(session.call_costs)


async def test_session_started_after_later_events_sets_creation_time(store: SqliteAnalyticsStore) -> None:
    # A session_started whose time is later than an event seen before still defines the creation time.
    start = now_ns() - HOUR
    session = FakeSession(start).started().response("m/a", 0.01)
    started, response = facts(session.events)
    await store.ingest("", [replace(response, time_ns=start - SECOND)])
    await store.ingest("", [started])
    info = await store.get_session(session.session_id, "")
    assert info is not None
    assert info.create_time_ns == start
    assert info.status == STATUS_RUNNING


async def test_counters_agree_with_the_raw_facts(store: SqliteAnalyticsStore) -> None:
    start = now_ns() - 3 * HOUR
    sessions = [realistic(start + i * SECOND * 100, primary=f"m/p{i % 3}") for i in range(12)]
    oracle = Oracle()
    for s in sessions:
        await store.ingest("", facts(s.events))
        oracle.ingest("", facts(s.events))
    for s in sessions:
        info = await store.get_session(s.session_id, "")
        assert info is not None
        assert info.usage.cost_nanos == nanos(s.call_costs)
        assert info.calls == len(s.call_costs)
    summary = await store.cost_summary(everything(), 1000)
    assert summary == oracle.cost_summary(everything(), 1000)
    assert summary.usage.cost_nanos == sum(nanos(s.call_costs) for s in sessions)
    assert summary.session_count == 12
    assert sum(d.cost_nanos for d in summary.days) == summary.usage.cost_nanos
    assert sum(m.usage.cost_nanos for m in summary.models) == summary.usage.cost_nanos
    assert [r.cost_nanos for r in summary.sessions] == sorted((r.cost_nanos for r in summary.sessions), reverse=True)
    assert await store.performance(everything()) == oracle.performance(everything())


async def test_a_failing_batch_writes_nothing(store: SqliteAnalyticsStore) -> None:
    session = realistic(now_ns() - HOUR)
    batch = facts(session.events)
    call = next(f for f in batch if f.call is not None)
    assert call.call is not None
    poisoned = replace(call, sequence=999, call=replace(call.call, usage=TokenUsage(cost_nanos=2**64)))
    with pytest.raises(OverflowError):
        await store.ingest("", [*batch, poisoned])
    assert await store.get_session(session.session_id, "") is None
    assert (await store.cost_summary(everything(), 10)).session_count == 0
    # Nothing was marked as seen: the good events are accepted on redelivery.
    result = await store.ingest("", batch)
    assert (result.accepted, result.duplicates) == (len(batch), 0)


async def test_concurrent_batches_do_not_interleave(store: SqliteAnalyticsStore) -> None:
    start = now_ns() - HOUR
    sessions = [realistic(start + i * SECOND) for i in range(20)]
    results = await asyncio.gather(*(store.ingest("", facts(s.events)) for s in sessions * 2))
    assert sum(r.accepted for r in results) == sum(len(facts(s.events)) for s in sessions)
    assert sum(r.duplicates for r in results) == sum(len(facts(s.events)) for s in sessions)
    summary = await store.cost_summary(everything(), 1000)
    assert summary.usage.cost_nanos == sum(nanos(s.call_costs) for s in sessions)


async def test_reopening_keeps_data_and_idempotency(tmp_path: Path) -> None:
    path = tmp_path / "analytics.db"
    session = realistic(now_ns() - HOUR)
    first = await SqliteAnalyticsStore.open(path)
    await first.ingest("acme", facts(session.events))
    await first.close()
    second = await SqliteAnalyticsStore.open(path)
    try:
        again = await second.ingest("acme", facts(session.events))
        assert again.accepted == 0
        info = await second.get_session(session.session_id, "acme")
        assert info is not None
        assert info.usage.cost_nanos == nanos(session.call_costs)
    finally:
        await second.close()


async def test_scopes_filter_by_tenant_time_and_domain(store: SqliteAnalyticsStore) -> None:
    now = now_ns()
    a = realistic(now - HOUR, domain=common_pb2.DOMAIN_MATH)
    b = realistic(now - 2 * HOUR, primary="m/z")
    old = realistic(now - 40 * DAY)
    await store.ingest("tenant-a", facts(a.events))
    await store.ingest("tenant-b", facts(b.events))
    await store.ingest("tenant-a", facts(old.events))
    # Redelivery under another tenant does not move a session.
    await store.ingest("tenant-b", facts(a.events))

    assert await store.get_session(a.session_id, "tenant-b") is None
    assert await store.get_session(a.session_id, "tenant-a") is not None
    assert await store.get_session(a.session_id, "") is not None

    only_a = await store.cost_summary(everything("tenant-a"), 10)
    assert [s.session_id for s in only_a.sessions] == [a.session_id]
    both = await store.cost_summary(everything(""), 10)
    assert {s.session_id for s in both.sessions} == {a.session_id, b.session_id}
    wide = Scope("", now - 60 * DAY, now)
    assert (await store.cost_summary(wide, 10)).session_count == 3

    math_rows = await store.performance(replace(everything(), domain=common_pb2.DOMAIN_MATH))
    assert {r.domain for r in math_rows} == {common_pb2.DOMAIN_MATH}
    assert sum(r.attempts for r in math_rows) == len(a.call_costs)
    z_rows = await store.performance(everything(), model="m/z")
    assert [(r.model, r.attempts) for r in z_rows] == [("m/z", 2)]
    b_rows = {r.model: r for r in await store.performance(everything("tenant-b"))}
    assert set(b_rows) == {"m/z", "m/b", "m/c", "m/d"}
    assert (b_rows["m/c"].critiques_given, b_rows["m/c"].critiques_received) == (1, 0)
    assert not await store.performance(everything("tenant-c"))


async def test_feedback_upsert_keeps_the_creation_time(store: SqliteAnalyticsStore) -> None:
    session = FakeSession(now_ns() - HOUR).started().selected("m/a").failed(pb.SESSION_STATUS_CANCELLED)
    await store.ingest("", facts(session.events))
    info = await store.get_session(session.session_id, "")
    assert info is not None and info.status == STATUS_CANCELLED

    first, updated = await store.put_feedback(session.session_id, "u1", 2, "meh", 1_000)
    assert not updated
    assert (first.create_time_ns, first.update_time_ns) == (1_000, 1_000)
    second, updated = await store.put_feedback(session.session_id, "u1", 5, "great after all", 2_000)
    assert updated
    assert (second.create_time_ns, second.update_time_ns, second.rating) == (1_000, 2_000, 5)
    await store.put_feedback(session.session_id, "u2", 3, "", 3_000)
    data = await store.satisfaction(everything())
    assert data.overall.counts == (0, 0, 1, 0, 1)
    assert list(data.by_model) == ["m/a"]
    accuracy = await store.selection_accuracy(everything())
    assert accuracy.feedback == Proportion(1, 1)  # mean 4
    await store.put_feedback(session.session_id, "u1", 4, "", 4_000)
    assert (await store.selection_accuracy(everything())).feedback == Proportion(1, 0)  # mean 3.5
    assert (await store.satisfaction(everything())).overall.counts == (0, 0, 1, 1, 0)


async def test_costs_are_exact_in_nanodollars(store: SqliteAnalyticsStore) -> None:
    session = FakeSession(now_ns() - HOUR).started()
    costs = [0.1, 0.2, 0.3, 1 / 3, 1e-9, 2.5e-10, 7.123456789e-5]
    for cost in costs:
        session.response("m/a", cost)
    await store.ingest("", facts(session.events))
    total = (await store.cost_summary(everything(), 1)).usage.cost_nanos
    assert total == nanos(costs)
    assert math.isclose(total / 1e9, math.fsum(costs), abs_tol=1e-9)


# ------------------------------------------------- counters against the reference model


def deliveries(rng: random.Random, sessions: Sequence[FakeSession]) -> list[list[EventFacts]]:
    """Every event at least once, in random batches: shuffled, some duplicated, some sessions' first
    events (session_started, model_selected) delivered last so their day and domain change late."""
    pending: list[EventFacts] = []
    for s in sessions:
        events = facts(s.events)
        if rng.random() < 0.3:
            events = events[2:] + events[:2]
        pending += events
    pending += rng.sample(pending, len(pending) // 5)
    batches: list[list[EventFacts]] = []
    head = 0
    while head < len(pending):
        size = rng.randint(1, 40)
        batch = pending[head : head + size]
        if rng.random() < 0.5:
            rng.shuffle(batch)
        batches.append(batch)
        head += size
    return batches


async def test_store_answers_like_the_reference_model(store: SqliteAnalyticsStore) -> None:
    rng = random.Random(6)
    midnight = now_ns() // DAY * DAY - 3 * DAY
    sessions: list[tuple[str, FakeSession]] = []
    for _ in range(80):
        # Some start seconds before midnight, so their events straddle two days; a few are months old.
        offset = rng.choice(
            [
                rng.randint(0, 4 * DAY),
                rng.randint(1, 3) * DAY - rng.randint(1, 5) * SECOND,
                rng.randint(1, 4) * DAY + rng.randint(1, 23) * HOUR - rng.randint(1, 5) * SECOND,
                -rng.randint(0, 150 * DAY),
            ]
        )
        sessions.append((rng.choice(["t1", "t2"]), random_session(rng, midnight + offset)))
    oracle = Oracle()
    plans = {t: deliveries(rng, [s for owner, s in sessions if owner == t]) for t in ("t1", "t2")}

    async def rate_some() -> None:
        # Ratings land between deliveries, so some rated sessions still change day or domain afterwards.
        for s in rng.sample([s for _, s in sessions if s.session_id in oracle.sessions], 15):
            for user in rng.sample(["u1", "u2", "u3"], rng.randint(1, 3)):
                rating = rng.randint(1, 5)
                await store.put_feedback(s.session_id, user, rating, "", now_ns())
                oracle.rate(s.session_id, user, rating)

    for half in (0, 1):
        for tenant_name, batches in plans.items():
            middle = len(batches) // 2
            for batch in batches[:middle] if half == 0 else batches[middle:]:
                result = await store.ingest(tenant_name, batch)
                assert result.accepted == oracle.ingest(tenant_name, batch)
        await rate_some()

    points = [midnight + d * DAY for d in range(-1, 6)] + [midnight + rng.randint(0, 4 * DAY) for _ in range(5)]
    points += [midnight + rng.randint(-24, 96) * HOUR for _ in range(4)] + [midnight - 70 * DAY, midnight - 160 * DAY]
    scopes = [Scope(t, a, b) for t in ("", "t1", "t2") for a in points for b in points if a < b]
    scopes += [replace(scope, domain=d) for scope in scopes[:20] for d in DOMAINS[:2]]
    for scope in scopes:
        assert await store.cost_summary(scope, 7) == oracle.cost_summary(scope, 7), scope
        assert await store.performance(scope) == oracle.performance(scope), scope
        assert await store.performance(scope, "m/b") == oracle.performance(scope, "m/b"), scope
        assert await store.selection_accuracy(scope) == oracle.selection_accuracy(scope), scope
        assert await store.satisfaction(scope) == oracle.satisfaction(scope), scope
    # The data exercised what it should.
    full = Scope("", midnight - 160 * DAY, midnight + 6 * DAY)
    accuracy = oracle.selection_accuracy(full)
    assert 0 < accuracy.shadow.hits < accuracy.shadow.sample
    assert 0 < accuracy.feedback.hits < accuracy.feedback.sample
    assert len(oracle.cost_summary(full, 1).days) >= 4


async def test_counters_are_rebuilt_from_raw_facts_when_stale(tmp_path: Path) -> None:
    path = tmp_path / "analytics.db"
    rng = random.Random(7)
    start = now_ns() - DAY
    sessions = [random_session(rng, start + i * HOUR) for i in range(10)]
    first = await SqliteAnalyticsStore.open(path)
    for s in sessions:
        await first.ingest("t", facts(s.events))
    await first.put_feedback(sessions[0].session_id, "u", 5, "", now_ns())
    scope = Scope("", start - DAY, now_ns() + DAY)
    expected = (await first.performance(scope), await first.cost_summary(scope, 5), await first.satisfaction(scope))
    await first.close()

    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM model_counters")
        raw.execute("UPDATE session_counters SET r_5 = 99")
        raw.execute("UPDATE day_counters SET cost_nanos = 1")
        raw.execute("UPDATE meta SET value = 0 WHERE key = 'counters'")
    second = await SqliteAnalyticsStore.open(path)
    try:
        got = (await second.performance(scope), await second.cost_summary(scope, 5), await second.satisfaction(scope))
        assert got == expected
    finally:
        await second.close()


async def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "analytics.db"
    now = now_ns()
    db = await SqliteDatabase.open(path, MIGRATIONS[:1])
    async with db.transaction() as conn:
        await conn.execute(
            """INSERT INTO sessions (session_id, tenant, status, create_time_ns, started, primary_model,
                                     primary_domain, calls, cost_nanos)
               VALUES ('old', 't', 2, ?, 1, 'm/a', 2, 2, 30)""",
            (now,),
        )
        for seq, model, cost in ((3, "m/a", 10), (4, "m/b", 20)):
            await conn.execute(
                """INSERT INTO calls VALUES ('old', ?, ?, ?, 1, 0, 1, 1, 0, 1, 1, 0, 0, 2, ?, ?, NULL)""",
                (seq, now, model, cost, 2 * SECOND),
            )
        await conn.execute("INSERT INTO critiques VALUES ('old', 4, 1, 'm/b', 'm/a', 7.5, 0)")
        await conn.execute("INSERT INTO feedback VALUES ('old', 'u', 4, '', ?, ?)", (now, now))
    await db.close()

    store = await SqliteAnalyticsStore.open(path)
    try:
        scope = Scope("t", now - HOUR, now + HOUR)
        summary = await store.cost_summary(scope, 5)
        assert (summary.calls, summary.usage.cost_nanos, summary.session_count) == (2, 30, 1)
        rows = {r.model: r for r in await store.performance(scope)}
        assert rows["m/a"].score_received_milli == 7500
        assert rows["m/a"].latency_histogram[histogram_bucket(2 * SECOND)] == 1
        assert (await store.satisfaction(scope)).overall.counts == (0, 0, 0, 1, 0)
        # New events keep counting on top of the migrated ones.
        (late,) = facts([FakeSession(now).add(session_started=pb.SessionStarted())])
        assert (await store.ingest("t", [replace(late, session_id="old", sequence=1)])).accepted == 1
        assert (await store.cost_summary(scope, 5)).usage.cost_nanos == 30
    finally:
        await store.close()


async def test_a_version_2_database_is_migrated_and_keeps_early_ratings(tmp_path: Path) -> None:
    path = tmp_path / "analytics.db"
    now = now_ns()
    db = await SqliteDatabase.open(path, MIGRATIONS[:2])
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO sessions (session_id, tenant, status, create_time_ns, started) VALUES ('old', 't', 2, ?, 1)",
            (now,),
        )
    await db.close()

    store = await SqliteAnalyticsStore.open(path)
    try:
        record, _ = await store.put_feedback("old", "u", 4, "", now, tenant="t")
        assert not record.pending
        session = FakeSession(now).started().selected("m/a").response("m/a", 0.01).completed()
        record, _ = await store.put_feedback(session.session_id, "u", 2, "", now, tenant="t")
        assert record.pending
        await store.ingest("t", facts(session.events))
        assert (await store.satisfaction(Scope("t", now - HOUR, now + HOUR))).overall.counts == (0, 1, 0, 1, 0)
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 3
        assert raw.execute("SELECT COUNT(*) FROM pending_feedback").fetchone()[0] == 0
