"""The analytics reports as pure functions: stored records in, response messages out (no gRPC, no I/O).

Definitions used throughout:

* **Calls** counted against a model exclude ``FAILURE_KIND_CANCELLED`` failures (the caller gave up;
  the model is not to blame). Cancelled calls still appear under ``failures`` and in ``usage``, because
  their tokens were paid for.
* **Latency and TTFT percentiles** cover successful calls (TTFT only where reported), with linear
  interpolation between the closest ranks (NumPy's default, ``statistics.quantiles(method="inclusive")``).
* **Score as author** is the mean of every critique score an answer by the model received, shadow
  answers included; **score as critic** the mean of every score the model gave.
* **Domain** is the session's primary domain; sessions whose domain is not known yet count in the
  per-model rows but not in per-domain rows.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.domains import from_proto
from orchestratex.store.analytics import (
    CallRecord,
    CostSummary,
    CritiqueRecord,
    FeedbackRecord,
    RatingRecord,
    TokenUsage,
)
from orchestratex.v1 import analytics_pb2, common_pb2
from services.analytics.ingest import usage_to_proto

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054

SELECTION_DEFINITION = (
    "Shadow: among sessions where runner-up models also answered the round-1 prompt (shadow evaluation) "
    "and both the session's answer and at least one runner-up answer were scored, the selection is a hit "
    "when the median round-1 critique score of the session's answer is at least the median score of every "
    "runner-up's answer. Feedback: among rated sessions, the selection is a hit when the session's mean "
    "user rating is 4 or more. Both come with 95% Wilson score intervals; with no sample the accuracy is 0 "
    "and the interval is [0, 1]."
)


def percentile(values: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0-1) of ``values`` by linear interpolation, rounded; 0 when empty."""
    if not values:
        return 0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


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


@dataclass
class _Perf:
    calls: int = 0
    successes: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    latencies: list[int] = field(default_factory=list)
    ttfts: list[int] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    received: list[float] = field(default_factory=list)
    given: list[float] = field(default_factory=list)

    def to_proto(self, model: str, domain: int) -> analytics_pb2.ModelPerformance:
        return analytics_pb2.ModelPerformance(
            model=model,
            domain=domain,  # type: ignore[arg-type]  # an int that is a Domain value
            calls=self.calls,
            successes=self.successes,
            success_rate=self.successes / self.calls if self.calls else 0.0,
            failures=[
                analytics_pb2.FailureCount(kind=kind, count=count)  # type: ignore[arg-type]
                for kind, count in sorted(self.failures.items())
            ],
            ttft_p50=duration_ns(percentile(self.ttfts, 0.5)),
            ttft_p95=duration_ns(percentile(self.ttfts, 0.95)),
            latency_p50=duration_ns(percentile(self.latencies, 0.5)),
            latency_p95=duration_ns(percentile(self.latencies, 0.95)),
            usage=usage_to_proto(self.usage),
            mean_score_as_author=statistics.fmean(self.received) if self.received else 0.0,
            critiques_received=len(self.received),
            mean_score_as_critic=statistics.fmean(self.given) if self.given else 0.0,
            critiques_given=len(self.given),
        )


def model_performance(
    calls: Iterable[CallRecord], critiques: Iterable[CritiqueRecord], model: str = "", domain: int = 0
) -> analytics_pb2.GetModelPerformanceResponse:
    """Per-model and per-model-and-domain performance of the given records.

    The records are those of the sessions in range (and of ``domain`` when non-zero); ``model``, when
    given, keeps only that model's rows. The per-model rows carry ``domain`` (UNSPECIFIED for all).
    """
    overall: defaultdict[str, _Perf] = defaultdict(_Perf)
    per_domain: defaultdict[tuple[str, int], _Perf] = defaultdict(_Perf)

    def rows(name: str, record_domain: int) -> list[_Perf]:
        targets = [overall[name]]
        if record_domain:
            targets.append(per_domain[(name, record_domain)])
        return targets

    for record in calls:
        call = record.call
        for perf in rows(call.model, record.domain):
            perf.usage += call.usage
            if call.success:
                perf.calls += 1
                perf.successes += 1
                perf.latencies.append(call.latency_ns)
                if call.ttft_ns is not None:
                    perf.ttfts.append(call.ttft_ns)
            else:
                perf.failures[call.failure_kind] += 1
                if call.failure_kind != common_pb2.FAILURE_KIND_CANCELLED:
                    perf.calls += 1
    for crit in critiques:
        k = crit.critique
        for perf in rows(k.author_model, crit.domain):
            perf.received.append(k.score)
        for perf in rows(k.critic_model, crit.domain):
            perf.given.append(k.score)

    def wanted(name: str) -> bool:
        return not model or name == model

    return analytics_pb2.GetModelPerformanceResponse(
        models=[overall[name].to_proto(name, domain) for name in sorted(overall) if wanted(name)],
        by_domain=[per_domain[key].to_proto(*key) for key in sorted(per_domain) if wanted(key[0])],
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


@dataclass
class _Round1:
    domain: int
    primary: list[float] = field(default_factory=list)
    shadows: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def shadow_hits(round1: Iterable[CritiqueRecord]) -> dict[str, tuple[int, bool]]:
    """Per judged session: its domain and whether the selection was a hit (see SELECTION_DEFINITION).

    ``round1`` are round-1 critiques. Non-shadow critiques score the session's own answer (the primary's,
    or its fallback replacement's); shadow critiques score runner-ups, grouped by their author.
    """
    sessions: dict[str, _Round1] = {}
    for record in round1:
        k = record.critique
        if k.round != 1:
            continue
        entry = sessions.setdefault(record.session_id, _Round1(record.domain))
        if k.shadow:
            entry.shadows[k.author_model].append(k.score)
        else:
            entry.primary.append(k.score)
    result: dict[str, tuple[int, bool]] = {}
    for session_id, entry in sessions.items():
        if not entry.primary or not entry.shadows:
            continue
        primary = statistics.median(entry.primary)
        best_shadow = max(statistics.median(scores) for scores in entry.shadows.values())
        result[session_id] = (entry.domain, primary >= best_shadow)
    return result


def feedback_hits(ratings: Iterable[RatingRecord]) -> dict[str, bool]:
    """Per rated session: whether its mean rating is 4 or more."""
    per_session: defaultdict[str, list[int]] = defaultdict(list)
    for rating in ratings:
        per_session[rating.session_id].append(rating.rating)
    return {sid: statistics.fmean(values) >= 4 for sid, values in per_session.items()}


def selection_accuracy(
    round1: Iterable[CritiqueRecord], ratings: Iterable[RatingRecord]
) -> analytics_pb2.GetSelectionAccuracyResponse:
    """Selection accuracy by shadow evaluation (overall and per domain) and by user feedback."""
    shadow = shadow_hits(round1)
    feedback = feedback_hits(ratings)
    domains: defaultdict[int, list[bool]] = defaultdict(list)
    for domain, hit in shadow.values():
        if domain:
            domains[domain].append(hit)
    return analytics_pb2.GetSelectionAccuracyResponse(
        shadow=accuracy_estimate(sum(hit for _, hit in shadow.values()), len(shadow)),
        feedback=accuracy_estimate(sum(feedback.values()), len(feedback)),
        definition=SELECTION_DEFINITION,
        by_domain=[
            analytics_pb2.DomainAccuracy(
                domain=domain,  # type: ignore[arg-type]  # an int that is a Domain value
                shadow=accuracy_estimate(sum(hits), len(hits)),
            )
            for domain, hits in sorted(domains.items())
        ],
    )


# --------------------------------------------------------------- satisfaction

OVERALL_KEY = "all"


def satisfaction_summary(key: str, ratings: Sequence[int]) -> analytics_pb2.SatisfactionSummary:
    """Count, mean and the distribution over 1-5 (every value listed, zeros included)."""
    counts = Counter(ratings)
    return analytics_pb2.SatisfactionSummary(
        key=key,
        count=len(ratings),
        mean=statistics.fmean(ratings) if ratings else 0.0,
        distribution=[analytics_pb2.RatingCount(rating=value, count=counts[value]) for value in range(1, 6)],
    )


def satisfaction(ratings: Sequence[RatingRecord]) -> analytics_pb2.GetSatisfactionResponse:
    """Every rating of the sessions in range, overall and per primary model, primary domain and UTC day.

    The day is the rated session's creation day. Sessions whose primary model (or domain) is not known
    count overall but in no per-model (or per-domain) row.
    """
    by_model: defaultdict[str, list[int]] = defaultdict(list)
    by_domain: defaultdict[int, list[int]] = defaultdict(list)
    by_day: defaultdict[str, list[int]] = defaultdict(list)
    for record in ratings:
        if record.primary_model:
            by_model[record.primary_model].append(record.rating)
        if record.primary_domain:
            by_domain[record.primary_domain].append(record.rating)
        by_day[utc_day(record.session_time_ns)].append(record.rating)
    return analytics_pb2.GetSatisfactionResponse(
        overall=satisfaction_summary(OVERALL_KEY, [r.rating for r in ratings]),
        by_model=[satisfaction_summary(key, by_model[key]) for key in sorted(by_model)],
        by_domain=[satisfaction_summary(from_proto(key), by_domain[key]) for key in sorted(by_domain)],
        by_day=[satisfaction_summary(key, by_day[key]) for key in sorted(by_day)],
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
