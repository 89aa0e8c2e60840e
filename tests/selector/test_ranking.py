"""Ranking: scores, weights, filters, pins, critics, reasons. Pure, no gRPC."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from orchestratex.errors import FailedPrecondition, InvalidArgument
from services.selector.ranking import (
    DEFAULT_WEIGHTS,
    QUALITY_SPAN,
    Circuit,
    HistoryStats,
    Preferences,
    Weights,
    check_model_ids,
    estimate_cost,
    estimate_latency,
    format_usd,
    order_critics,
    relative_quality,
    resolve_weights,
    select,
)
from tests.selector.conftest import analysis_for, catalogue, entry


def by_id(selection_candidates):
    return {c.model: c for c in selection_candidates}


def test_default_weights_pick_the_best_specialist() -> None:
    selection = select(analysis_for("coding"), catalogue())
    assert selection.primary_model == "acme/coder-pro"
    assert [c.rank for c in selection.candidates] == [1, 2, 3, 4, 5]
    scores = [c.score for c in selection.candidates]
    assert scores == sorted(scores, reverse=True)
    assert selection.weights == DEFAULT_WEIGHTS


def test_domain_changes_the_winner() -> None:
    assert select(analysis_for("math"), catalogue()).primary_model == "bolt/think"
    assert select(analysis_for("creative"), catalogue()).primary_model == "cedar/writer"


def test_high_cost_weight_makes_the_cheap_model_win() -> None:
    selection = select(analysis_for("coding"), catalogue(), Preferences(quality_weight=1.0, cost_weight=10.0))
    assert selection.primary_model == "dune/small"
    assert by_id(selection.candidates)["dune/small"].breakdown.cost == 1.0
    assert by_id(selection.candidates)["acme/coder-pro"].breakdown.cost == 0.0


def test_high_latency_weight_makes_the_fast_model_win() -> None:
    selection = select(analysis_for("coding"), catalogue(), Preferences(quality_weight=0.1, latency_weight=5.0))
    assert selection.primary_model == "dune/small"
    assert by_id(selection.candidates)["dune/small"].breakdown.latency == 1.0
    assert by_id(selection.candidates)["bolt/think"].breakdown.latency == 0.0


def test_score_is_the_weighted_mean_of_quality_cost_and_latency() -> None:
    weights = Preferences(quality_weight=2.0, cost_weight=0.5, latency_weight=0.25)
    candidates = select(analysis_for("math"), catalogue(), weights).candidates
    best = max(c.quality for c in candidates)
    for c in candidates:
        b = c.breakdown
        assert b.history == pytest.approx(b.specialty)  # no history yet
        assert b.exploration == 0.0
        assert c.quality == pytest.approx(b.history)
        relative = max(0.0, 1 - (best - c.quality) / QUALITY_SPAN)
        assert c.score == pytest.approx((2.0 * relative + 0.5 * b.cost + 0.25 * b.latency) / 2.75)


def test_relative_quality_is_one_for_the_best_and_zero_a_span_below() -> None:
    assert relative_quality([0.9, 0.8, 0.7, 0.2]) == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert relative_quality([0.5]) == [1.0]


def test_near_equal_quality_lets_cost_decide() -> None:
    models = [
        entry("a/dear", "a", input_price=5.0, output_price=20.0, base=0.80),
        entry("b/cheap", "b", input_price=0.1, output_price=0.2, base=0.79),
    ]
    assert select(analysis_for("factual"), models).primary_model == "b/cheap"
    models[1] = replace(models[1], specialties={d: 0.6 for d in models[1].specialties})
    assert select(analysis_for("factual"), models).primary_model == "a/dear"


def test_specialty_is_the_probability_weighted_sum() -> None:
    analysis = analysis_for("coding", probabilities={"coding": 0.5, "math": 0.25, "creative": 0.25})
    coder = by_id(select(analysis, catalogue()).candidates)["acme/coder-pro"]
    assert coder.breakdown.specialty == pytest.approx(0.5 * 0.95 + 0.25 * 0.8 + 0.25 * 0.75)


def test_cost_and_latency_estimates() -> None:
    model = entry("m", "f", input_price=2.0, output_price=10.0, ttft=0.5, tps=100)
    assert estimate_cost(model, 1_000, 500) == pytest.approx((1_000 * 2.0 + 500 * 10.0) / 1e6)
    assert estimate_latency(model, 500) == pytest.approx(5.5)
    unknown = entry("u", "f", ttft=0.0, tps=0.0)
    assert estimate_latency(unknown, 100) == pytest.approx(1.0 + 2.0)  # defaults: 1 s, 50 tok/s


def test_context_tokens_are_billed_as_prompt_tokens() -> None:
    analysis = analysis_for("classification", prompt_tokens=2_000, context_tokens=3_000)
    coder = by_id(select(analysis, catalogue()).candidates)["acme/coder-pro"]
    assert coder.estimated_cost_usd == pytest.approx((5_000 * 3.0 + 50 * 15.0) / 1e6)


def test_candidates_carry_cost_and_family() -> None:
    analysis = analysis_for("classification", prompt_tokens=2_000)
    coder = by_id(select(analysis, catalogue()).candidates)["acme/coder-pro"]
    assert coder.family == "acme"
    assert coder.estimated_cost_usd == pytest.approx((2_000 * 3.0 + 50 * 15.0) / 1e6)


def test_reasons_are_one_sentence_naming_the_domain() -> None:
    selection = select(analysis_for("coding"), catalogue())
    for candidate in selection.candidates:
        assert candidate.reason.endswith(".")
        assert "coding" in candidate.reason
        assert "$" in candidate.reason
    best = selection.candidates[0]
    assert best.reason.startswith("Best specialty for coding (0.95) at $")
    assert "cheapest" in best.reason and "fastest" in best.reason
    cheapest = by_id(selection.candidates)["dune/small"]
    assert "; cheapest, fastest." in cheapest.reason


def test_pinned_model_becomes_primary_even_when_not_first() -> None:
    selection = select(analysis_for("coding"), catalogue(), Preferences(pinned_model="cedar/writer"))
    assert selection.primary_model == "cedar/writer"
    assert selection.candidates[0].model == "acme/coder-pro"  # the ranking itself stays honest
    pinned = by_id(selection.candidates)["cedar/writer"]
    assert pinned.pinned and pinned.reason.startswith("Pinned by the caller;")
    assert "cedar/writer" not in selection.critic_models


@pytest.mark.parametrize(
    ("preferences", "models", "why"),
    [
        (Preferences(pinned_model="bolt/think", excluded_models=("bolt/think",)), None, "excluded"),
        (Preferences(pinned_model="bolt/think", allowed_models=("acme/mini",)), None, "allowed_models"),
        (Preferences(pinned_model="dune/small"), None, "context window"),
        (
            Preferences(pinned_model="bolt/think"),
            [
                replace(m, circuit=Circuit.OPEN, cooldown_remaining_s=12.2) if m.id == "bolt/think" else m
                for m in catalogue()
            ],
            "circuit open after repeated failures; retry in 13 s",
        ),
        (Preferences(pinned_model="acme/coder-pro", max_cost_usd=0.001), None, "over max_cost_usd $0.0010"),
    ],
    ids=["excluded", "not-allowed", "window", "circuit-open", "over-cap"],
)
def test_pinned_model_that_cannot_be_used_is_a_failed_precondition(preferences, models, why) -> None:
    analysis = analysis_for("coding", prompt_tokens=8_000)
    with pytest.raises(FailedPrecondition) as info:
        select(analysis, models or catalogue(), preferences)
    assert f"preferences.pinned_model {preferences.pinned_model!r} cannot be used" in info.value.message
    assert why in info.value.message


def test_allowed_list_keeps_only_those_models() -> None:
    selection = select(analysis_for("coding"), catalogue(), Preferences(allowed_models=("acme/mini", "dune/small")))
    assert {c.model for c in selection.candidates} == {"acme/mini", "dune/small"}
    assert {d.model: d.reason for d in selection.dropped} == {
        "acme/coder-pro": "not in preferences.allowed_models",
        "bolt/think": "not in preferences.allowed_models",
        "cedar/writer": "not in preferences.allowed_models",
    }


def test_excluded_models_are_dropped_with_the_reason() -> None:
    selection = select(analysis_for("coding"), catalogue(), Preferences(excluded_models=("acme/coder-pro",)))
    assert selection.primary_model != "acme/coder-pro"
    assert "acme/coder-pro" not in {c.model for c in selection.candidates}
    assert [(d.model, d.reason) for d in selection.dropped] == [
        ("acme/coder-pro", "excluded by preferences.excluded_models")
    ]


def test_cost_cap_drops_dear_models() -> None:
    analysis = analysis_for("coding", prompt_tokens=1_000)  # 900 output tokens
    cap = 0.005
    selection = select(analysis, catalogue(), Preferences(max_cost_usd=cap))
    assert all(c.estimated_cost_usd <= cap for c in selection.candidates)
    dropped = {d.model: d.reason for d in selection.dropped}
    assert set(dropped) == {"acme/coder-pro"}  # 0.003 + 0.0135
    assert dropped["acme/coder-pro"] == "estimated cost $0.017 is over max_cost_usd $0.0050"


def test_model_priced_exactly_at_the_cap_stays() -> None:
    analysis = analysis_for("coding", prompt_tokens=1_000)
    cost = estimate_cost(catalogue()[2], 1_000, 900)
    selection = select(analysis, catalogue(), Preferences(max_cost_usd=cost))
    assert "bolt/think" in {c.model for c in selection.candidates}


def test_open_circuits_and_small_windows_are_dropped() -> None:
    models = [replace(m, circuit=Circuit.OPEN) if m.id == "acme/coder-pro" else m for m in catalogue()]
    selection = select(analysis_for("coding", prompt_tokens=10_000), models)
    dropped = {d.model: d.reason for d in selection.dropped}
    assert dropped["acme/coder-pro"] == "circuit open after repeated failures"
    assert dropped["dune/small"].startswith("context window of 8,000 tokens is too small: needs ~10,900")
    assert selection.primary_model in {"bolt/think", "acme/mini", "cedar/writer"}


def test_half_open_model_is_eligible_with_a_warning_when_chosen() -> None:
    models = [replace(m, circuit=Circuit.HALF_OPEN) if m.id == "acme/coder-pro" else m for m in catalogue()]
    selection = select(analysis_for("coding"), models)
    assert selection.primary_model == "acme/coder-pro"
    assert "acme/coder-pro is recovering from failures (circuit half-open)" in selection.warnings


def test_no_eligible_model_explains_each_drop() -> None:
    everything = tuple(m.id for m in catalogue())
    with pytest.raises(FailedPrecondition) as info:
        select(analysis_for("coding"), catalogue(), Preferences(excluded_models=everything))
    assert info.value.message.startswith("no eligible model for this prompt: ")
    for model_id in everything:
        assert f"{model_id} (excluded by preferences.excluded_models)" in info.value.message


def test_empty_catalogue_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition, match="catalogue is empty"):
        select(analysis_for("coding"), [])


def test_critics_come_from_other_families_first() -> None:
    # acme/mini is the second-best coder but shares the primary's family: it goes last.
    selection = select(analysis_for("coding"), catalogue(), critic_count=4)
    assert selection.primary_model == "acme/coder-pro"
    assert selection.critic_models == ("bolt/think", "cedar/writer", "dune/small", "acme/mini")
    assert selection.warnings == ()


def test_default_critic_count_is_two_and_critics_differ_in_family() -> None:
    selection = select(analysis_for("coding"), catalogue())
    assert selection.critic_models == ("bolt/think", "cedar/writer")


def test_critics_spread_over_families() -> None:
    models = [*catalogue(), entry("bolt/think-lite", "bolt", specialties={"coding": 0.84}, base=0.7)]
    selection = select(analysis_for("coding"), models, critic_count=3)
    # bolt/think-lite outscores cedar/writer on coding, but bolt already has a critic.
    assert selection.critic_models == ("bolt/think", "cedar/writer", "dune/small")


def test_too_few_critics_and_same_family_critics_are_warned_about() -> None:
    models = [m for m in catalogue() if m.family == "acme"]
    selection = select(analysis_for("coding"), models, critic_count=3)
    assert selection.critic_models == ("acme/mini",)
    assert "only 1 critic(s) available; 3 requested" in selection.warnings
    assert any("every critic is from the primary's family (acme)" in w for w in selection.warnings)


def test_zero_critics() -> None:
    selection = select(analysis_for("coding"), catalogue(), critic_count=0)
    assert selection.critic_models == ()
    assert selection.warnings == ()


def test_order_critics_treats_missing_family_as_its_own() -> None:
    candidates = select(analysis_for("coding"), [replace(m, family="") for m in catalogue()]).candidates
    assert order_critics(candidates[1:], "", 2) == ["bolt/think", "acme/mini"]


def test_low_confidence_is_warned_about() -> None:
    analysis = analysis_for("coding", probabilities={"coding": 0.3, "math": 0.25, "factual": 0.25, "creative": 0.2})
    selection = select(analysis, catalogue())
    assert any(w.startswith("domain is uncertain (coding at 30%)") for w in selection.warnings)


def test_history_shrinks_the_prior_towards_measured_quality() -> None:
    history = {("acme/coder-pro", "coding"): HistoryStats(mean_quality=0.2, samples=45)}
    selection = select(analysis_for("coding"), catalogue(), history=history)
    coder = by_id(selection.candidates)["acme/coder-pro"]
    assert coder.breakdown.specialty == pytest.approx(0.95)
    # conjugate Normal update: prior sd 0.10, observation sd 0.15 (learning.py)
    prior_precision, data_precision = 1 / 0.10**2, 45 / 0.15**2
    expected = (0.95 * prior_precision + 0.2 * data_precision) / (prior_precision + data_precision)
    assert coder.breakdown.history == pytest.approx(expected)
    assert coder.reason.split(" for ")[0].endswith("measured quality")
    assert selection.primary_model != "acme/coder-pro"
    assert by_id(selection.candidates)["bolt/think"].reason.startswith("Best specialty for coding (0.85)")


def test_ties_are_broken_by_cost_then_id() -> None:
    twins = [
        entry("b/twin", "b", input_price=1.0),
        entry("a/twin", "a", input_price=1.0),
        entry("c/x", "c", input_price=0.5),
    ]
    selection = select(analysis_for("factual"), twins, Preferences(quality_weight=1.0))
    assert [c.model for c in selection.candidates] == ["c/x", "a/twin", "b/twin"]


# ---- validation --------------------------------------------------------------------------------


def test_weights_default_only_when_all_unset() -> None:
    assert resolve_weights(Preferences()) == Weights(1.0, 0.3, 0.2)
    assert resolve_weights(Preferences(cost_weight=2.0)) == Weights(0.0, 2.0, 0.0)
    assert resolve_weights(Preferences(quality_weight=0.0, latency_weight=1.0)) == Weights(0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("preferences", "field"),
    [
        (Preferences(quality_weight=-1.0), "preferences.quality_weight"),
        (Preferences(cost_weight=math.nan), "preferences.cost_weight"),
        (Preferences(latency_weight=math.inf), "preferences.latency_weight"),
        (Preferences(quality_weight=0.0, cost_weight=0.0, latency_weight=0.0), "preferences"),
        (Preferences(cost_weight=0.0), "preferences"),
        (Preferences(max_cost_usd=-0.5), "preferences.max_cost_usd"),
        (Preferences(max_cost_usd=math.nan), "preferences.max_cost_usd"),
        (Preferences(pinned_model="nope/model"), "preferences.pinned_model"),
        (Preferences(allowed_models=("acme/mini", "nope/model")), "preferences.allowed_models[1]"),
        (Preferences(excluded_models=("nope/model",)), "preferences.excluded_models[0]"),
        (Preferences(excluded_models=("  ",)), "preferences.excluded_models[0]"),
    ],
)
def test_bad_preferences_name_the_field(preferences: Preferences, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        select(analysis_for("coding"), catalogue(), preferences)
    assert info.value.field == field
    assert info.value.message.startswith(field + ": ")


def test_all_zero_weights_message_names_each_weight() -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_weights(Preferences(quality_weight=0.0, cost_weight=0.0, latency_weight=0.0))
    for name in ("quality_weight", "cost_weight", "latency_weight"):
        assert name in info.value.message


def test_unknown_model_message_lists_known_models() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_model_ids(Preferences(pinned_model="x"), {"b", "a"})
    assert info.value.message == "preferences.pinned_model: unknown model 'x'; known models: a, b"


@pytest.mark.parametrize("count", [-1, 6])
def test_critic_count_out_of_range(count: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        select(analysis_for("coding"), catalogue(), critic_count=count)
    assert info.value.field == "critic_count"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.0, "$0"),
        (0.0012, "$0.0012"),
        (0.012345, "$0.012"),
        (0.5, "$0.50"),
        (3.0, "$3.00"),
        (1234.5, "$1,234.50"),
        (0.000012, "$0.000012"),
    ],
)
def test_format_usd(amount: float, text: str) -> None:
    assert format_usd(amount) == text
