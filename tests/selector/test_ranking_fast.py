"""The speed-ups of select() and selection_to_proto() must not change answers.

A plain reference implementation (the code before the speed-ups: one frozen record per model, helper
calls, nested messages) is compared with the fast path on random catalogues, preferences, histories,
domain mixes and Thompson samples: same candidates, reasons, critics, warnings, errors, the same
serialized response, and the same random-number draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pytest

from orchestratex.domains import DOMAINS
from orchestratex.errors import FailedPrecondition, InvalidArgument
from orchestratex.v1 import common_pb2, selector_pb2
from services.selector import ranking
from services.selector.analysis import PromptAnalysis
from services.selector.convert import _domain, analysis_to_proto, opinion_to_proto, selection_to_proto
from services.selector.learning import Belief, Evidence, QualityModel, _posterior
from services.selector.ranking import (
    COST_REFERENCE_USD,
    DEFAULT_TOKENS_PER_SECOND,
    DEFAULT_TTFT_S,
    NEUTRAL_SPECIALTY,
    QUALITY_SPAN,
    Circuit,
    ModelEntry,
    Preferences,
    Selection,
    format_usd,
    select,
)
from services.selector.second_opinion import Opinion
from tests.selector.conftest import analysis_for, entry

# --------------------------------------------------------------------------------------------------
# The reference: straightforward code, as select() was written before it was made fast.


@dataclass(frozen=True)
class _Row:
    model: ModelEntry
    cost: float
    latency: float
    specialty: float
    mean: float
    sd: float
    measured: bool


def _ref_blend(
    qm: QualityModel, model: ModelEntry, probabilities: Mapping[str, float], history: Mapping[Any, Evidence] | None
) -> Belief:
    mean = var = mass = 0.0
    samples = 0
    neutral = min(1.0, max(0.0, NEUTRAL_SPECIALTY))
    for domain, p in probabilities.items():
        if p < 0.01:
            continue
        mass += p
        prior = min(1.0, max(0.0, model.clamped_specialties.get(domain, neutral)))
        evidence = history.get((model.id, domain)) if history else None
        if evidence is None:
            mean += p * prior
            var += (p * qm.prior_sd) ** 2
            continue
        b = _posterior(prior, evidence.mean_quality, evidence.samples, evidence.success_rate, qm.prior_sd, qm.obs_sd)
        mean += p * b.mean
        var += (p * b.sd) ** 2
        samples += b.samples
    if mass <= 0:
        return Belief(neutral, qm.prior_sd, 0)
    return Belief(mean / mass, math.sqrt(var) / mass, samples)


def _ref_dense_ranks(keys: Sequence[float]) -> list[int]:
    order = {k: i + 1 for i, k in enumerate(sorted(set(keys)))}
    return [order[k] for k in keys]


def _ref_ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ref_usd(amount: float) -> str:
    if amount <= 0:
        return "$0"
    decimals = 2 if amount >= 1 else min(8, 1 - math.floor(math.log10(amount)))
    return f"${amount:,.{decimals}f}"


def _ref_scores(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    span = high - low
    if span <= 1e-12 * max(1.0, abs(high)):
        return [1.0] * len(values)
    return [(high - v) / span for v in values]


def _ref_clamp(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else NEUTRAL_SPECIALTY


def _ref_critics(candidates: list[ranking.Candidate], primary_family: str, count: int) -> list[str]:
    def family(c: ranking.Candidate) -> str:
        return c.family or c.model

    pool = sorted(candidates, key=lambda c: (-c.quality, c.estimated_cost_usd, c.model))
    used = {primary_family} if primary_family else set()
    chosen: list[str] = []
    while pool and len(chosen) < count:
        pick = next((c for c in pool if family(c) not in used), None)
        if pick is None:
            pick = next((c for c in pool if family(c) != primary_family), pool[0])
        chosen.append(pick.model)
        used.add(family(pick))
        pool.remove(pick)
    return chosen


def _ref_select(
    analysis: PromptAnalysis,
    catalogue: Sequence[ModelEntry],
    preferences: Preferences | None,
    critic_count: int,
    history: Mapping[Any, Evidence] | None,
    qm: QualityModel,
    rng: random.Random | None,
) -> Selection:
    preferences = preferences or Preferences()
    weights = ranking.validate_preferences(preferences)
    ranking.validate_critic_count(critic_count)
    if preferences.pinned_model or preferences.allowed_models or preferences.excluded_models:
        ranking.check_model_ids(preferences, {m.id for m in catalogue})
    input_tokens = analysis.estimated_prompt_tokens + analysis.context_tokens
    output_tokens = analysis.expected_output_tokens
    rows: list[_Row] = []
    dropped: list[ranking.Dropped] = []
    for model in catalogue:
        cost = (input_tokens * model.input_price_per_mtok + output_tokens * model.output_price_per_mtok) / 1e6
        reason = ranking._drop_reason(model, analysis, preferences, cost)
        if reason:
            dropped.append(ranking.Dropped(model.id, reason))
            continue
        ttft = model.typical_ttft_s if model.typical_ttft_s > 0 else DEFAULT_TTFT_S
        speed = model.tokens_per_second if model.tokens_per_second > 0 else DEFAULT_TOKENS_PER_SECOND
        b = _ref_blend(qm, model, analysis.probabilities, history)
        stats = history.get((model.id, analysis.primary_domain)) if history is not None else None
        specialty = sum(
            p * model.clamped_specialties.get(d, NEUTRAL_SPECIALTY) for d, p in analysis.probabilities.items() if p
        )
        measured = stats is not None and stats.samples > 0
        rows.append(_Row(model, cost, ttft + output_tokens / speed, specialty, b.mean, b.sd, measured))
    pinned = preferences.pinned_model
    if pinned and pinned not in {r.model.id for r in rows}:
        why = next(d.reason for d in dropped if d.model == pinned)
        raise FailedPrecondition(f"preferences.pinned_model {pinned!r} cannot be used: {why}")
    if not rows:
        if not dropped:
            raise FailedPrecondition("no eligible model: the model catalogue is empty")
        raise FailedPrecondition(
            "no eligible model for this prompt: " + ranking._listing([f"{d.model} ({d.reason})" for d in dropped], "; ")
        )
    explore = rng is not None and qm.exploration != 0
    bonuses = [qm.exploration * r.sd * rng.gauss(0.0, 1.0) if explore and rng else 0.0 for r in rows]

    qualities = [_ref_clamp(r.mean + b) for r, b in zip(rows, bonuses, strict=True)]
    best = max(qualities)
    relative = [max(0.0, 1.0 - (best - q) / QUALITY_SPAN) for q in qualities]
    cost_scores = _ref_scores([math.log1p(r.cost / COST_REFERENCE_USD) for r in rows])
    latency_scores = _ref_scores([r.latency for r in rows])
    total = weights.quality + weights.cost + weights.latency
    table = []
    for r, quality, q, c, lat, bonus in zip(
        rows, qualities, relative, cost_scores, latency_scores, bonuses, strict=True
    ):
        score = (weights.quality * q + weights.cost * c + weights.latency * lat) / total
        table.append((r, quality, score, ranking.Breakdown(r.specialty, r.mean, c, lat, bonus)))
    table.sort(key=lambda t: (-t[2], t[0].cost, t[0].model.id))
    quality_rank = _ref_dense_ranks([-round(t[1], 6) for t in table])
    cost_rank = _ref_dense_ranks([round(t[0].cost, 9) for t in table])
    latency_rank = _ref_dense_ranks([round(t[0].latency, 3) for t in table])
    domain = analysis.primary_domain
    candidates = []
    for i, (r, quality, score, breakdown) in enumerate(table):
        basis = "measured quality" if r.measured else "specialty"
        estimate = f"at {_ref_usd(r.cost)} estimated and ~{r.latency:.1f} s"
        if len(table) == 1:
            sentence = f"Only eligible model: {basis} for {domain} {quality:.2f} {estimate}."
        else:
            best_ = "Best" if quality_rank[i] == 1 else f"{_ref_ordinal(quality_rank[i])}-best"
            cheap = "cheapest" if cost_rank[i] == 1 else f"{_ref_ordinal(cost_rank[i])} cheapest"
            fast = "fastest" if latency_rank[i] == 1 else f"{_ref_ordinal(latency_rank[i])} fastest"
            sentence = f"{best_} {basis} for {domain} ({quality:.2f}) {estimate}; {cheap}, {fast}."
        is_pinned = r.model.id == pinned
        reason = f"Pinned by the caller; {sentence[0].lower()}{sentence[1:]}" if is_pinned else sentence
        candidates.append(
            ranking.Candidate(
                model=r.model.id,
                family=r.model.family,
                score=score,
                rank=i + 1,
                reason=reason,
                breakdown=breakdown,
                quality=quality,
                estimated_cost_usd=r.cost,
                estimated_latency_s=r.latency,
                pinned=is_pinned,
            )
        )
    primary = pinned or candidates[0].model
    by_id = {c.model: c for c in candidates}
    critics = _ref_critics([c for c in candidates if c.model != primary], by_id[primary].family, critic_count)
    warnings = []
    if analysis.confidence < ranking.LOW_CONFIDENCE:
        warnings.append(
            f"domain is uncertain ({analysis.primary_domain} at {analysis.confidence:.0%}): the ranking blends"
            " the likely domains"
        )
    if len(critics) < critic_count:
        warnings.append(f"only {len(critics)} critic(s) available; {critic_count} requested")
    family = by_id[primary].family
    if critics and family and all(by_id[m].family == family for m in critics):
        warnings.append(f"every critic is from the primary's family ({family}); judges tend to favour their own family")
    circuits = {m.id: m.circuit for m in catalogue}
    for model_id in [primary, *critics]:
        if circuits.get(model_id) is Circuit.HALF_OPEN:
            warnings.append(f"{model_id} is recovering from failures (circuit half-open)")
    return Selection(analysis, tuple(candidates), primary, tuple(critics), tuple(dropped), tuple(warnings), weights)


def _ref_analysis_proto(a: PromptAnalysis, opinion: Opinion | None = None) -> selector_pb2.PromptAnalysis:
    return selector_pb2.PromptAnalysis(
        domain_probabilities=[
            common_pb2.DomainScore(domain=_domain(name), score=p, reason=a.reasons.get(name, ""))
            for name, p in a.probabilities.items()
        ],
        primary_domain=_domain(a.primary_domain),
        confidence=a.confidence,
        estimated_prompt_tokens=a.estimated_prompt_tokens,
        needs_long_context=a.needs_long_context,
        models_too_small=list(a.models_too_small),
        language=a.language,
        has_code=a.has_code,
        has_data=a.has_data,
        classifier_version=a.classifier_version,
        second_opinion=opinion_to_proto(opinion) if opinion is not None else None,
    )


def _ref_proto(
    selection: Selection, extra: Sequence[str], opinion: Opinion | None = None
) -> selector_pb2.SelectModelsResponse:
    analysis = _ref_analysis_proto(selection.analysis, opinion)
    return selector_pb2.SelectModelsResponse(
        analysis=analysis,
        candidates=[
            selector_pb2.Candidate(
                model=c.model,
                score=c.score,
                breakdown=selector_pb2.ScoreBreakdown(
                    specialty=c.breakdown.specialty,
                    history=c.breakdown.history,
                    cost=c.breakdown.cost,
                    latency=c.breakdown.latency,
                    exploration=c.breakdown.exploration,
                ),
                reason=c.reason,
                estimated_cost_usd=c.estimated_cost_usd,
                rank=c.rank,
                family=c.family,
            )
            for c in selection.candidates
        ],
        primary_model=selection.primary_model,
        critic_models=list(selection.critic_models),
        dropped=[selector_pb2.DroppedModel(model=d.model, reason=d.reason) for d in selection.dropped],
        warnings=[*extra, *selection.warnings],
    )


# --------------------------------------------------------------------------------------------------
# Random inputs


def _random_catalogue(rng: random.Random) -> list[ModelEntry]:
    families = ["acme", "bolt", "cedar", "dune", ""]
    models = []
    for i in range(rng.choice([1, 2, 3, 5, 6, 8])):
        scored = rng.sample(DOMAINS, rng.randint(0, len(DOMAINS)))
        price = rng.choice([0.0, 0.05, 0.1, 1.0, 3.0, 15.0, rng.uniform(0.01, 20)])
        models.append(
            entry(
                f"m{i}/{rng.randint(0, 99)}",
                rng.choice(families),
                context=rng.choice([0, 4_000, 32_000, 200_000]),
                input_price=price,
                output_price=rng.choice([price, price * 4, rng.uniform(0, 60)]),
                specialties={d: rng.choice([rng.random(), 1.2, -0.1, 0.5]) for d in scored},
                base=rng.choice([0.5, 0.6, rng.random()]),
                ttft=rng.choice([0.0, 0.4, rng.uniform(0.1, 4)]),
                tps=rng.choice([0.0, 50.0, rng.uniform(10, 300)]),
                circuit=rng.choice([Circuit.CLOSED] * 6 + [Circuit.OPEN, Circuit.HALF_OPEN, Circuit.UNKNOWN]),
                cooldown=rng.choice([0.0, 2.5]),
            )
        )
    if len(models) > 1 and rng.random() < 0.2:  # a twin: equal prices and speed, so ranks tie
        models[1] = replace(models[0], id=models[1].id, family=models[1].family)
    return models


def _random_probabilities(rng: random.Random) -> dict[str, float]:
    kind = rng.random()
    if kind < 0.4:  # sure of one domain, like most real prompts
        top = rng.choice(DOMAINS)
        raw = {d: 1.0 if d == top else rng.random() * 1e-4 for d in DOMAINS}
    elif kind < 0.7:
        raw = {d: rng.random() for d in DOMAINS}
    elif kind < 0.8:
        raw = {d: rng.choice([0.0, rng.random()]) for d in DOMAINS}
    elif kind < 0.9:  # not in the usual order, or only some domains
        raw = {d: rng.random() for d in rng.sample(DOMAINS, rng.randint(1, len(DOMAINS)))}
    else:
        raw = {d: 0.005 for d in DOMAINS}  # every domain negligible
    total = sum(raw.values()) or 1.0
    return {d: p / total for d, p in raw.items()}


def _random_analysis(rng: random.Random) -> PromptAnalysis:
    probabilities = _random_probabilities(rng)
    primary = max(probabilities, key=lambda d: probabilities[d])
    base = analysis_for(
        primary,
        prompt_tokens=rng.choice([1, 12, 300, 5_000, 150_000]),
        output_tokens=rng.choice([0, 64, 900]),
        context_tokens=rng.choice([0, 0, 2_000]),
    )
    return replace(
        base,
        probabilities=probabilities,
        confidence=probabilities[primary],
        reasons={primary: "rules: test"} if rng.random() < 0.5 else {},
    )


def _random_preferences(rng: random.Random, ids: list[str]) -> Preferences | None:
    kind = rng.randint(0, 7)
    if kind == 0:
        return None
    if kind == 1:
        return Preferences(quality_weight=rng.random(), cost_weight=rng.choice([None, 2.0]), latency_weight=0.5)
    if kind == 2:
        return Preferences(max_cost_usd=rng.choice([0.0, 1e-4, 1e-2]))
    if kind == 3:
        return Preferences(excluded_models=tuple(rng.sample(ids, rng.randint(0, len(ids)))))
    if kind == 4:
        return Preferences(allowed_models=tuple(rng.sample(ids, rng.randint(1, len(ids)))))
    if kind == 5:
        return Preferences(pinned_model=rng.choice(ids))
    if kind == 6:
        return Preferences(quality_weight=0.0, cost_weight=0.0, latency_weight=0.0)  # invalid
    return Preferences()


def _random_history(rng: random.Random, models: list[ModelEntry]) -> dict[tuple[str, str], Evidence] | None:
    if rng.random() < 0.3:
        return None
    return {
        (m.id, d): Evidence(rng.random(), rng.choice([0, 1, 5, 300]), rng.choice([1.0, 0.5]))
        for m in models
        for d in DOMAINS
        if rng.random() < 0.6
    }


def _outcome(run: Callable[[], Selection]) -> tuple[Any, ...]:
    try:
        return ("ok", run())
    except (FailedPrecondition, InvalidArgument) as exc:
        return ("error", type(exc).__name__, str(exc))


# --------------------------------------------------------------------------------------------------
# Tests


def test_select_and_response_match_the_reference_implementation() -> None:
    rng = random.Random(20240611)
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    for case in range(1500):
        models = _random_catalogue(rng)
        analysis = _random_analysis(rng)
        preferences = _random_preferences(rng, [m.id for m in models])
        history = _random_history(rng, models)
        qm = QualityModel(exploration=rng.choice([0.0, 1.0, 2.5]), prior_sd=rng.choice([0.1, 0.2]))
        seed = rng.choice([None, case])
        critics = rng.randint(0, 5)
        fast_rng = random.Random(seed) if seed is not None else None
        ref_rng = random.Random(seed) if seed is not None else None

        fast = _outcome(
            partial(
                select,
                analysis,
                models,
                preferences,
                critic_count=critics,
                history=history,
                quality_model=qm,
                rng=fast_rng,
            )
        )
        ref = _outcome(partial(_ref_select, analysis, models, preferences, critics, history, qm, ref_rng))
        assert fast[0] == ref[0], case
        outcomes[fast[0]] += 1
        if fast[0] == "error":
            assert fast == ref, case
            continue
        assert fast[1] == ref[1], case  # every field, reasons included, exactly
        extra = ["history is stale"] if case % 2 else []
        assert selection_to_proto(fast[1], extra).SerializeToString(deterministic=True) == (
            _ref_proto(ref[1], extra).SerializeToString(deterministic=True)
        ), case
        if seed is not None:  # the same draws, in the same order
            assert fast_rng is not None and ref_rng is not None
            assert fast_rng.getstate() == ref_rng.getstate(), case
    assert outcomes["ok"] > 800 and outcomes["error"] > 100  # both paths exercised


def test_blend_matches_the_reference_for_unclamped_priors() -> None:
    rng = random.Random(7)
    qm = QualityModel(prior_sd=0.15, obs_sd=0.2)
    for _ in range(500):
        priors = {d: rng.choice([rng.random(), 1.5, -0.2]) for d in rng.sample(DOMAINS, 5)}
        model = replace(entry("m", "f"), specialties=priors)
        probabilities = _random_probabilities(rng)
        history = {("m", d): Evidence(rng.random(), rng.randint(0, 9)) for d in DOMAINS if rng.random() < 0.5}
        got = qm.blend("m", probabilities, priors, history, NEUTRAL_SPECIALTY)
        assert got == _ref_blend(qm, model, probabilities, history)
    # Nothing likely enough: the neutral value exactly as given.
    assert qm.blend("m", {"coding": 0.001}, {}, None, 0.7) == Belief(0.7, 0.15, 0)


def test_dense_ranks_match_rounding_then_ranking() -> None:
    rng = random.Random(3)
    cases: list[list[float]] = [
        [0.1234565, 0.1234575, 0.1234585, 0.12345650000000001],  # rounding midpoints at 6 digits
        [0.0, -0.0, 1e-7, -1e-7, 4e-7, 6e-7],
        [5e-4, 1.5e-3, 2.5e-3, 2.4999999999e-3],
        [1e7, 1e7 + 1e-3, 2.0],  # beyond the range where neighbours are settled without round()
        [math.inf, 1.0, 2.0],
        [math.nan, 1.0, 1.0],
        [0.5],
    ]
    for _ in range(3000):
        scale = rng.choice([1e-9, 1e-6, 1e-3, 1.0, 100.0])
        cases.append([round(rng.random() * 10, rng.randint(0, 4)) * scale for _ in range(rng.randint(1, 8))])
        cases.append([rng.random() * scale for _ in range(rng.randint(1, 8))])
    for values in cases:
        for digits in (3, 6, 9):
            got = ranking._dense_ranks(values, digits)
            if any(math.isnan(v) for v in values):
                assert len(got) == len(values)  # NaN never equals itself: only the shape is defined
                continue
            assert got == _ref_dense_ranks([round(v, digits) for v in values]), (values, digits)


def test_format_usd_matches_the_plain_formula() -> None:
    rng = random.Random(5)
    values = [0.0, -1.0, 1e-12, 1e-9, 1.0, 0.999, 0.9999999, 999.995, 1234.5, 1e6, math.inf]
    values += [10 ** rng.uniform(-10, 5) for _ in range(20_000)]
    values += [10.0**k * (1 + e) for k in range(-9, 2) for e in (-2.2e-16, 0.0, 2.2e-16, -1e-12, 1e-12)]
    for value in values:
        assert format_usd(value) == _ref_usd(value), value


def test_analysis_and_a_second_opinion_convert_as_before() -> None:
    analysis = replace(analysis_for("math"), reasons={"math": "rules: an equation"}, models_too_small=("a/b",))
    opinion = Opinion(
        model="cheap/judge",
        domain="coding",
        applied=True,
        classifier_domain="math",
        classifier_confidence=0.4,
        latency_s=0.25,
        usage=common_pb2.Usage(prompt_tokens=12, completion_tokens=3),
    )
    message = analysis_to_proto(analysis, opinion)
    assert message.second_opinion.model == "cheap/judge"
    assert message.domain_probabilities[1].reason == "rules: an equation"
    assert message.SerializeToString(deterministic=True) == (
        _ref_analysis_proto(analysis, opinion).SerializeToString(deterministic=True)
    )
    selection = select(analysis, [entry("a/b", "a"), entry("c/d", "c")])
    assert selection_to_proto(selection, ["w"], opinion).SerializeToString(deterministic=True) == (
        _ref_proto(selection, ["w"], opinion).SerializeToString(deterministic=True)
    )


@pytest.mark.parametrize("domain", ["coding", "Coding", "unspecified"])
def test_domain_names_outside_the_nine_still_convert(domain: str) -> None:
    analysis = replace(analysis_for("coding"), probabilities={domain: 1.0})
    assert analysis_to_proto(analysis).domain_probabilities[0].domain == _domain(domain)
    with pytest.raises(ValueError):
        analysis_to_proto(replace(analysis, probabilities={"astrology": 1.0}))


def test_derived_model_values_follow_the_catalogue_fields() -> None:
    unknown = entry("a/x", "a", ttft=0.0, tps=0.0)
    assert (unknown.ttft_or_default_s, unknown.tokens_per_second_or_default) == (
        DEFAULT_TTFT_S,
        DEFAULT_TOKENS_PER_SECOND,
    )
    known = replace(unknown, typical_ttft_s=0.5, tokens_per_second=80.0, specialties={"coding": 1.4})
    assert (known.ttft_or_default_s, known.tokens_per_second_or_default) == (0.5, 80.0)
    assert known.prior_vector == tuple(1.0 if d == "coding" else NEUTRAL_SPECIALTY for d in DOMAINS)
