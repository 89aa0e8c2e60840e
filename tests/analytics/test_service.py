"""AnalyticsService through the wire: real server on port 0, real stub, realistic event logs."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import analytics_pb2 as apb
from orchestratex.v1 import analytics_pb2_grpc, common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics.ingest import MAX_CALL_COST_USD, MAX_CALL_TOKENS
from services.analytics.server import build
from services.analytics.store.model import HIST_RELATIVE_ERROR
from services.selector.history import analytics_fetcher
from tests.analytics.builders import DAY, HOUR, SECOND, FakeSession, day_start, new_id, now_ns, realistic, ts

# The generated service stubs are untyped (mypy sees them as Any).
Stub: TypeAlias = Any


def tenant(name: str) -> tuple[tuple[str, str], ...]:
    return (("x-orx-tenant", name),)


async def ingest(
    stub: Stub, sessions: Sequence[FakeSession], tenant_name: str = "", metadata: tuple[tuple[str, str], ...] = ()
) -> apb.IngestEventsResponse:
    events = [e for s in sessions for e in s.events]
    response: apb.IngestEventsResponse = await stub.IngestEvents(
        apb.IngestEventsRequest(events=events, tenant=tenant_name), metadata=metadata
    )
    return response


def day_of(ns: int) -> str:
    return datetime.fromtimestamp(ns // SECOND, tz=UTC).strftime("%Y-%m-%d")


async def expect_error(call: object, code: grpc.StatusCode, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code
    assert field in (info.value.details() or "")


# ------------------------------------------------------------------- ingest


async def test_ingest_is_idempotent_and_skips_deltas(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    deltas = sum(1 for e in session.events if e.HasField("response_delta"))
    first = await ingest(stub, [session])
    assert (first.accepted, first.duplicates) == (len(session.events) - deltas, 0)
    again = await ingest(stub, [session])
    assert (again.accepted, again.duplicates) == (0, len(session.events) - deltas)
    report = await stub.GetCostReport(apb.GetCostReportRequest())
    assert report.calls == len(session.call_costs)
    assert report.total_cost_usd == pytest.approx(math.fsum(session.call_costs), abs=1e-9)


async def test_out_of_order_batches_across_sessions(stub: Stub) -> None:
    start = now_ns() - HOUR
    sessions = [realistic(start + i * SECOND) for i in range(5)]
    events = [e for s in sessions for e in s.events]
    random.Random(7).shuffle(events)
    for i in range(0, len(events), 7):
        await stub.IngestEvents(apb.IngestEventsRequest(events=events[i : i + 7]))
    report = await stub.GetCostReport(apb.GetCostReportRequest())
    assert report.session_count == 5
    assert report.calls == sum(len(s.call_costs) for s in sessions)
    assert {s.session_id: s.create_time.ToNanoseconds() for s in report.sessions} == {
        s.session_id: s.start_ns for s in sessions
    }


async def test_malformed_batch_is_rejected_whole(stub: Stub) -> None:
    good = realistic(now_ns() - HOUR)
    bad = FakeSession(now_ns()).response("m/a", math.inf)
    await expect_error(
        stub.IngestEvents(apb.IngestEventsRequest(events=[*good.events, *bad.events])),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"events[{len(good.events)}].response_completed.usage.cost_usd",
    )
    assert (await stub.GetCostReport(apb.GetCostReportRequest())).session_count == 0


# -------------------------------------------------------------- performance


async def test_model_performance_of_a_realistic_session(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    await ingest(stub, [session])
    response = await stub.GetModelPerformance(apb.GetModelPerformanceRequest())
    rows = {r.model: r for r in response.models}
    assert sorted(rows) == ["m/a", "m/b", "m/c", "m/d"]

    a = rows["m/a"]
    assert (a.calls, a.successes, a.success_rate) == (2, 1, 0.5)
    assert [(f.kind, f.count) for f in a.failures] == [(common_pb2.FAILURE_KIND_TIMEOUT, 1)]
    assert a.latency_p50.ToNanoseconds() == pytest.approx(2 * SECOND, rel=HIST_RELATIVE_ERROR)
    assert a.ttft_p50.ToNanoseconds() == pytest.approx(300_000_000, rel=HIST_RELATIVE_ERROR)
    assert a.usage.cost_usd == pytest.approx(0.0123456789 + 0.0005, abs=1e-9)  # nano-dollar rounding
    assert a.usage.prompt_tokens == 200
    assert (a.mean_score_as_author, a.critiques_received) == (7.5, 2)
    assert (a.critiques_given, a.domain) == (0, common_pb2.DOMAIN_UNSPECIFIED)

    b = rows["m/b"]
    assert (b.calls, b.successes, b.success_rate, list(b.failures)) == (2, 2, 1.0, [])
    assert (b.mean_score_as_critic, b.critiques_given) == (8.0, 2)

    c = rows["m/c"]
    assert (c.calls, c.successes) == (2, 1)
    assert [(f.kind, f.count) for f in c.failures] == [(common_pb2.FAILURE_KIND_UPSTREAM_ERROR, 1)]
    assert (c.mean_score_as_critic, c.critiques_given) == (8.0, 1)
    assert c.latency_p50.ToNanoseconds() == pytest.approx(1_500_000_000, rel=HIST_RELATIVE_ERROR)

    d = rows["m/d"]
    assert (d.calls, d.mean_score_as_author, d.critiques_received) == (1, 9.0, 1)
    assert d.latency_p95.ToNanoseconds() == pytest.approx(3 * SECOND, rel=HIST_RELATIVE_ERROR)

    assert [(r.model, r.domain) for r in response.by_domain] == [
        (m, common_pb2.DOMAIN_CODING) for m in ["m/a", "m/b", "m/c", "m/d"]
    ]
    coding_a = response.by_domain[0]
    assert (coding_a.calls, coding_a.successes, coding_a.mean_score_as_author) == (2, 1, 7.5)


async def test_percentiles_and_filters(stub: Stub) -> None:
    start = now_ns() - HOUR
    math_session = FakeSession(start).started().selected("m/p", common_pb2.DOMAIN_MATH)
    for i in range(1, 21):
        math_session.response("m/p", 0.001, round_no=i, latency=0.1 * i, ttft=0.01 * i)
    math_session.completed()
    coding_session = FakeSession(start + SECOND).started().selected("m/p", common_pb2.DOMAIN_CODING)
    coding_session.response("m/p", 0.002, latency=60.0, ttft=5.0).completed()
    await ingest(stub, [math_session, coding_session])

    only_math = await stub.GetModelPerformance(
        apb.GetModelPerformanceRequest(model="m/p", domain=common_pb2.DOMAIN_MATH)
    )
    (row,) = only_math.models
    assert row.domain == common_pb2.DOMAIN_MATH
    assert row.calls == 20
    # Nearest rank of 0.1 s .. 2.0 s (TTFT 0.01 s .. 0.2 s), within the histogram's error.
    assert row.latency_p50.ToNanoseconds() == pytest.approx(1_000_000_000, rel=HIST_RELATIVE_ERROR)
    assert row.latency_p95.ToNanoseconds() == pytest.approx(1_900_000_000, rel=HIST_RELATIVE_ERROR)
    assert row.ttft_p50.ToNanoseconds() == pytest.approx(100_000_000, rel=HIST_RELATIVE_ERROR)
    assert row.ttft_p95.ToNanoseconds() == pytest.approx(190_000_000, rel=HIST_RELATIVE_ERROR)
    assert row.latency_p95.ToNanoseconds() > row.latency_p50.ToNanoseconds()
    assert [r.domain for r in only_math.by_domain] == [common_pb2.DOMAIN_MATH]

    both = await stub.GetModelPerformance(apb.GetModelPerformanceRequest(model="m/p"))
    (overall,) = both.models
    assert overall.calls == 21
    assert {r.domain: r.calls for r in both.by_domain} == {common_pb2.DOMAIN_MATH: 20, common_pb2.DOMAIN_CODING: 1}
    other = await stub.GetModelPerformance(apb.GetModelPerformanceRequest(model="m/unknown"))
    assert not other.models and not other.by_domain


# --------------------------------------------------------------------- cost


async def test_cost_total_is_exact_over_many_awkward_costs(stub: Stub) -> None:
    rng = random.Random(20260101)
    today = day_start(now_ns())
    sessions: list[FakeSession] = []
    for i in range(30):
        start = today - (i % 3) * DAY - HOUR - i * SECOND  # three UTC days
        s = FakeSession(start).started().selected(f"m/{i % 4}")
        for j in range(40):
            cost = rng.choice([0.1, 0.2, 0.3, 1 / 3, 1e-7 / 3, 0.000123456789, rng.random() * 0.01, rng.random()])
            if j % 5 == 4:
                s.failed_call(f"m/{j % 6}", common_pb2.FAILURE_KIND_RATE_LIMITED, cost)
            elif j % 7 == 3:  # failed after tokens were streamed (and paid for)
                s.fallback(f"m/{j % 6}", "m/x", common_pb2.FAILURE_KIND_MID_STREAM_ERROR, cost, round_no=j + 1)
            elif j % 11 == 5:  # cut short by cancellation; its estimated usage is recorded
                s.failed_call(
                    f"m/{j % 6}", common_pb2.FAILURE_KIND_CANCELLED, cost, code=pb.WARNING_CODE_CALL_CANCELLED
                )
            else:
                s.response(f"m/{j % 6}", cost, round_no=j + 1)
        sessions.append(s.completed())
    await ingest(stub, sessions)
    all_costs = [c for s in sessions for c in s.call_costs]

    report = await stub.GetCostReport(apb.GetCostReportRequest(session_limit=1000))
    # To the micro-dollar: the exact sum (in nano-dollars, as the events carry them) rounds the same.
    exact_nanos = sum(round(c * 1e9) for c in all_costs)
    assert round(report.total_cost_usd * 1e9) == exact_nanos
    assert round(report.total_cost_usd * 1e6) == round(exact_nanos / 1000)
    assert abs(report.total_cost_usd - math.fsum(all_costs)) <= 1e-6
    assert report.calls == len(all_costs) == 1200
    assert report.session_count == 30
    assert report.usage.prompt_tokens == 100 * 1200
    assert math.fsum(s.cost_usd for s in report.sessions) == pytest.approx(report.total_cost_usd, abs=1e-6)
    assert math.fsum(m.cost_usd for m in report.models) == pytest.approx(report.total_cost_usd, abs=1e-6)
    assert sum(m.calls for m in report.models) == 1200
    assert [m.cost_usd for m in report.models] == sorted((m.cost_usd for m in report.models), reverse=True)

    by_session = {s.session_id: s for s in sessions}
    for row in report.sessions:
        assert abs(row.cost_usd - math.fsum(by_session[row.session_id].call_costs)) <= 1e-6
        assert row.calls == 40
    assert [s.cost_usd for s in report.sessions] == sorted((s.cost_usd for s in report.sessions), reverse=True)

    expected_days = sorted({day_of(s.start_ns) for s in sessions})
    assert [d.day for d in report.days] == expected_days
    for day in report.days:
        day_costs = [c for s in sessions if day_of(s.start_ns) == day.day for c in s.call_costs]
        assert abs(day.cost_usd - math.fsum(day_costs)) <= 1e-6
        assert day.calls == len(day_costs)

    limited = await stub.GetCostReport(apb.GetCostReportRequest(session_limit=3))
    assert [s.session_id for s in limited.sessions] == [s.session_id for s in report.sessions[:3]]
    assert limited.session_count == 30


async def test_cost_report_default_session_limit_is_100(stub: Stub) -> None:
    start = now_ns() - HOUR
    sessions = [FakeSession(start + i).started().response("m/a", 0.001 * (i + 1)) for i in range(101)]
    await ingest(stub, sessions)
    report = await stub.GetCostReport(apb.GetCostReportRequest())
    assert len(report.sessions) == 100
    assert report.session_count == 101
    assert report.sessions[0].cost_usd == pytest.approx(0.101)


async def test_range_selects_sessions_by_creation_time(stub: Stub) -> None:
    now = now_ns()
    recent = realistic(now - HOUR)
    old = realistic(now - 40 * DAY)
    await ingest(stub, [recent, old])
    default = await stub.GetCostReport(apb.GetCostReportRequest())
    assert [s.session_id for s in default.sessions] == [recent.session_id]
    window = common_pb2.TimeRange(start_time=ts(now - 41 * DAY), end_time=ts(now - 39 * DAY))
    past = await stub.GetCostReport(apb.GetCostReportRequest(range=window))
    assert [s.session_id for s in past.sessions] == [old.session_id]
    perf = await stub.GetModelPerformance(apb.GetModelPerformanceRequest(range=window, model="m/a"))
    assert perf.models[0].calls == 2


# ----------------------------------------------------------------- accuracy


def shadow_session(
    start: int, domain: int, primary: Sequence[float], shadows: dict[str, Sequence[float]]
) -> FakeSession:
    s = FakeSession(start).started().selected("m/p", domain).response("m/p", 0.01)
    for runner_up in shadows:
        s.response(runner_up, 0.01, shadow=True)
    for score in primary:
        s.critique("m/c", "m/p", score, 0.001)
    for runner_up, scores in shadows.items():
        for score in scores:
            s.critique("m/c", runner_up, score, 0.001, shadow=True)
    return s.round_done().completed()


async def test_selection_accuracy_by_hand(stub: Stub) -> None:
    start = now_ns() - HOUR
    coding, math_ = common_pb2.DOMAIN_CODING, common_pb2.DOMAIN_MATH
    s1 = shadow_session(start, coding, [7, 8], {"m/x": [7, 7]})  # 7.5 >= 7: hit
    s2 = shadow_session(start + 1, coding, [6, 6], {"m/x": [8, 7]})  # 6 < 7.5: miss
    s3 = shadow_session(start + 2, math_, [8], {"m/x": [8], "m/y": [3, 9, 7]})  # 8 >= 8 and 7: hit
    s4 = shadow_session(start + 3, math_, [2], {})  # no shadow: not judged
    await ingest(stub, [s1, s2, s3, s4])
    for session, rating in [(s1, 5), (s2, 3), (s3, 4), (s4, 2)]:
        await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=session.session_id, rating=rating))

    response = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest())
    assert (response.shadow.sample_size, response.shadow.hits) == (3, 2)
    assert response.shadow.accuracy == pytest.approx(2 / 3)
    assert response.shadow.ci_low == pytest.approx(0.2077, abs=1e-4)
    assert response.shadow.ci_high == pytest.approx(0.9385, abs=1e-4)
    assert (response.feedback.sample_size, response.feedback.hits) == (4, 2)
    assert response.feedback.ci_low == pytest.approx(0.1500, abs=1e-4)
    assert response.feedback.ci_high == pytest.approx(0.8500, abs=1e-4)
    assert "Wilson" in response.definition and "median" in response.definition
    assert [(d.domain, d.shadow.sample_size, d.shadow.hits) for d in response.by_domain] == [
        (coding, 2, 1),
        (math_, 1, 1),
    ]


# ----------------------------------------------------- feedback/satisfaction


async def test_feedback_is_one_per_user_and_updates(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    await ingest(stub, [session])
    first = await stub.SubmitFeedback(
        apb.SubmitFeedbackRequest(session_id=session.session_id, rating=2, comment="slow")
    )
    assert not first.updated
    assert (first.feedback.user_id, first.feedback.rating, first.feedback.comment) == ("anonymous", 2, "slow")
    second = await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=session.session_id, rating=5))
    assert second.updated
    assert second.feedback.create_time == first.feedback.create_time
    assert second.feedback.update_time.ToNanoseconds() >= first.feedback.update_time.ToNanoseconds()
    other = await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=session.session_id, rating=4, user_id="u-2"))
    assert not other.updated
    satisfaction = await stub.GetSatisfaction(apb.GetSatisfactionRequest())
    assert (satisfaction.overall.count, satisfaction.overall.mean) == (2, 4.5)


async def test_satisfaction_report(stub: Stub) -> None:
    today = day_start(now_ns())
    d2, d1 = today - 2 * DAY + HOUR, today - DAY + HOUR
    s1 = realistic(d2, primary="m/a", domain=common_pb2.DOMAIN_CODING)
    s2 = realistic(d1, primary="m/a", domain=common_pb2.DOMAIN_MATH)
    s3 = realistic(d1 + 1, primary="m/b", domain=common_pb2.DOMAIN_CODING)
    s4 = FakeSession(d1 + 2).started().selected("m/b", common_pb2.DOMAIN_CREATIVE).failed()
    await ingest(stub, [s1, s2, s3, s4])
    for session, user, rating in [(s1, "u1", 5), (s1, "u2", 4), (s2, "u1", 2), (s3, "u1", 3), (s4, "u1", 1)]:
        await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=session.session_id, rating=rating, user_id=user))

    response = await stub.GetSatisfaction(apb.GetSatisfactionRequest())

    def flat(summary: apb.SatisfactionSummary) -> tuple[str, int, float, list[int]]:
        return summary.key, summary.count, round(summary.mean, 9), [r.count for r in summary.distribution]

    assert flat(response.overall) == ("all", 5, 3.0, [1, 1, 1, 1, 1])
    assert [r.rating for r in response.overall.distribution] == [1, 2, 3, 4, 5]
    assert [flat(s) for s in response.by_model] == [
        ("m/a", 3, round(11 / 3, 9), [0, 1, 0, 1, 1]),
        ("m/b", 2, 2.0, [1, 0, 1, 0, 0]),
    ]
    assert [flat(s) for s in response.by_domain] == [
        ("coding", 3, 4.0, [0, 0, 1, 1, 1]),
        ("math", 1, 2.0, [0, 1, 0, 0, 0]),
        ("creative", 1, 1.0, [1, 0, 0, 0, 0]),
    ]
    assert [flat(s) for s in response.by_day] == [
        (day_of(d2), 2, 4.5, [0, 0, 0, 1, 1]),
        (day_of(d1), 3, 2.0, [1, 1, 1, 0, 0]),
    ]
    accuracy = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest())
    assert (accuracy.feedback.sample_size, accuracy.feedback.hits) == (4, 1)


# ------------------------------------------------------------------ tenancy


async def test_tenants_see_only_their_own_data(stub: Stub) -> None:
    mine = realistic(now_ns() - HOUR)
    theirs = realistic(now_ns() - 2 * HOUR, primary="m/z")
    await ingest(stub, [mine], "tenant-a")
    await ingest(stub, [theirs], "tenant-b")

    await expect_error(
        stub.SubmitFeedback(
            apb.SubmitFeedbackRequest(session_id=mine.session_id, rating=5), metadata=tenant("tenant-b")
        ),
        grpc.StatusCode.NOT_FOUND,
        "session_id",
    )
    ok = await stub.SubmitFeedback(
        apb.SubmitFeedbackRequest(session_id=mine.session_id, rating=5), metadata=tenant("tenant-a")
    )
    assert ok.feedback.rating == 5

    for name, session in [("tenant-a", mine), ("tenant-b", theirs)]:
        report = await stub.GetCostReport(apb.GetCostReportRequest(), metadata=tenant(name))
        assert [s.session_id for s in report.sessions] == [session.session_id]
        assert report.total_cost_usd == pytest.approx(math.fsum(session.call_costs), abs=1e-9)

    nobody = tenant("tenant-c")
    empty = await stub.GetCostReport(apb.GetCostReportRequest(), metadata=nobody)
    assert (empty.total_cost_usd, empty.calls, empty.session_count, len(empty.models)) == (0.0, 0, 0, 0)
    assert not (await stub.GetModelPerformance(apb.GetModelPerformanceRequest(), metadata=nobody)).models
    assert (await stub.GetSatisfaction(apb.GetSatisfactionRequest(), metadata=nobody)).overall.count == 0
    nobody_accuracy = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest(), metadata=nobody)
    assert (nobody_accuracy.feedback.sample_size, nobody_accuracy.shadow.sample_size) == (0, 0)
    a_accuracy = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest(), metadata=tenant("tenant-a"))
    assert (a_accuracy.feedback.sample_size, a_accuracy.feedback.hits) == (1, 1)
    b_sat = await stub.GetSatisfaction(apb.GetSatisfactionRequest(), metadata=tenant("tenant-b"))
    assert b_sat.overall.count == 0
    b_perf = await stub.GetModelPerformance(apb.GetModelPerformanceRequest(), metadata=tenant("tenant-b"))
    assert "m/z" in {r.model for r in b_perf.models} and "m/a" not in {r.model for r in b_perf.models}

    internal = await stub.GetCostReport(apb.GetCostReportRequest())
    assert internal.session_count == 2


async def test_a_tenant_cannot_ingest_for_another(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    await expect_error(
        ingest(stub, [session], "tenant-b", metadata=tenant("tenant-a")), grpc.StatusCode.PERMISSION_DENIED, "tenant"
    )
    accepted = await ingest(stub, [session], "", metadata=tenant("tenant-a"))
    assert accepted.accepted > 0
    report = await stub.GetCostReport(apb.GetCostReportRequest(), metadata=tenant("tenant-a"))
    assert report.session_count == 1


# -------------------------------------------------------------- bad inputs


def _feedback(session_id: str, **fields: object) -> apb.SubmitFeedbackRequest:
    return apb.SubmitFeedbackRequest(session_id=session_id, **{"rating": 4, **fields})  # type: ignore[arg-type]


async def test_bad_feedback_is_rejected(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    running = FakeSession(now_ns()).started().selected("m/a").response("m/a", 0.01)
    await ingest(stub, [session, running])
    sid = session.session_id
    cases = [
        (_feedback(sid, rating=0), grpc.StatusCode.INVALID_ARGUMENT, "rating"),
        (_feedback(sid, rating=6), grpc.StatusCode.INVALID_ARGUMENT, "rating"),
        (_feedback(sid, comment="x" * 5001), grpc.StatusCode.INVALID_ARGUMENT, "comment"),
        (_feedback(sid, user_id="u" * 129), grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        (_feedback(""), grpc.StatusCode.INVALID_ARGUMENT, "session_id"),
    ]
    for request, code, field in cases:
        await expect_error(stub.SubmitFeedback(request), code, field)
    # A session analytics still sees running may have ended already (its end comes through the outbox): the
    # orchestrator, asked by the gateway, decides; the rating is kept.
    kept = await stub.SubmitFeedback(_feedback(running.session_id, rating=2))
    assert kept.feedback.rating == 2 and not kept.updated
    # The limits themselves are fine.
    ok = await stub.SubmitFeedback(_feedback(sid, comment="x" * 5000, user_id="u" * 128))
    assert len(ok.feedback.comment) == 5000


async def test_feedback_before_the_sessions_events_arrive(stub: Stub) -> None:
    # Regression: a rating given right after the session was created (the outbox had not delivered its
    # events yet) was NOT_FOUND. It is kept and counts once the events arrive.
    session = realistic(now_ns() - HOUR)
    early = await stub.SubmitFeedback(_feedback(session.session_id, rating=5, user_id="u-1"), metadata=tenant("a"))
    assert (early.feedback.rating, early.updated) == (5, False)
    again = await stub.SubmitFeedback(_feedback(session.session_id, rating=4, user_id="u-1"), metadata=tenant("a"))
    assert again.updated and again.feedback.create_time == early.feedback.create_time
    assert (await stub.GetSatisfaction(apb.GetSatisfactionRequest())).overall.count == 0
    await ingest(stub, [session], "a")
    satisfaction = await stub.GetSatisfaction(apb.GetSatisfactionRequest(), metadata=tenant("a"))
    assert (satisfaction.overall.count, satisfaction.overall.mean) == (1, 4.0)
    accuracy = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest(), metadata=tenant("a"))
    assert (accuracy.feedback.sample_size, accuracy.feedback.hits) == (1, 1)


async def test_early_feedback_never_lands_on_another_tenants_session(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    await stub.SubmitFeedback(_feedback(session.session_id, rating=1), metadata=tenant("b"))
    await ingest(stub, [session], "a")
    for caller in ((), tenant("a"), tenant("b")):
        assert (await stub.GetSatisfaction(apb.GetSatisfactionRequest(), metadata=caller)).overall.count == 0
    # Now that analytics knows the session, the other tenant gets NOT_FOUND as for any unknown session.
    await expect_error(
        stub.SubmitFeedback(_feedback(session.session_id), metadata=tenant("b")),
        grpc.StatusCode.NOT_FOUND,
        "session_id",
    )


async def test_bad_ranges_and_limits_are_rejected(stub: Stub) -> None:
    now = now_ns()
    inverted = common_pb2.TimeRange(start_time=ts(now), end_time=ts(now - HOUR))
    empty = common_pb2.TimeRange(start_time=ts(now), end_time=ts(now))
    too_wide = common_pb2.TimeRange(start_time=ts(now - 367 * DAY), end_time=ts(now))
    open_ended = common_pb2.TimeRange(start_time=ts(now - 400 * DAY))  # no end: up to now, too wide
    for window in (inverted, empty, too_wide, open_ended):
        await expect_error(
            stub.GetCostReport(apb.GetCostReportRequest(range=window)), grpc.StatusCode.INVALID_ARGUMENT, "range"
        )
        await expect_error(
            stub.GetModelPerformance(apb.GetModelPerformanceRequest(range=window)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "range",
        )
        await expect_error(
            stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest(range=window)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "range",
        )
        await expect_error(
            stub.GetSatisfaction(apb.GetSatisfactionRequest(range=window)), grpc.StatusCode.INVALID_ARGUMENT, "range"
        )
    for limit in (-1, 1001):
        await expect_error(
            stub.GetCostReport(apb.GetCostReportRequest(session_limit=limit)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "session_limit",
        )
    await expect_error(
        stub.GetModelPerformance(apb.GetModelPerformanceRequest(domain=99)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
        "domain",
    )


# ------------------------------------------------------------------ server


async def test_build_serves_health_and_closes_the_store(settings: Settings) -> None:
    srv: GrpcServer = await build(settings, "127.0.0.1:0")
    assert (settings.common.data_dir / "analytics.db").exists()
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="orchestratex.v1.AnalyticsService"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            await ingest(stub, [realistic(now_ns() - HOUR)])
    finally:
        await srv.stop(0)
    # Reopening sees the data committed before shutdown.
    again = await build(settings, "127.0.0.1:0")
    await again.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            report = await analytics_pb2_grpc.AnalyticsServiceStub(channel).GetCostReport(apb.GetCostReportRequest())
            assert report.session_count == 1
    finally:
        await again.stop(0)


async def test_failed_and_cancelled_sessions_can_be_rated(stub: Stub) -> None:
    failed = FakeSession(now_ns() - HOUR).started().selected("m/a").failed()
    cancelled = FakeSession(now_ns() - HOUR).started().selected("m/a").failed(pb.SESSION_STATUS_CANCELLED)
    await ingest(stub, [failed, cancelled])
    for s in (failed, cancelled):
        reply = await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=s.session_id, rating=1))
        assert reply.feedback.rating == 1


# ------------------------------------------------------------ the selector


async def test_the_selectors_history_reads_the_real_service(stub: Stub) -> None:
    # services/selector/history.py fetches GetModelPerformance (all tenants, last 30 days).
    await ingest(stub, [realistic(now_ns() - HOUR)], "tenant-a")
    await ingest(stub, [realistic(now_ns() - 2 * HOUR, domain=common_pb2.DOMAIN_MATH)], "tenant-b")
    history = await analytics_fetcher(stub, timeout=5)()
    coding = history[("m/a", "coding")]
    assert coding.samples == 2
    assert coding.mean_quality == pytest.approx(0.75)
    assert coding.success_rate == pytest.approx(0.5)
    assert history[("m/a", "math")].samples == 2
    assert history[("m/d", "coding")].mean_quality == pytest.approx(0.9)
    assert ("m/b", "coding") not in history  # a critic only: no score received


# ------------------------------------------- values the store cannot hold

# The earliest and latest instants a signed 64-bit count of nanoseconds since the epoch can hold.
EARLIEST_NS = -(2**63)
LATEST_NS = 2**63 - 1
YEAR_1 = -62_135_596_800  # 0001-01-01T00:00:00Z, the first second a Timestamp allows
YEAR_9999 = 253_402_300_799  # 9999-12-31T23:59:59Z, the last


def _report_calls(stub: Stub, window: common_pb2.TimeRange) -> list[object]:
    return [
        stub.GetCostReport(apb.GetCostReportRequest(range=window)),
        stub.GetModelPerformance(apb.GetModelPerformanceRequest(range=window)),
        stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest(range=window)),
        stub.GetSatisfaction(apb.GetSatisfactionRequest(range=window)),
    ]


@pytest.mark.parametrize(
    ("window", "field"),
    [
        (
            common_pb2.TimeRange(start_time=Timestamp(seconds=YEAR_1), end_time=Timestamp(seconds=YEAR_1 + 86_400)),
            "start",
        ),
        (common_pb2.TimeRange(end_time=Timestamp(seconds=YEAR_9999)), "end"),
        (common_pb2.TimeRange(end_time=Timestamp(seconds=YEAR_1 + 40 * 86_400)), "end"),
        (
            common_pb2.TimeRange(start_time=Timestamp(seconds=10**10), end_time=Timestamp(seconds=10**10 + 3600)),
            "start",
        ),
        (common_pb2.TimeRange(start_time=ts(now_ns() - DAY), end_time=Timestamp(seconds=10**10)), "end"),
        (common_pb2.TimeRange(start_time=Timestamp(seconds=-(10**10)), end_time=ts(now_ns())), "start"),
        (common_pb2.TimeRange(start_time=Timestamp(seconds=0, nanos=-1), end_time=ts(now_ns())), "start"),
        (common_pb2.TimeRange(end_time=Timestamp(seconds=0, nanos=10**9)), "end"),
        (common_pb2.TimeRange(end_time=Timestamp(seconds=2**62)), "end"),
    ],
)
async def test_time_ranges_the_store_cannot_hold_are_invalid(
    stub: Stub, window: common_pb2.TimeRange, field: str
) -> None:
    # Regression: years the Timestamp allows but nanoseconds in 64 bits do not (before 1677, after 2262)
    # reached the store and came back INTERNAL.
    for call in _report_calls(stub, window):
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, f"range.{field}_time")


async def test_ranges_at_the_edges_of_what_the_store_holds(stub: Stub) -> None:
    early = FakeSession(EARLIEST_NS + DAY).started().selected("m/early").response("m/early", 0.5).completed()
    late = FakeSession(LATEST_NS - 2 * DAY).started().selected("m/late").response("m/late", 0.25).completed()
    await ingest(stub, [early, late])
    for session in (early, late):
        window = common_pb2.TimeRange(start_time=ts(session.start_ns - HOUR), end_time=ts(session.start_ns + HOUR))
        report = await stub.GetCostReport(apb.GetCostReportRequest(range=window))
        assert [s.session_id for s in report.sessions] == [session.session_id]
        assert report.total_cost_usd == pytest.approx(math.fsum(session.call_costs))
    # An end with no start looks back 30 days, which here starts before the earliest instant: that
    # part cannot hold any session, so the window is cut there rather than refused.
    near_start = common_pb2.TimeRange(end_time=ts(EARLIEST_NS + 2 * DAY))
    report = await stub.GetCostReport(apb.GetCostReportRequest(range=near_start))
    assert [s.session_id for s in report.sessions] == [early.session_id]
    for call in _report_calls(stub, near_start):
        await call  # type: ignore[misc]


def _event(seconds: int, nanos: int = 0) -> pb.OrchestrationEvent:
    return pb.OrchestrationEvent(
        session_id=new_id(),
        sequence=1,
        time=Timestamp(seconds=seconds, nanos=nanos),
        session_started=pb.SessionStarted(),
    )


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (YEAR_1, 0),
        (YEAR_9999, 0),
        (YEAR_9999 + 1, 0),
        (-(2**62), 0),
        (2**40, 0),
        (LATEST_NS // SECOND + 1, 0),
        (EARLIEST_NS // SECOND - 1, 0),
        (0, 10**9),
        (0, -5),
    ],
)
async def test_event_times_the_store_cannot_hold_are_invalid(stub: Stub, seconds: int, nanos: int) -> None:
    good = realistic(now_ns() - HOUR)
    request = apb.IngestEventsRequest(events=[*good.events, _event(seconds, nanos)])
    await expect_error(stub.IngestEvents(request), grpc.StatusCode.INVALID_ARGUMENT, f"events[{len(good.events)}].time")
    assert (await stub.GetCostReport(apb.GetCostReportRequest())).session_count == 0


def _call_event(**changes: object) -> FakeSession:
    """A session whose one call has ``changes`` applied to its ``response_completed`` (dotted names)."""
    session = FakeSession(now_ns() - HOUR).started().selected("m/a").response("m/a", 0.01)
    done = session.events[-1].response_completed
    for name, value in changes.items():
        target: Any = done
        *path, last = name.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return session


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"usage.cost_usd": 1e300}, "usage.cost_usd"),  # finite, but not in nano-dollars
        ({"usage.cost_usd": 1e20}, "usage.cost_usd"),
        ({"usage.prompt_tokens": 2**63 - 1}, "usage.prompt_tokens"),  # two of these overflow a counter
        ({"usage.total_tokens": 2**40}, "usage.total_tokens"),
        ({"latency.seconds": 315_576_000_000}, "latency"),  # the longest Duration: 3e20 ns
        ({"time_to_first_token.seconds": 10**11}, "time_to_first_token"),
        ({"model": "m" * 257}, "model"),
    ],
)
async def test_call_figures_the_store_cannot_hold_are_invalid(
    stub: Stub, changes: dict[str, object], field: str
) -> None:
    session = _call_event(**changes)
    where = f"events[{len(session.events) - 1}].response_completed.{field}"
    await expect_error(ingest(stub, [session]), grpc.StatusCode.INVALID_ARGUMENT, where)


async def test_model_and_result_names_are_bounded(stub: Stub) -> None:
    long_primary = FakeSession(now_ns() - HOUR).started().selected("p" * 257)
    await expect_error(
        ingest(stub, [long_primary]), grpc.StatusCode.INVALID_ARGUMENT, "events[1].model_selected.primary_model"
    )
    long_best = FakeSession(now_ns() - HOUR).started().completed(best_model="b" * 257)
    await expect_error(
        ingest(stub, [long_best]), grpc.StatusCode.INVALID_ARGUMENT, "events[1].session_completed.best_model"
    )


async def test_the_largest_accepted_figures_still_add_up(stub: Stub) -> None:
    # Many calls at the per-call limits, in one hour of one model: every counter still holds the sum.
    limits = {f"usage.{name}": MAX_CALL_TOKENS for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    sessions = [_call_event(**limits, **{"usage.cost_usd": MAX_CALL_COST_USD}) for _ in range(20)]
    await ingest(stub, sessions)
    report = await stub.GetCostReport(apb.GetCostReportRequest())
    assert report.calls == 20
    assert report.usage.prompt_tokens == 20 * MAX_CALL_TOKENS
    assert report.total_cost_usd == pytest.approx(20 * MAX_CALL_COST_USD)
    perf = await stub.GetModelPerformance(apb.GetModelPerformanceRequest())
    assert perf.models[0].usage.total_tokens == 20 * MAX_CALL_TOKENS


async def test_an_unknown_domain_counts_as_not_known(stub: Stub) -> None:
    # Regression: a domain number this version does not know (from a newer peer) was stored as is and
    # every report that names domains failed with INTERNAL.
    session = FakeSession(now_ns() - HOUR).started().selected("m/a", 99).response("m/a", 0.01).completed()
    await ingest(stub, [session])
    await stub.SubmitFeedback(apb.SubmitFeedbackRequest(session_id=session.session_id, rating=4))
    satisfaction = await stub.GetSatisfaction(apb.GetSatisfactionRequest())
    assert satisfaction.overall.count == 1 and not satisfaction.by_domain
    perf = await stub.GetModelPerformance(apb.GetModelPerformanceRequest())
    assert [r.model for r in perf.models] == ["m/a"] and not perf.by_domain
    accuracy = await stub.GetSelectionAccuracy(apb.GetSelectionAccuracyRequest())
    assert accuracy.feedback.sample_size == 1
