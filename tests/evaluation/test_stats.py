"""The statistics behind the evaluation report, on samples whose answers are known by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from services.evaluation import stats


def test_mean_and_percentile_on_known_and_empty_samples() -> None:
    assert stats.mean([1.0, 2.0, 6.0]) == 3.0
    assert stats.mean([]) is None
    assert stats.percentile([10.0, 20.0, 30.0, 40.0, 50.0], 50) == 30.0
    assert stats.percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert stats.percentile([], 50) is None
    assert stats.percentile([1.0, float("nan"), 3.0, float("inf")], 50) == 2.0
    assert stats.percentile([float("nan")], 50) is None


def test_finite_turns_nan_and_infinity_into_none() -> None:
    assert stats.finite(float("nan")) is None
    assert stats.finite(float("inf")) is None
    assert stats.finite(None) is None
    value = stats.finite(np.float64(0.25))
    assert value == 0.25
    assert type(value) is float


def test_bootstrap_ci_contains_the_estimate_and_narrows_as_n_grows() -> None:
    small = [1.0, 0.0] * 10
    large = [1.0, 0.0] * 200
    ci_small = stats.bootstrap_ci(small, resamples=500, seed=1)
    ci_large = stats.bootstrap_ci(large, resamples=500, seed=1)
    assert ci_small is not None
    assert ci_large is not None
    assert ci_small[0] <= 0.5 <= ci_small[1]
    assert ci_large[0] <= 0.5 <= ci_large[1]
    assert ci_large[1] - ci_large[0] < (ci_small[1] - ci_small[0]) / 2
    # Binomial standard error at n=20 is about 0.11: a 95% interval is about +-0.22.
    assert 0.3 < ci_small[1] - ci_small[0] < 0.6


def test_bootstrap_ci_is_deterministic_per_seed_and_none_when_empty() -> None:
    rng = random.Random(3)
    values = [rng.random() for _ in range(50)]
    assert stats.bootstrap_ci(values, resamples=300, seed=7) == stats.bootstrap_ci(values, resamples=300, seed=7)
    assert stats.bootstrap_ci(values, resamples=300, seed=7) != stats.bootstrap_ci(values, resamples=300, seed=8)
    assert stats.bootstrap_ci([], resamples=300) is None
    assert stats.bootstrap_ci([0.7] * 5, resamples=300) == pytest.approx((0.7, 0.7))


def test_bootstrap_ci_in_chunks_matches_its_contract() -> None:
    # 5000 items x 2000 resamples exceeds one chunk: the loop over chunks must fill every resample.
    values = [1.0] * 2500 + [0.0] * 2500
    ci = stats.bootstrap_ci(values, resamples=2000, seed=0)
    assert ci is not None
    assert 0.48 < ci[0] < 0.5 < ci[1] < 0.52


def test_bootstrap_ci_is_the_percentile_of_resampled_means() -> None:
    # The reference: resample the items with the same seeded generator, take the percentiles of the means.
    values = [float(v) for v in np.random.default_rng(4).random(40)]
    rng = np.random.default_rng([3, 9])
    means = np.asarray(values)[rng.integers(0, len(values), size=(500, len(values)))].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert stats.bootstrap_ci(values, resamples=500, seed=[3, 9]) == pytest.approx(tuple(expected))
    ci_90 = stats.bootstrap_ci(values, resamples=500, seed=[3, 9], level=0.9)
    assert ci_90 is not None
    assert ci_90 == pytest.approx(tuple(np.percentile(means, [5.0, 95.0])))


def test_bootstrap_ci_of_one_value_is_that_value() -> None:
    assert stats.bootstrap_ci([0.3], resamples=100) == (0.3, 0.3)
    assert stats.bootstrap_ci([1.0, 2.0], resamples=0) is None


def test_paired_bootstrap_ci_is_the_bootstrap_of_the_differences() -> None:
    a = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    b = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    assert stats.paired_bootstrap_ci(a, b, resamples=400, seed=2) == stats.bootstrap_ci(diffs, resamples=400, seed=2)
    with pytest.raises(ValueError, match="length"):
        stats.paired_bootstrap_ci([1.0], [1.0, 0.0])


def test_mcnemar_exact_on_known_tables() -> None:
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)
    assert stats.mcnemar_exact(0, 10) == pytest.approx(2 * 0.5**10)
    assert stats.mcnemar_exact(7, 7) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0
    # b=8, c=2: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 112 / 1024
    assert stats.mcnemar_exact(8, 2) == pytest.approx(112 / 1024)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_binomial_p_on_known_values_and_large_n() -> None:
    assert stats.binomial_two_sided_p(1000, 2000) == 1.0
    assert stats.binomial_two_sided_p(0, 2000) == 0.0  # 2**-1999 is below the smallest double
    p = stats.binomial_two_sided_p(60, 100)
    assert p == pytest.approx(0.056887, abs=1e-6)  # scipy.stats.binomtest(60, 100).pvalue
    with pytest.raises(ValueError):
        stats.binomial_two_sided_p(5, 4)


def test_sign_test_drops_ties_and_counts_signs() -> None:
    result = stats.sign_test([1.0] * 9 + [-2.0] + [0.0, 0.0])
    assert (result.positive, result.negative, result.ties) == (9, 1, 2)
    assert result.p_value == pytest.approx(2 * (1 + 10) / 1024)
    assert stats.sign_test([0.0, 0.0]).p_value == 1.0
    assert stats.sign_test([]).p_value == 1.0
    assert stats.sign_test([3.0, -1.0, 2.0, -0.5]).p_value == 1.0


def test_roc_auc_perfect_reversed_tied_and_one_class() -> None:
    assert stats.roc_auc([1.0, 2.0, 8.0, 9.0], [False, False, True, True]) == 1.0
    assert stats.roc_auc([8.0, 9.0, 1.0, 2.0], [False, False, True, True]) == 0.0
    assert stats.roc_auc([5.0, 5.0, 5.0, 5.0], [False, True, False, True]) == 0.5
    assert stats.roc_auc([1.0, 2.0], [True, True]) is None
    assert stats.roc_auc([1.0, 2.0], [False, False]) is None
    assert stats.roc_auc([], []) is None
    with pytest.raises(ValueError):
        stats.roc_auc([1.0], [True, False])


def test_roc_auc_is_chance_for_a_random_pairing_and_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]

    rng = np.random.default_rng(11)
    scores = rng.integers(0, 11, size=3000).astype(float).tolist()  # integer scores: many ties
    labels = (rng.random(3000) < 0.4).tolist()
    auc = stats.roc_auc(scores, labels)
    assert auc is not None
    assert abs(auc - 0.5) < 0.04
    assert auc == pytest.approx(float(roc_auc_score(labels, scores)), abs=1e-12)


def test_pearson_known_values_and_undefined_cases() -> None:
    assert stats.pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert stats.pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert stats.pearson([1.0, 2.0, 3.0, 4.0], [1.0, -1.0, -1.0, 1.0]) == pytest.approx(0.0)
    assert stats.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert stats.pearson([1.0], [2.0]) is None
    assert stats.pearson([1.0, 2.0], [5.0, 3.0]) == pytest.approx(-1.0)


def test_pearson_of_nearly_constant_scores_does_not_warn() -> None:
    # scipy warns on nearly constant input; the report runs with warnings as errors in tests.
    r = stats.pearson([8.0] * 9 + [8.0 + 1e-12], [float(i) for i in range(10)])
    assert r is None or -1.0 <= r <= 1.0
    assert stats.pearson([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) is None


def test_effective_number_is_kish_design_effect_with_r_clipped() -> None:
    assert stats.effective_number(3, 0.0) == 3.0
    assert stats.effective_number(3, 1.0) == 1.0
    assert stats.effective_number(3, 0.5) == pytest.approx(1.5)
    assert stats.effective_number(4, -0.3) == 4.0  # never more than k
    assert stats.effective_number(1, 0.9) == 1.0
    with pytest.raises(ValueError):
        stats.effective_number(0, 0.0)


def _hadamard_rounds() -> list[dict[str, float]]:
    """Three critics whose centred scores are mutually orthogonal columns of a Hadamard matrix: r = 0 exactly."""
    h2 = np.array([[1, 1], [1, -1]])
    h8 = np.kron(np.kron(h2, h2), h2)
    return [{"a": 5.0 + 2 * h8[i, 1], "b": 5.0 + 2 * h8[i, 2], "c": 5.0 + 2 * h8[i, 4]} for i in range(8)]


def test_n_eff_equals_k_for_independent_critics() -> None:
    agreement = stats.critic_agreement(_hadamard_rounds())
    assert agreement.rounds == 8
    assert agreement.k == 3
    assert [p.r for p in agreement.pairs] == [pytest.approx(0.0)] * 3
    assert agreement.n_eff == pytest.approx(3.0)


def test_n_eff_is_near_k_for_random_independent_critics() -> None:
    rng = random.Random(5)
    rounds = [{name: float(rng.randint(1, 10)) for name in ("a", "b", "c", "d")} for _ in range(2000)]
    agreement = stats.critic_agreement(rounds)
    assert agreement.k == 4
    assert agreement.mean_r is not None
    assert abs(agreement.mean_r) < 0.05
    assert agreement.n_eff is not None
    assert agreement.n_eff > 3.5


def test_n_eff_is_one_for_identical_critics() -> None:
    rounds = [{"a": float(i % 7), "b": float(i % 7), "c": float(i % 7)} for i in range(20)]
    agreement = stats.critic_agreement(rounds)
    assert agreement.mean_r == pytest.approx(1.0)
    assert agreement.n_eff == pytest.approx(1.0)


def test_critic_agreement_needs_shared_rounds_and_variance() -> None:
    rounds = [{"a": float(i), "b": float(2 * i)} for i in range(4)]  # only 4 shared rounds
    rounds += [{"a": 3.0, "c": 3.0} for _ in range(6)]  # c never varies
    rounds += [{"a": 1.0}]  # a single critic: not a round of agreement
    agreement = stats.critic_agreement(rounds)
    assert agreement.rounds == 10
    by_pair = {(p.a, p.b): p for p in agreement.pairs}
    assert by_pair["a", "b"].shared == 4
    assert by_pair["a", "b"].r is None
    assert by_pair["a", "c"].shared == 6
    assert by_pair["a", "c"].r is None
    assert agreement.mean_r is None
    assert agreement.n_eff is None
    assert agreement.k == 2
    assert stats.critic_agreement([]).k is None


def test_critic_agreement_k_is_the_most_common_critic_count() -> None:
    rounds = [{"a": float(i), "b": float(i), "c": float(i)} for i in range(6)]
    rounds += [{"a": float(i), "b": float(i)} for i in range(3)]
    agreement = stats.critic_agreement(rounds)
    assert agreement.k == 3
    assert not math.isnan(agreement.n_eff or 0.0)
    assert agreement.n_eff == pytest.approx(1.0)
