"""Pure tests of aggregation, stop rules and critique parsing."""

from __future__ import annotations

import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import policy
from services.orchestrator.critique import Critique, UnusableCritique, feedback_text, parse_critique
from services.orchestrator.prompts import load_prompts

RULES = policy.StopRules(threshold=8, max_rounds=5, epsilon=0.25, patience=2, budget_usd=1.0, time_limit_s=60)


def test_aggregate_is_robust_to_one_outlier() -> None:
    assert policy.aggregate([7, 7.5, 0]) == 7
    assert policy.aggregate([6, 8]) == 7
    assert policy.aggregate([9, 1, 7, 7, 8]) == pytest.approx((7 + 7 + 8) / 3)
    with pytest.raises(ValueError):
        policy.aggregate([])


def test_plateau_counts_trailing_rounds_without_progress() -> None:
    assert policy.plateau_length([5], 0.25) == 0
    assert policy.plateau_length([5, 6, 6.1], 0.25) == 1
    assert policy.plateau_length([5, 6, 6.1, 5.5], 0.25) == 2
    assert policy.plateau_length([5, 5.1, 7], 0.25) == 0


@pytest.mark.parametrize(
    ("history", "spent", "next_cost", "elapsed", "next_time", "reason"),
    [
        ([8.5], 0, 0, 0, 0, pb.STOP_REASON_THRESHOLD),
        ([5, 6, 6.1, 6.0], 0, 0, 0, 0, pb.STOP_REASON_PLATEAU),
        ([1, 2, 3, 4, 5], 0, 0, 0, 0, pb.STOP_REASON_MAX_ROUNDS),
        ([5], 0.9, 0.2, 0, 0, pb.STOP_REASON_BUDGET),
        ([5], 0, 0, 50, 11, pb.STOP_REASON_DEADLINE),
        ([5, 6], 0.1, 0.1, 10, 5, pb.STOP_REASON_UNSPECIFIED),
    ],
)
def test_decide(
    history: list[float], spent: float, next_cost: float, elapsed: float, next_time: float, reason: int
) -> None:
    decision = policy.decide(RULES, history, spent, next_cost, elapsed, next_time)
    assert decision.reason == reason
    assert decision.stop == (reason != pb.STOP_REASON_UNSPECIFIED)
    assert decision.text


def test_no_budget_means_no_budget_stop() -> None:
    rules = policy.StopRules(threshold=8, max_rounds=5, epsilon=0.25, patience=2, budget_usd=None, time_limit_s=60)
    assert not policy.decide(rules, [5], 1e6, 1e6, 0, 0).stop


@pytest.mark.parametrize(
    "text",
    [
        '{"rationale": "ok", "strengths": ["a"], "weaknesses": [], "suggestions": ["b"], "score": 7}',
        'Here is my review:\n```json\n{"rationale": "ok", "score": 7, "strengths": "a"}\n```\nThanks',
        'Sure! {"rationale": "ok", "score": "7/10"} hope this helps',
        '{"reasoning": "fine", "score": 7.0}',
    ],
)
def test_parse_accepts_reasonable_replies(text: str) -> None:
    critique = parse_critique(text)
    assert critique.score == 7
    assert critique.rationale in {"ok", "fine"}


def test_parse_falls_back_to_a_score_line() -> None:
    critique = parse_critique("Decent answer but misses edge cases.\nScore: 6.5/10")
    assert critique.score == 6.5
    assert critique.tolerant


@pytest.mark.parametrize(
    "text",
    ["", "no idea", '{"score": 11}', '{"score": -1}', '{"score": "high"}', '{"score": true}', '{"score": NaN}'],
)
def test_parse_rejects_unusable_replies(text: str) -> None:
    with pytest.raises(UnusableCritique):
        parse_critique(text)


def test_parse_caps_list_sizes() -> None:
    critique = parse_critique('{"score": 5, "suggestions": ' + str(["x"] * 100).replace("'", '"') + "}")
    assert len(critique.suggestions) == 20


def test_feedback_is_anonymous() -> None:
    text = feedback_text([Critique(score=6, rationale="r", weaknesses=["w"]), Critique(score=8, suggestions=["s"])])
    assert "Reviewer A (score 6/10)" in text
    assert "Reviewer B (score 8/10)" in text
    assert "- w" in text and "- s" in text


def test_templates_load_and_fill_without_interpreting_user_text() -> None:
    prompts = load_prompts()
    system, user = prompts.critique("What is $HOME?", "It is ${answer} literally")
    assert "score" in system.lower()
    assert "What is $HOME?" in user and "It is ${answer} literally" in user
    _, refine = prompts.refine("p", "a", "f")
    assert "## Your previous answer" in refine
    assert prompts.critique_schema["required"][-1] == "score"
