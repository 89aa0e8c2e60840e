"""The Bayesian quality estimate and Thompson-sampling exploration."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from services.selector.learning import Belief, Evidence, QualityModel
from services.selector.ranking import HistoryStats, select
from tests.selector.conftest import analysis_for, catalogue
from tests.selector.test_ranking import by_id


def test_no_evidence_is_the_prior() -> None:
    model = QualityModel(prior_sd=0.1, obs_sd=0.15)
    assert model.belief(0.7, None) == Belief(0.7, 0.1, 0)
    assert model.belief(0.7, Evidence(0.2, 0)) == Belief(0.7, 0.1, 0)


def test_evidence_moves_the_mean_and_shrinks_the_uncertainty() -> None:
    model = QualityModel(prior_sd=0.1, obs_sd=0.15)
    few = model.belief(0.6, Evidence(0.9, 2))
    many = model.belief(0.6, Evidence(0.9, 200))
    assert 0.6 < few.mean < many.mean < 0.9
    assert many.mean == pytest.approx(0.9, abs=0.01)
    assert many.sd < few.sd < 0.1
    assert many.sd == pytest.approx(1 / math.sqrt(1 / 0.01 + 200 / 0.0225))


def test_failures_discount_measured_quality() -> None:
    model = QualityModel()
    reliable = model.belief(0.5, Evidence(0.9, 100, success_rate=1.0))
    flaky = model.belief(0.5, Evidence(0.9, 100, success_rate=0.5))
    assert flaky.mean < reliable.mean - 0.3


def test_blend_mixes_domains_by_probability() -> None:
    model = QualityModel(prior_sd=0.1)
    belief = model.blend("m", {"coding": 0.5, "math": 0.5}, {"coding": 0.9, "math": 0.5}, None, 0.5)
    assert belief.mean == pytest.approx(0.7)
    assert belief.sd == pytest.approx(math.sqrt(2 * (0.5 * 0.1) ** 2))


def test_exploration_is_a_zero_mean_sample_scaled_by_uncertainty() -> None:
    model = QualityModel(exploration=1.0)
    rng = random.Random(1)
    wide = [model.explore(Belief(0.5, 0.1, 0), rng) for _ in range(4000)]
    narrow = [model.explore(Belief(0.5, 0.01, 0), rng) for _ in range(4000)]
    assert abs(statistics.fmean(wide)) < 0.01
    assert statistics.stdev(wide) == pytest.approx(0.1, rel=0.1)
    assert statistics.stdev(narrow) == pytest.approx(0.01, rel=0.1)
    assert model.explore(Belief(0.5, 0.1, 0), None) == 0.0
    assert QualityModel(exploration=0).explore(Belief(0.5, 0.1, 0), rng) == 0.0
    with pytest.raises(ValueError):
        QualityModel(exploration=-1)


def test_thompson_sampling_tries_uncertain_models_and_reports_the_bonus() -> None:
    rng = random.Random(7)
    primaries = {select(analysis_for("coding"), catalogue(), rng=rng).primary_model for _ in range(200)}
    assert len(primaries) > 1  # priors close enough that exploration sometimes prefers another model
    selection = select(analysis_for("coding"), catalogue(), rng=random.Random(3))
    assert any(c.breakdown.exploration != 0 for c in selection.candidates)
    greedy = select(analysis_for("coding"), catalogue())
    assert all(c.breakdown.exploration == 0 for c in greedy.candidates)


def test_a_model_that_proves_better_than_its_prior_takes_over() -> None:
    cheap_prior = by_id(select(analysis_for("coding"), catalogue()).candidates)
    underdog = min(cheap_prior.values(), key=lambda c: c.breakdown.specialty).model
    history = {(underdog, "coding"): HistoryStats(mean_quality=0.99, samples=60)}
    history.update({(m, "coding"): HistoryStats(mean_quality=0.6, samples=60) for m in cheap_prior if m != underdog})
    chosen = [
        select(analysis_for("coding"), catalogue(), history=history, rng=random.Random(i)).primary_model
        for i in range(50)
    ]
    assert chosen.count(underdog) >= 45
