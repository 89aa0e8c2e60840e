"""The backend-neutral analytics model: the :class:`AnalyticsStore` interface, its values, and the pure
definitions every implementation shares so that all of them give identical numbers.

How the store is built (one implementation per algorithm, each backend a thin adapter):

* this module: the interface, the values it takes and returns, and the definitions (histograms,
  :func:`shadow_outcome`, :func:`feedback_hit`, :class:`SessionState`);
* :mod:`.buckets`: the one time-bucketing scheme of the counters (blocks of 1 hour, 1 UTC day, 8 and 64
  days) and how a time range is covered by them;
* :mod:`.counters`: the named counters (:class:`~.counters.ModelCounters`, :class:`~.counters.SessionCounters`,
  :class:`~.counters.DayCounters`), their storage columns, raw facts to counters, and counter rows to reports;
* :mod:`.planner`: given the stored state a batch (or a rating) touches, the write plan;
* :mod:`.sqlite` and :mod:`.mongo`: the adapters — they load state, record seen events, apply plans and
  read counter rows, nothing else.

The analytics service turns orchestration events into :class:`EventFacts` (plain values, no protobuf)
and hands them to a store. Reports are answered from **pre-aggregated counters**, never by reading every
raw row of a range: a store keeps

* an idempotency ledger keyed by ``(session_id, sequence)``: an event delivered twice counts once;
* one row per session (tenant, status, creation time, primary model and domain, its own call/cost
  counters, its shadow-evaluation outcome) and the raw facts (one row per provider call, per critique,
  per rating), which are the source of truth the counters can always be rebuilt from;
* **model counters** keyed by ``(block, tenant, model, domain)``: calls, successes, failures by
  kind, tokens, cost, latency and TTFT histograms (:data:`HIST_BUCKETS` log-spaced buckets), critique
  scores received as author and given as critic;
* **session counters** keyed by ``(block, tenant, primary_model, domain)``: shadow-evaluation
  sample and hits, rated sessions and feedback hits, and the count of each rating 1-5;
* **day counters** keyed by ``(block, tenant)`` (hour and day blocks only): calls, cost and ratings, for
  the per-day breakdowns.

Rules every implementation follows:

* A batch is applied atomically; counters change only for newly recorded events, in the same
  transaction that records them. A duplicate event (same ``(session_id, sequence)``) changes nothing.
* Every figure of a session (its calls, critiques, shadow outcome and ratings) is attributed to the
  **hour of the session's creation time** (so to its UTC day, ``create_time_ns // NANOS_PER_DAY``) and to
  the session's primary domain (0 until ``model_selected`` is known), so the per-session, per-model and
  per-day breakdowns add up to the same total.
* Events may arrive before their session's ``session_started``: the session is created lazily with
  the earliest event time seen as its creation time, replaced by the ``session_started`` time when
  that arrives. When a session's hour, domain or primary model changes after some of its figures were
  counted, its contributions move to the new key (subtracted from the old counters, added to the new)
  in the same transaction. Only terminal events change the status, so a late event never "reopens" a
  session. A session keeps the tenant of its first delivery.
* Money is integer nano-dollars, scores integer milli-points (score x 1000, rounded), times integer
  nanoseconds since the Unix epoch (UTC), durations integer nanoseconds, so sums are exact.
* Every query is scoped by :class:`Scope`: sessions of one tenant (or all when ``tenant`` is empty)
  created in ``[start_ns, end_ns)``, **exactly** — not rounded to days or hours. The whole hours inside
  the range are read from the fewest aligned counter blocks (:func:`.buckets.cover`: at most two runs per
  block size, about 40-80 blocks for any range up to 366 days) and the partial hours at either end from
  the raw facts of the sessions created in them; the results are identical to aggregating every raw row.
* Percentiles come from the histograms (:func:`histogram_quantile`): nearest rank, reported as the
  geometric middle of the bucket holding it, so within a factor ``sqrt(HIST_RATIO)`` (about 11.3%) of
  the exact nearest-rank value between 1 ms and 10 min.
* Shadow evaluation and feedback outcomes per session are defined by :func:`shadow_outcome` and
  :func:`feedback_hit`.
* A rating may come before analytics knows its session (the orchestrator's outbox has not delivered the
  session's events yet). It is kept aside, keyed like any rating by ``(session_id, user_id)``, with the
  caller's tenant, and counts nowhere. The batch that creates the session joins it to the session, in
  the same transaction, when :func:`feedback_may_join` allows (else it is dropped and logged, so one
  tenant's rating never lands on another tenant's session). Reports count joined ratings only.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

# SessionStatus values (orchestrator.proto), repeated here so the store needs no protobuf import.
STATUS_RUNNING = 1
STATUS_COMPLETED = 2
STATUS_FAILED = 3
STATUS_CANCELLED = 4

# FailureKind values 1..9 are counted one by one; anything else counts as 0 (unclassified).
FAILURE_KINDS: tuple[int, ...] = tuple(range(10))
FAILURE_KIND_CANCELLED = 9

NANOS_PER_MS = 1_000_000
NANOS_PER_HOUR = 3_600_000_000_000
NANOS_PER_DAY = 86_400 * 1_000_000_000

# Latency/TTFT histograms: bucket 0 is [0, 1 ms), bucket HIST_BUCKETS-1 is [10 min, inf), and the 62
# buckets between split [1 ms, 10 min) evenly on a log scale, each HIST_RATIO times wider than the last.
HIST_BUCKETS = 64
HIST_MIN_NS = NANOS_PER_MS
HIST_MAX_NS = 600 * 1_000_000_000
HIST_RATIO = (HIST_MAX_NS / HIST_MIN_NS) ** (1 / (HIST_BUCKETS - 2))
# Largest relative error of a reported percentile in [1 ms, 10 min): about 0.113.
HIST_RELATIVE_ERROR = math.sqrt(HIST_RATIO) - 1
_LOG_RATIO = math.log(HIST_RATIO)


def histogram_bucket(nanos: int) -> int:
    """The histogram bucket of a duration in nanoseconds (see :data:`HIST_BUCKETS`)."""
    if nanos < HIST_MIN_NS:
        return 0
    if nanos >= HIST_MAX_NS:
        return HIST_BUCKETS - 1
    index = 1 + int(math.log(nanos / HIST_MIN_NS) / _LOG_RATIO)
    return min(max(index, 1), HIST_BUCKETS - 2)


def histogram_value(bucket: int) -> int:
    """The value reported for ``bucket``: the geometric middle of its bounds, in nanoseconds.

    Bucket 0 reports 0.5 ms and the overflow bucket 10 min (a lower bound).
    """
    if bucket <= 0:
        return HIST_MIN_NS // 2
    if bucket >= HIST_BUCKETS - 1:
        return HIST_MAX_NS
    return round(HIST_MIN_NS * math.pow(HIST_RATIO, bucket - 0.5))


def histogram_quantile(histogram: Sequence[int], q: float) -> int:
    """The nearest-rank ``q`` quantile (0-1) of a histogram, in nanoseconds; 0 when it is empty."""
    total = sum(histogram)
    if total <= 0:
        return 0
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return histogram_value(bucket)
    return histogram_value(len(histogram) - 1)


def score_milli(score: float) -> int:
    """A 0-10 critique score as integer milli-points (exact sums)."""
    return round(score * 1000)


def day_number(time_ns: int) -> int:
    """Days since 1970-01-01 (UTC) of a time in nanoseconds."""
    return time_ns // NANOS_PER_DAY


def day_name(day: int) -> str:
    """``YYYY-MM-DD`` of a day number."""
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def shadow_outcome(critiques: Iterable[tuple[str, str, bool, int]]) -> bool | None:
    """Whether shadow evaluation judged a session's selection right; None when it cannot say.

    ``critiques`` are the session's round-1 critiques as ``(critic_model, author_model, shadow,
    score_milli)``. Non-shadow critiques score the session's own answer (the primary's, or its fallback
    replacement's); shadow critiques score a runner-up's answer, grouped by author. A runner-up is
    compared on the critics that scored both answers (same critics): the selection loses to it when the
    median of those critics' scores of the session's answer is below the median of their scores of the
    runner-up's. The session is judged when at least one runner-up shares a critic with it, and is a
    hit when it loses to none (ties count as hits).
    """
    own: dict[str, list[int]] = {}
    runners: dict[str, dict[str, list[int]]] = {}
    for critic, author, shadow, milli in critiques:
        if shadow:
            runners.setdefault(author, {}).setdefault(critic, []).append(milli)
        else:
            own.setdefault(critic, []).append(milli)
    judged = False
    for scores in runners.values():
        common = sorted(set(scores) & set(own))
        if not common:
            continue
        judged = True
        mine = statistics.median(statistics.fmean(own[c]) for c in common)
        theirs = statistics.median(statistics.fmean(scores[c]) for c in common)
        if mine < theirs:
            return False
    return True if judged else None


def feedback_hit(ratings: Sequence[int]) -> bool:
    """A rated session counts as a right selection when the mean of its ratings is 4 or more."""
    return sum(ratings) >= 4 * len(ratings)


def feedback_may_join(session_tenant: str, feedback_tenant: str) -> bool:
    """Whether a rating given before its session was known may join the session once it arrives.

    Only when it came from the session's own tenant, or from an internal caller (no tenant), which may
    rate any session.
    """
    return not feedback_tenant or feedback_tenant == session_tenant


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens and cost of one or more calls; cost in integer nano-dollars (USD * 1e9)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_nanos: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cached_tokens + other.cached_tokens,
            self.total_tokens + other.total_tokens,
            self.cost_nanos + other.cost_nanos,
        )

    @property
    def cost_usd(self) -> float:
        """The cost in US dollars."""
        return self.cost_nanos / 1e9


@dataclass(frozen=True, slots=True)
class CallFact:
    """One provider call, successful or not.

    ``purpose`` is a ``CallPurpose`` value, ``failure_kind`` a ``FailureKind`` value (0 on success).
    ``ttft_ns`` is None when no token arrived or it was not reported.
    """

    model: str
    purpose: int
    shadow: bool
    round: int
    success: bool
    failure_kind: int
    usage: TokenUsage
    latency_ns: int
    ttft_ns: int | None


@dataclass(frozen=True, slots=True)
class CritiqueFact:
    """One critic's score (0-10) of one answer."""

    round: int
    critic_model: str
    author_model: str
    score: float
    shadow: bool


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A terminal event: ``status`` is COMPLETED, FAILED or CANCELLED (``SessionStatus`` values)."""

    status: int
    final_score: float | None = None
    best_model: str = ""


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What one orchestration event means for analytics.

    ``kind`` is the name of the event's oneof case. At most one of the optional parts is set, except
    that every event creates its session if needed and a critique also carries its call.
    """

    session_id: str
    sequence: int
    time_ns: int
    kind: str
    started: bool = False
    primary_model: str | None = None
    primary_domain: int = 0
    call: CallFact | None = None
    critique: CritiqueFact | None = None
    end: SessionEnd | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Outcome of one batch: events newly recorded and events already recorded before."""

    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Scope:
    """Which sessions a query covers: one tenant's ("" = every tenant) created in ``[start_ns, end_ns)``.

    ``domain`` (a ``Domain`` value, 0 = any) further restricts to sessions of that primary domain; only
    :meth:`AnalyticsStore.performance` uses it.
    """

    tenant: str
    start_ns: int
    end_ns: int
    domain: int = 0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as analytics knows it."""

    session_id: str
    tenant: str
    status: int
    create_time_ns: int
    primary_model: str
    primary_domain: int
    calls: int
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A stored rating. ``pending``: its session is not known yet, so it counts nowhere until it joins."""

    session_id: str
    user_id: str
    rating: int
    comment: str
    create_time_ns: int
    update_time_ns: int
    pending: bool = False


@dataclass(frozen=True, slots=True)
class PerfRow:
    """One model's figures within one domain (0 = sessions whose domain is not known), from counters.

    ``attempts`` counts every call, ``failures`` maps a ``FailureKind`` value (0 = unclassified) to its
    count (kinds with no failure are left out), ``usage`` covers every call, failed and cancelled ones
    included. The histograms (:data:`HIST_BUCKETS` counts each) cover successful calls (TTFT: those that
    reported one). Scores are sums of milli-points.
    """

    model: str
    domain: int
    attempts: int
    successes: int
    failures: Mapping[int, int]
    usage: TokenUsage
    latency_histogram: tuple[int, ...]
    ttft_histogram: tuple[int, ...]
    critiques_received: int
    score_received_milli: int
    critiques_given: int
    score_given_milli: int

    @property
    def calls(self) -> int:
        """Calls counted against the model: every attempt but cancelled ones (the caller gave up)."""
        return self.attempts - self.failures.get(FAILURE_KIND_CANCELLED, 0)

    def merge(self, other: PerfRow, domain: int = 0) -> PerfRow:
        """This row plus ``other`` (same model), labelled ``domain``."""
        kinds = set(self.failures) | set(other.failures)
        return PerfRow(
            model=self.model,
            domain=domain,
            attempts=self.attempts + other.attempts,
            successes=self.successes + other.successes,
            failures={k: self.failures.get(k, 0) + other.failures.get(k, 0) for k in sorted(kinds)},
            usage=self.usage + other.usage,
            latency_histogram=tuple(
                a + b for a, b in zip(self.latency_histogram, other.latency_histogram, strict=True)
            ),
            ttft_histogram=tuple(a + b for a, b in zip(self.ttft_histogram, other.ttft_histogram, strict=True)),
            critiques_received=self.critiques_received + other.critiques_received,
            score_received_milli=self.score_received_milli + other.score_received_milli,
            critiques_given=self.critiques_given + other.critiques_given,
            score_given_milli=self.score_given_milli + other.score_given_milli,
        )


@dataclass(frozen=True, slots=True)
class SessionCostRow:
    """One session's spending."""

    session_id: str
    calls: int
    cost_nanos: int
    create_time_ns: int


@dataclass(frozen=True, slots=True)
class ModelCostRow:
    """One model's spending."""

    model: str
    calls: int
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class DayCostRow:
    """One UTC day's spending; ``day`` is ``YYYY-MM-DD``."""

    day: str
    calls: int
    cost_nanos: int


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Spending of the sessions in a scope, from the pre-aggregated counters.

    ``calls`` counts every provider call (failed and cancelled ones included: they were paid for);
    ``usage.cost_nanos`` is the exact sum of their costs. ``sessions`` is the most expensive first (ties
    by session id), at most the requested limit; ``models`` the most expensive first (ties by model
    id); ``days`` oldest first (only days with at least one call).
    """

    session_count: int
    calls: int
    usage: TokenUsage
    sessions: list[SessionCostRow] = field(default_factory=list)
    models: list[ModelCostRow] = field(default_factory=list)
    days: list[DayCostRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Proportion:
    """``hits`` out of ``sample``."""

    sample: int = 0
    hits: int = 0


@dataclass(frozen=True, slots=True)
class AccuracySummary:
    """Selection accuracy counts: shadow evaluation overall and per known domain, and user feedback.

    A session counts in ``shadow`` when :func:`shadow_outcome` judged it and in ``feedback`` when it has
    at least one rating (a hit per :func:`feedback_hit`).
    """

    shadow: Proportion
    feedback: Proportion
    shadow_by_domain: dict[int, Proportion] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RatingCounts:
    """How many ratings of each value 1-5 (``counts[0]`` is the number of 1s)."""

    counts: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @property
    def total(self) -> int:
        """Ratings counted."""
        return sum(self.counts)

    @property
    def mean(self) -> float:
        """Mean rating (0 when there is none)."""
        total = self.total
        return sum((i + 1) * c for i, c in enumerate(self.counts)) / total if total else 0.0

    @classmethod
    def of(cls, ratings: Iterable[int]) -> RatingCounts:
        """The counts of ``ratings`` (each 1-5)."""
        counts = [0, 0, 0, 0, 0]
        for rating in ratings:
            counts[rating - 1] += 1
        return cls((counts[0], counts[1], counts[2], counts[3], counts[4]))

    def __add__(self, other: RatingCounts) -> RatingCounts:
        a, b = self.counts, other.counts
        return RatingCounts((a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4]))

    def __neg__(self) -> RatingCounts:
        a = self.counts
        return RatingCounts((-a[0], -a[1], -a[2], -a[3], -a[4]))


@dataclass(frozen=True, slots=True)
class SatisfactionData:
    """Every rating of the sessions in scope: overall, per primary model, per primary domain, per day.

    Sessions whose primary model (domain) is not known count overall but in no ``by_model``
    (``by_domain``) entry; ``by_day`` is keyed by the sessions' UTC creation day ``YYYY-MM-DD``.
    """

    overall: RatingCounts
    by_model: dict[str, RatingCounts] = field(default_factory=dict)
    by_domain: dict[int, RatingCounts] = field(default_factory=dict)
    by_day: dict[str, RatingCounts] = field(default_factory=dict)


class AnalyticsStore(ABC):
    """Everything the analytics service stores and reads. Implementations: SQLite and MongoDB.

    Read methods answer from pre-aggregated counters (plus, at most, the raw facts of the partial days at
    the edges of the range) and return small aggregated values, never lists of raw rows.
    """

    @abstractmethod
    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """Record a batch atomically, raw facts and counters together.

        Events already recorded (also earlier in the same batch) are duplicates and change nothing.
        """

    @abstractmethod
    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """The session, or None when unknown or (``tenant`` non-empty) owned by another tenant."""

    @abstractmethod
    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, *, tenant: str = ""
    ) -> tuple[FeedbackRecord, bool]:
        """Insert or replace the rating of ``(session_id, user_id)``, keeping its creation time, and
        update the session counters in the same transaction.

        ``tenant`` is the caller's ("" = internal). A session of another tenant raises
        :class:`LookupError`, as for a session that does not exist for that tenant. A session not known
        yet gets a pending rating (``FeedbackRecord.pending``; see the module docstring), which the batch
        that creates the session joins to it. Returns the stored feedback and True when an earlier rating
        (of the same tenant, while pending) was replaced.
        """

    @abstractmethod
    async def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        """Per ``(model, domain)`` figures of the sessions in scope, sorted by model then domain.

        ``model`` (when given) keeps only that model's rows; ``scope.domain`` (when non-zero) only that
        domain's. Domain 0 rows hold sessions whose domain is not known.
        """

    @abstractmethod
    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """Spending of the sessions in scope (``scope.domain`` is ignored)."""

    @abstractmethod
    async def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        """Shadow-evaluation and feedback outcomes of the sessions in scope (``scope.domain`` ignored)."""

    @abstractmethod
    async def satisfaction(self, scope: Scope) -> SatisfactionData:
        """Ratings of the sessions in scope (``scope.domain`` is ignored)."""

    @abstractmethod
    async def close(self) -> None:
        """Wait for writes in progress, then release the connections."""


# ------------------------------------------------------------------------------ stored sessions

# The six usage counters, named as :class:`TokenUsage`'s fields (and stored under these names by every backend).
USAGE_NAMES = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens", "cost_nanos")


def usage_values(usage: TokenUsage) -> tuple[int, int, int, int, int, int]:
    """The six counters of ``usage`` in the order of :data:`USAGE_NAMES`."""
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
        usage.cost_nanos,
    )


def failure_slot(kind: int) -> int:
    """The failure counter of a ``FailureKind`` value: itself when known (1-9), else 0 (unclassified)."""
    return kind if 0 < kind < len(FAILURE_KINDS) else 0


@dataclass(slots=True)
class SessionState:
    """A session row (or document): what the store keeps of a session besides its raw facts."""

    session_id: str
    tenant: str
    create_time_ns: int
    status: int = STATUS_RUNNING
    started: bool = False
    primary_model: str = ""
    primary_domain: int = 0
    end_time_ns: int | None = None
    final_score: float | None = None
    best_model: str = ""
    calls: int = 0
    failures: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    #: The stored :func:`shadow_outcome`: 1 hit, 0 miss, None not judged.
    shadow_state: int | None = None

    def info(self) -> SessionInfo:
        """The session as :meth:`AnalyticsStore.get_session` returns it."""
        return SessionInfo(
            session_id=self.session_id,
            tenant=self.tenant,
            status=self.status,
            create_time_ns=self.create_time_ns,
            primary_model=self.primary_model,
            primary_domain=self.primary_domain,
            calls=self.calls,
            usage=self.usage,
        )

    def advance(self, event: EventFacts) -> None:
        """Apply one newly recorded event (see the module docstring for the rules)."""
        if event.started:
            self.create_time_ns = event.time_ns
            self.started = True
        elif not self.started:
            self.create_time_ns = min(self.create_time_ns, event.time_ns)
        if event.primary_model is not None:
            self.primary_model = event.primary_model
            self.primary_domain = event.primary_domain
        if event.call is not None:
            self.calls += 1
            self.failures += 0 if event.call.success else 1
            self.usage += event.call.usage
        if event.end is not None:
            self.status = event.end.status
            self.final_score = event.end.final_score
            self.best_model = event.end.best_model
            self.end_time_ns = event.time_ns


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """The raw facts stored for one session: its calls, its critiques and its (joined) ratings."""

    calls: Sequence[CallFact] = ()
    critiques: Sequence[CritiqueFact] = ()
    ratings: Sequence[int] = ()
