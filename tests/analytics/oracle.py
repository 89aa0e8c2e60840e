"""A reference model of the analytics store: keeps every raw fact in memory and aggregates on demand.

It is deliberately naive (no counters, no time blocks) and independent of the store's planner and counters
(``services.analytics.store.planner``/``counters``): it shares only the model's definitions (histogram
buckets, shadow and feedback outcomes). Comparing a real store's answers with it checks the counters, the
block/edge split and the re-attribution of sessions whose hour, day or domain changed; the planner's own
invariants are tested in ``test_planner.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.analytics.store.model import (
    HIST_BUCKETS,
    STATUS_RUNNING,
    AccuracySummary,
    CallFact,
    CostSummary,
    CritiqueFact,
    DayCostRow,
    EventFacts,
    ModelCostRow,
    PerfRow,
    Proportion,
    RatingCounts,
    SatisfactionData,
    Scope,
    SessionCostRow,
    TokenUsage,
    day_name,
    day_number,
    failure_slot,
    feedback_hit,
    histogram_bucket,
    score_milli,
    shadow_outcome,
)


@dataclass
class _Session:
    tenant: str
    create_time_ns: int
    started: bool = False
    status: int = STATUS_RUNNING
    primary_model: str = ""
    primary_domain: int = 0
    calls: list[CallFact] = field(default_factory=list)
    critiques: list[CritiqueFact] = field(default_factory=list)
    ratings: dict[str, int] = field(default_factory=dict)


@dataclass
class _Perf:
    attempts: int = 0
    successes: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    latency: list[int] = field(default_factory=lambda: [0] * HIST_BUCKETS)
    ttft: list[int] = field(default_factory=lambda: [0] * HIST_BUCKETS)
    received: int = 0
    received_milli: int = 0
    given: int = 0
    given_milli: int = 0


class Oracle:
    """Every fact in memory; reports computed from scratch."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.seen: set[tuple[str, int]] = set()

    def ingest(self, tenant: str, events: Sequence[EventFacts]) -> int:
        accepted = 0
        for event in events:
            key = (event.session_id, event.sequence)
            if key in self.seen:
                continue
            self.seen.add(key)
            accepted += 1
            s = self.sessions.setdefault(event.session_id, _Session(tenant, event.time_ns))
            if event.started:
                s.create_time_ns, s.started = event.time_ns, True
            elif not s.started:
                s.create_time_ns = min(s.create_time_ns, event.time_ns)
            if event.primary_model is not None:
                s.primary_model, s.primary_domain = event.primary_model, event.primary_domain
            if event.call is not None:
                s.calls.append(event.call)
            if event.critique is not None:
                s.critiques.append(event.critique)
            if event.end is not None:
                s.status = event.end.status
        return accepted

    def rate(self, session_id: str, user_id: str, rating: int) -> None:
        self.sessions[session_id].ratings[user_id] = rating

    def _in(self, scope: Scope) -> list[tuple[str, _Session]]:
        return sorted(
            (sid, s)
            for sid, s in self.sessions.items()
            if (not scope.tenant or s.tenant == scope.tenant) and scope.start_ns <= s.create_time_ns < scope.end_ns
        )

    def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        rows: dict[tuple[str, int], _Perf] = {}
        for _, s in self._in(scope):
            if scope.domain and s.primary_domain != scope.domain:
                continue
            for call in s.calls:
                r = rows.setdefault((call.model, s.primary_domain), _Perf())
                r.attempts += 1
                r.usage += call.usage
                if call.success:
                    r.successes += 1
                    r.latency[histogram_bucket(call.latency_ns)] += 1
                    if call.ttft_ns is not None:
                        r.ttft[histogram_bucket(call.ttft_ns)] += 1
                else:
                    kind = failure_slot(call.failure_kind)
                    r.failures[kind] = r.failures.get(kind, 0) + 1
            for k in s.critiques:
                author = rows.setdefault((k.author_model, s.primary_domain), _Perf())
                author.received += 1
                author.received_milli += score_milli(k.score)
                critic = rows.setdefault((k.critic_model, s.primary_domain), _Perf())
                critic.given += 1
                critic.given_milli += score_milli(k.score)
        return [
            PerfRow(
                model=name,
                domain=domain,
                attempts=r.attempts,
                successes=r.successes,
                failures=dict(sorted(r.failures.items())),
                usage=r.usage,
                latency_histogram=tuple(r.latency),
                ttft_histogram=tuple(r.ttft),
                critiques_received=r.received,
                score_received_milli=r.received_milli,
                critiques_given=r.given,
                score_given_milli=r.given_milli,
            )
            for (name, domain), r in sorted(rows.items())
            if not model or name == model
        ]

    def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        in_scope = self._in(scope)
        total = TokenUsage()
        calls = 0
        models: dict[str, tuple[int, TokenUsage]] = {}
        days: dict[int, tuple[int, int]] = {}
        sessions = []
        for sid, s in in_scope:
            cost = 0
            for call in s.calls:
                total += call.usage
                calls += 1
                cost += call.usage.cost_nanos
                n, u = models.get(call.model, (0, TokenUsage()))
                models[call.model] = (n + 1, u + call.usage)
                day = day_number(s.create_time_ns)
                dn, dc = days.get(day, (0, 0))
                days[day] = (dn + 1, dc + call.usage.cost_nanos)
            sessions.append(SessionCostRow(sid, len(s.calls), cost, s.create_time_ns))
        sessions.sort(key=lambda r: (-r.cost_nanos, r.session_id))
        return CostSummary(
            session_count=len(in_scope),
            calls=calls,
            usage=total,
            sessions=sessions[:session_limit],
            models=[
                ModelCostRow(m, n, u) for m, (n, u) in sorted(models.items(), key=lambda i: (-i[1][1].cost_nanos, i[0]))
            ],
            days=[DayCostRow(day_name(d), n, c) for d, (n, c) in sorted(days.items())],
        )

    def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        shadow = [0, 0]
        feedback = [0, 0]
        by_domain: dict[int, list[int]] = {}
        for _, s in self._in(scope):
            outcome = shadow_outcome(
                (k.critic_model, k.author_model, k.shadow, score_milli(k.score)) for k in s.critiques if k.round == 1
            )
            if outcome is not None:
                shadow[0] += 1
                shadow[1] += int(outcome)
                if s.primary_domain:
                    cell = by_domain.setdefault(s.primary_domain, [0, 0])
                    cell[0] += 1
                    cell[1] += int(outcome)
            if s.ratings:
                feedback[0] += 1
                feedback[1] += int(feedback_hit(list(s.ratings.values())))
        return AccuracySummary(
            Proportion(*shadow), Proportion(*feedback), {d: Proportion(*v) for d, v in sorted(by_domain.items())}
        )

    def satisfaction(self, scope: Scope) -> SatisfactionData:
        counts = RatingCounts.of
        everything: list[int] = []
        by_model: dict[str, list[int]] = {}
        by_domain: dict[int, list[int]] = {}
        by_day: dict[str, list[int]] = {}
        for _, s in sorted(self._in(scope), key=lambda item: item[1].create_time_ns):
            values = list(s.ratings.values())
            if not values:
                continue
            everything += values
            if s.primary_model:
                by_model.setdefault(s.primary_model, []).extend(values)
            if s.primary_domain:
                by_domain.setdefault(s.primary_domain, []).extend(values)
            by_day.setdefault(day_name(day_number(s.create_time_ns)), []).extend(values)
        return SatisfactionData(
            overall=counts(everything),
            by_model={k: counts(v) for k, v in sorted(by_model.items())},
            by_domain={k: counts(v) for k, v in sorted(by_domain.items())},
            by_day={k: counts(v) for k, v in sorted(by_day.items())},
        )
