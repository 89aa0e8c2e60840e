"""Analytics storage: the backend-neutral :class:`AnalyticsStore` interface and its SQLite implementation.

The analytics service turns orchestration events into :class:`EventFacts` (plain values, no protobuf)
and hands them to a store. Reports are answered from **pre-aggregated counters**, never by reading every
raw row of a range: a store keeps

* an idempotency ledger keyed by ``(session_id, sequence)``: an event delivered twice counts once;
* one row per session (tenant, status, creation time, primary model and domain, its own call/cost
  counters, its shadow-evaluation outcome) and the raw facts (one row per provider call, per critique,
  per rating), which are the source of truth the counters can always be rebuilt from;
* **model counters** keyed by ``(tenant, time bucket, model, domain)``: calls, successes, failures by
  kind, tokens, cost, latency and TTFT histograms (:data:`HIST_BUCKETS` log-spaced buckets), critique
  scores received as author and given as critic;
* **session counters** keyed by ``(tenant, time bucket, primary_model, domain)``: shadow-evaluation
  sample and hits, rated sessions and feedback hits, and the count of each rating 1-5.

(The SQLite store keeps these at four resolutions — hours, UTC days, 8-day and 64-day blocks aligned to
the epoch, see :data:`LEVELS` — plus narrow per-day totals for the per-day breakdowns.)

Rules every implementation follows (the MongoDB one included):

* A batch is applied atomically; counters change only for newly recorded events, in the same
  transaction that records them. A duplicate event (same ``(session_id, sequence)``) changes nothing.
* ``day`` is the UTC day of the **session's creation time** (``create_time_ns // NANOS_PER_DAY``), and
  ``domain`` the session's primary domain (0 until ``model_selected`` is known). Every figure of a
  session (its calls, critiques, shadow outcome and ratings) is attributed to that session's day and
  domain, so the per-session, per-model and per-day breakdowns add up to the same total.
* Events may arrive before their session's ``session_started``: the session is created lazily with
  the earliest event time seen as its creation time, replaced by the ``session_started`` time when
  that arrives. When a session's day, domain or primary model changes after some of its figures were
  counted, its contributions move to the new key (subtracted from the old counters, added to the new)
  in the same transaction. Only terminal events change the status, so a late event never "reopens" a
  session. A session keeps the tenant of its first delivery.
* Money is integer nano-dollars, scores integer milli-points (score x 1000, rounded), times integer
  nanoseconds since the Unix epoch (UTC), durations integer nanoseconds, so sums are exact.
* Every query is scoped by :class:`Scope`: sessions of one tenant (or all when ``tenant`` is empty)
  created in ``[start_ns, end_ns)``, **exactly** — not rounded to days or hours. The SQLite store covers
  the whole hours inside the range with the fewest aligned counter blocks (at most two runs per
  resolution, about 40-80 blocks for any range up to 366 days) and answers the partial hours at either
  end from the raw facts of the sessions created in them; the results are identical to aggregating every
  raw row.
* Percentiles come from the histograms (:func:`histogram_quantile`): nearest rank, reported as the
  geometric middle of the bucket holding it, so within a factor ``sqrt(HIST_RATIO)`` (about 11.3%) of
  the exact nearest-rank value between 1 ms and 10 min.
* Shadow evaluation and feedback outcomes per session are defined by :func:`shadow_outcome` and
  :func:`feedback_hit`, shared by every implementation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from orchestratex.store.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

T = TypeVar("T")

# SessionStatus values (orchestrator.proto), repeated here so the store needs no protobuf import.
STATUS_RUNNING = 1
STATUS_COMPLETED = 2
STATUS_FAILED = 3
STATUS_CANCELLED = 4

# FailureKind values 1..9 are counted one by one; anything else counts as 0 (unclassified).
FAILURE_KINDS: tuple[int, ...] = tuple(range(10))
FAILURE_KIND_CANCELLED = 9

NANOS_PER_MS = 1_000_000
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
    """A stored rating."""

    session_id: str
    user_id: str
    rating: int
    comment: str
    create_time_ns: int
    update_time_ns: int


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

    def __add__(self, other: RatingCounts) -> RatingCounts:
        a, b = self.counts, other.counts
        return RatingCounts((a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4]))


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
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int
    ) -> tuple[FeedbackRecord, bool]:
        """Insert or replace the rating of ``(session_id, user_id)``, keeping its creation time, and
        update the session counters in the same transaction.

        Returns the stored feedback and True when an earlier rating was replaced.
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


# ------------------------------------------------------------------------------------------ SQLite

_USAGE_NAMES = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "total_tokens", "cost_nanos")
_USAGE_COLUMNS = ", ".join(_USAGE_NAMES)

# The model counters, one integer column each; a "vector" is a list of these values in this order.
_MODEL_COLUMNS: tuple[str, ...] = (
    "attempts",
    "successes",
    *(f"fail_{k}" for k in FAILURE_KINDS),
    *_USAGE_NAMES,
    *(f"lat_{i}" for i in range(HIST_BUCKETS)),
    *(f"ttft_{i}" for i in range(HIST_BUCKETS)),
    "recv_n",
    "recv_milli",
    "given_n",
    "given_milli",
)
_I_ATTEMPTS = 0
_I_SUCCESSES = 1
_I_FAIL = 2
_I_USAGE = _I_FAIL + len(FAILURE_KINDS)
_I_LAT = _I_USAGE + len(_USAGE_NAMES)
_I_TTFT = _I_LAT + HIST_BUCKETS
_I_RECV_N = _I_TTFT + HIST_BUCKETS
_I_RECV_MILLI = _I_RECV_N + 1
_I_GIVEN_N = _I_RECV_N + 2
_I_GIVEN_MILLI = _I_RECV_N + 3
_MODEL_WIDTH = len(_MODEL_COLUMNS)

# The session counters.
_SESSION_COLUMNS: tuple[str, ...] = ("shadow_n", "shadow_hits", "fb_n", "fb_hits", "r_1", "r_2", "r_3", "r_4", "r_5")
_SESSION_WIDTH = len(_SESSION_COLUMNS)

# Per-day totals (narrow, for the per-day breakdowns): calls, cost and ratings.
_DAY_COLUMNS: tuple[str, ...] = ("calls", "cost_nanos", "r_1", "r_2", "r_3", "r_4", "r_5")
_DAY_WIDTH = len(_DAY_COLUMNS)

# Counters are rebuilt from the raw facts when the stored version differs from this one.
COUNTERS_VERSION = 1

NANOS_PER_HOUR = 3_600_000_000_000
# Counter resolutions, in hours: a session's figures are added to the aligned block of each size that
# holds its creation hour (blocks are aligned to the Unix epoch, so 24-hour blocks are UTC days). A time
# range is answered from at most two runs of blocks per size, plus the raw facts of the partial hours at
# its edges: about 80 blocks for a 366-day range, whatever the volume.
LEVELS: tuple[int, ...] = (1, 24, 8 * 24, 64 * 24)
DAY_LEVELS: tuple[int, ...] = (1, 24)
# Counters are also kept summed over every tenant under this name, which no tenant can have (gRPC
# metadata values cannot hold a NUL character), so that queries for all tenants read one row per key.
ALL_TENANTS = "\x00all"

_MIGRATIONS = (
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status INTEGER NOT NULL,
        create_time_ns INTEGER NOT NULL,
        started INTEGER NOT NULL DEFAULT 0,
        primary_model TEXT NOT NULL DEFAULT '',
        primary_domain INTEGER NOT NULL DEFAULT 0,
        end_time_ns INTEGER,
        final_score REAL,
        best_model TEXT NOT NULL DEFAULT '',
        calls INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_time ON sessions (create_time_ns);
    CREATE INDEX sessions_by_tenant_time ON sessions (tenant, create_time_ns);
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        kind TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE calls (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        model TEXT NOT NULL,
        purpose INTEGER NOT NULL,
        shadow INTEGER NOT NULL,
        round INTEGER NOT NULL,
        success INTEGER NOT NULL,
        failure_kind INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        latency_ns INTEGER NOT NULL,
        ttft_ns INTEGER,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE critiques (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        round INTEGER NOT NULL,
        critic_model TEXT NOT NULL,
        author_model TEXT NOT NULL,
        score REAL NOT NULL,
        shadow INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE session_models (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        model TEXT NOT NULL,
        calls INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        PRIMARY KEY (session_id, model)
    ) WITHOUT ROWID;
    CREATE TABLE feedback (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        user_id TEXT NOT NULL,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, user_id)
    ) WITHOUT ROWID
    """,
    # Version 2: pre-aggregated daily counters. The new columns are filled and the counters built from
    # the raw facts by _rebuild_counters when the database is opened (meta.counters != COUNTERS_VERSION).
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    ALTER TABLE sessions ADD COLUMN shadow_state INTEGER;
    ALTER TABLE calls ADD COLUMN lat_bucket INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN ttft_bucket INTEGER;
    ALTER TABLE critiques ADD COLUMN score_milli INTEGER NOT NULL DEFAULT 0;
    DROP TABLE session_models;
    CREATE TABLE model_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        domain INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _MODEL_COLUMNS)},
        PRIMARY KEY (level, unit, tenant, model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE session_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        primary_model TEXT NOT NULL,
        domain INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _SESSION_COLUMNS)},
        PRIMARY KEY (level, unit, tenant, primary_model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE day_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _DAY_COLUMNS)},
        PRIMARY KEY (level, unit, tenant)
    ) WITHOUT ROWID;
    DROP INDEX sessions_by_time;
    CREATE INDEX sessions_by_time_cost ON sessions (create_time_ns, cost_nanos, session_id, calls);
    CREATE INDEX sessions_by_tenant_cost ON sessions (tenant, create_time_ns, cost_nanos, session_id, calls)
    """,
)


def _upsert(table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    names = [*keys, *columns]
    return f"""
INSERT INTO {table} ({", ".join(names)}) VALUES ({", ".join("?" for _ in names)})
ON CONFLICT ({", ".join(keys)}) DO UPDATE SET {", ".join(f"{c} = {c} + excluded.{c}" for c in columns)}
"""


_UPSERT_MODEL = _upsert("model_counters", ("level", "unit", "tenant", "model", "domain"), _MODEL_COLUMNS)
_UPSERT_SESSION_COUNTERS = _upsert(
    "session_counters", ("level", "unit", "tenant", "primary_model", "domain"), _SESSION_COLUMNS
)
_UPSERT_DAY = _upsert("day_counters", ("level", "unit", "tenant"), _DAY_COLUMNS)

_SESSION_STATE_COLUMNS = (
    "session_id, tenant, status, create_time_ns, started, primary_model, primary_domain, end_time_ns, "
    f"final_score, best_model, calls, failures, {_USAGE_COLUMNS}, shadow_state"
)

_UPSERT_SESSION = f"""
INSERT INTO sessions ({_SESSION_STATE_COLUMNS}) VALUES ({", ".join("?" for _ in range(19))})
ON CONFLICT (session_id) DO UPDATE SET
    status = excluded.status, create_time_ns = excluded.create_time_ns, started = excluded.started,
    primary_model = excluded.primary_model, primary_domain = excluded.primary_domain,
    end_time_ns = excluded.end_time_ns, final_score = excluded.final_score, best_model = excluded.best_model,
    calls = excluded.calls, failures = excluded.failures,
    {", ".join(f"{c} = excluded.{c}" for c in _USAGE_NAMES)},
    shadow_state = excluded.shadow_state
"""

_INSERT_CALL = f"""
INSERT INTO calls (session_id, sequence, time_ns, model, purpose, shadow, round, success, failure_kind,
                   {_USAGE_COLUMNS}, latency_ns, ttft_ns, lat_bucket, ttft_bucket)
VALUES ({", ".join("?" for _ in range(19))})
"""

_INSERT_CRITIQUE = """
INSERT INTO critiques (session_id, sequence, round, critic_model, author_model, score, shadow, score_milli)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

# A key of the model counters (tenant, hour, model, domain) and of the session counters
# (tenant, hour, primary_model, domain); the hour (since the epoch) is the session's creation hour.
_Key = tuple[str, int, str, int]
_Vectors = dict[_Key, list[int]]

_IN_CHUNK = 500


def _usage_values(usage: TokenUsage) -> tuple[int, int, int, int, int, int]:
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
        usage.cost_nanos,
    )


def _usage_from(row: Sequence[Any], start: int) -> TokenUsage:
    """Six usage columns (nullable sums) starting at ``row[start]``."""
    return TokenUsage(*(int(row[start + i] or 0) for i in range(6)))


def _failure_slot(kind: int) -> int:
    return kind if 0 < kind < len(FAILURE_KINDS) else 0


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" for _ in items)


def _model_vector(vectors: _Vectors, key: _Key) -> list[int]:
    vector = vectors.get(key)
    if vector is None:
        vector = vectors[key] = [0] * _MODEL_WIDTH
    return vector


def _session_vector(vectors: _Vectors, key: _Key) -> list[int]:
    vector = vectors.get(key)
    if vector is None:
        vector = vectors[key] = [0] * _SESSION_WIDTH
    return vector


def _add_call(vector: list[int], call: CallFact) -> None:
    vector[_I_ATTEMPTS] += 1
    if call.success:
        vector[_I_SUCCESSES] += 1
        vector[_I_LAT + histogram_bucket(call.latency_ns)] += 1
        if call.ttft_ns is not None:
            vector[_I_TTFT + histogram_bucket(call.ttft_ns)] += 1
    else:
        vector[_I_FAIL + _failure_slot(call.failure_kind)] += 1
    for i, value in enumerate(_usage_values(call.usage)):
        vector[_I_USAGE + i] += value


def _add_ratings(vector: list[int], ratings: Sequence[int], sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) one session's ratings to session counters."""
    if not ratings:
        return
    vector[2] += sign
    vector[3] += sign * int(feedback_hit(ratings))
    for rating in ratings:
        vector[3 + rating] += sign


def _add_shadow(vector: list[int], state: int | None, sign: int) -> None:
    if state is not None:
        vector[0] += sign
        vector[1] += sign * state


def _merge_into(target: _Vectors, source: _Vectors, sign: int, width: int) -> None:
    for key, vector in source.items():
        into = target.get(key)
        if into is None:
            into = target[key] = [0] * width
        for i, value in enumerate(vector):
            into[i] += sign * value


async def _flush(conn: aiosqlite.Connection, models: _Vectors, sessions: _Vectors) -> None:
    """Add the per-hour delta vectors to the counters of every resolution, and to the per-day totals."""
    model_rows: dict[tuple[int, int, str, str, int], list[int]] = {}
    session_rows: dict[tuple[int, int, str, str, int], list[int]] = {}
    day_rows: dict[tuple[int, int, str], list[int]] = {}

    def add(into: dict[Any, list[int]], key: Any, vector: Sequence[int], width: int) -> None:
        row = into.get(key)
        if row is None:
            row = into[key] = [0] * width
        for i, value in enumerate(vector):
            row[i] += value

    for (tenant, hour, model, domain), vec in models.items():
        if not any(vec):
            continue
        for owner in (tenant, ALL_TENANTS):
            for size in LEVELS:
                add(model_rows, (size, hour // size * size, owner, model, domain), vec, _MODEL_WIDTH)
            for size in DAY_LEVELS:
                day_vec = (vec[_I_ATTEMPTS], vec[_I_USAGE + 5])
                add(day_rows, (size, hour // size * size, owner), day_vec, _DAY_WIDTH)
    for (tenant, hour, primary_model, domain), vec in sessions.items():
        if not any(vec):
            continue
        for owner in (tenant, ALL_TENANTS):
            for size in LEVELS:
                add(session_rows, (size, hour // size * size, owner, primary_model, domain), vec, _SESSION_WIDTH)
            for size in DAY_LEVELS:
                add(day_rows, (size, hour // size * size, owner), (0, 0, *vec[4:9]), _DAY_WIDTH)
    for sql, rows in ((_UPSERT_MODEL, model_rows), (_UPSERT_SESSION_COUNTERS, session_rows), (_UPSERT_DAY, day_rows)):
        values = [(*key, *vec) for key, vec in rows.items() if any(vec)]
        if values:
            await conn.executemany(sql, values)


def _key_sql(model_expr: str) -> str:
    return f"s.tenant, s.create_time_ns / {NANOS_PER_HOUR}, {model_expr}, s.primary_domain"


async def _raw_model_vectors(
    conn: aiosqlite.Connection, where: str, params: Sequence[Any], model: str = "", *, full: bool = True
) -> _Vectors:
    """Model counter vectors computed from the raw facts of the sessions (alias ``s``) matching ``where``.

    ``full=False`` computes only attempts and usage (what the cost report needs).
    """
    out: _Vectors = {}

    async def rows(sql: str, column: str) -> Iterable[Any]:
        extra = f" AND {column} = ?" if model else ""
        return await conn.execute_fetchall(sql.format(extra=extra), [*params, model] if model else list(params))

    calls = f"FROM sessions s JOIN calls c ON c.session_id = s.session_id WHERE {where}{{extra}}"
    usage_sums = ", ".join(f"SUM(c.{c})" for c in _USAGE_NAMES)
    for row in await rows(
        f"SELECT {_key_sql('c.model')}, COUNT(*), SUM(c.success), {usage_sums} {calls} GROUP BY 1, 2, 3, 4", "c.model"
    ):
        vector = _model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
        vector[_I_ATTEMPTS] += int(row[4])
        vector[_I_SUCCESSES] += int(row[5])
        for i in range(6):
            vector[_I_USAGE + i] += int(row[6 + i])
    if not full:
        return out
    # (extra column, condition, where in the vector the count goes)
    breakdowns: tuple[tuple[str, str, Callable[[int], int]], ...] = (
        ("c.failure_kind", "c.success = 0", lambda kind: _I_FAIL + _failure_slot(kind)),
        ("c.lat_bucket", "c.success = 1", lambda bucket: _I_LAT + bucket),
        ("c.ttft_bucket", "c.success = 1 AND c.ttft_bucket IS NOT NULL", lambda bucket: _I_TTFT + bucket),
    )
    for column, condition, slot in breakdowns:
        sql = f"SELECT {_key_sql('c.model')}, {column}, COUNT(*) {calls} AND {condition} GROUP BY 1, 2, 3, 4, 5"
        for row in await rows(sql, "c.model"):
            _model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))[slot(int(row[4]))] += int(row[5])
    critiques = f"FROM sessions s JOIN critiques k ON k.session_id = s.session_id WHERE {where}{{extra}}"
    for column, n_index in (("k.author_model", _I_RECV_N), ("k.critic_model", _I_GIVEN_N)):
        sql = f"SELECT {_key_sql(column)}, COUNT(*), SUM(k.score_milli) {critiques} GROUP BY 1, 2, 3, 4"
        for row in await rows(sql, column):
            vector = _model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
            vector[n_index] += int(row[4])
            vector[n_index + 1] += int(row[5])
    return out


async def _raw_session_vectors(conn: aiosqlite.Connection, where: str, params: Sequence[Any]) -> _Vectors:
    """Session counter vectors computed from the sessions (alias ``s``) matching ``where`` and their ratings."""
    out: _Vectors = {}
    key = f"s.tenant, s.create_time_ns / {NANOS_PER_HOUR}, s.primary_model, s.primary_domain"
    shadow = await conn.execute_fetchall(
        f"""SELECT {key}, COUNT(*), SUM(s.shadow_state) FROM sessions s
            WHERE {where} AND s.shadow_state IS NOT NULL GROUP BY 1, 2, 3, 4""",
        params,
    )
    for row in shadow:
        vector = _session_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
        vector[0] += int(row[4])
        vector[1] += int(row[5])
    rated = await conn.execute_fetchall(
        f"""SELECT {key}, f.session_id, f.rating FROM sessions s JOIN feedback f ON f.session_id = s.session_id
            WHERE {where} ORDER BY f.session_id""",
        params,
    )
    per_session: dict[str, tuple[_Key, list[int]]] = {}
    for row in rated:
        entry = per_session.setdefault(row[4], ((row[0], int(row[1]), row[2], int(row[3])), []))
        entry[1].append(int(row[5]))
    for session_key, ratings in per_session.values():
        _add_ratings(_session_vector(out, session_key), ratings, 1)
    return out


@dataclass(slots=True)
class _SessionState:
    """A session row being updated by a batch."""

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
    usage: list[int] = field(default_factory=lambda: [0] * 6)
    shadow_state: int | None = None

    @property
    def key(self) -> _Key:
        """``(tenant, UTC day, primary_model, domain)`` (the MongoDB store's counter key)."""
        return (self.tenant, day_number(self.create_time_ns), self.primary_model, self.primary_domain)

    @property
    def hour_key(self) -> _Key:
        """``(tenant, creation hour, primary_model, domain)``: the SQLite session counters' key; the model
        counters use the same with the called model."""
        return (self.tenant, self.create_time_ns // NANOS_PER_HOUR, self.primary_model, self.primary_domain)

    def advance(self, event: EventFacts) -> None:
        """Apply one newly recorded event."""
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
            for i, value in enumerate(_usage_values(event.call.usage)):
                self.usage[i] += value
        if event.end is not None:
            self.status = event.end.status
            self.final_score = event.end.final_score
            self.best_model = event.end.best_model
            self.end_time_ns = event.time_ns

    def row(self) -> tuple[Any, ...]:
        return (
            self.session_id,
            self.tenant,
            self.status,
            self.create_time_ns,
            int(self.started),
            self.primary_model,
            self.primary_domain,
            self.end_time_ns,
            self.final_score,
            self.best_model,
            self.calls,
            self.failures,
            *self.usage,
            self.shadow_state,
        )


def _shadow_int(outcome: bool | None) -> int | None:
    return None if outcome is None else int(outcome)


def _day_split(scope: Scope) -> tuple[int, int, list[tuple[int, int]]]:
    """Whole UTC days ``[day_lo, day_hi)`` inside the scope and the partial edges ``[a, b)`` outside them.

    Not used by the SQLite store any more (see :func:`_plan`); kept for the MongoDB store, which imports it.
    """
    day_lo = -(-scope.start_ns // NANOS_PER_DAY)
    day_hi = scope.end_ns // NANOS_PER_DAY
    if day_lo >= day_hi:
        return 0, 0, [(scope.start_ns, scope.end_ns)] if scope.start_ns < scope.end_ns else []
    edges = [(scope.start_ns, day_lo * NANOS_PER_DAY), (day_hi * NANOS_PER_DAY, scope.end_ns)]
    return day_lo, day_hi, [(a, b) for a, b in edges if a < b]


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to answer a time range: runs of counter blocks ``(size, first_unit, end_unit)`` and raw edges."""

    runs: list[tuple[int, int, int]]
    edges: list[tuple[int, int]]


def _plan(start_ns: int, end_ns: int, sizes: Sequence[int] = LEVELS) -> _Plan:
    """Cover ``[start_ns, end_ns)`` with the fewest aligned blocks of ``sizes`` (hours) and raw partial hours."""
    if start_ns >= end_ns:
        return _Plan([], [])
    first = -(-start_ns // NANOS_PER_HOUR)
    end = end_ns // NANOS_PER_HOUR
    if first >= end:
        return _Plan([], [(start_ns, end_ns)])
    edges = [(start_ns, first * NANOS_PER_HOUR), (end * NANOS_PER_HOUR, end_ns)]
    runs: list[tuple[int, int, int]] = []
    hour = first
    while hour < end:
        size = next(z for z in sorted(sizes, reverse=True) if hour % z == 0 and hour + z <= end)
        if runs and runs[-1][0] == size and runs[-1][2] == hour:
            runs[-1] = (size, runs[-1][1], hour + size)
        else:
            runs.append((size, hour, hour + size))
        hour += size
    return _Plan(runs, [(a, b) for a, b in edges if a < b])


def _runs_where(scope: Scope, runs: Sequence[tuple[int, int, int]]) -> tuple[str, list[Any]]:
    """SQL condition on a counter table selecting the blocks of ``runs`` of the scope's tenant."""
    terms = " OR ".join("(level = ? AND unit >= ? AND unit < ?)" for _ in runs)
    params: list[Any] = [value for run in runs for value in run]
    # Every-tenant queries read the ALL_TENANTS rows: a third of the rows with three tenants.
    params.append(scope.tenant or ALL_TENANTS)
    return f"({terms}) AND tenant = ?", params


def _session_where(scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False) -> tuple[str, list[Any]]:
    """SQL condition on sessions (alias ``s``) created in ``[start_ns, end_ns)`` within ``scope``."""
    clauses = ["s.create_time_ns >= ?", "s.create_time_ns < ?"]
    params: list[Any] = [start_ns, end_ns]
    if scope.tenant:
        clauses.append("s.tenant = ?")
        params.append(scope.tenant)
    if with_domain and scope.domain:
        clauses.append("s.primary_domain = ?")
        params.append(scope.domain)
    return " AND ".join(clauses), params


_SUM_MODEL_COLUMNS = ", ".join(f"SUM({c})" for c in _MODEL_COLUMNS)
_SUM_SESSION_COLUMNS = ", ".join(f"SUM({c})" for c in _SESSION_COLUMNS)
_SUM_DAY_COLUMNS = ", ".join(f"SUM({c})" for c in _DAY_COLUMNS)


def _perf_row(model: str, domain: int, v: Sequence[int]) -> PerfRow:
    return PerfRow(
        model=model,
        domain=domain,
        attempts=v[_I_ATTEMPTS],
        successes=v[_I_SUCCESSES],
        failures={k: v[_I_FAIL + k] for k in FAILURE_KINDS if v[_I_FAIL + k]},
        usage=TokenUsage(*v[_I_USAGE : _I_USAGE + 6]),
        latency_histogram=tuple(v[_I_LAT : _I_LAT + HIST_BUCKETS]),
        ttft_histogram=tuple(v[_I_TTFT : _I_TTFT + HIST_BUCKETS]),
        critiques_received=v[_I_RECV_N],
        score_received_milli=v[_I_RECV_MILLI],
        critiques_given=v[_I_GIVEN_N],
        score_given_milli=v[_I_GIVEN_MILLI],
    )


class SqliteAnalyticsStore(AnalyticsStore):
    """:class:`AnalyticsStore` on one SQLite file (WAL; every write in one serialised transaction)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, path: Path) -> SqliteAnalyticsStore:
        """Open (creating and migrating if needed) the database at ``path``; rebuild stale counters."""
        db = await SqliteDatabase.open(path, _MIGRATIONS)
        try:
            await _rebuild_counters_if_stale(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Wait for the writes in progress, then close the connections."""
        if self._writes:
            await asyncio.wait(self._writes)
        await self._db.close()

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, shielded so a cancelled RPC cannot cut it in half.

        A batch whose caller went away still commits (or rolls back) as a whole; the outbox redelivers
        it and the duplicates are recognised.
        """

        async def run() -> T:
            async with self._db.transaction() as conn:
                return await work(conn)

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """Record a batch in one transaction; see :meth:`AnalyticsStore.ingest`."""
        if not events:
            return IngestResult(0, 0)

        async def work(conn: aiosqlite.Connection) -> IngestResult:
            return await _ingest(conn, tenant, events)

        result = await self._transaction(work)
        log.debug("ingested %d events (%d duplicates)", result.accepted, result.duplicates)
        return result

    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """See :meth:`AnalyticsStore.get_session`."""
        sql = f"""SELECT session_id, tenant, status, create_time_ns, primary_model, primary_domain, calls,
                         {_USAGE_COLUMNS}
                  FROM sessions WHERE session_id = ?"""
        params: list[Any] = [session_id]
        if tenant:
            sql += " AND tenant = ?"
            params.append(tenant)
        rows = list(await self._db.reader.execute_fetchall(sql, params))
        if not rows:
            return None
        row = rows[0]
        return SessionInfo(
            session_id=row[0],
            tenant=row[1],
            status=int(row[2]),
            create_time_ns=int(row[3]),
            primary_model=row[4],
            primary_domain=int(row[5]),
            calls=int(row[6]),
            usage=_usage_from(row, 7),
        )

    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work(conn: aiosqlite.Connection) -> tuple[FeedbackRecord, bool]:
            sessions = list(
                await conn.execute_fetchall(
                    "SELECT tenant, create_time_ns, primary_model, primary_domain FROM sessions WHERE session_id = ?",
                    (session_id,),
                )
            )
            if not sessions:
                raise LookupError(f"no session {session_id!r}")
            tenant, create_ns, primary_model, domain = sessions[0]
            rows = list(
                await conn.execute_fetchall(
                    "SELECT user_id, rating, create_time_ns FROM feedback WHERE session_id = ?", (session_id,)
                )
            )
            before = {row[0]: int(row[1]) for row in rows}
            created = next((int(row[2]) for row in rows if row[0] == user_id), now_ns)
            await conn.execute(
                """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (session_id, user_id) DO UPDATE SET
                       rating = excluded.rating, comment = excluded.comment,
                       update_time_ns = excluded.update_time_ns""",
                (session_id, user_id, rating, comment, created, now_ns),
            )
            after = {**before, user_id: rating}
            deltas: _Vectors = {}
            vector = _session_vector(deltas, (tenant, int(create_ns) // NANOS_PER_HOUR, primary_model, int(domain)))
            _add_ratings(vector, list(before.values()), -1)
            _add_ratings(vector, list(after.values()), 1)
            await _flush(conn, {}, deltas)
            return FeedbackRecord(session_id, user_id, rating, comment, created, now_ns), user_id in before

        return await self._transaction(work)

    async def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        """See :meth:`AnalyticsStore.performance`."""
        plan = _plan(scope.start_ns, scope.end_ns)
        totals: dict[tuple[str, int], list[int]] = {}

        def add(key: tuple[str, int], vector: Sequence[int]) -> None:
            into = totals.get(key)
            if into is None:
                totals[key] = list(vector)
            else:
                for i, value in enumerate(vector):
                    into[i] += value

        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            if model:
                where += " AND model = ?"
                params.append(model)
            if scope.domain:
                where += " AND domain = ?"
                params.append(scope.domain)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT model, domain, {_SUM_MODEL_COLUMNS} FROM model_counters WHERE {where} GROUP BY model, domain",
                params,
            )
            for row in rows:
                add((row[0], int(row[1])), [int(v) for v in row[2:]])
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns, with_domain=True)
            raw = await _raw_model_vectors(self._db.reader, where, params, model)
            for (_, _, name, domain), vector in raw.items():
                add((name, domain), vector)
        return [_perf_row(name, domain, vector) for (name, domain), vector in sorted(totals.items()) if any(vector)]

    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """See :meth:`AnalyticsStore.cost_summary`."""
        reader = self._db.reader
        where, params = _session_where(scope, scope.start_ns, scope.end_ns)
        count_rows = await reader.execute_fetchall(f"SELECT COUNT(*) FROM sessions s WHERE {where}", params)
        session_count = int(next(iter(count_rows))[0])
        sessions = await reader.execute_fetchall(
            f"""SELECT s.session_id, s.calls, s.cost_nanos, s.create_time_ns FROM sessions s WHERE {where}
                ORDER BY s.cost_nanos DESC, s.session_id LIMIT ?""",
            [*params, session_limit],
        )
        per_model: dict[str, list[int]] = {}
        plan = _plan(scope.start_ns, scope.end_ns)
        if plan.runs:
            runs_where, runs_params = _runs_where(scope, plan.runs)
            usage_sums = ", ".join(f"SUM({c})" for c in _USAGE_NAMES)
            rows = await reader.execute_fetchall(
                f"SELECT model, SUM(attempts), {usage_sums} FROM model_counters WHERE {runs_where} GROUP BY model",
                runs_params,
            )
            for row in rows:
                cell = per_model.setdefault(row[0], [0] * 7)
                for i in range(7):
                    cell[i] += int(row[1 + i])
        for start_ns, end_ns in plan.edges:
            edge_where, edge_params = _session_where(scope, start_ns, end_ns)
            raw = await _raw_model_vectors(reader, edge_where, edge_params, full=False)
            for (_, _, model, _), vector in raw.items():
                cell = per_model.setdefault(model, [0] * 7)
                cell[0] += vector[_I_ATTEMPTS]
                for i in range(6):
                    cell[1 + i] += vector[_I_USAGE + i]
        per_day = await self._per_day(scope)
        total = [sum(cell[i] for cell in per_model.values()) for i in range(7)]
        models = sorted(per_model.items(), key=lambda item: (-item[1][6], item[0]))
        return CostSummary(
            session_count=session_count,
            calls=total[0],
            usage=TokenUsage(*total[1:]),
            sessions=[SessionCostRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in sessions],
            models=[ModelCostRow(name, cell[0], TokenUsage(*cell[1:])) for name, cell in models if cell[0] or cell[6]],
            days=[DayCostRow(day_name(day), v[0], v[1]) for day, v in sorted(per_day.items()) if v[0]],
        )

    async def _per_day(self, scope: Scope) -> dict[int, list[int]]:
        """Per UTC day of creation: the ``_DAY_COLUMNS`` totals of the sessions in scope."""
        out: dict[int, list[int]] = {}

        def add(day: int, values: Sequence[int]) -> None:
            cell = out.setdefault(day, [0] * _DAY_WIDTH)
            for i, value in enumerate(values):
                cell[i] += value

        plan = _plan(scope.start_ns, scope.end_ns, DAY_LEVELS)
        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT unit, {_SUM_DAY_COLUMNS} FROM day_counters WHERE {where} GROUP BY unit", params
            )
            for row in rows:
                add(int(row[0]) // 24, [int(v) for v in row[1:]])
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns)
            rows = await self._db.reader.execute_fetchall(
                f"""SELECT s.create_time_ns / {NANOS_PER_DAY}, SUM(s.calls), SUM(s.cost_nanos) FROM sessions s
                    WHERE {where} GROUP BY 1""",
                params,
            )
            for row in rows:
                add(int(row[0]), (int(row[1]), int(row[2])))
            rows = await self._db.reader.execute_fetchall(
                f"""SELECT s.create_time_ns / {NANOS_PER_DAY}, f.rating, COUNT(*)
                    FROM sessions s JOIN feedback f ON f.session_id = s.session_id WHERE {where} GROUP BY 1, 2""",
                params,
            )
            for row in rows:
                ratings = [0] * 5
                ratings[int(row[1]) - 1] = int(row[2])
                add(int(row[0]), (0, 0, *ratings))
        return out

    async def _session_counters(self, scope: Scope, group: str) -> list[tuple[_Key, list[int]]]:
        """Session counter vectors of the scope, grouped by ``group`` (a primary-model and a domain
        expression) from the counters, and per raw key at the edges."""
        out: list[tuple[_Key, list[int]]] = []
        plan = _plan(scope.start_ns, scope.end_ns)
        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT {group}, {_SUM_SESSION_COLUMNS} FROM session_counters WHERE {where} GROUP BY 1, 2",
                params,
            )
            for row in rows:
                out.append((("", 0, row[0], int(row[1])), [int(v) for v in row[2:]]))
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns)
            raw = await _raw_session_vectors(self._db.reader, where, params)
            out.extend(raw.items())
        return out

    async def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        """See :meth:`AnalyticsStore.selection_accuracy`."""
        vectors = await self._session_counters(scope, "'', domain")
        shadow = [0, 0]
        feedback = [0, 0]
        by_domain: dict[int, list[int]] = {}
        for (_, _, _, domain), v in vectors:
            shadow[0] += v[0]
            shadow[1] += v[1]
            feedback[0] += v[2]
            feedback[1] += v[3]
            if domain:
                cell = by_domain.setdefault(domain, [0, 0])
                cell[0] += v[0]
                cell[1] += v[1]
        return AccuracySummary(
            shadow=Proportion(shadow[0], shadow[1]),
            feedback=Proportion(feedback[0], feedback[1]),
            shadow_by_domain={d: Proportion(n, hits) for d, (n, hits) in sorted(by_domain.items()) if n},
        )

    async def satisfaction(self, scope: Scope) -> SatisfactionData:
        """See :meth:`AnalyticsStore.satisfaction`."""
        vectors = await self._session_counters(scope, "primary_model, domain")
        overall = RatingCounts()
        by_model: dict[str, RatingCounts] = {}
        by_domain: dict[int, RatingCounts] = {}
        for (_, _, primary_model, domain), v in vectors:
            counts = RatingCounts((v[4], v[5], v[6], v[7], v[8]))
            if not counts.total:
                continue
            overall += counts
            if primary_model:
                by_model[primary_model] = by_model.get(primary_model, RatingCounts()) + counts
            if domain:
                by_domain[domain] = by_domain.get(domain, RatingCounts()) + counts
        by_day = {
            day_name(day): RatingCounts((v[2], v[3], v[4], v[5], v[6]))
            for day, v in sorted((await self._per_day(scope)).items())
            if any(v[2:])
        }
        return SatisfactionData(
            overall=overall,
            by_model=dict(sorted(by_model.items())),
            by_domain=dict(sorted(by_domain.items())),
            by_day=by_day,
        )


async def _ingest(conn: aiosqlite.Connection, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
    """Record the new events of a batch and update the counters (inside the batch's transaction)."""
    unique: dict[tuple[str, int], EventFacts] = {}
    for event in events:
        unique.setdefault((event.session_id, event.sequence), event)
    session_ids = sorted({sid for sid, _ in unique})
    seen: set[tuple[str, int]] = set()
    states: dict[str, _SessionState] = {}
    for chunk in _chunks(session_ids):
        rows = await conn.execute_fetchall(
            f"SELECT session_id, sequence FROM events WHERE session_id IN ({_marks(chunk)})", chunk
        )
        seen.update((row[0], int(row[1])) for row in rows)
        rows = await conn.execute_fetchall(
            f"SELECT {_SESSION_STATE_COLUMNS} FROM sessions WHERE session_id IN ({_marks(chunk)})", chunk
        )
        for row in rows:
            states[row[0]] = _SessionState(
                session_id=row[0],
                tenant=row[1],
                status=int(row[2]),
                create_time_ns=int(row[3]),
                started=bool(row[4]),
                primary_model=row[5],
                primary_domain=int(row[6]),
                end_time_ns=row[7],
                final_score=row[8],
                best_model=row[9],
                calls=int(row[10]),
                failures=int(row[11]),
                usage=[int(v) for v in row[12:18]],
                shadow_state=row[18],
            )
    new = sorted((e for k, e in unique.items() if k not in seen), key=lambda e: (e.session_id, e.sequence))
    if not new:
        return IngestResult(0, len(events))

    before = {sid: (state.hour_key, state.shadow_state) for sid, state in states.items()}
    for event in new:
        state = states.get(event.session_id)
        if state is None:
            state = states[event.session_id] = _SessionState(event.session_id, tenant, event.time_ns)
        state.advance(event)
    touched = sorted({e.session_id for e in new})
    moved = [sid for sid in touched if sid in before and states[sid].hour_key != before[sid][0]]

    model_deltas: _Vectors = {}
    session_deltas: _Vectors = {}
    if moved:
        # The session's day, domain or primary model changed: take its figures out of the old keys now
        # (the session rows still hold the old keys) and put them all back under the new keys below.
        for chunk in _chunks(moved):
            where = f"s.session_id IN ({_marks(chunk)})"
            _merge_into(model_deltas, await _raw_model_vectors(conn, where, chunk), -1, _MODEL_WIDTH)
            _merge_into(session_deltas, await _raw_session_vectors(conn, where, chunk), -1, _SESSION_WIDTH)

    # Shadow outcomes of sessions with new round-1 critiques: the stored ones plus the new ones.
    judged = sorted({e.session_id for e in new if e.critique is not None and e.critique.round == 1})
    round1: dict[str, list[tuple[str, str, bool, int]]] = {sid: [] for sid in judged}
    for chunk in _chunks(judged):
        rows = await conn.execute_fetchall(
            f"""SELECT session_id, critic_model, author_model, shadow, score_milli FROM critiques
                WHERE round = 1 AND session_id IN ({_marks(chunk)})""",
            chunk,
        )
        for row in rows:
            round1[row[0]].append((row[1], row[2], bool(row[3]), int(row[4])))
    for event in new:
        k = event.critique
        if k is not None and k.round == 1:
            round1[event.session_id].append((k.critic_model, k.author_model, k.shadow, score_milli(k.score)))
    for sid in judged:
        states[sid].shadow_state = _shadow_int(shadow_outcome(round1[sid]))

    await conn.executemany(_UPSERT_SESSION, [states[sid].row() for sid in touched])
    await conn.executemany(
        "INSERT INTO events (session_id, sequence, kind, time_ns) VALUES (?, ?, ?, ?)",
        [(e.session_id, e.sequence, e.kind, e.time_ns) for e in new],
    )
    call_rows = []
    critique_rows = []
    moved_set = set(moved)
    for event in new:
        state = states[event.session_id]
        tenant_, hour, _, domain = state.hour_key
        call = event.call
        if call is not None:
            call_rows.append(
                (
                    event.session_id,
                    event.sequence,
                    event.time_ns,
                    call.model,
                    call.purpose,
                    int(call.shadow),
                    call.round,
                    int(call.success),
                    call.failure_kind,
                    *_usage_values(call.usage),
                    call.latency_ns,
                    call.ttft_ns,
                    histogram_bucket(call.latency_ns),
                    None if call.ttft_ns is None else histogram_bucket(call.ttft_ns),
                )
            )
            if event.session_id not in moved_set:
                _add_call(_model_vector(model_deltas, (tenant_, hour, call.model, domain)), call)
        k = event.critique
        if k is not None:
            milli = score_milli(k.score)
            critique_rows.append(
                (
                    event.session_id,
                    event.sequence,
                    k.round,
                    k.critic_model,
                    k.author_model,
                    k.score,
                    int(k.shadow),
                    milli,
                )
            )
            if event.session_id not in moved_set:
                received = _model_vector(model_deltas, (tenant_, hour, k.author_model, domain))
                received[_I_RECV_N] += 1
                received[_I_RECV_MILLI] += milli
                given = _model_vector(model_deltas, (tenant_, hour, k.critic_model, domain))
                given[_I_GIVEN_N] += 1
                given[_I_GIVEN_MILLI] += milli
    if call_rows:
        await conn.executemany(_INSERT_CALL, call_rows)
    if critique_rows:
        await conn.executemany(_INSERT_CRITIQUE, critique_rows)
    for sid in judged:
        if sid in moved_set:
            continue
        old = before[sid][1] if sid in before else None
        vector = _session_vector(session_deltas, states[sid].hour_key)
        _add_shadow(vector, old, -1)
        _add_shadow(vector, states[sid].shadow_state, 1)
    if moved:
        for chunk in _chunks(moved):
            where = f"s.session_id IN ({_marks(chunk)})"
            _merge_into(model_deltas, await _raw_model_vectors(conn, where, chunk), 1, _MODEL_WIDTH)
            _merge_into(session_deltas, await _raw_session_vectors(conn, where, chunk), 1, _SESSION_WIDTH)
    await _flush(conn, model_deltas, session_deltas)
    return IngestResult(len(new), len(events) - len(new))


async def _rebuild_counters_if_stale(db: SqliteDatabase) -> None:
    """Fill the derived columns and rebuild every counter from the raw facts when they are stale.

    Runs after the migration to version 2 (and whenever COUNTERS_VERSION changes), in one transaction.
    """
    rows = list(await db.writer.execute_fetchall("SELECT value FROM meta WHERE key = 'counters'"))
    if rows and int(rows[0][0]) == COUNTERS_VERSION:
        return
    async with db.transaction() as conn:
        calls = await conn.execute_fetchall("SELECT session_id, sequence, latency_ns, ttft_ns FROM calls")
        await conn.executemany(
            "UPDATE calls SET lat_bucket = ?, ttft_bucket = ? WHERE session_id = ? AND sequence = ?",
            [
                (histogram_bucket(int(r[2])), None if r[3] is None else histogram_bucket(int(r[3])), r[0], r[1])
                for r in calls
            ],
        )
        critiques = await conn.execute_fetchall("SELECT session_id, sequence, score FROM critiques")
        await conn.executemany(
            "UPDATE critiques SET score_milli = ? WHERE session_id = ? AND sequence = ?",
            [(score_milli(float(r[2])), r[0], r[1]) for r in critiques],
        )
        round1: dict[str, list[tuple[str, str, bool, int]]] = {}
        for row in await conn.execute_fetchall(
            "SELECT session_id, critic_model, author_model, shadow, score_milli FROM critiques WHERE round = 1"
        ):
            round1.setdefault(row[0], []).append((row[1], row[2], bool(row[3]), int(row[4])))
        await conn.execute("UPDATE sessions SET shadow_state = NULL")
        await conn.executemany(
            "UPDATE sessions SET shadow_state = ? WHERE session_id = ?",
            [(_shadow_int(shadow_outcome(scores)), sid) for sid, scores in round1.items()],
        )
        for table in ("model_counters", "session_counters", "day_counters"):
            await conn.execute(f"DELETE FROM {table}")
        await _flush(conn, await _raw_model_vectors(conn, "1 = 1", []), await _raw_session_vectors(conn, "1 = 1", []))
        await conn.execute(
            """INSERT INTO meta (key, value) VALUES ('counters', ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (COUNTERS_VERSION,),
        )
    log.info("analytics counters rebuilt from the raw facts (version %d)", COUNTERS_VERSION)
