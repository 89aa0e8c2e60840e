"""The analytics counters, for every backend: named counter values, their storage columns, raw facts to
counter rows, and counter rows to reports.

Three counter tables, each row keyed by a block of :mod:`.buckets` (``level``, ``unit``) and a tenant:

* :class:`ModelCounters` per :class:`ModelKey` ``(level, unit, tenant, model, domain)``;
* :class:`SessionCounters` per :class:`SessionKey` ``(level, unit, tenant, primary_model, domain)``;
* :class:`DayCounters` per :class:`DayKey` ``(level, unit, tenant)``, at :data:`.buckets.DAY_LEVELS` only.

:class:`CounterRows` gathers rows of the three. A session's figures are first counted as **hour rows**
(level 1, the session's own tenant: :meth:`CounterRows.count_session` and friends), which is also how the
raw facts of a report's partial hours are counted (:func:`tally`); :meth:`CounterRows.rolled_up` then adds
each hour row to the blocks of every level and to :data:`.buckets.ALL_TENANTS`, which is what a backend
writes. A backend stores each counter under its column name (:data:`MODEL_COLUMNS`, :data:`SESSION_COLUMNS`,
:data:`DAY_COLUMNS`; the names the frozen SQLite migration 2 created), converted by ``columns()`` (or
``values()``, in the order of those names) and ``from_columns()``.

Reports: a backend implements :class:`CounterReader` (sum its counter rows over runs of blocks, list the
sessions created in a partial hour with their raw facts), and :func:`performance`, :func:`cost_summary`,
:func:`selection_accuracy` and :func:`satisfaction` make the report from them; :class:`CounterReports` is
the read side of an :class:`~.model.AnalyticsStore` made of them.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol, TypeVar

from services.analytics.store.buckets import (
    DAY_LEVELS,
    HOURS_PER_DAY,
    LEVELS,
    Run,
    blocks,
    cover,
    hour_of,
    owners,
)
from services.analytics.store.model import (
    FAILURE_KINDS,
    HIST_BUCKETS,
    USAGE_NAMES,
    AccuracySummary,
    AnalyticsStore,
    CallFact,
    CostSummary,
    CritiqueFact,
    DayCostRow,
    ModelCostRow,
    PerfRow,
    Proportion,
    RatingCounts,
    SatisfactionData,
    Scope,
    SessionCostRow,
    SessionFacts,
    SessionInfo,
    SessionState,
    TokenUsage,
    day_name,
    failure_slot,
    feedback_hit,
    histogram_bucket,
    score_milli,
    usage_values,
)

#: Counters are rebuilt from the raw facts when a store's recorded counters version differs from this one
#: (bump it when what is counted changes; the raw facts are the source of truth).
COUNTERS_VERSION = 1

_FAIL_COLUMNS = tuple(f"fail_{k}" for k in FAILURE_KINDS)
_LAT_COLUMNS = tuple(f"lat_{i}" for i in range(HIST_BUCKETS))
_TTFT_COLUMNS = tuple(f"ttft_{i}" for i in range(HIST_BUCKETS))
_RATING_COLUMNS = ("r_1", "r_2", "r_3", "r_4", "r_5")

#: Storage names of the model counters, in the order of the ``model_counters`` table's columns.
MODEL_COLUMNS: tuple[str, ...] = (
    "attempts",
    "successes",
    *_FAIL_COLUMNS,
    *USAGE_NAMES,
    *_LAT_COLUMNS,
    *_TTFT_COLUMNS,
    "recv_n",
    "recv_milli",
    "given_n",
    "given_milli",
)
_AT = {name: i for i, name in enumerate(MODEL_COLUMNS)}
#: The model counters the cost report reads.
COST_COLUMNS: tuple[str, ...] = ("attempts", *USAGE_NAMES)
#: Storage names of the session counters.
SESSION_COLUMNS: tuple[str, ...] = ("shadow_n", "shadow_hits", "fb_n", "fb_hits", *_RATING_COLUMNS)
#: Storage names of the day counters.
DAY_COLUMNS: tuple[str, ...] = ("calls", "cost_nanos", *_RATING_COLUMNS)

_NO_FAILURES = (0,) * len(FAILURE_KINDS)
_EMPTY_HISTOGRAM = (0,) * HIST_BUCKETS


def _plus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(map(operator.add, a, b))


def _minus(a: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(map(operator.neg, a))


# One count in bucket i (histograms) or slot i (failures), made once.
_ONE_IN_BUCKET = tuple(tuple(int(i == index) for i in range(HIST_BUCKETS)) for index in range(HIST_BUCKETS))
_ONE_FAILURE = tuple(tuple(int(i == index) for i in range(len(FAILURE_KINDS))) for index in range(len(FAILURE_KINDS)))


def _usage_negated(usage: TokenUsage) -> TokenUsage:
    return TokenUsage(*(-value for value in usage_values(usage)))


def _ratings_from(values: Mapping[str, int]) -> RatingCounts:
    r1, r2, r3, r4, r5 = (int(values.get(name, 0)) for name in _RATING_COLUMNS)
    return RatingCounts((r1, r2, r3, r4, r5))


@dataclass(frozen=True, slots=True)
class ModelCounters:
    """What is counted for one model in one block, tenant and domain.

    ``failures`` has one count per ``FailureKind`` value (index 0: unclassified, see
    :func:`~.model.failure_slot`); ``latency`` and ``ttft`` are histograms of successful calls
    (:data:`~.model.HIST_BUCKETS` buckets, :func:`~.model.histogram_bucket`).
    """

    attempts: int = 0
    successes: int = 0
    failures: tuple[int, ...] = _NO_FAILURES
    usage: TokenUsage = field(default_factory=TokenUsage)
    latency: tuple[int, ...] = _EMPTY_HISTOGRAM
    ttft: tuple[int, ...] = _EMPTY_HISTOGRAM
    critiques_received: int = 0
    score_received_milli: int = 0
    critiques_given: int = 0
    score_given_milli: int = 0

    @classmethod
    def of_call(cls, call: CallFact) -> ModelCounters:
        """One provider call (histograms for successful calls only; usage for every call)."""
        if not call.success:
            return cls(attempts=1, failures=_ONE_FAILURE[failure_slot(call.failure_kind)], usage=call.usage)
        return cls(
            attempts=1,
            successes=1,
            usage=call.usage,
            latency=_ONE_IN_BUCKET[histogram_bucket(call.latency_ns)],
            ttft=_EMPTY_HISTOGRAM if call.ttft_ns is None else _ONE_IN_BUCKET[histogram_bucket(call.ttft_ns)],
        )

    def __add__(self, other: ModelCounters) -> ModelCounters:
        return ModelCounters(
            attempts=self.attempts + other.attempts,
            successes=self.successes + other.successes,
            failures=_plus(self.failures, other.failures),
            usage=self.usage + other.usage,
            latency=_plus(self.latency, other.latency),
            ttft=_plus(self.ttft, other.ttft),
            critiques_received=self.critiques_received + other.critiques_received,
            score_received_milli=self.score_received_milli + other.score_received_milli,
            critiques_given=self.critiques_given + other.critiques_given,
            score_given_milli=self.score_given_milli + other.score_given_milli,
        )

    def __neg__(self) -> ModelCounters:
        return ModelCounters(
            attempts=-self.attempts,
            successes=-self.successes,
            failures=_minus(self.failures),
            usage=_usage_negated(self.usage),
            latency=_minus(self.latency),
            ttft=_minus(self.ttft),
            critiques_received=-self.critiques_received,
            score_received_milli=-self.score_received_milli,
            critiques_given=-self.critiques_given,
            score_given_milli=-self.score_given_milli,
        )

    def __bool__(self) -> bool:
        """Whether any counter is non-zero."""
        return any(self.values())

    def values(self) -> tuple[int, ...]:
        """Every counter, in the order of their storage names (:data:`MODEL_COLUMNS`)."""
        return (
            self.attempts,
            self.successes,
            *self.failures,
            *usage_values(self.usage),
            *self.latency,
            *self.ttft,
            self.critiques_received,
            self.score_received_milli,
            self.critiques_given,
            self.score_given_milli,
        )

    def columns(self) -> dict[str, int]:
        """Every counter by its storage name (:data:`MODEL_COLUMNS`)."""
        return dict(zip(MODEL_COLUMNS, self.values(), strict=True))

    @classmethod
    def from_values(cls, values: Sequence[int]) -> ModelCounters:
        """The counters of :meth:`values` (in the order of :data:`MODEL_COLUMNS`)."""
        return cls(
            attempts=values[_AT["attempts"]],
            successes=values[_AT["successes"]],
            failures=tuple(values[_AT["fail_0"] : _AT["fail_0"] + len(FAILURE_KINDS)]),
            usage=TokenUsage(*values[_AT["prompt_tokens"] : _AT["prompt_tokens"] + len(USAGE_NAMES)]),
            latency=tuple(values[_AT["lat_0"] : _AT["lat_0"] + HIST_BUCKETS]),
            ttft=tuple(values[_AT["ttft_0"] : _AT["ttft_0"] + HIST_BUCKETS]),
            critiques_received=values[_AT["recv_n"]],
            score_received_milli=values[_AT["recv_milli"]],
            critiques_given=values[_AT["given_n"]],
            score_given_milli=values[_AT["given_milli"]],
        )

    @classmethod
    def from_columns(cls, values: Mapping[str, int]) -> ModelCounters:
        """The counters stored under :data:`MODEL_COLUMNS` names (a missing name counts 0)."""
        flat = [0] * len(MODEL_COLUMNS)
        for name, value in values.items():
            at = _AT.get(name)
            if at is not None and value:
                flat[at] = int(value)
        return cls.from_values(flat)

    def perf_row(self, model: str, domain: int) -> PerfRow:
        """These counters as the :class:`~.model.PerfRow` of ``model`` in ``domain``."""
        return PerfRow(
            model=model,
            domain=domain,
            attempts=self.attempts,
            successes=self.successes,
            failures={kind: n for kind, n in enumerate(self.failures) if n},
            usage=self.usage,
            latency_histogram=self.latency,
            ttft_histogram=self.ttft,
            critiques_received=self.critiques_received,
            score_received_milli=self.score_received_milli,
            critiques_given=self.critiques_given,
            score_given_milli=self.score_given_milli,
        )


@dataclass(frozen=True, slots=True)
class SessionCounters:
    """What is counted for the sessions of one primary model in one block, tenant and domain.

    ``shadow_sample``/``shadow_hits``: sessions judged by shadow evaluation and those judged right;
    ``rated``/``feedback_hits``: sessions with ratings and those whose ratings make a hit
    (:func:`~.model.feedback_hit`); ``ratings``: every rating of those sessions.
    """

    shadow_sample: int = 0
    shadow_hits: int = 0
    rated: int = 0
    feedback_hits: int = 0
    ratings: RatingCounts = field(default_factory=RatingCounts)

    @classmethod
    def of_session(cls, shadow_state: int | None, ratings: Sequence[int]) -> SessionCounters:
        """One session's outcomes: its stored shadow outcome (None: not judged) and all its ratings."""
        return cls(
            shadow_sample=0 if shadow_state is None else 1,
            shadow_hits=shadow_state or 0,
            rated=1 if ratings else 0,
            feedback_hits=int(bool(ratings) and feedback_hit(ratings)),
            ratings=RatingCounts.of(ratings),
        )

    def __add__(self, other: SessionCounters) -> SessionCounters:
        return SessionCounters(
            self.shadow_sample + other.shadow_sample,
            self.shadow_hits + other.shadow_hits,
            self.rated + other.rated,
            self.feedback_hits + other.feedback_hits,
            self.ratings + other.ratings,
        )

    def __neg__(self) -> SessionCounters:
        return SessionCounters(-self.shadow_sample, -self.shadow_hits, -self.rated, -self.feedback_hits, -self.ratings)

    def __bool__(self) -> bool:
        """Whether any counter is non-zero."""
        return any(self.values())

    def values(self) -> tuple[int, ...]:
        """Every counter, in the order of their storage names (:data:`SESSION_COLUMNS`)."""
        return (self.shadow_sample, self.shadow_hits, self.rated, self.feedback_hits, *self.ratings.counts)

    def columns(self) -> dict[str, int]:
        """Every counter by its storage name (:data:`SESSION_COLUMNS`)."""
        return dict(zip(SESSION_COLUMNS, self.values(), strict=True))

    @classmethod
    def from_columns(cls, values: Mapping[str, int]) -> SessionCounters:
        """The counters stored under :data:`SESSION_COLUMNS` names (a missing name counts 0)."""
        return cls(
            shadow_sample=int(values.get("shadow_n") or 0),
            shadow_hits=int(values.get("shadow_hits") or 0),
            rated=int(values.get("fb_n") or 0),
            feedback_hits=int(values.get("fb_hits") or 0),
            ratings=_ratings_from(values),
        )


@dataclass(frozen=True, slots=True)
class DayCounters:
    """The narrow per-block totals behind the per-day breakdowns: calls, their cost, and ratings."""

    calls: int = 0
    cost_nanos: int = 0
    ratings: RatingCounts = field(default_factory=RatingCounts)

    def __add__(self, other: DayCounters) -> DayCounters:
        return DayCounters(self.calls + other.calls, self.cost_nanos + other.cost_nanos, self.ratings + other.ratings)

    def __neg__(self) -> DayCounters:
        return DayCounters(-self.calls, -self.cost_nanos, -self.ratings)

    def __bool__(self) -> bool:
        """Whether any counter is non-zero."""
        return any(self.values())

    def values(self) -> tuple[int, ...]:
        """Every counter, in the order of their storage names (:data:`DAY_COLUMNS`)."""
        return (self.calls, self.cost_nanos, *self.ratings.counts)

    def columns(self) -> dict[str, int]:
        """Every counter by its storage name (:data:`DAY_COLUMNS`)."""
        return dict(zip(DAY_COLUMNS, self.values(), strict=True))

    @classmethod
    def from_columns(cls, values: Mapping[str, int]) -> DayCounters:
        """The counters stored under :data:`DAY_COLUMNS` names (a missing name counts 0)."""
        return cls(int(values.get("calls") or 0), int(values.get("cost_nanos") or 0), _ratings_from(values))


class ModelKey(NamedTuple):
    """Key of a model counter row (its storage key columns are these field names)."""

    level: int
    unit: int
    tenant: str
    model: str
    domain: int


class SessionKey(NamedTuple):
    """Key of a session counter row."""

    level: int
    unit: int
    tenant: str
    primary_model: str
    domain: int


class DayKey(NamedTuple):
    """Key of a day counter row."""

    level: int
    unit: int
    tenant: str


K = TypeVar("K")
V = TypeVar("V", ModelCounters, SessionCounters, DayCounters)


def _accumulate(into: dict[K, V], key: K, value: V) -> None:
    previous = into.get(key)
    into[key] = value if previous is None else previous + value


def _signed(value: V, sign: int) -> V:
    return value if sign > 0 else -value


@dataclass(slots=True)
class CounterRows:
    """Rows of the three counter tables: deltas to add (they may be negative), or counters read."""

    models: dict[ModelKey, ModelCounters] = field(default_factory=dict)
    sessions: dict[SessionKey, SessionCounters] = field(default_factory=dict)
    days: dict[DayKey, DayCounters] = field(default_factory=dict)

    def add(self, other: CounterRows) -> None:
        """Add every row of ``other`` to these."""
        for mk, mv in other.models.items():
            _accumulate(self.models, mk, mv)
        for sk, sv in other.sessions.items():
            _accumulate(self.sessions, sk, sv)
        for dk, dv in other.days.items():
            _accumulate(self.days, dk, dv)

    # ------------------------------------------------------------- counting a session's figures (hour rows)

    def count_call(self, state: SessionState, call: CallFact, sign: int = 1) -> None:
        """Add (``sign`` 1) or take out (-1) one call of the session ``state``."""
        hour = hour_of(state.create_time_ns)
        key = ModelKey(1, hour, state.tenant, call.model, state.primary_domain)
        _accumulate(self.models, key, _signed(ModelCounters.of_call(call), sign))
        _accumulate(
            self.days,
            DayKey(1, hour, state.tenant),
            _signed(DayCounters(calls=1, cost_nanos=call.usage.cost_nanos), sign),
        )

    def count_critique(self, state: SessionState, critique: CritiqueFact, sign: int = 1) -> None:
        """Add or take out one critique: received by its author, given by its critic."""
        hour = hour_of(state.create_time_ns)
        milli = score_milli(critique.score)
        received = ModelCounters(critiques_received=1, score_received_milli=milli)
        given = ModelCounters(critiques_given=1, score_given_milli=milli)
        domain = state.primary_domain
        _accumulate(
            self.models, ModelKey(1, hour, state.tenant, critique.author_model, domain), _signed(received, sign)
        )
        _accumulate(self.models, ModelKey(1, hour, state.tenant, critique.critic_model, domain), _signed(given, sign))

    def count_outcomes(self, state: SessionState, shadow_state: int | None, ratings: Sequence[int], sign: int) -> None:
        """Add or take out a session's outcomes: a shadow outcome (None: none) and a set of its ratings."""
        hour = hour_of(state.create_time_ns)
        value = SessionCounters.of_session(shadow_state, ratings)
        key = SessionKey(1, hour, state.tenant, state.primary_model, state.primary_domain)
        _accumulate(self.sessions, key, _signed(value, sign))
        if ratings:
            _accumulate(self.days, DayKey(1, hour, state.tenant), _signed(DayCounters(ratings=value.ratings), sign))

    def count_session(self, state: SessionState, facts: SessionFacts, sign: int = 1) -> None:
        """Add or take out every figure of one session: its calls, critiques, shadow outcome and ratings."""
        for call in facts.calls:
            self.count_call(state, call, sign)
        for critique in facts.critiques:
            self.count_critique(state, critique, sign)
        self.count_outcomes(state, state.shadow_state, facts.ratings, sign)

    # ------------------------------------------------------------------------------------ writing

    def rolled_up(self) -> CounterRows:
        """These hour rows added to the block of every level and under :data:`~.buckets.ALL_TENANTS` too:
        the rows a backend adds to its counters. Rows whose counters are all zero are left out."""
        out = CounterRows()
        for mk, mv in self.models.items():
            for owner in owners(mk.tenant):
                for level, unit in blocks(mk.unit, LEVELS):
                    _accumulate(out.models, ModelKey(level, unit, owner, mk.model, mk.domain), mv)
        for sk, sv in self.sessions.items():
            for owner in owners(sk.tenant):
                for level, unit in blocks(sk.unit, LEVELS):
                    _accumulate(out.sessions, SessionKey(level, unit, owner, sk.primary_model, sk.domain), sv)
        for dk, dv in self.days.items():
            for owner in owners(dk.tenant):
                for level, unit in blocks(dk.unit, DAY_LEVELS):
                    _accumulate(out.days, DayKey(level, unit, owner), dv)
        return out.nonzero()

    def nonzero(self) -> CounterRows:
        """These rows without those whose counters are all zero."""
        return CounterRows(
            {k: v for k, v in self.models.items() if v},
            {k: v for k, v in self.sessions.items() if v},
            {k: v for k, v in self.days.items() if v},
        )


def tally(sessions: Iterable[tuple[SessionState, SessionFacts]]) -> CounterRows:
    """The hour rows of sessions counted from their raw facts (what the counters hold for them)."""
    rows = CounterRows()
    for state, facts in sessions:
        rows.count_session(state, facts)
    return rows


# ------------------------------------------------------------------------------------------ reports


class CounterReader(Protocol):
    """What a backend reads for the reports (the rest is :func:`performance` and the other functions here).

    ``runs`` are blocks of the counter rows of ``counter_tenant(scope.tenant)`` (:mod:`.buckets`).
    """

    async def model_totals(
        self, scope: Scope, runs: Sequence[Run], model: str = "", columns: Sequence[str] = MODEL_COLUMNS
    ) -> Iterable[tuple[str, int, ModelCounters]]:
        """Model counters in ``runs`` summed per ``(model, domain)``: only ``model``'s when given, only
        ``scope.domain``'s when non-zero, only ``columns`` (the others may read 0)."""

    async def session_totals(self, scope: Scope, runs: Sequence[Run]) -> Iterable[tuple[str, int, SessionCounters]]:
        """Session counters in ``runs`` summed per ``(primary_model, domain)``."""

    async def day_totals(self, scope: Scope, runs: Sequence[Run]) -> Iterable[tuple[int, DayCounters]]:
        """Day counters in ``runs`` per block, by the block's ``unit`` (first hour)."""

    async def sessions_in(
        self, scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False, with_calls: bool = True
    ) -> Iterable[tuple[SessionState, SessionFacts]]:
        """The scope's sessions created in ``[start_ns, end_ns)`` (only of ``scope.domain`` when
        ``with_domain`` and it is non-zero), with their raw facts (ratings only, no calls and critiques,
        unless ``with_calls``)."""

    async def costliest(self, scope: Scope, limit: int) -> tuple[int, list[SessionCostRow]]:
        """How many sessions the scope holds, and its ``limit`` most expensive (ties by session id)."""

    async def session(self, session_id: str) -> SessionState | None:
        """The stored session, or None when it is not known."""


async def _edges(
    reader: CounterReader, scope: Scope, edges: Sequence[tuple[int, int]], *, with_domain: bool, with_calls: bool
) -> CounterRows:
    """The hour rows of the sessions created in ``edges``, from their raw facts (see ``sessions_in``)."""
    rows = CounterRows()
    for start_ns, end_ns in edges:
        sessions = await reader.sessions_in(scope, start_ns, end_ns, with_domain=with_domain, with_calls=with_calls)
        rows.add(tally(sessions))
    return rows


async def performance(reader: CounterReader, scope: Scope, model: str = "") -> list[PerfRow]:
    """See :meth:`~.model.AnalyticsStore.performance`."""
    plan = cover(scope.start_ns, scope.end_ns)
    totals: dict[tuple[str, int], ModelCounters] = {}
    if plan.runs:
        for name, domain, value in await reader.model_totals(scope, plan.runs, model):
            _accumulate(totals, (name, domain), value)
    for key, value in (await _edges(reader, scope, plan.edges, with_domain=True, with_calls=True)).models.items():
        if not model or key.model == model:
            _accumulate(totals, (key.model, key.domain), value)
    return [value.perf_row(name, domain) for (name, domain), value in sorted(totals.items()) if value]


async def cost_summary(reader: CounterReader, scope: Scope, session_limit: int) -> CostSummary:
    """See :meth:`~.model.AnalyticsStore.cost_summary`."""
    scope = replace(scope, domain=0)  # every domain
    session_count, sessions = await reader.costliest(scope, session_limit)
    plan = cover(scope.start_ns, scope.end_ns)
    day_plan = cover(scope.start_ns, scope.end_ns, DAY_LEVELS)
    per_model: dict[str, ModelCounters] = {}
    per_day: dict[int, DayCounters] = {}
    if plan.runs:
        for name, _, value in await reader.model_totals(scope, plan.runs, columns=COST_COLUMNS):
            _accumulate(per_model, name, value)
    if day_plan.runs:
        for unit, day_value in await reader.day_totals(scope, day_plan.runs):
            _accumulate(per_day, unit // HOURS_PER_DAY, day_value)
    # the same edges for both covers: each has hour blocks
    edges = await _edges(reader, scope, plan.edges, with_domain=False, with_calls=True)
    for mk, mv in edges.models.items():
        _accumulate(per_model, mk.model, mv)
    for dk, dv in edges.days.items():
        _accumulate(per_day, dk.unit // HOURS_PER_DAY, dv)
    total = sum(per_model.values(), ModelCounters())
    ranked = sorted(per_model.items(), key=lambda item: (-item[1].usage.cost_nanos, item[0]))
    return CostSummary(
        session_count=session_count,
        calls=total.attempts,
        usage=total.usage,
        sessions=sessions,
        models=[ModelCostRow(name, v.attempts, v.usage) for name, v in ranked if v.attempts or v.usage.cost_nanos],
        days=[DayCostRow(day_name(day), v.calls, v.cost_nanos) for day, v in sorted(per_day.items()) if v.calls],
    )


async def _session_rows(
    reader: CounterReader, scope: Scope, edges: CounterRows
) -> list[tuple[str, int, SessionCounters]]:
    """Session counters of the scope per ``(primary_model, domain)``: its blocks, then its ``edges``."""
    plan = cover(scope.start_ns, scope.end_ns)
    rows = list(await reader.session_totals(scope, plan.runs)) if plan.runs else []
    rows += [(key.primary_model, key.domain, value) for key, value in edges.sessions.items()]
    return rows


async def selection_accuracy(reader: CounterReader, scope: Scope) -> AccuracySummary:
    """See :meth:`~.model.AnalyticsStore.selection_accuracy`."""
    edges = await _edges(reader, scope, cover(scope.start_ns, scope.end_ns).edges, with_domain=False, with_calls=False)
    total = SessionCounters()
    by_domain: dict[int, SessionCounters] = {}
    for _, domain, value in await _session_rows(reader, scope, edges):
        total += value
        if domain:
            _accumulate(by_domain, domain, value)
    return AccuracySummary(
        shadow=Proportion(total.shadow_sample, total.shadow_hits),
        feedback=Proportion(total.rated, total.feedback_hits),
        shadow_by_domain={
            d: Proportion(v.shadow_sample, v.shadow_hits) for d, v in sorted(by_domain.items()) if v.shadow_sample
        },
    )


async def satisfaction(reader: CounterReader, scope: Scope) -> SatisfactionData:
    """See :meth:`~.model.AnalyticsStore.satisfaction`."""
    edges = await _edges(reader, scope, cover(scope.start_ns, scope.end_ns).edges, with_domain=False, with_calls=False)
    overall = RatingCounts()
    by_model: dict[str, RatingCounts] = {}
    by_domain: dict[int, RatingCounts] = {}
    for primary_model, domain, value in await _session_rows(reader, scope, edges):
        counts = value.ratings
        if not counts.total:
            continue
        overall += counts
        if primary_model:
            by_model[primary_model] = by_model.get(primary_model, RatingCounts()) + counts
        if domain:
            by_domain[domain] = by_domain.get(domain, RatingCounts()) + counts
    per_day: dict[int, DayCounters] = {}
    day_plan = cover(scope.start_ns, scope.end_ns, DAY_LEVELS)
    if day_plan.runs:
        for unit, day_value in await reader.day_totals(scope, day_plan.runs):
            _accumulate(per_day, unit // HOURS_PER_DAY, day_value)
    for dk, dv in edges.days.items():
        _accumulate(per_day, dk.unit // HOURS_PER_DAY, dv)
    return SatisfactionData(
        overall=overall,
        by_model=dict(sorted(by_model.items())),
        by_domain=dict(sorted(by_domain.items())),
        by_day={day_name(day): v.ratings for day, v in sorted(per_day.items()) if v.ratings.total},
    )


class CounterReports(AnalyticsStore):
    """The read side of a store whose reports come from counters: a backend sets ``_counters`` to its
    :class:`CounterReader` and implements the writes."""

    _counters: CounterReader

    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """See :meth:`~.model.AnalyticsStore.get_session`."""
        state = await self._counters.session(session_id)
        if state is None or (tenant and state.tenant != tenant):
            return None
        return state.info()

    async def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        """See :meth:`~.model.AnalyticsStore.performance`."""
        return await performance(self._counters, scope, model)

    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """See :meth:`~.model.AnalyticsStore.cost_summary`."""
        return await cost_summary(self._counters, scope, session_limit)

    async def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        """See :meth:`~.model.AnalyticsStore.selection_accuracy`."""
        return await selection_accuracy(self._counters, scope)

    async def satisfaction(self, scope: Scope) -> SatisfactionData:
        """See :meth:`~.model.AnalyticsStore.satisfaction`."""
        return await satisfaction(self._counters, scope)
