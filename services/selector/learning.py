"""Learning which model is best: a Bayesian quality estimate per (model, domain), explored by
Thompson sampling.

Each (model, domain) pair has a Normal belief about the quality (0-1) of the model's answers in that
domain. The belief starts at the catalogue's specialty prior, with standard deviation ``prior_sd``.
Every judged answer is a noisy observation of that quality: the critics' aggregate score divided by 10,
with noise ``obs_sd``. The update is the conjugate Normal-Normal one:

    precision = 1/prior_sd² + n/obs_sd²
    mean      = (prior/prior_sd² + n·mean_observed/obs_sd²) / precision
    sd        = 1/√precision

Selection draws one sample per candidate, ``mean + exploration · sd · z`` with z ~ N(0, 1), and ranks on
the sample. This is Thompson sampling: uncertain models are tried now and then, so a model that turns
out better than its prior gets the chance to prove it and then takes over. Confident beliefs hardly move.
With ``exploration = 0`` the selector is greedy on the posterior mean, and with no history that is
prior-only. RouteLLM picks between only two models and never learns online; research.md reports that
bandit routers seeded with priors get close to the quality of the strong model at a fraction of the cost.

The evidence lives in analytics (mean critique score received per model and domain, and its count), so the
selector itself stays stateless. `services/selector/history.py` refreshes it in the background.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How far the catalogue prior may be off (one standard deviation, on the 0-1 quality scale).
DEFAULT_PRIOR_SD = 0.10
#: Noise of one judged answer's aggregate score (0-1 scale): critics disagree and answers vary.
DEFAULT_OBS_SD = 0.15
#: A model whose calls fail this often is worth that much less: quality counts only when it answers.
MIN_SUCCESS_RATE = 0.0


#: Domains less likely than this add nothing visible to a prompt's belief and are skipped (hot path).
NEGLIGIBLE_PROBABILITY = 0.01


@functools.lru_cache(maxsize=65536)
def _posterior(prior: float, mean: float, samples: int, success: float, prior_sd: float, obs_sd: float) -> Belief:
    prior_precision = 1 / prior_sd**2
    if samples <= 0:
        return Belief(prior, prior_sd, 0)
    data_precision = samples / obs_sd**2
    precision = prior_precision + data_precision
    observed = min(1.0, max(0.0, mean)) * min(1.0, max(0.0, success))
    return Belief((prior * prior_precision + observed * data_precision) / precision, 1 / math.sqrt(precision), samples)


@dataclass(frozen=True)
class Evidence:
    """What analytics measured for one (model, domain): mean judged quality (0-1) over ``samples``."""

    mean_quality: float
    samples: int
    success_rate: float = 1.0


@dataclass(frozen=True)
class Belief:
    """Posterior quality of one (model, domain) or of a model for a prompt's domain mix."""

    mean: float
    sd: float
    samples: int


@dataclass(frozen=True)
class DomainMix:
    """A prompt's domain probabilities prepared for :meth:`QualityModel.beliefs` (see :meth:`QualityModel.mix`)."""

    terms: tuple[tuple[str, float, float], ...]
    """``(domain, p, (p · prior_sd)²)`` for each domain not below :data:`NEGLIGIBLE_PROBABILITY`, in order."""
    mass: float
    """The sum of those probabilities."""


def _clamp01(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class QualityModel:
    """The prior/observation noise model and the exploration rate."""

    prior_sd: float = DEFAULT_PRIOR_SD
    obs_sd: float = DEFAULT_OBS_SD
    exploration: float = 1.0

    def __post_init__(self) -> None:
        if not (self.prior_sd > 0 and self.obs_sd > 0 and self.exploration >= 0):
            raise ValueError("prior_sd and obs_sd must be > 0 and exploration >= 0")

    def belief(self, prior: float, evidence: Evidence | None) -> Belief:
        """Posterior for one domain (memoised: the same evidence gives the same belief)."""
        if evidence is None:
            return Belief(prior, self.prior_sd, 0)
        return _posterior(
            prior, evidence.mean_quality, evidence.samples, evidence.success_rate, self.prior_sd, self.obs_sd
        )

    def blend(
        self,
        model: str,
        probabilities: Mapping[str, float],
        priors: Mapping[str, float],
        history: Mapping[tuple[str, str], Evidence] | None,
        neutral: float,
    ) -> Belief:
        """Belief about a model for a prompt whose domains have ``probabilities`` (a mixture).

        Domains below :data:`NEGLIGIBLE_PROBABILITY` are skipped and the rest renormalised.
        """
        mix = self.mix(probabilities)
        if mix.mass <= 0:
            return Belief(neutral, self.prior_sd, 0)
        clamped = {d: _clamp01(v) for d, v in priors.items()}
        return Belief(*self.beliefs(mix, [(model, clamped)], history, _clamp01(neutral))[0])

    def mix(self, probabilities: Mapping[str, float]) -> DomainMix:
        """A prompt's domain probabilities prepared for :meth:`beliefs` (once per prompt, for every model)."""
        terms = []
        mass = 0.0
        prior_sd = self.prior_sd
        for domain, p in probabilities.items():
            if p < NEGLIGIBLE_PROBABILITY:
                continue
            mass += p
            terms.append((domain, p, (p * prior_sd) ** 2))
        return DomainMix(tuple(terms), mass)

    def beliefs(
        self,
        mix: DomainMix,
        models: Sequence[tuple[str, Mapping[str, float]]],
        history: Mapping[tuple[str, str], Evidence] | None,
        neutral: float,
    ) -> list[tuple[float, float, int]]:
        """:meth:`blend` for several ``(model id, priors)`` at once: ``(mean, sd, samples)`` for each.

        The hot path of ranking, so it takes a prepared ``mix``, priors and ``neutral`` already clamped
        to 0-1, and returns tuples rather than :class:`Belief` objects.
        """
        terms, mass = mix.terms, mix.mass
        if mass <= 0:
            return [(neutral, self.prior_sd, 0)] * len(models)
        out = []
        prior_sd, obs_sd = self.prior_sd, self.obs_sd
        lookup = history.get if history else None
        for model, priors in models:
            mean = var = 0.0
            samples = 0
            for domain, p, prior_var in terms:
                prior = priors.get(domain, neutral)
                evidence = lookup((model, domain)) if lookup is not None else None
                if evidence is None:
                    mean += p * prior
                    var += prior_var
                    continue
                b = _posterior(prior, evidence.mean_quality, evidence.samples, evidence.success_rate, prior_sd, obs_sd)
                mean += p * b.mean
                var += (p * b.sd) ** 2
                samples += b.samples
            out.append((mean / mass, math.sqrt(var) / mass, samples))
        return out

    def bonuses(self, sds: Sequence[float], rng: random.Random | None) -> list[float]:
        """:meth:`explore` for beliefs with standard deviations ``sds``, sampled in that order."""
        if rng is None or self.exploration == 0:
            return [0.0] * len(sds)
        rate, gauss = self.exploration, rng.gauss
        return [rate * sd * gauss(0.0, 1.0) for sd in sds]

    def explore(self, belief: Belief, rng: random.Random | None) -> float:
        """The Thompson-sampling bonus (sample minus mean); 0 when not exploring."""
        if rng is None or self.exploration == 0:
            return 0.0
        return self.exploration * belief.sd * rng.gauss(0.0, 1.0)
