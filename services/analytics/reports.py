"""The analytics reports as pure functions: aggregated store values in, response messages out (no gRPC, no I/O).

Definitions used throughout (also in docs/analytics.md):

* **Calls** counted against a model exclude ``FAILURE_KIND_CANCELLED`` failures (the caller gave up;
  the model is not to blame). Cancelled calls still appear under ``failures`` and in ``usage``, because
  their tokens were paid for. The cost report's ``calls`` counts every call.
* **Latency and TTFT percentiles** cover successful calls (TTFT only where reported). They come from
  log-spaced histograms (:data:`~services.analytics.store.model.HIST_BUCKETS` buckets from 1 ms to 10 min):
  the nearest-rank percentile's bucket, reported as the bucket's geometric middle, so within
  ``HIST_RELATIVE_ERROR`` (about 11.3%) of the exact nearest-rank value.
* **Score as author** is the mean of every critique score an answer by the model received, shadow
  answers included; **score as critic** the mean of every score the model gave (scores are summed as
  integer milli-points, so the means are exact to 0.0005).
* **Domain** is the session's primary domain; sessions whose domain is not known yet count in the
  per-model rows but not in per-domain rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.domains import from_proto
from orchestratex.v1 import analytics_pb2
from services.analytics.ingest import usage_to_proto
from services.analytics.store.model import (
    AccuracySummary,
    CostSummary,
    FeedbackRecord,
    PerfRow,
    Proportion,
    RatingCounts,
    SatisfactionData,
    histogram_quantile,
)

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054

SELECTION_DEFINITION = (
    "Shadow: on a sample of sessions the runner-up candidates also answer the round-1 prompt and the same "
    "critics score their answers. A sampled session is judged when at least one runner-up was scored by a "
    "critic that also scored the session's own round-1 answer; it is a hit when, for every such runner-up, "
    "the median score those common critics gave the session's answer is at least the median they gave the "
    "runner-up's (ties count as hits). Accuracy is hits / judged sessions. Feedback: among sessions with at "
    "least one user rating, a hit is a session whose mean rating is 4 or more. Both come with 95% Wilson "
    "score intervals; with no sample the accuracy is 0 and the interval is [0, 1]. Sessions are selected by "
    "creation time."
)


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``hits / n``; ``(0, 1)`` when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimate(hits: int, n: int) -> analytics_pb2.AccuracyEstimate:
    """A proportion with its 95% Wilson interval."""
    low, high = wilson_interval(hits, n)
    return analytics_pb2.AccuracyEstimate(
        sample_size=n, hits=hits, accuracy=hits / n if n else 0.0, ci_low=low, ci_high=high
    )


def duration_ns(nanos: int) -> Duration:
    """A Duration from nanoseconds."""
    value = Duration()
    value.FromNanoseconds(nanos)
    return value


def timestamp_ns(nanos: int) -> Timestamp:
    """A Timestamp from nanoseconds since the epoch."""
    value = Timestamp()
    value.FromNanoseconds(nanos)
    return value


def utc_day(nanos: int) -> str:
    """``YYYY-MM-DD`` of a time in nanoseconds since the epoch, in UTC."""
    return datetime.fromtimestamp(nanos // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d")


# ---------------------------------------------------------------- performance


def mean_score(milli_sum: int, count: int) -> float:
    """Mean of scores summed as milli-points; 0 when there is none."""
    return milli_sum / 1000 / count if count else 0.0


def performance_proto(row: PerfRow) -> analytics_pb2.ModelPerformance:
    """One aggregated row as its message (percentiles from the histograms)."""
    calls = row.calls
    return analytics_pb2.ModelPerformance(
        model=row.model,
        domain=row.domain,  # type: ignore[arg-type]  # an int that is a Domain value
        calls=calls,
        successes=row.successes,
        success_rate=row.successes / calls if calls else 0.0,
        failures=[
            analytics_pb2.FailureCount(kind=kind, count=count)  # type: ignore[arg-type]
            for kind, count in sorted(row.failures.items())
            if count
        ],
        ttft_p50=duration_ns(histogram_quantile(row.ttft_histogram, 0.5)),
        ttft_p95=duration_ns(histogram_quantile(row.ttft_histogram, 0.95)),
        latency_p50=duration_ns(histogram_quantile(row.latency_histogram, 0.5)),
        latency_p95=duration_ns(histogram_quantile(row.latency_histogram, 0.95)),
        usage=usage_to_proto(row.usage),
        mean_score_as_author=mean_score(row.score_received_milli, row.critiques_received),
        critiques_received=row.critiques_received,
        mean_score_as_critic=mean_score(row.score_given_milli, row.critiques_given),
        critiques_given=row.critiques_given,
    )


def model_performance(rows: Sequence[PerfRow], domain: int = 0) -> analytics_pb2.GetModelPerformanceResponse:
    """Per-model and per-model-and-domain performance from the store's ``(model, domain)`` rows.

    ``models`` merges each model's rows (domain-0 rows included) and is labelled ``domain`` (the filter,
    UNSPECIFIED for all domains); ``by_domain`` lists the rows of known domains.
    """
    merged: dict[str, PerfRow] = {}
    for row in rows:
        previous = merged.get(row.model)
        merged[row.model] = row if previous is None else previous.merge(row)
    return analytics_pb2.GetModelPerformanceResponse(
        models=[performance_proto(replace(merged[name], domain=domain)) for name in sorted(merged)],
        by_domain=[performance_proto(row) for row in sorted(rows, key=lambda r: (r.model, r.domain)) if row.domain],
    )


# ----------------------------------------------------------------------- cost


def cost_report(summary: CostSummary) -> analytics_pb2.GetCostReportResponse:
    """The cost report from the store's pre-aggregated summary (nano-dollars back to USD)."""
    return analytics_pb2.GetCostReportResponse(
        total_cost_usd=summary.usage.cost_usd,
        calls=summary.calls,
        usage=usage_to_proto(summary.usage),
        sessions=[
            analytics_pb2.SessionCost(
                session_id=row.session_id,
                cost_usd=row.cost_nanos / 1e9,
                calls=row.calls,
                create_time=timestamp_ns(row.create_time_ns),
            )
            for row in summary.sessions
        ],
        models=[
            analytics_pb2.ModelCost(
                model=row.model, cost_usd=row.usage.cost_usd, calls=row.calls, usage=usage_to_proto(row.usage)
            )
            for row in summary.models
        ],
        days=[
            analytics_pb2.DailyCost(day=row.day, cost_usd=row.cost_nanos / 1e9, calls=row.calls) for row in summary.days
        ],
        session_count=summary.session_count,
    )


# ------------------------------------------------------------------- accuracy


def _estimate(value: Proportion) -> analytics_pb2.AccuracyEstimate:
    return accuracy_estimate(value.hits, value.sample)


def selection_accuracy(summary: AccuracySummary) -> analytics_pb2.GetSelectionAccuracyResponse:
    """Selection accuracy by shadow evaluation (overall and per domain) and by user feedback."""
    return analytics_pb2.GetSelectionAccuracyResponse(
        shadow=_estimate(summary.shadow),
        feedback=_estimate(summary.feedback),
        definition=SELECTION_DEFINITION,
        by_domain=[
            analytics_pb2.DomainAccuracy(
                domain=domain,  # type: ignore[arg-type]  # an int that is a Domain value
                shadow=_estimate(value),
            )
            for domain, value in sorted(summary.shadow_by_domain.items())
            if domain and value.sample
        ],
    )


# --------------------------------------------------------------- satisfaction

OVERALL_KEY = "all"


def satisfaction_summary(key: str, ratings: RatingCounts) -> analytics_pb2.SatisfactionSummary:
    """Count, mean and the distribution over 1-5 (every value listed, zeros included)."""
    return analytics_pb2.SatisfactionSummary(
        key=key,
        count=ratings.total,
        mean=ratings.mean,
        distribution=[
            analytics_pb2.RatingCount(rating=value, count=ratings.counts[value - 1]) for value in range(1, 6)
        ],
    )


def satisfaction(data: SatisfactionData) -> analytics_pb2.GetSatisfactionResponse:
    """Every rating of the sessions in range, overall and per primary model, primary domain and UTC day.

    The day is the rated session's creation day. Sessions whose primary model (or domain) is not known
    count overall but in no per-model (or per-domain) row.
    """
    return analytics_pb2.GetSatisfactionResponse(
        overall=satisfaction_summary(OVERALL_KEY, data.overall),
        by_model=[satisfaction_summary(key, data.by_model[key]) for key in sorted(data.by_model)],
        by_domain=[satisfaction_summary(from_proto(key), data.by_domain[key]) for key in sorted(data.by_domain)],
        by_day=[satisfaction_summary(key, data.by_day[key]) for key in sorted(data.by_day)],
    )


def feedback_proto(record: FeedbackRecord) -> analytics_pb2.Feedback:
    """A stored rating as its message."""
    return analytics_pb2.Feedback(
        session_id=record.session_id,
        rating=record.rating,
        comment=record.comment,
        user_id=record.user_id,
        create_time=timestamp_ns(record.create_time_ns),
        update_time=timestamp_ns(record.update_time_ns),
    )
