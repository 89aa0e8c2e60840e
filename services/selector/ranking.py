"""Ranking: score the catalogue for an analysed prompt, drop what cannot be used, pick primary and critics.

Pure: no I/O, no gRPC. Each eligible model gets

* ``specialty`` = Σ_domain p(domain) · specialty(model, domain), the catalogue's prior;
* ``history``   = the same sum over measured quality shrunk towards the prior (equal to ``specialty``
  while no history is given);
* ``cost``      = 1 for the cheapest eligible model, 0 for the dearest (log scale, see :func:`_scores`);
* ``latency``   = 1 for the fastest, 0 for the slowest (time to first token + output / speed);
* ``exploration`` = 0 for now (a bandit will add a sampled bonus);

and ``score = (wq·Q + wc·cost + wl·latency) / (wq + wc + wl)``, where ``quality = history +
exploration`` and ``Q`` is that quality made relative like cost and latency: 1 for the best eligible
model, falling linearly to 0 at :data:`QUALITY_SPAN` below it. Without this, quality priors (typically
all within 0.6-0.95) would be outweighed by cost and latency, which always span the full 0-1 range,
and the cheapest model would win everything at the default weights. A fixed span (rather than the
eligible models' spread) keeps near-equal qualities near-equal, so cost can decide between them, and
keeps one weak model in the pool from shrinking the gaps between the strong ones.

Critics come from the other candidates, best quality first, other families than the
primary's first: judges favour answers from their own family (MT-Bench: +10 to +25 %), and debate
gains come from diverse models (Du et al., 2023).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from orchestratex.domains import DOMAINS
from orchestratex.errors import FailedPrecondition, InvalidArgument
from services.selector.analysis import PromptAnalysis, too_small
from services.selector.learning import Belief, Evidence, QualityModel

DEFAULT_CRITICS = 2
MAX_CRITICS = 5
#: Specialty assumed for a domain the catalogue does not score a model on.
NEUTRAL_SPECIALTY = 0.5
_CLAMPED_NEUTRAL = min(1.0, max(0.0, NEUTRAL_SPECIALTY))
#: Prior/observation noise and exploration when the caller gives none (see ``learning.py``).
DEFAULT_QUALITY_MODEL = QualityModel()
#: Used when the catalogue gives no typical speed for a model.
DEFAULT_TTFT_S = 1.0
DEFAULT_TOKENS_PER_SECOND = 50.0
#: Costs are compared on log(1 + cost / reference): prices span orders of magnitude, and on a linear
#: scale one dear model would make every other model look equally cheap. Below the reference
#: (a hundredth of a cent) differences hardly matter.
COST_REFERENCE_USD = 1e-4
#: A quality gap this large is worth the full quality weight. 0.2 on the 0-1 specialty scale is
#: roughly what separates a specialist from a generalist.
QUALITY_SPAN = 0.2
#: Classifications less sure than this get a warning: the ranking then blends several domains.
LOW_CONFIDENCE = 0.4
_MAX_LISTED = 12


class Circuit(enum.StrEnum):
    """Circuit-breaker state of a model, as reported by the providers service."""

    UNKNOWN = "unknown"
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue model, as ranking needs it (mirrors the fields of ``orchestratex.v1.ModelInfo``)."""

    id: str
    family: str
    context_length: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    specialties: Mapping[str, float] = field(default_factory=dict)
    typical_ttft_s: float = 0.0
    tokens_per_second: float = 0.0
    circuit: Circuit = Circuit.CLOSED
    cooldown_remaining_s: float = 0.0
    max_output_tokens: int = 0
    display_name: str = ""
    provider: str = ""
    simulated: bool = False
    clamped_specialties: Mapping[str, float] = field(init=False, compare=False, repr=False)
    """Derived: each domain's specialty clamped to 0-1, unscored domains at :data:`NEUTRAL_SPECIALTY`.

    Computed once per catalogue entry, not on every ranking (the hot path reads it per model and domain).
    """

    def __post_init__(self) -> None:
        clamped = {d: min(1.0, max(0.0, self.specialties.get(d, NEUTRAL_SPECIALTY))) for d in DOMAINS}
        clamped.update((d, min(1.0, max(0.0, v))) for d, v in self.specialties.items())
        object.__setattr__(self, "clamped_specialties", clamped)


@dataclass(frozen=True)
class Preferences:
    """Caller preferences (mirrors ``orchestratex.v1.Preferences``; ``None`` means unset)."""

    quality_weight: float | None = None
    cost_weight: float | None = None
    latency_weight: float | None = None
    max_cost_usd: float | None = None
    allowed_models: tuple[str, ...] = ()
    excluded_models: tuple[str, ...] = ()
    pinned_model: str = ""


@dataclass(frozen=True)
class Weights:
    """Effective weights of quality, cost and latency (sum > 0)."""

    quality: float
    cost: float
    latency: float


DEFAULT_WEIGHTS = Weights(quality=1.0, cost=0.3, latency=0.2)


#: Measured quality of one model in one domain (mean judged score 0-1, samples, success rate).
HistoryStats = Evidence


@dataclass(frozen=True)
class Breakdown:
    """How a candidate's score was built (all 0-1)."""

    specialty: float
    history: float
    cost: float
    latency: float
    exploration: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One eligible model, ranked."""

    model: str
    family: str
    score: float
    rank: int
    reason: str
    breakdown: Breakdown
    quality: float
    estimated_cost_usd: float
    estimated_latency_s: float
    pinned: bool = False


@dataclass(frozen=True)
class Dropped:
    """A model left out of the ranking, and why."""

    model: str
    reason: str


@dataclass(frozen=True)
class Selection:
    """The result of :func:`select`."""

    analysis: PromptAnalysis
    candidates: tuple[Candidate, ...]
    primary_model: str
    critic_models: tuple[str, ...]
    dropped: tuple[Dropped, ...]
    warnings: tuple[str, ...]
    weights: Weights


# --------------------------------------------------------------------------------------------------
# Validation (raises InvalidArgument naming the request field)


def resolve_weights(preferences: Preferences) -> Weights:
    """The effective weights: 1/0.3/0.2 when all three are unset, otherwise unset ones count as 0.

    Raises :class:`InvalidArgument` for a negative or non-finite weight, or when they are all zero.
    """
    named = {
        "quality_weight": preferences.quality_weight,
        "cost_weight": preferences.cost_weight,
        "latency_weight": preferences.latency_weight,
    }
    for name, value in named.items():
        if value is not None and (not math.isfinite(value) or value < 0):
            raise InvalidArgument(f"preferences.{name}", f"must be a finite number >= 0, got {value}")
    if all(v is None for v in named.values()):
        return DEFAULT_WEIGHTS
    weights = Weights(
        quality=preferences.quality_weight or 0.0,
        cost=preferences.cost_weight or 0.0,
        latency=preferences.latency_weight or 0.0,
    )
    if weights.quality + weights.cost + weights.latency <= 0:
        raise InvalidArgument(
            "preferences",
            "quality_weight, cost_weight and latency_weight are all 0 (unset weights count as 0 once one is"
            " set); set at least one above 0",
        )
    return weights


def validate_preferences(preferences: Preferences) -> Weights:
    """Check everything that needs no catalogue; returns the effective weights."""
    weights = resolve_weights(preferences)
    cap = preferences.max_cost_usd
    if cap is not None and (not math.isfinite(cap) or cap < 0):
        raise InvalidArgument("preferences.max_cost_usd", f"must be a finite number >= 0, got {cap}")
    return weights


def validate_critic_count(critic_count: int) -> int:
    """``critic_count`` must be 0-5."""
    if not 0 <= critic_count <= MAX_CRITICS:
        raise InvalidArgument("critic_count", f"must be between 0 and {MAX_CRITICS}, got {critic_count}")
    return critic_count


def check_model_ids(preferences: Preferences, known: Collection[str]) -> None:
    """Every pinned, allowed and excluded model id must be in the catalogue."""
    fields: list[tuple[str, str]] = []
    if preferences.pinned_model:
        fields.append(("preferences.pinned_model", preferences.pinned_model))
    fields += [(f"preferences.allowed_models[{i}]", m) for i, m in enumerate(preferences.allowed_models)]
    fields += [(f"preferences.excluded_models[{i}]", m) for i, m in enumerate(preferences.excluded_models)]
    for name, model in fields:
        if not model.strip():
            raise InvalidArgument(name, "must not be blank")
        if model not in known:
            raise InvalidArgument(name, f"unknown model {model!r}; known models: {_listing(sorted(known))}")


# --------------------------------------------------------------------------------------------------
# Estimates


def estimate_cost(model: ModelEntry, prompt_tokens: int, output_tokens: int) -> float:
    """USD for ``prompt_tokens`` in and ``output_tokens`` out at the model's catalogue prices."""
    return (prompt_tokens * model.input_price_per_mtok + output_tokens * model.output_price_per_mtok) / 1e6


def estimate_latency(model: ModelEntry, output_tokens: int) -> float:
    """Seconds: typical time to first token + ``output_tokens`` at the typical speed."""
    ttft = model.typical_ttft_s if model.typical_ttft_s > 0 else DEFAULT_TTFT_S
    speed = model.tokens_per_second if model.tokens_per_second > 0 else DEFAULT_TOKENS_PER_SECOND
    return ttft + output_tokens / speed


def specialty_score(model: ModelEntry, probabilities: Mapping[str, float]) -> float:
    """Σ_domain p(domain) · specialty(model, domain); unscored domains count as neutral."""
    priors = model.clamped_specialties
    return sum(p * priors.get(d, _CLAMPED_NEUTRAL) for d, p in probabilities.items() if p)


def belief(
    model: ModelEntry,
    probabilities: Mapping[str, float],
    history: Mapping[tuple[str, str], HistoryStats] | None,
    quality_model: QualityModel = DEFAULT_QUALITY_MODEL,
) -> Belief:
    """The posterior quality of ``model`` for a prompt's domain mix (see ``learning.py``)."""
    return quality_model.blend(model.id, probabilities, model.clamped_specialties, history, _CLAMPED_NEUTRAL)


def history_score(
    model: ModelEntry,
    probabilities: Mapping[str, float],
    history: Mapping[tuple[str, str], HistoryStats] | None,
) -> float:
    """Like :func:`specialty_score`, with each domain's prior updated by measured quality (posterior mean)."""
    return belief(model, probabilities, history).mean


# --------------------------------------------------------------------------------------------------
# Selection


# Not frozen, with slots: built per model on every request, and a frozen dataclass's __init__ is slow.
@dataclass(slots=True)
class _Eligible:
    model: ModelEntry
    cost_usd: float
    latency_s: float
    specialty: float
    history: float
    measured: bool
    uncertainty: float = 0.0


def select(
    analysis: PromptAnalysis,
    catalogue: Sequence[ModelEntry],
    preferences: Preferences | None = None,
    *,
    critic_count: int = DEFAULT_CRITICS,
    history: Mapping[tuple[str, str], HistoryStats] | None = None,
    quality_model: QualityModel = DEFAULT_QUALITY_MODEL,
    rng: random.Random | None = None,
) -> Selection:
    """Rank ``catalogue`` for ``analysis`` and pick a primary model and critics.

    ``history`` maps ``(model id, domain)`` to measured quality; ``None`` ranks on catalogue priors.
    With an ``rng``, each candidate's quality is a Thompson sample from its posterior (exploration);
    without one, the posterior mean (deterministic).
    Raises :class:`InvalidArgument` for bad preferences or critic count, and
    :class:`FailedPrecondition` when no model is eligible or the pinned one is not.
    """
    preferences = preferences or Preferences()
    weights = validate_preferences(preferences)
    validate_critic_count(critic_count)
    if preferences.pinned_model or preferences.allowed_models or preferences.excluded_models:
        check_model_ids(preferences, {m.id for m in catalogue})

    # Thread history (context_tokens) is sent, and billed, as prompt tokens too.
    input_tokens = analysis.estimated_prompt_tokens + analysis.context_tokens
    output_tokens = analysis.expected_output_tokens
    eligible: list[_Eligible] = []
    dropped: list[Dropped] = []
    for model in catalogue:
        cost = estimate_cost(model, input_tokens, output_tokens)
        reason = _drop_reason(model, analysis, preferences, cost)
        if reason:
            dropped.append(Dropped(model.id, reason))
            continue
        measured = history is not None and _has_samples(history, model.id, analysis.primary_domain)
        posterior = belief(model, analysis.probabilities, history, quality_model)
        eligible.append(
            _Eligible(
                model=model,
                cost_usd=cost,
                latency_s=estimate_latency(model, output_tokens),
                specialty=specialty_score(model, analysis.probabilities),
                history=posterior.mean,
                measured=measured,
                uncertainty=posterior.sd,
            )
        )

    # The pinned model first: its own reason is the most useful answer when everything is dropped.
    pinned = preferences.pinned_model
    if pinned and pinned not in {e.model.id for e in eligible}:
        why = next(d.reason for d in dropped if d.model == pinned)
        raise FailedPrecondition(f"preferences.pinned_model {pinned!r} cannot be used: {why}")
    if not eligible:
        if not dropped:
            raise FailedPrecondition("no eligible model: the model catalogue is empty")
        raise FailedPrecondition(
            "no eligible model for this prompt: " + _listing([f"{d.model} ({d.reason})" for d in dropped], "; ")
        )

    if rng is None or quality_model.exploration == 0:
        bonuses = [0.0] * len(eligible)
    else:
        bonuses = [quality_model.explore(Belief(e.history, e.uncertainty, 0), rng) for e in eligible]
    candidates = _rank(eligible, weights, analysis.primary_domain, pinned, bonuses)
    primary = pinned or candidates[0].model
    by_id = {c.model: c for c in candidates}
    critics = order_critics([c for c in candidates if c.model != primary], by_id[primary].family, critic_count)
    warnings = _warnings(analysis, by_id[primary], [by_id[m] for m in critics], critic_count, catalogue)
    return Selection(
        analysis=analysis,
        candidates=tuple(candidates),
        primary_model=primary,
        critic_models=tuple(critics),
        dropped=tuple(dropped),
        warnings=tuple(warnings),
        weights=weights,
    )


def order_critics(candidates: Sequence[Candidate], primary_family: str, count: int) -> list[str]:
    """Up to ``count`` critics: best quality first, families other than ``primary_family`` first.

    Greedy: each pick is the best remaining candidate of a family not used yet (the primary's
    counts as used); when none is left, the best of another family than the primary's; only then
    the primary's own family. Models without a family count as their own family.
    """
    pool = sorted(candidates, key=lambda c: (-c.quality, c.estimated_cost_usd, c.model))
    used = {primary_family} if primary_family else set()
    chosen: list[str] = []
    while pool and len(chosen) < count:
        pick = next((c for c in pool if _family(c) not in used), None)
        if pick is None:
            pick = next((c for c in pool if _family(c) != primary_family), pool[0])
        chosen.append(pick.model)
        used.add(_family(pick))
        pool.remove(pick)
    return chosen


def _family(candidate: Candidate) -> str:
    return candidate.family or candidate.model


def _has_samples(history: Mapping[tuple[str, str], HistoryStats], model: str, domain: str) -> bool:
    stats = history.get((model, domain))
    return stats is not None and stats.samples > 0


def _drop_reason(model: ModelEntry, analysis: PromptAnalysis, preferences: Preferences, cost: float) -> str:
    """Why ``model`` cannot be used for this prompt, or ``""``. Checked in a fixed, documented order."""
    if model.id in preferences.excluded_models:
        return "excluded by preferences.excluded_models"
    if preferences.allowed_models and model.id not in preferences.allowed_models:
        return "not in preferences.allowed_models"
    if model.circuit is Circuit.OPEN:
        wait = f"; retry in {math.ceil(model.cooldown_remaining_s)} s" if model.cooldown_remaining_s > 0 else ""
        return f"circuit open after repeated failures{wait}"
    if too_small(model.context_length, analysis.required_window):
        return (
            f"context window of {model.context_length:,} tokens is too small: needs ~{analysis.required_window:,}"
            f" (prompt {analysis.estimated_prompt_tokens:,} + context {analysis.context_tokens:,}"
            f" + expected output {analysis.expected_output_tokens:,})"
        )
    cap = preferences.max_cost_usd
    # A relative tolerance keeps a model priced exactly at the cap from being dropped by rounding.
    if cap is not None and cost > cap * (1 + 1e-9) + 1e-12:
        return f"estimated cost {format_usd(cost)} is over max_cost_usd {format_usd(cap)}"
    return ""


def relative_quality(qualities: Sequence[float]) -> list[float]:
    """Quality relative to the best: 1 for the best, down to 0 at :data:`QUALITY_SPAN` below it."""
    best = max(qualities)
    return [max(0.0, 1.0 - (best - q) / QUALITY_SPAN) for q in qualities]


def _scores(values: Sequence[float]) -> list[float]:
    """1 for the lowest value, 0 for the highest, linear in between; all 1 when they are equal."""
    low, high = min(values), max(values)
    span = high - low
    if span <= 1e-12 * max(1.0, abs(high)):
        return [1.0] * len(values)
    return [(high - v) / span for v in values]


def _rank(
    eligible: Sequence[_Eligible], weights: Weights, domain: str, pinned: str, bonuses: Sequence[float]
) -> list[Candidate]:
    qualities = [_clamp(e.history + bonus) for e, bonus in zip(eligible, bonuses, strict=True)]
    quality_scores = relative_quality(qualities)
    cost_scores = _scores([math.log1p(e.cost_usd / COST_REFERENCE_USD) for e in eligible])
    latency_scores = _scores([e.latency_s for e in eligible])
    total = weights.quality + weights.cost + weights.latency
    rows = []
    for e, quality, q, cost, latency, exploration in zip(
        eligible, qualities, quality_scores, cost_scores, latency_scores, bonuses, strict=True
    ):
        score = (weights.quality * q + weights.cost * cost + weights.latency * latency) / total
        breakdown = Breakdown(e.specialty, e.history, cost, latency, exploration)
        rows.append((e, quality, score, breakdown))
    rows.sort(key=lambda r: (-r[2], r[0].cost_usd, r[0].model.id))

    quality_rank = _dense_ranks([-round(r[1], 6) for r in rows])
    cost_rank = _dense_ranks([round(r[0].cost_usd, 9) for r in rows])
    latency_rank = _dense_ranks([round(r[0].latency_s, 3) for r in rows])
    candidates = []
    for i, (e, quality, score, breakdown) in enumerate(rows):
        reason = _reason(
            e,
            quality,
            domain,
            quality_rank[i],
            cost_rank[i],
            latency_rank[i],
            alone=len(rows) == 1,
            pinned=e.model.id == pinned,
        )
        candidates.append(
            Candidate(
                model=e.model.id,
                family=e.model.family,
                score=score,
                rank=i + 1,
                reason=reason,
                breakdown=breakdown,
                quality=quality,
                estimated_cost_usd=e.cost_usd,
                estimated_latency_s=e.latency_s,
                pinned=e.model.id == pinned,
            )
        )
    return candidates


def _reason(
    e: _Eligible,
    quality: float,
    domain: str,
    quality_rank: int,
    cost_rank: int,
    latency_rank: int,
    *,
    alone: bool,
    pinned: bool,
) -> str:
    """One sentence, e.g. ``Best specialty for coding (0.92) at $0.0012 estimated and ~4.1 s; 2nd cheapest.``"""
    basis = "measured quality" if e.measured else "specialty"
    estimate = f"at {format_usd(e.cost_usd)} estimated and ~{e.latency_s:.1f} s"
    if alone:
        sentence = f"Only eligible model: {basis} for {domain} {quality:.2f} {estimate}."
    else:
        best = "Best" if quality_rank == 1 else f"{_ordinal(quality_rank)}-best"
        cheap = "cheapest" if cost_rank == 1 else f"{_ordinal(cost_rank)} cheapest"
        fast = "fastest" if latency_rank == 1 else f"{_ordinal(latency_rank)} fastest"
        sentence = f"{best} {basis} for {domain} ({quality:.2f}) {estimate}; {cheap}, {fast}."
    return f"Pinned by the caller; {sentence[0].lower()}{sentence[1:]}" if pinned else sentence


def _warnings(
    analysis: PromptAnalysis,
    primary: Candidate,
    critics: Sequence[Candidate],
    critic_count: int,
    catalogue: Sequence[ModelEntry],
) -> list[str]:
    warnings = []
    if analysis.confidence < LOW_CONFIDENCE:
        warnings.append(
            f"domain is uncertain ({analysis.primary_domain} at {analysis.confidence:.0%}): the ranking blends"
            " the likely domains"
        )
    if len(critics) < critic_count:
        warnings.append(f"only {len(critics)} critic(s) available; {critic_count} requested")
    if critics and primary.family and all(c.family == primary.family for c in critics):
        warnings.append(
            f"every critic is from the primary's family ({primary.family}); judges tend to favour their own family"
        )
    circuits = {m.id: m.circuit for m in catalogue}
    for model in [primary.model, *(c.model for c in critics)]:
        if circuits.get(model) is Circuit.HALF_OPEN:
            warnings.append(f"{model} is recovering from failures (circuit half-open)")
    return warnings


def _dense_ranks(keys: Sequence[float]) -> list[int]:
    order = {k: i + 1 for i, k in enumerate(sorted(set(keys)))}
    return [order[k] for k in keys]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else NEUTRAL_SPECIALTY


def _listing(items: Sequence[str], separator: str = ", ") -> str:
    """Items joined, the first :data:`_MAX_LISTED` only, so messages stay short with large catalogues."""
    if len(items) <= _MAX_LISTED:
        return separator.join(items) or "(none)"
    return separator.join(items[:_MAX_LISTED]) + f"{separator}and {len(items) - _MAX_LISTED} more"


def format_usd(amount: float) -> str:
    """``$0.0012``, ``$0.017``, ``$0.50``, ``$3.00``: two significant digits below a dollar, cents above."""
    if amount <= 0:
        return "$0"
    decimals = 2 if amount >= 1 else min(8, 1 - math.floor(math.log10(amount)))
    return f"${amount:,.{decimals}f}"
