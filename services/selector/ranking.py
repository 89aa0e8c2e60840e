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
import functools
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from math import floor, log1p, log10
from operator import add, mul, neg, sub
from typing import NamedTuple

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
    supports_structured_outputs: bool = False
    """The model takes a JSON Schema (``ModelInfo.supports_structured_outputs``)."""
    clamped_specialties: Mapping[str, float] = field(init=False, compare=False, repr=False)
    """Derived: each domain's specialty clamped to 0-1, unscored domains at :data:`NEUTRAL_SPECIALTY`.

    Computed once per catalogue entry, not on every ranking (the hot path reads it per model and domain).
    """

    prior_vector: tuple[float, ...] = field(init=False, compare=False, repr=False)
    """Derived: :attr:`clamped_specialties` in :data:`DOMAINS` order."""
    ttft_or_default_s: float = field(init=False, compare=False, repr=False)
    """Derived: :attr:`typical_ttft_s`, or :data:`DEFAULT_TTFT_S` when the catalogue gives none."""
    tokens_per_second_or_default: float = field(init=False, compare=False, repr=False)
    """Derived: :attr:`tokens_per_second`, or :data:`DEFAULT_TOKENS_PER_SECOND` when the catalogue gives none."""

    def __post_init__(self) -> None:
        clamped = {d: min(1.0, max(0.0, self.specialties.get(d, NEUTRAL_SPECIALTY))) for d in DOMAINS}
        clamped.update((d, min(1.0, max(0.0, v))) for d, v in self.specialties.items())
        object.__setattr__(self, "clamped_specialties", clamped)
        object.__setattr__(self, "prior_vector", tuple(clamped[d] for d in DOMAINS))
        ttft = self.typical_ttft_s if self.typical_ttft_s > 0 else DEFAULT_TTFT_S
        speed = self.tokens_per_second if self.tokens_per_second > 0 else DEFAULT_TOKENS_PER_SECOND
        object.__setattr__(self, "ttft_or_default_s", ttft)
        object.__setattr__(self, "tokens_per_second_or_default", speed)


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
_NO_PREFERENCES = Preferences()


#: Measured quality of one model in one domain (mean judged score 0-1, samples, success rate).
HistoryStats = Evidence


# Breakdown, Candidate and Selection are named tuples rather than frozen dataclasses: immutable all the
# same, and built on every request, where a frozen dataclass's __init__ costs three times as much.
class Breakdown(NamedTuple):
    """How a candidate's score was built (all 0-1)."""

    specialty: float
    history: float
    cost: float
    latency: float
    exploration: float = 0.0


class Candidate(NamedTuple):
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


class Selection(NamedTuple):
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
    if preferences.quality_weight is None and preferences.cost_weight is None and preferences.latency_weight is None:
        return DEFAULT_WEIGHTS
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
    return model.ttft_or_default_s + output_tokens / model.tokens_per_second_or_default


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
    # The hot path of SelectModels: per-model values are computed a column (list) at a time, with
    # the helpers' formulas inlined where a call per model would cost more than the work itself.
    preferences = preferences or _NO_PREFERENCES
    weights = validate_preferences(preferences)
    validate_critic_count(critic_count)
    if preferences.pinned_model or preferences.allowed_models or preferences.excluded_models:
        check_model_ids(preferences, {m.id for m in catalogue})

    # Thread history (context_tokens) is sent, and billed, as prompt tokens too.
    input_tokens = analysis.estimated_prompt_tokens + analysis.context_tokens
    output_tokens = analysis.expected_output_tokens
    # Most requests restrict nothing and fit every window: skip _drop_reason for them.
    restricted = preferences.allowed_models or preferences.excluded_models or preferences.max_cost_usd is not None
    required = analysis.required_window
    models: list[ModelEntry] = []
    costs: list[float] = []
    dropped: list[Dropped] = []
    recovering = False  # any half-open circuit in the catalogue
    for model in catalogue:
        # estimate_cost(model, input_tokens, output_tokens)
        cost = (input_tokens * model.input_price_per_mtok + output_tokens * model.output_price_per_mtok) / 1e6
        if restricted or model.circuit is not Circuit.CLOSED or too_small(model.context_length, required):
            recovering = recovering or model.circuit is Circuit.HALF_OPEN
            reason = _drop_reason(model, analysis, preferences, cost)
            if reason:
                dropped.append(Dropped(model.id, reason))
                continue
        models.append(model)
        costs.append(cost)

    # The pinned model first: its own reason is the most useful answer when everything is dropped.
    pinned = preferences.pinned_model
    if pinned and pinned not in {m.id for m in models}:
        why = next(d.reason for d in dropped if d.model == pinned)
        raise FailedPrecondition(f"preferences.pinned_model {pinned!r} cannot be used: {why}")
    if not models:
        if not dropped:
            raise FailedPrecondition("no eligible model: the model catalogue is empty")
        raise FailedPrecondition(
            "no eligible model for this prompt: " + _listing([f"{d.model} ({d.reason})" for d in dropped], "; ")
        )

    ids = [m.id for m in models]
    # estimate_latency(model, output_tokens)
    latencies = [m.ttft_or_default_s + output_tokens / m.tokens_per_second_or_default for m in models]
    probabilities = analysis.probabilities
    if tuple(probabilities) == DOMAINS:
        # As specialty_score(), whose zero-probability terms add exactly nothing to the sum.
        vector = tuple(probabilities.values())
        specialties = [sum(map(mul, vector, m.prior_vector)) for m in models]
    else:
        specialties = [specialty_score(m, probabilities) for m in models]
    beliefs = quality_model.beliefs(
        quality_model.mix(probabilities), [(m.id, m.clamped_specialties) for m in models], history, _CLAMPED_NEUTRAL
    )
    means = [b[0] for b in beliefs]
    bonuses = quality_model.bonuses([b[1] for b in beliefs], rng)
    measured = [False] * len(ids)
    if history is not None:
        domain = analysis.primary_domain
        measured = [s is not None and s.samples > 0 for s in [history.get((i, domain)) for i in ids]]
    candidates = _rank(
        _Columns(models, ids, costs, latencies, specialties, means, bonuses, measured),
        weights,
        analysis.primary_domain,
        pinned,
    )

    primary = pinned or candidates[0].model
    by_id = {c.model: c for c in candidates}
    critics = order_critics([c for c in candidates if c.model != primary], by_id[primary].family, critic_count)
    warnings = _warnings(analysis, by_id[primary], [by_id[m] for m in critics], critic_count)
    if recovering:
        circuits = {m.id: m.circuit for m in catalogue}
        warnings += [
            f"{model} is recovering from failures (circuit half-open)"
            for model in [primary, *critics]
            if circuits.get(model) is Circuit.HALF_OPEN
        ]
    return Selection(analysis, tuple(candidates), primary, tuple(critics), tuple(dropped), tuple(warnings), weights)


class _Columns(NamedTuple):
    """The eligible models and, index for index, what ranking needs about each."""

    models: list[ModelEntry]
    ids: list[str]
    costs: list[float]
    latencies: list[float]
    specialties: list[float]
    means: list[float]
    """Posterior mean quality (the breakdown's ``history``)."""
    bonuses: list[float]
    """Thompson-sampling exploration bonus."""
    measured: list[bool]
    """Whether the primary domain's quality is measured rather than the prior alone."""


def order_critics(candidates: Sequence[Candidate], primary_family: str, count: int) -> list[str]:
    """Up to ``count`` critics: best quality first, families other than ``primary_family`` first.

    Greedy: each pick is the best remaining candidate of a family not used yet (the primary's
    counts as used); when none is left, the best of another family than the primary's; only then
    the primary's own family. Models without a family count as their own family.
    """
    # Sorted on plain tuples (the index keeps it stable): no key function to call per candidate.
    pool = sorted(
        [(-c.quality, c.estimated_cost_usd, c.model, i, c.family or c.model) for i, c in enumerate(candidates)]
    )
    used = {primary_family} if primary_family else set()
    chosen: list[str] = []
    while pool and len(chosen) < count:
        picks = [c for c in pool if c[4] not in used] or [c for c in pool if c[4] != primary_family] or pool
        pick = picks[0]
        chosen.append(pick[2])
        used.add(pick[4])
        pool.remove(pick)
    return chosen


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
    span = QUALITY_SPAN
    # `x if x > 0.0 else 0.0` is max(0.0, x) exactly (NaN and -0.0 included), without the call.
    return [x if x > 0.0 else 0.0 for x in [1.0 - (best - q) / span for q in qualities]]


def _scores(values: Sequence[float]) -> list[float]:
    """1 for the lowest value, 0 for the highest, linear in between; all 1 when they are equal."""
    low, high = min(values), max(values)
    span = high - low
    if span <= 1e-12 * max(1.0, abs(high)):
        return [1.0] * len(values)
    return [(high - v) / span for v in values]


def _rank(columns: _Columns, weights: Weights, domain: str, pinned: str) -> list[Candidate]:
    models, ids, costs, latencies, specialties, means, bonuses, measured = columns
    # _clamp only changes values outside (0, 1): skip the call for the others.
    qualities = [q if 0.0 < q < 1.0 else _clamp(q) for q in map(add, means, bonuses)]
    quality_scores = relative_quality(qualities)
    reference = COST_REFERENCE_USD
    cost_scores = _scores([log1p(c / reference) for c in costs])
    latency_scores = _scores(latencies)
    wq, wc, wl = weights.quality, weights.cost, weights.latency
    total = wq + wc + wl
    scores = [
        (wq * q + wc * cost + wl * latency) / total
        for q, cost, latency in zip(quality_scores, cost_scores, latency_scores, strict=True)
    ]
    # Best score first, then cheapest, then by id; the index keeps the sort stable without a key function.
    order = [key[3] for key in sorted(zip(map(neg, scores), costs, ids, range(len(ids)), strict=True))]

    quality_ranks = _dense_ranks(list(map(neg, qualities)), 6)
    cost_ranks = _dense_ranks(costs, 9)
    latency_ranks = _dense_ranks(latencies, 3)
    alone = len(ids) == 1
    candidates = []
    for rank, i in enumerate(order, 1):
        quality, cost, latency = qualities[i], costs[i], latencies[i]
        is_pinned = ids[i] == pinned
        reason = _reason(
            measured[i], quality, domain, cost, latency, quality_ranks[i], cost_ranks[i], latency_ranks[i], alone
        )
        # Positional, in field order: keyword arguments double the cost of building a named tuple.
        candidates.append(
            Candidate(
                ids[i],
                models[i].family,
                scores[i],
                rank,
                f"Pinned by the caller; {reason[0].lower()}{reason[1:]}" if is_pinned else reason,
                Breakdown(specialties[i], means[i], cost_scores[i], latency_scores[i], bonuses[i]),
                quality,
                cost,
                latency,
                is_pinned,
            )
        )
    return candidates


def _reason(
    measured: bool,
    quality: float,
    domain: str,
    cost_usd: float,
    latency_s: float,
    quality_rank: int,
    cost_rank: int,
    latency_rank: int,
    alone: bool,
) -> str:
    """One sentence, e.g. ``Best specialty for coding (0.92) at $0.0012 estimated and ~4.1 s; 2nd cheapest.``"""
    basis = "measured quality" if measured else "specialty"
    if alone:
        return (
            f"Only eligible model: {basis} for {domain} {quality:.2f}"
            f" at {format_usd(cost_usd)} estimated and ~{latency_s:.1f} s."
        )
    return (
        f"{_standing(quality_rank)[0]} {basis} for {domain} ({quality:.2f}) at {format_usd(cost_usd)}"
        f" estimated and ~{latency_s:.1f} s; {_standing(cost_rank)[1]}, {_standing(latency_rank)[2]}."
    )


@functools.cache  # rank is bounded by the catalogue's size
def _standing(rank: int) -> tuple[str, str, str]:
    """How a rank reads for quality, cost and latency: ``("Best", "cheapest", "fastest")``, ``("2nd-best", ...``."""
    if rank == 1:
        return "Best", "cheapest", "fastest"
    nth = _ordinal(rank)
    return f"{nth}-best", f"{nth} cheapest", f"{nth} fastest"


def _warnings(
    analysis: PromptAnalysis,
    primary: Candidate,
    critics: Sequence[Candidate],
    critic_count: int,
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
    return warnings


def _dense_ranks(values: Sequence[float], digits: int) -> list[int]:
    """Ranks, 1 for the lowest, of ``values`` rounded to ``digits`` decimals; equal once rounded, equal rank.

    ``round()`` is slow (a decimal conversion), so it only settles neighbours (in sorted order) closer
    than 3·10^-digits: values further apart cannot round to the same decimal, nor to the same double
    while doubles are finer than 10^-digits there (true below :data:`_FINE_BELOW` for up to 9 digits).
    """
    ordered = sorted(values)
    near = 3 * 10.0**-digits
    total = sum(ordered)
    if not math.isfinite(total) or not -_FINE_BELOW < ordered[0] <= ordered[-1] < _FINE_BELOW:  # NaN, huge
        return _plain_dense_ranks([round(v, digits) for v in values])
    if len(ordered) < 2 or min(map(sub, ordered[1:], ordered)) > near:
        # The usual case: all far apart, so the rank is the position.
        return list(map(dict(zip(ordered, range(1, len(ordered) + 1), strict=True)).__getitem__, values))
    rank_of: dict[float, int] = {}
    rank = 0
    previous = 0.0
    for value in ordered:
        if not rank or value - previous > near or round(value, digits) != round(previous, digits):
            rank += 1
        rank_of[value] = rank
        previous = value
    return [rank_of[v] for v in values]


_FINE_BELOW = 1e6


def _plain_dense_ranks(keys: Sequence[float]) -> list[int]:
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
    if amount >= 1:
        return f"${amount:,.2f}"
    decimals = 1 - floor(log10(amount))
    # No thousands separator below a dollar: the same text, formatted faster.
    return _USD_FORMATS[decimals if decimals < 8 else 8].format(amount)


_USD_FORMATS = {decimals: f"${{:.{decimals}f}}" for decimals in range(2, 9)}
