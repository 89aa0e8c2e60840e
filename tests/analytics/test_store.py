"""SqliteAnalyticsStore against a real SQLite file: idempotency, out-of-order delivery, counters, scopes."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from orchestratex.store.analytics import (
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    STATUS_RUNNING,
    EventFacts,
    Scope,
    SqliteAnalyticsStore,
    TokenUsage,
)
from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import facts_from_event
from tests.analytics.builders import DAY, HOUR, SECOND, FakeSession, now_ns, realistic


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
    calls_before = await store.calls(everything())
    again = await store.ingest("", batch[3:] + batch[:3])
    assert (again.accepted, again.duplicates) == (0, len(batch))
    after = await store.cost_summary(everything(), 10)
    assert after == before
    assert await store.calls(everything()) == calls_before
    assert len(await store.critiques(everything())) == 3
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


async def test_counters_agree_with_call_rows(store: SqliteAnalyticsStore) -> None:
    start = now_ns() - 3 * HOUR
    sessions = [realistic(start + i * SECOND * 100, primary=f"m/p{i % 3}") for i in range(12)]
    for s in sessions:
        await store.ingest("", facts(s.events))
    rows = await store.calls(everything())
    assert len(rows) == sum(len(s.call_costs) for s in sessions)

    per_session: defaultdict[str, TokenUsage] = defaultdict(TokenUsage)
    per_model: defaultdict[str, TokenUsage] = defaultdict(TokenUsage)
    calls_per_model: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        per_session[row.session_id] += row.call.usage
        per_model[row.call.model] += row.call.usage
        calls_per_model[row.call.model] += 1
    for s in sessions:
        info = await store.get_session(s.session_id, "")
        assert info is not None
        assert info.usage == per_session[s.session_id]
        assert info.calls == len(s.call_costs)
    summary = await store.cost_summary(everything(), 1000)
    assert {m.model: m.usage for m in summary.models} == dict(per_model)
    assert {m.model: m.calls for m in summary.models} == dict(calls_per_model)
    assert summary.usage.cost_nanos == sum(nanos(s.call_costs) for s in sessions)
    assert summary.session_count == 12
    assert sum(d.cost_nanos for d in summary.days) == summary.usage.cost_nanos
    assert [r.cost_nanos for r in summary.sessions] == sorted((r.cost_nanos for r in summary.sessions), reverse=True)


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

    math_calls = await store.calls(replace(everything(), domain=common_pb2.DOMAIN_MATH))
    assert {c.session_id for c in math_calls} == {a.session_id}
    z_calls = await store.calls(everything(), model="m/z")
    assert z_calls and all(c.call.model == "m/z" for c in z_calls)
    round2 = await store.critiques(everything("tenant-b"), round_=2)
    assert [(k.critique.critic_model, k.critique.author_model) for k in round2] == [("m/b", "m/d")]
    by_model = await store.critiques(everything("tenant-b"), model="m/c")
    assert [k.critique.critic_model for k in by_model] == ["m/c"]


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
    ratings = await store.ratings(everything())
    assert sorted((r.user_id, r.rating) for r in ratings) == [("u1", 5), ("u2", 3)]
    assert all(r.primary_model == "m/a" for r in ratings)


async def test_costs_are_exact_in_nanodollars(store: SqliteAnalyticsStore) -> None:
    session = FakeSession(now_ns() - HOUR).started()
    costs = [0.1, 0.2, 0.3, 1 / 3, 1e-9, 2.5e-10, 7.123456789e-5]
    for cost in costs:
        session.response("m/a", cost)
    await store.ingest("", facts(session.events))
    total = (await store.cost_summary(everything(), 1)).usage.cost_nanos
    assert total == nanos(costs)
    assert math.isclose(total / 1e9, math.fsum(costs), abs_tol=1e-9)
