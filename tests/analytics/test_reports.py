"""Pure logic: histograms, Wilson intervals, ranges, event translation, shadow outcomes, report building."""

from __future__ import annotations

import math
import statistics

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from orchestratex.errors import InvalidArgument, PermissionDenied
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
from services.analytics.store.model import (
    HIST_BUCKETS,
    HIST_MAX_NS,
    HIST_MIN_NS,
    HIST_RATIO,
    HIST_RELATIVE_ERROR,
    AccuracySummary,
    PerfRow,
    Proportion,
    RatingCounts,
    TokenUsage,
    feedback_hit,
    histogram_bucket,
    histogram_quantile,
    histogram_value,
    shadow_outcome,
)
from tests.analytics.builders import DAY, SECOND, FakeSession, realistic

NOW = 1_780_000_000 * SECOND


def stamp(ns: int) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(ns)
    return value


# ----------------------------------------------------------------- statistics


def nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def histogram(values: list[int]) -> list[int]:
    counts = [0] * HIST_BUCKETS
    for value in values:
        counts[histogram_bucket(value)] += 1
    return counts


def test_histogram_buckets_are_log_spaced_from_1ms_to_10min() -> None:
    assert histogram_bucket(0) == 0
    assert histogram_bucket(HIST_MIN_NS - 1) == 0
    assert histogram_bucket(HIST_MIN_NS) == 1
    assert histogram_bucket(HIST_MAX_NS - 1) == HIST_BUCKETS - 2
    assert histogram_bucket(HIST_MAX_NS) == HIST_BUCKETS - 1
    assert histogram_bucket(10**15) == HIST_BUCKETS - 1
    assert abs(HIST_RELATIVE_ERROR - 0.1133) < 1e-4
    # Every interior bucket reports a value inside it.
    for bucket in range(1, HIST_BUCKETS - 1):
        assert histogram_bucket(histogram_value(bucket)) == bucket
    assert histogram_quantile([0] * HIST_BUCKETS, 0.5) == 0


@given(st.lists(st.integers(HIST_MIN_NS, HIST_MAX_NS - 1), min_size=1, max_size=300), st.sampled_from([0.5, 0.95]))
def test_histogram_percentiles_are_within_the_error_bound(values: list[int], q: float) -> None:
    exact = nearest_rank(values, q)
    reported = histogram_quantile(histogram(values), q)
    assert abs(reported - exact) <= HIST_RELATIVE_ERROR * exact + 1
    # Up to 1 ns of rounding on top of the bucket bound.
    assert 1 / math.sqrt(HIST_RATIO) - 1e-6 <= reported / exact <= math.sqrt(HIST_RATIO) + 1e-6


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
    assert time_window(common_pb2.TimeRange(), NOW) == (NOW - 30 * DAY, NOW)


def test_unset_start_is_30_days_before_the_given_end() -> None:
    end = NOW - 100 * DAY
    assert time_window(common_pb2.TimeRange(end_time=stamp(end)), NOW) == (end - 30 * DAY, end)


def test_explicit_range_is_kept() -> None:
    r = common_pb2.TimeRange(start_time=stamp(NOW - 366 * DAY), end_time=stamp(NOW))
    assert time_window(r, NOW) == (NOW - 366 * DAY, NOW)


@pytest.mark.parametrize(
    ("start", "end"),
    [(NOW, NOW), (NOW, NOW - SECOND), (NOW - 366 * DAY - 1, NOW), (NOW - 400 * DAY, None)],
)
def test_bad_ranges_name_the_range(start: int, end: int | None) -> None:
    r = common_pb2.TimeRange(start_time=stamp(start))
    if end is not None:
        r.end_time.CopyFrom(stamp(end))
    with pytest.raises(InvalidArgument) as info:
        time_window(r, NOW)
    assert info.value.field == "range"


def test_invalid_timestamp_is_rejected() -> None:
    r = common_pb2.TimeRange(start_time=Timestamp(seconds=1, nanos=-5))
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


def test_tenant_names_cannot_hold_control_characters() -> None:
    with pytest.raises(InvalidArgument) as info:
        tenant_for_ingest("\x00all", "")
    assert info.value.field == "tenant"


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


def perf_row(
    model: str,
    domain: int = common_pb2.DOMAIN_MATH,
    *,
    latencies: tuple[int, ...] = (),
    failures: dict[int, int] | None = None,
    cost: int = 0,
    received: tuple[float, ...] = (),
    given_scores: tuple[float, ...] = (),
) -> PerfRow:
    failed = failures or {}
    return PerfRow(
        model=model,
        domain=domain,
        attempts=len(latencies) + sum(failed.values()),
        successes=len(latencies),
        failures=failed,
        usage=TokenUsage(cost_nanos=cost),
        latency_histogram=tuple(histogram(list(latencies))),
        ttft_histogram=tuple(histogram([v // 10 for v in latencies])),
        critiques_received=len(received),
        score_received_milli=sum(round(x * 1000) for x in received),
        critiques_given=len(given_scores),
        score_given_milli=sum(round(x * 1000) for x in given_scores),
    )


def test_cancelled_calls_are_not_counted_against_the_model() -> None:
    rows = [
        perf_row(
            "m/a",
            latencies=(SECOND,),
            failures={common_pb2.FAILURE_KIND_CANCELLED: 1, common_pb2.FAILURE_KIND_RATE_LIMITED: 1},
            cost=7,
        )
    ]
    response = reports.model_performance(rows)
    (row,) = response.models
    assert (row.calls, row.successes, row.success_rate) == (2, 1, 0.5)
    assert {f.kind: f.count for f in row.failures} == {
        common_pb2.FAILURE_KIND_RATE_LIMITED: 1,
        common_pb2.FAILURE_KIND_CANCELLED: 1,
    }
    assert row.usage.cost_usd == pytest.approx(7e-9)
    assert row.latency_p95.ToNanoseconds() == pytest.approx(SECOND, rel=HIST_RELATIVE_ERROR)
    assert [(r.model, r.domain) for r in response.by_domain] == [("m/a", common_pb2.DOMAIN_MATH)]


def test_per_model_rows_merge_every_domain_and_unknown_domains_are_not_listed() -> None:
    rows = [
        perf_row("m/a", 0, latencies=(SECOND,), received=(6.0,)),
        perf_row("m/a", common_pb2.DOMAIN_MATH, latencies=(SECOND, 3 * SECOND), received=(9.0,), cost=5),
        perf_row("m/b", common_pb2.DOMAIN_CODING, given_scores=(4.0, 5.0)),
    ]
    response = reports.model_performance(rows)
    a, b = response.models
    assert (a.model, a.domain, a.calls, a.critiques_received, a.mean_score_as_author) == ("m/a", 0, 3, 2, 7.5)
    assert a.usage.cost_usd == pytest.approx(5e-9)
    assert (b.model, b.calls, b.critiques_given, b.mean_score_as_critic) == ("m/b", 0, 2, 4.5)
    assert [(r.model, r.domain) for r in response.by_domain] == [
        ("m/a", common_pb2.DOMAIN_MATH),
        ("m/b", common_pb2.DOMAIN_CODING),
    ]
    filtered = reports.model_performance(rows[1:2], common_pb2.DOMAIN_MATH)
    assert filtered.models[0].domain == common_pb2.DOMAIN_MATH


def _k(author: str, score: float, *, shadow: bool, critic: str = "critic") -> tuple[str, str, bool, int]:
    return (critic, author, shadow, round(score * 1000))


def test_shadow_outcome_by_hand() -> None:
    # Median of the same critics' scores: 7.5 vs 7 -> hit.
    assert shadow_outcome(
        [
            _k("p", 7, shadow=False, critic="c1"),
            _k("p", 8, shadow=False, critic="c2"),
            _k("x", 7, shadow=True, critic="c1"),
            _k("x", 7, shadow=True, critic="c2"),
        ]
    )
    # 6 vs 8 -> miss.
    assert shadow_outcome([_k("p", 6, shadow=False), _k("x", 8, shadow=True)]) is False
    # A tie with the best runner-up is a hit, whatever the worse runner-ups.
    assert shadow_outcome([_k("p", 8, shadow=False), _k("x", 8, shadow=True), _k("y", 7, shadow=True)])
    # Losing to any runner-up is a miss.
    assert shadow_outcome([_k("p", 8, shadow=False), _k("x", 7, shadow=True), _k("y", 9, shadow=True)]) is False
    # Only the critics that scored both answers count: c2 did not score the runner-up.
    assert (
        shadow_outcome(
            [
                _k("p", 5, shadow=False, critic="c1"),
                _k("p", 10, shadow=False, critic="c2"),
                _k("x", 6, shadow=True, critic="c1"),
            ]
        )
        is False
    )
    # No runner-up, no own answer, or no critic in common -> not judged.
    assert shadow_outcome([_k("p", 9, shadow=False)]) is None
    assert shadow_outcome([_k("x", 9, shadow=True)]) is None
    assert shadow_outcome([_k("p", 9, shadow=False, critic="c1"), _k("x", 1, shadow=True, critic="c2")]) is None


def test_feedback_hit_uses_the_session_mean() -> None:
    assert feedback_hit([5, 3])
    assert not feedback_hit([3, 4])
    assert feedback_hit([4])


def test_selection_accuracy_report() -> None:
    summary = AccuracySummary(
        shadow=Proportion(3, 2),
        feedback=Proportion(4, 1),
        shadow_by_domain={common_pb2.DOMAIN_MATH: Proportion(2, 2), common_pb2.DOMAIN_CODING: Proportion(1, 0)},
    )
    response = reports.selection_accuracy(summary)
    assert (response.shadow.sample_size, response.shadow.hits) == (3, 2)
    assert response.shadow.accuracy == pytest.approx(2 / 3)
    assert (response.shadow.ci_low, response.shadow.ci_high) == pytest.approx(reports.wilson_interval(2, 3))
    assert response.feedback.accuracy == pytest.approx(0.25)
    assert [(d.domain, d.shadow.hits) for d in response.by_domain] == [
        (common_pb2.DOMAIN_CODING, 0),
        (common_pb2.DOMAIN_MATH, 2),
    ]
    assert "median" in response.definition and "4 or more" in response.definition


def test_satisfaction_summary_lists_every_rating_value() -> None:
    summary = reports.satisfaction_summary("k", RatingCounts((1, 0, 0, 0, 2)))
    assert [(r.rating, r.count) for r in summary.distribution] == [(1, 1), (2, 0), (3, 0), (4, 0), (5, 2)]
    assert summary.mean == pytest.approx(statistics.fmean([5, 5, 1]))
    empty = reports.satisfaction_summary("k", RatingCounts())
    assert (empty.count, empty.mean, len(empty.distribution)) == (0, 0.0, 5)


def test_an_unscored_session_is_stored_without_a_score_never_as_zero() -> None:
    def end(**fields: object) -> float | None:
        session = FakeSession(NOW).started()
        event = session.add(session_completed=pb.SessionCompleted(**fields))  # type: ignore[arg-type]
        facts = facts_from_event(event)
        assert facts is not None and facts.end is not None
        return facts.end.final_score

    assert end(final_text="an answer", unscored=True) is None
    assert end(final_text="an answer", final_score=0.0) == 0.0  # a real 0 stays a 0
    assert end(final_text="an answer", final_score=7.5) == 7.5
