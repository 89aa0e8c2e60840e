"""Pure logic: percentiles, Wilson intervals, ranges, event translation, report aggregation."""

from __future__ import annotations

import math
import statistics

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from orchestratex.errors import InvalidArgument, PermissionDenied
from orchestratex.store.analytics import CallFact, CallRecord, CritiqueFact, CritiqueRecord, RatingRecord, TokenUsage
from orchestratex.v1 import analytics_pb2, common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.analytics import reports
from services.analytics.ingest import facts_from_event, facts_from_request
from services.analytics.requests import (
    feedback_input,
    session_limit,
    tenant_for_ingest,
    time_window,
)
from tests.analytics.builders import DAY, SECOND, FakeSession, realistic

NOW = 1_780_000_000 * SECOND


def stamp(ns: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(ns)
    return value


# ----------------------------------------------------------------- statistics


def test_percentile_interpolates_between_ranks() -> None:
    values = [100 * i for i in range(1, 21)]
    assert reports.percentile(values, 0.5) == 1050
    assert reports.percentile(values, 0.95) == 1905
    assert reports.percentile([7], 0.95) == 7
    assert reports.percentile([], 0.5) == 0
    assert reports.percentile([3, 1, 2], 0.0) == 1
    assert reports.percentile([3, 1, 2], 1.0) == 3


@given(st.lists(st.integers(0, 10**12), min_size=1), st.floats(0, 1))
def test_percentile_stays_within_the_data(values: list[int], q: float) -> None:
    assert min(values) <= reports.percentile(values, q) <= max(values)


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [(2, 3, 0.2077, 0.9385), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962)],
)
def test_wilson_interval_matches_published_values(hits: int, n: int, low: float, high: float) -> None:
    got_low, got_high = reports.wilson_interval(hits, n)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_no_sample_means_no_information() -> None:
    estimate = reports.accuracy_estimate(0, 0)
    assert (estimate.accuracy, estimate.ci_low, estimate.ci_high) == (0.0, 0.0, 1.0)


def test_utc_day() -> None:
    assert reports.utc_day(0) == "1970-01-01"
    assert reports.utc_day(DAY - 1) == "1970-01-01"
    assert reports.utc_day(DAY) == "1970-01-02"


# --------------------------------------------------------------------- ranges


def test_default_window_is_the_last_30_days() -> None:
    assert time_window(None, NOW) == (NOW - 30 * DAY, NOW)
    assert time_window(analytics_pb2.TimeRange(), NOW) == (NOW - 30 * DAY, NOW)


def test_unset_start_is_30_days_before_the_given_end() -> None:
    end = NOW - 100 * DAY
    assert time_window(analytics_pb2.TimeRange(end_time=stamp(end)), NOW) == (end - 30 * DAY, end)


def test_explicit_range_is_kept() -> None:
    r = analytics_pb2.TimeRange(start_time=stamp(NOW - 366 * DAY), end_time=stamp(NOW))
    assert time_window(r, NOW) == (NOW - 366 * DAY, NOW)


@pytest.mark.parametrize(
    ("start", "end"),
    [(NOW, NOW), (NOW, NOW - SECOND), (NOW - 366 * DAY - 1, NOW), (NOW - 400 * DAY, None)],
)
def test_bad_ranges_name_the_range(start: int, end: int | None) -> None:
    r = analytics_pb2.TimeRange(start_time=stamp(start))
    if end is not None:
        r.end_time.CopyFrom(stamp(end))
    with pytest.raises(InvalidArgument) as info:
        time_window(r, NOW)
    assert info.value.field == "range"


def test_invalid_timestamp_is_rejected() -> None:
    r = analytics_pb2.TimeRange(start_time=Timestamp(seconds=1, nanos=-5))
    with pytest.raises(InvalidArgument) as info:
        time_window(r, NOW)
    assert info.value.field == "range.start_time"


@pytest.mark.parametrize(("value", "expected"), [(0, 100), (1, 1), (1000, 1000)])
def test_session_limit(value: int, expected: int) -> None:
    assert session_limit(value) == expected


@pytest.mark.parametrize("value", [-1, 1001])
def test_session_limit_out_of_range(value: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        session_limit(value)
    assert info.value.field == "session_limit"


def test_feedback_defaults_to_anonymous() -> None:
    got = feedback_input(analytics_pb2.SubmitFeedbackRequest(session_id="s", rating=5, user_id="  "))
    assert got.user_id == "anonymous"


def test_tenant_bound_callers_ingest_only_for_themselves() -> None:
    assert tenant_for_ingest("a", "") == "a"
    assert tenant_for_ingest("", "a") == "a"
    assert tenant_for_ingest("a", "a") == "a"
    with pytest.raises(PermissionDenied, match="tenant"):
        tenant_for_ingest("b", "a")


# --------------------------------------------------------------- translation


def test_each_call_event_becomes_one_call() -> None:
    session = realistic(NOW)
    translated = [facts_from_event(e) for e in session.events]
    kinds = [f.kind for f in translated if f is not None]
    assert "response_delta" not in kinds
    calls = [f.call for f in translated if f is not None and f.call is not None]
    assert len(calls) == len(session.call_costs)
    assert [c.success for c in calls] == [True, True, True, False, True, False, True]
    assert sum(c.usage.cost_nanos for c in calls) == sum(round(c * 1e9) for c in session.call_costs)
    fallback = calls[3]
    assert (fallback.model, fallback.failure_kind, fallback.ttft_ns) == (
        "m/a",
        common_pb2.FAILURE_KIND_TIMEOUT,
        None,
    )
    assert calls[4].purpose == common_pb2.CALL_PURPOSE_REFINE
    assert calls[5].purpose == common_pb2.CALL_PURPOSE_CRITIQUE


def test_warnings_without_a_model_are_not_calls() -> None:
    notice = facts_from_event(FakeSession(NOW).notice().events[0])
    assert notice is not None and notice.call is None
    shadow = FakeSession(NOW).failed_call(
        "m/x",
        common_pb2.FAILURE_KIND_RATE_LIMITED,
        0.01,
        code=pb.WARNING_CODE_SHADOW_FAILED,
        purpose=common_pb2.CALL_PURPOSE_ANSWER,
    )
    fact = facts_from_event(shadow.events[0])
    assert fact is not None and fact.call is not None
    assert fact.call.shadow and not fact.call.success


def test_session_failed_maps_cancelled() -> None:
    cancelled = facts_from_event(FakeSession(NOW).failed(pb.SESSION_STATUS_CANCELLED).events[0])
    failed = facts_from_event(FakeSession(NOW).failed(pb.SESSION_STATUS_UNSPECIFIED).events[0])
    assert cancelled is not None and cancelled.end is not None and cancelled.end.status == 4
    assert failed is not None and failed.end is not None and failed.end.status == 3


def _bad(mutate: str) -> pb.OrchestrationEvent:
    session = FakeSession(NOW).response("m/a", 0.01).critique("m/b", "m/a", 5, 0.01)
    event = session.events[0] if "response" in mutate or mutate.startswith("event.") else session.events[1]
    if mutate == "event.session_id":
        event.session_id = " "
    elif mutate == "event.sequence":
        event.sequence = 0
    elif mutate == "event.time":
        event.ClearField("time")
    elif mutate == "event.kind":
        event.ClearField("response_completed")
    elif mutate == "response.cost_nan":
        event.response_completed.usage.cost_usd = math.nan
    elif mutate == "response.cost_negative":
        event.response_completed.usage.cost_usd = -1
    elif mutate == "response.tokens":
        event.response_completed.usage.prompt_tokens = -1
    elif mutate == "response.model":
        event.response_completed.model = ""
        event.response_completed.served_model = ""
    elif mutate == "response.latency":
        event.response_completed.latency.seconds = -1
    elif mutate == "critique.score":
        event.critique_completed.score = 11
    elif mutate == "critique.author":
        event.critique_completed.author_model = ""
    return event


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        ("event.session_id", "events[0].session_id"),
        ("event.sequence", "events[0].sequence"),
        ("event.time", "events[0].time"),
        ("event.kind", "events[0].kind"),
        ("response.cost_nan", "events[0].response_completed.usage.cost_usd"),
        ("response.cost_negative", "events[0].response_completed.usage.cost_usd"),
        ("response.tokens", "events[0].response_completed.usage.prompt_tokens"),
        ("response.model", "events[0].response_completed.model"),
        ("response.latency", "events[0].response_completed.latency"),
        ("critique.score", "events[0].critique_completed.score"),
        ("critique.author", "events[0].critique_completed.author_model"),
    ],
)
def test_malformed_events_name_the_field(mutate: str, field: str) -> None:
    request = analytics_pb2.IngestEventsRequest(events=[_bad(mutate)])
    with pytest.raises(InvalidArgument) as info:
        facts_from_request(request)
    assert info.value.field == field


def test_batches_are_bounded() -> None:
    event = FakeSession(NOW).notice().events[0]
    request = analytics_pb2.IngestEventsRequest(events=[event] * 10_001)
    with pytest.raises(InvalidArgument) as info:
        facts_from_request(request)
    assert info.value.field == "events"


# -------------------------------------------------------------------- reports


def _call(model: str, *, ok: bool = True, kind: int = 0, latency: int = SECOND, cost: int = 1) -> CallRecord:
    fact = CallFact(
        model=model,
        purpose=common_pb2.CALL_PURPOSE_ANSWER,
        shadow=False,
        round=1,
        success=ok,
        failure_kind=kind,
        usage=TokenUsage(cost_nanos=cost),
        latency_ns=latency,
        ttft_ns=latency // 10 if ok else None,
    )
    return CallRecord("s", common_pb2.DOMAIN_MATH, fact)


def test_cancelled_calls_are_not_counted_against_the_model() -> None:
    calls = [
        _call("m/a", latency=SECOND),
        _call("m/a", ok=False, kind=common_pb2.FAILURE_KIND_CANCELLED, cost=5),
        _call("m/a", ok=False, kind=common_pb2.FAILURE_KIND_RATE_LIMITED, latency=9 * SECOND),
    ]
    response = reports.model_performance(calls, [])
    (row,) = response.models
    assert (row.calls, row.successes, row.success_rate) == (2, 1, 0.5)
    assert {f.kind: f.count for f in row.failures} == {
        common_pb2.FAILURE_KIND_RATE_LIMITED: 1,
        common_pb2.FAILURE_KIND_CANCELLED: 1,
    }
    assert row.usage.cost_usd == pytest.approx(7e-9)
    # Percentiles cover successful calls only.
    assert row.latency_p95.ToNanoseconds() == SECOND
    assert [(r.model, r.domain) for r in response.by_domain] == [("m/a", common_pb2.DOMAIN_MATH)]


def test_scores_as_author_include_shadow_answers() -> None:
    critiques = [
        CritiqueRecord("s", 0, CritiqueFact(1, "m/b", "m/a", 6.0, False)),
        CritiqueRecord("s", 0, CritiqueFact(1, "m/b", "m/a", 9.0, True)),
        CritiqueRecord("s", 0, CritiqueFact(1, "m/a", "m/b", 4.0, False)),
    ]
    response = reports.model_performance([], critiques, model="m/a")
    (row,) = response.models
    assert (row.mean_score_as_author, row.critiques_received) == (7.5, 2)
    assert (row.mean_score_as_critic, row.critiques_given) == (4.0, 1)
    assert not response.by_domain  # domain unknown


def _k(session: str, author: str, score: float, *, shadow: bool, domain: int = 1, rnd: int = 1) -> CritiqueRecord:
    return CritiqueRecord(session, domain, CritiqueFact(rnd, "critic", author, score, shadow))


def test_shadow_hits_by_hand() -> None:
    critiques = [
        # s1: primary median 7.5 vs runner-up 7 -> hit
        _k("s1", "p", 7, shadow=False),
        _k("s1", "p", 8, shadow=False),
        _k("s1", "x", 7, shadow=True),
        _k("s1", "x", 7, shadow=True),
        # s2: 6 vs 8 -> miss
        _k("s2", "p", 6, shadow=False),
        _k("s2", "x", 8, shadow=True),
        # s3: tie with the best runner-up counts as a hit
        _k("s3", "p", 8, shadow=False, domain=2),
        _k("s3", "x", 8, shadow=True, domain=2),
        _k("s3", "y", 7, shadow=True, domain=2),
        # s4: no shadow; s5: runner-up only; s6: round 2 only -> not judged
        _k("s4", "p", 9, shadow=False),
        _k("s5", "x", 9, shadow=True),
        _k("s6", "p", 1, shadow=False, rnd=2),
        _k("s6", "x", 9, shadow=True, rnd=2),
    ]
    assert reports.shadow_hits(critiques) == {"s1": (1, True), "s2": (1, False), "s3": (2, True)}


def test_feedback_hits_use_the_session_mean() -> None:
    ratings = [
        RatingRecord("s1", "u1", 5, "m", 1, 0),
        RatingRecord("s1", "u2", 3, "m", 1, 0),
        RatingRecord("s2", "u1", 3, "m", 1, 0),
        RatingRecord("s2", "u2", 4, "m", 1, 0),
    ]
    assert reports.feedback_hits(ratings) == {"s1": True, "s2": False}


def test_satisfaction_summary_lists_every_rating_value() -> None:
    summary = reports.satisfaction_summary("k", [5, 5, 1])
    assert [(r.rating, r.count) for r in summary.distribution] == [(1, 1), (2, 0), (3, 0), (4, 0), (5, 2)]
    assert summary.mean == pytest.approx(statistics.fmean([5, 5, 1]))
    empty = reports.satisfaction_summary("k", [])
    assert (empty.count, empty.mean, len(empty.distribution)) == (0, 0.0, 5)
