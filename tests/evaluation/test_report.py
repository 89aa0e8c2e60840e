"""The evaluation report built from synthetic records: statistics, Markdown safety, charts and files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.evaluation import charts
from services.evaluation.records import (
    SCHEMA_VERSION,
    CriticScore,
    Manifest,
    Pairwise,
    Record,
    RecordStatus,
    Round,
    Verdict,
)
from services.evaluation.report import build_report, md_escape, render_markdown, returned_round, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
SECRET = "sk-or-v1-0123456789abcdef0123456789abcdef"


# ---------------------------------------------------------------------------------------------------------------
# A small factory


def manifest(
    strategies: Sequence[str] = (), *, simulated: bool = False, suite: str = "gsm8k", models: Sequence[str] = ()
) -> Manifest:
    return Manifest(
        schema=SCHEMA_VERSION,
        suite=suite,
        strategies=list(strategies),
        limit=None,
        seed=0,
        judge_model="judge/model",
        pass_score=None,
        simulated=simulated,
        models=list(models) or ["m/a", "m/b"],
        started="2026-03-01T10:00:00Z",
        version="0.1.0",
        budget_usd=5.0,
        estimate_usd=1.25,
    )


def rnd(
    number: int,
    correct: bool | None = None,
    *,
    aggregate: float | None = None,
    critics: dict[str, float] | None = None,
    turn: int = 0,
    answer: str = "draft",
) -> Round:
    entry = Round(
        turn=turn,
        round=number,
        model="m/a",
        answer=answer,
        aggregate_score=aggregate,
        critic_scores=[CriticScore(model=m, score=s) for m, s in (critics or {}).items()],
    )
    if correct is not None:
        entry["verdict"] = Verdict(correct=correct, score=None, detail="checked")
    return entry


def rec(
    item: str,
    strategy: str,
    correct: bool | None = True,
    *,
    score: float | None = None,
    status: RecordStatus = "ok",
    model: str | None = None,
    cost: float = 0.01,
    judge_cost: float = 0.0,
    latency: float = 100.0,
    rounds: int = 1,
    stop: str | None = None,
    history: Sequence[Round] = (),
    answer: str = "42",
) -> Record:
    ok = status == "ok"
    if model is None:
        model = strategy.removeprefix("single:") if strategy.startswith("single:") else "m/a"
    return Record(
        schema=SCHEMA_VERSION,
        item_id=item,
        strategy=strategy,
        status=status,
        error=None if ok else "UNAVAILABLE: provider down",
        model=model,
        answers=[answer] if ok else [],
        verdict=Verdict(correct=correct, score=score, detail="ok") if ok else None,
        calls=[],
        cost_usd=cost,
        judge_cost_usd=judge_cost,
        latency_ms=latency,
        rounds=rounds,
        stop_reason=stop or ("single" if ok else status),
        round_history=list(history),
        category="gsm8k",
    )


def by_name(report: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [s for s in report["strategies"] if s["strategy"] == name]
    assert len(matches) == 1, name
    result: dict[str, Any] = matches[0]
    return result


def strict_json(report: dict[str, Any]) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(json.dumps(report, allow_nan=False), parse_constant=reject)


# ---------------------------------------------------------------------------------------------------------------
# Per-strategy figures


def test_counts_accuracy_and_costs_on_a_known_set() -> None:
    records = [
        rec("1", "single:m/a", True, cost=0.10, latency=100, judge_cost=0.001),
        rec("2", "single:m/a", True, cost=0.10, latency=200),
        rec("3", "single:m/a", False, cost=0.10, latency=300),
        rec("4", "single:m/a", True, cost=0.10, latency=400),
        rec("5", "single:m/a", status="failed", cost=0.05, latency=9999),
        rec("6", "single:m/a", status="skipped", cost=0.0, latency=0),
    ]
    report = build_report(manifest(["single:m/a"]), records, resamples=500)
    s = by_name(report, "single:m/a")
    assert (s["items"], s["ok"], s["failed"], s["skipped"]) == (6, 4, 1, 1)
    assert s["checked"] == 4
    assert s["correct"] == 3
    assert s["accuracy"] == 0.75  # failed and skipped are not wrong answers
    lo, hi = s["accuracy_ci"]
    assert lo <= 0.75 <= hi
    assert s["cost_total_usd"] == pytest.approx(0.45)
    assert s["cost_mean_usd"] == pytest.approx(0.45 / 5)  # over attempted items (ok + failed)
    assert s["cost_per_correct_usd"] == pytest.approx(0.15)
    assert s["latency_median_ms"] == 250.0  # ok records only
    assert s["latency_p90_ms"] == pytest.approx(370.0)
    assert s["mean_rounds"] == 1.0
    assert s["stop_reasons"] == {"single": 4, "failed": 1, "skipped": 1}
    assert s["judge_cost_usd"] == pytest.approx(0.001)
    assert s["mean_score"] is None
    assert report["kind"] == "checkable"
    assert report["totals"]["spent_usd"] == pytest.approx(0.451)
    assert any("not wrong answers" in note for note in report["notes"])


def test_cost_per_correct_is_none_without_a_correct_answer() -> None:
    report = build_report(manifest(["single:m/a"]), [rec("1", "single:m/a", False)], resamples=200)
    s = by_name(report, "single:m/a")
    assert s["accuracy"] == 0.0
    assert s["cost_per_correct_usd"] is None


def test_last_record_wins_on_duplicates() -> None:
    records = [
        rec("1", "single:m/a", status="failed", cost=0.02),
        rec("2", "single:m/a", False),
        rec("1", "single:m/a", True, cost=0.03),
        rec("2", "single:m/a", True),
    ]
    report = build_report(manifest(["single:m/a"]), records, resamples=200)
    s = by_name(report, "single:m/a")
    assert (s["items"], s["ok"], s["failed"], s["correct"]) == (2, 2, 0, 2)
    assert s["cost_total_usd"] == pytest.approx(0.04)
    assert report["totals"]["superseded_records"] == 2
    assert report["totals"]["strategy_cost_usd"] == pytest.approx(0.07)  # the retried attempts were paid for


def test_strategies_follow_the_manifest_order_then_extra_ones() -> None:
    records = [rec("1", "self-moa"), rec("1", "single:m/b"), rec("1", "single:m/a")]
    report = build_report(manifest(["single:m/a", "single:m/b", "unused"]), records, resamples=100)
    assert [s["strategy"] for s in report["strategies"]] == ["single:m/a", "single:m/b", "self-moa"]


# ---------------------------------------------------------------------------------------------------------------
# Oracle and selection


def _routing_records() -> list[Record]:
    # item: (m/a right, m/b right, selector's pick)
    table = {
        "1": (True, False, "m/a"),
        "2": (False, True, "m/a"),
        "3": (False, True, "m/b"),
        "4": (False, False, "m/b"),
    }
    records: list[Record] = []
    for item, (a_ok, b_ok, pick) in table.items():
        records.append(rec(item, "single:m/a", a_ok, cost=0.01))
        records.append(rec(item, "single:m/b", b_ok, cost=0.10))
        records.append(rec(item, "single:selected", a_ok if pick == "m/a" else b_ok, model=pick))
    return records


def test_oracle_and_selection_accuracy_on_a_hand_made_case() -> None:
    report = build_report(manifest(), _routing_records(), resamples=300)
    oracle = report["oracle"]
    assert oracle["derived"] is True
    assert oracle["singles"] == ["single:m/a", "single:m/b"]
    assert oracle["correct"] == 3
    assert oracle["accuracy"] == 0.75
    # Cheapest right single: 0.01 (item 1), 0.10, 0.10; none right on item 4: the cheapest single, 0.01.
    assert oracle["cost_total_usd"] == pytest.approx(0.22)
    assert oracle["cost_mean_usd"] == pytest.approx(0.055)
    assert oracle["cost_per_correct_usd"] == pytest.approx(0.22 / 3)
    selection = report["selection"]
    assert selection["items"] == 3  # item 4: no single was right
    assert selection["selected_correct_model"] == 2
    assert selection["selection_accuracy"] == pytest.approx(2 / 3)
    assert selection["items_no_single_correct"] == 1
    assert selection["left_out"] == 0
    assert selection["picks"] == {"m/a": 2, "m/b": 2}
    assert by_name(report, "single:selected")["accuracy"] == 0.5
    assert selection["gap_items"] == 4
    assert (selection["oracle_accuracy"], selection["selected_accuracy"]) == (0.75, 0.5)
    assert selection["oracle_gap"] == pytest.approx(0.25)
    assert report["oracle"] not in report["strategies"]


def test_selection_leaves_out_picks_without_a_checked_single_run() -> None:
    records = [
        # item 1: the pick (m/c) was never run as a single: neither hit nor miss
        rec("1", "single:m/a", True),
        rec("1", "single:m/b", False),
        rec("1", "single:selected", True, model="m/c"),
        # item 2: a hit
        rec("2", "single:m/a", True),
        rec("2", "single:m/b", False),
        rec("2", "single:selected", True, model="m/a"),
        # item 3: a miss (m/b wrong where m/a was right)
        rec("3", "single:m/a", True),
        rec("3", "single:m/b", False),
        rec("3", "single:selected", False, model="m/b"),
        # item 4: the pick's single run failed on this item: unknown, left out
        rec("4", "single:m/a", True),
        rec("4", "single:m/b", status="failed"),
        rec("4", "single:selected", True, model="m/b"),
    ]
    report = build_report(manifest(), records, resamples=100)
    selection = report["selection"]
    assert selection["items"] == 2
    assert selection["selected_correct_model"] == 1
    assert selection["selection_accuracy"] == 0.5  # not 1/4: unknown picks are not misses
    assert selection["left_out"] == 2
    assert selection["selected_model_not_run_as_single"] == 1
    assert selection["selected_model_single_unchecked"] == 1
    markdown = render_markdown(report)
    assert "2 items were left out" in markdown


def test_oracle_gap_is_over_the_items_both_were_checked_on() -> None:
    records = []
    # The oracle is right on items 1 and 2 and wrong on 3 and 4; single:selected answered only 1 and 2.
    for item, right in (("1", True), ("2", True), ("3", False), ("4", False)):
        records.append(rec(item, "single:m/a", right, score=8.0 if right else 2.0))
        records.append(rec(item, "single:m/b", False, score=1.0))
    records.append(rec("1", "single:selected", True, model="m/a", score=8.0))
    records.append(rec("2", "single:selected", False, model="m/b", score=1.0))
    records.append(rec("3", "single:selected", status="failed", model="m/a"))
    records.append(rec("4", "single:selected", status="failed", model="m/a"))
    report = build_report(manifest(suite="mt-bench"), records, resamples=100)
    # Over their own items both are at 50% (a gap of 0): on the shared items the oracle is 50 points ahead.
    assert report["oracle"]["accuracy"] == 0.5
    assert by_name(report, "single:selected")["accuracy"] == 0.5
    selection = report["selection"]
    assert selection["gap_items"] == 2
    assert selection["oracle_accuracy"] == 1.0
    assert selection["selected_accuracy"] == 0.5
    assert selection["oracle_gap"] == pytest.approx(0.5)
    assert selection["score_gap_items"] == 2
    assert selection["oracle_mean_score"] == pytest.approx(8.0)
    assert selection["selected_mean_score"] == pytest.approx(4.5)
    assert selection["oracle_score_gap"] == pytest.approx(3.5)
    assert "on the 2 items both were checked on: 100.0% - 50.0% = 50.0 points" in render_markdown(report)


def test_oracle_is_omitted_with_a_note_below_two_singles() -> None:
    records = [rec("1", "single:m/a"), rec("1", "single:selected", model="m/a")]
    report = build_report(manifest(), records, resamples=100)
    assert report["oracle"] is None
    assert any("Oracle omitted" in note for note in report["notes"])
    assert report["selection"]["selection_accuracy"] == 1.0
    assert report["selection"]["oracle_gap"] is None


def test_judged_oracle_takes_the_best_score() -> None:
    records = [
        rec("1", "single:m/a", True, score=8.0),
        rec("1", "single:m/b", False, score=4.0),
        rec("2", "single:m/a", False, score=3.0),
        rec("2", "single:m/b", False, score=5.0),
    ]
    report = build_report(manifest(suite="mt-bench"), records, resamples=100)
    assert report["oracle"]["mean_score"] == pytest.approx(6.5)
    assert report["oracle"]["accuracy"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# Refinement


def _refining_records() -> list[Record]:
    """Five items where returning the best-scored version and returning the last one differ."""
    return [
        # stopped after round 1, right
        rec("1", "orchestrate", True, rounds=1, stop="threshold", history=[rnd(1, True, aggregate=9.0)]),
        # wrong, then right and better scored at round 2
        rec(
            "2",
            "orchestrate",
            True,
            rounds=2,
            stop="threshold",
            history=[rnd(1, False, aggregate=4.0), rnd(2, True, aggregate=8.0)],
        ),
        # right, wrong, wrong: the best-scored (round 1) is returned
        rec(
            "3",
            "orchestrate",
            True,
            rounds=3,
            stop="max_rounds",
            history=[rnd(1, True, aggregate=8.0), rnd(2, False, aggregate=6.0), rnd(3, False, aggregate=7.0)],
        ),
        # wrong all along, stopped after 2 (a tie: the earlier is returned)
        rec(
            "4",
            "orchestrate",
            False,
            rounds=2,
            stop="plateau",
            history=[rnd(1, False, aggregate=5.0), rnd(2, False, aggregate=5.0)],
        ),
        # right then wrong at the same score: the earliest is returned, so the right one
        rec(
            "5",
            "orchestrate",
            True,
            rounds=2,
            stop="plateau",
            history=[rnd(1, True, aggregate=7.0), rnd(2, False, aggregate=7.0)],
        ),
    ]


def test_accuracy_by_round_has_a_returned_and_a_last_version_curve() -> None:
    report = build_report(manifest(["orchestrate"]), _refining_records(), resamples=100)
    (curve,) = report["accuracy_by_round"]
    assert curve["strategy"] == "orchestrate"
    rows = {r["round"]: r for r in curve["rounds"]}
    assert sorted(rows) == [1, 2, 3]
    # Last version: round 1: items 1, 3, 5 right; round 2: 1 (carried), 2 fixed, 3, 5 broke; round 3: the same.
    assert [rows[k]["last_version_accuracy"] for k in (1, 2, 3)] == [0.6, 0.4, 0.4]
    # Returned (best score so far, earliest on ties): 2's round 2, and 3's and 5's round 1, are kept.
    assert [rows[k]["returned_accuracy"] for k in (1, 2, 3)] == [0.6, 0.8, 0.8]
    assert [rows[k]["last_version_n"] for k in (1, 2, 3)] == [5, 5, 5]
    assert [rows[k]["returned_n"] for k in (1, 2, 3)] == [5, 5, 5]
    assert [rows[k]["still_refining"] for k in (1, 2, 3)] == [5, 4, 1]
    assert curve["final_accuracy"] == 0.8
    assert rows[3]["returned_accuracy"] == curve["final_accuracy"]  # the returned curve ends at the final answer
    s = by_name(report, "orchestrate")
    assert s["mean_rounds"] == 2.0
    assert s["stop_reasons"] == {"threshold": 2, "plateau": 2, "max_rounds": 1}


def test_best_vs_last_compares_the_returned_answer_with_the_last_version() -> None:
    report = build_report(manifest(["orchestrate"]), _refining_records(), resamples=100)
    (versus,) = report["best_vs_last"]
    assert versus["strategy"] == "orchestrate"
    assert versus["items"] == 5
    assert versus["returned_not_last"] == 3  # items 3, 4 and 5
    assert (versus["returned_correct"], versus["last_correct"]) == (4, 2)
    assert (versus["returned_accuracy"], versus["last_accuracy"]) == (0.8, 0.4)
    assert versus["difference"] == pytest.approx(0.4)
    assert (versus["only_returned_correct"], versus["only_last_correct"]) == (2, 0)
    assert versus["p_value"] == pytest.approx(0.5)
    (curve,) = report["accuracy_by_round"]
    assert versus["last_accuracy"] == curve["rounds"][-1]["last_version_accuracy"]
    markdown = render_markdown(report)
    assert "## Best-scored vs last version" in markdown
    assert "| orchestrate | 5 | 3 | 80.0% | 40.0% | +40.0 pts | 2 / 0 | 0.500 |" in markdown
    assert "| orchestrate | 2 | 5 | 4 | 80.0% | 40.0% |" in markdown  # round 2: returned, then last version


def test_accuracy_by_round_chart_draws_returned_solid_and_last_version_dashed() -> None:
    report = build_report(manifest(["orchestrate"]), _refining_records(), resamples=100)
    figure = charts.accuracy_by_round(report)
    assert figure is not None
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    returned = lines["orchestrate"]
    last = lines["_orchestrate (last version)"]  # drawn, but keyed in the legend by its style
    assert returned.get_linestyle() == "-"
    assert last.get_linestyle() == "--"
    assert np.asarray(returned.get_ydata()).tolist() == [0.6, 0.8, 0.8]
    assert np.asarray(last.get_ydata()).tolist() == [0.6, 0.4, 0.4]
    assert returned.get_color() == last.get_color()
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "orchestrate",
        "returned (best score so far)",
        "last version",
    ]


def test_returned_round_is_the_best_score_earliest_on_ties_else_the_last() -> None:
    assert returned_round([]) is None
    assert returned_round([rnd(1), rnd(2), rnd(3)]) == 3  # none scored: the last
    assert returned_round([rnd(1, aggregate=6.0), rnd(2, aggregate=8.0), rnd(3, aggregate=8.0)]) == 2
    assert returned_round([rnd(1, aggregate=6.0), rnd(2)]) == 1  # an unscored version never wins
    assert returned_round([rnd(1, aggregate=float("nan")), rnd(2)]) == 2


def test_accuracy_by_round_uses_the_last_turn_only() -> None:
    history = [rnd(1, False, turn=0), rnd(2, False, turn=0), rnd(1, True, turn=1)]
    records = [rec("1", "self-refine", True, history=history)]
    (curve,) = build_report(manifest(), records, resamples=100)["accuracy_by_round"]
    assert [r["last_version_accuracy"] for r in curve["rounds"]] == [1.0]
    assert [r["returned_accuracy"] for r in curve["rounds"]] == [1.0]


def test_refinement_flips_overall_and_per_transition() -> None:
    records = [
        rec("1", "self-refine", False, history=[rnd(1, True), rnd(2, False)]),  # broke
        rec("2", "self-refine", True, history=[rnd(1, False), rnd(2, False), rnd(3, True)]),  # fixed at 2 -> 3
        rec("3", "self-refine", True, history=[rnd(1, True), rnd(2, True)]),  # unchanged
        rec("4", "self-refine", True, history=[rnd(1, False), rnd(2, True)]),  # fixed
        rec("5", "self-refine", status="failed"),
    ]
    report = build_report(manifest(["self-refine"]), records, resamples=100)
    (flip,) = report["flips"]
    assert flip["items"] == 4
    assert (flip["first_correct"], flip["final_correct"]) == (2, 3)
    assert (flip["broke"], flip["fixed"]) == (1, 2)
    assert flip["broke_rate"] == 0.25
    assert flip["fixed_rate"] == 0.5
    assert flip["broke_share_of_first_correct"] == 0.5
    assert flip["fixed_share_of_first_wrong"] == 1.0
    transitions = {(t["from_round"], t["to_round"]): t for t in flip["transitions"]}
    assert (transitions[1, 2]["items"], transitions[1, 2]["broke"], transitions[1, 2]["fixed"]) == (4, 1, 1)
    assert (transitions[2, 3]["items"], transitions[2, 3]["broke"], transitions[2, 3]["fixed"]) == (1, 0, 1)


def test_non_refining_strategies_have_no_round_sections() -> None:
    report = build_report(manifest(), [rec("1", "single:m/a"), rec("1", "self-moa")], resamples=100)
    assert report["accuracy_by_round"] == []
    assert report["flips"] == []
    assert report["best_vs_last"] == []
    assert report["critic_calibration"] == []
    assert report["critic_agreement"] == []


# ---------------------------------------------------------------------------------------------------------------
# Critics


def test_critic_calibration_auc_from_round_scores() -> None:
    records = []
    for i in range(6):
        right = i % 2 == 0
        score = 9.0 if right else 3.0
        history = [rnd(1, right, aggregate=score, critics={"c/good": score, "c/bad": 10.0 - score})]
        records.append(rec(str(i), "orchestrate", right, history=history))
    (calibration,) = build_report(manifest(), records, resamples=100)["critic_calibration"]
    assert calibration["strategy"] == "orchestrate"
    assert calibration["aggregate"]["auc"] == 1.0
    assert (calibration["aggregate"]["positives"], calibration["aggregate"]["negatives"]) == (3, 3)
    critics = {c["model"]: c["auc"] for c in calibration["critics"]}
    assert critics == {"c/bad": 0.0, "c/good": 1.0}


def test_critic_calibration_and_agreement_are_per_strategy() -> None:
    records = []
    for i in range(8):
        right = i % 2 == 0
        # orchestrate's panel ranks right answers higher; self-refine's self-critique ranks them lower.
        good = 9.0 if right else 3.0
        panel = {"c/1": good, "c/2": good, "c/3": good}
        records.append(rec(str(i), "orchestrate", right, history=[rnd(1, right, aggregate=good, critics=panel)]))
        bad = 10.0 - good
        records.append(rec(str(i), "self-refine", right, history=[rnd(1, right, aggregate=bad, critics={"m/a": bad})]))
        # a two-critic panel whose critics are uncorrelated (orthogonal +-1 patterns)
        pair = {"c/1": 5.0 + (1 if i % 2 else -1), "c/2": 5.0 + (1 if i % 4 < 2 else -1)}
        records.append(rec(str(i), "orchestrate:critics=2", right, history=[rnd(1, right, critics=pair)]))
    report = build_report(manifest(), records, resamples=100)
    calibration = {c["strategy"]: c for c in report["critic_calibration"]}
    assert set(calibration) == {"orchestrate", "self-refine", "orchestrate:critics=2"}
    assert calibration["orchestrate"]["aggregate"]["auc"] == 1.0
    assert calibration["self-refine"]["aggregate"]["auc"] == 0.0  # pooled with orchestrate it would look like 0.5
    assert calibration["self-refine"]["aggregate"]["rounds"] == 8
    assert [c["model"] for c in calibration["self-refine"]["critics"]] == ["m/a"]
    assert calibration["orchestrate:critics=2"]["aggregate"]["rounds"] == 0  # no aggregate score given
    assert calibration["orchestrate:critics=2"]["aggregate"]["auc"] is None
    agreement = {a["strategy"]: a for a in report["critic_agreement"]}
    assert set(agreement) == {"orchestrate", "orchestrate:critics=2"}  # self-refine has one critic per round
    assert agreement["orchestrate"]["k"] == 3
    assert agreement["orchestrate"]["n_eff"] == pytest.approx(1.0)
    assert agreement["orchestrate:critics=2"]["k"] == 2
    assert agreement["orchestrate:critics=2"]["mean_r"] == pytest.approx(0.0)
    assert agreement["orchestrate:critics=2"]["n_eff"] == pytest.approx(2.0)
    markdown = render_markdown(report)
    assert "| self-refine | aggregate | 8 | 4 | 4 | 0.00 |" in markdown
    assert "| orchestrate:critics=2 | 8 | 2 | 0.00 | 2.00 |" in markdown


def test_critic_calibration_is_none_with_one_class() -> None:
    records = [rec(str(i), "orchestrate", True, history=[rnd(1, True, aggregate=float(i))]) for i in range(4)]
    (calibration,) = build_report(manifest(), records, resamples=100)["critic_calibration"]
    assert calibration["aggregate"]["rounds"] == 4
    assert calibration["aggregate"]["auc"] is None


def test_critic_agreement_of_identical_critics_is_one_effective_critic() -> None:
    records = [
        rec(str(i), "orchestrate", history=[rnd(1, aggregate=float(i), critics={"x": i, "y": i, "z": i})])
        for i in range(8)
    ]
    (agreement,) = build_report(manifest(), records, resamples=100)["critic_agreement"]
    assert agreement["strategy"] == "orchestrate"
    assert agreement["k"] == 3
    assert agreement["rounds"] == 8
    assert agreement["mean_r"] == pytest.approx(1.0)
    assert agreement["n_eff"] == pytest.approx(1.0)
    assert {(p["a"], p["b"]) for p in agreement["pairs"]} == {("x", "y"), ("x", "z"), ("y", "z")}


# ---------------------------------------------------------------------------------------------------------------
# Paired tests


def test_paired_mcnemar_against_selected_and_self_moa() -> None:
    records = []
    for i in range(14):
        item = str(i)
        # orchestrate right on all 14; selected right on the first 4 only: b=10, c=0
        records.append(rec(item, "orchestrate:rounds=3", True))
        records.append(rec(item, "single:selected", i < 4, model="m/a"))
        records.append(rec(item, "self-moa", True))
    records.append(rec("x", "orchestrate:rounds=3", status="failed"))
    records.append(rec("x", "single:selected", False, model="m/a"))
    report = build_report(manifest(), records, resamples=300)
    tests = {t["b"]: t for t in report["paired_tests"]}
    assert set(tests) == {"single:selected", "self-moa"}
    vs_selected = tests["single:selected"]
    assert vs_selected["a"] == "orchestrate:rounds=3"
    assert vs_selected["n"] == 14  # the failed item is not a pair
    assert (vs_selected["only_a_correct"], vs_selected["only_b_correct"]) == (10, 0)
    assert vs_selected["p_value"] == pytest.approx(2 * 0.5**10)
    assert vs_selected["difference"] == pytest.approx(10 / 14)
    lo, hi = vs_selected["difference_ci"]
    assert 0 < lo <= 10 / 14 <= hi
    assert vs_selected["conclusion"] == "better"
    assert tests["self-moa"]["p_value"] == 1.0
    assert tests["self-moa"]["conclusion"] == "no significant difference"


def test_paired_test_says_worse_when_the_baseline_wins() -> None:
    records = []
    for i in range(12):
        records.append(rec(str(i), "orchestrate", False))
        records.append(rec(str(i), "self-moa", True))
    (test,) = build_report(manifest(), records, resamples=100)["paired_tests"]
    assert test["conclusion"] == "worse"
    assert test["p_value"] == pytest.approx(2 * 0.5**12)


def test_paired_tests_match_strategy_kinds_not_exact_names() -> None:
    records = []
    for i in range(12):
        item = str(i)
        records.append(rec(item, "orchestrate", True))
        records.append(rec(item, "orchestrate:critics=2", True))
        records.append(rec(item, "single:selected", i < 6, model="m/a"))
        records.append(rec(item, "self-moa:samples=3", False))
        records.append(rec(item, "self-moa", True))
        records.append(rec(item, "self-moa-like", False))  # not a self-moa: no test against it
        records.append(rec(item, "orchestrated", False))  # not an orchestrate: not tested
    report = build_report(manifest(), records, resamples=100)
    pairs = {(t["a"], t["b"]): t for t in report["paired_tests"]}
    assert set(pairs) == {
        (a, b)
        for a in ("orchestrate", "orchestrate:critics=2")
        for b in ("single:selected", "self-moa:samples=3", "self-moa")
    }
    vs_samples = pairs["orchestrate", "self-moa:samples=3"]
    assert vs_samples["n"] == 12
    assert (vs_samples["only_a_correct"], vs_samples["only_b_correct"]) == (12, 0)
    assert vs_samples["p_value"] == pytest.approx(2 * 0.5**12)
    assert vs_samples["conclusion"] == "better"
    assert pairs["orchestrate:critics=2", "self-moa:samples=3"]["conclusion"] == "better"
    assert "| orchestrate | self-moa:samples=3 | 12 |" in render_markdown(report)


def test_judged_suite_reports_scores_and_a_sign_test() -> None:
    records = []
    for i in range(10):
        records.append(rec(str(i), "orchestrate", True, score=8.0 + (i % 2), judge_cost=0.002))
        records.append(rec(str(i), "single:selected", i < 3, score=6.0 if i < 9 else 9.0, model="m/a"))
    report = build_report(manifest(suite="mt-bench"), records, resamples=300)
    assert report["kind"] == "judged"
    assert report["metric"] == "mean_score"
    s = by_name(report, "orchestrate")
    assert s["mean_score"] == pytest.approx(8.5)
    lo, hi = s["score_ci"]
    assert 8.0 <= lo <= 8.5 <= hi <= 9.0
    assert s["accuracy"] == 1.0
    assert s["judge_cost_usd"] == pytest.approx(0.02)
    (test,) = report["paired_tests"]
    assert test["metric"] == "mean_score"
    assert (test["a_higher"], test["b_higher"], test["ties"]) == (9, 0, 1)
    assert test["p_value"] == pytest.approx(2 * 0.5**9)
    assert test["difference"] == pytest.approx(8.5 - 6.3)
    assert test["conclusion"] == "better"
    markdown = render_markdown(report)
    assert "Mean score [95% CI]" in markdown
    assert "exact sign test" in markdown


# ---------------------------------------------------------------------------------------------------------------
# Whole report, Markdown and files


def _full_run(*, simulated: bool) -> tuple[Manifest, list[Record]]:
    records: list[Record] = []
    for i in range(12):
        item = f"q{i}"
        hostile = f"{XSS} {SECRET}"
        records.append(rec(item, "single:m/a", i % 3 != 0, cost=0.002, answer=hostile))
        records.append(rec(item, "single:a|b", i % 2 == 0, cost=0.02, answer=hostile))
        records.append(rec(item, "single:selected", i % 3 != 0, model="a|b" if i % 2 else "m/a", answer=hostile))
        history = [
            rnd(1, i % 4 != 0, aggregate=6.0 + i % 3, critics={"c/1": 5.0 + i % 4, "c/2": 4.0 + i % 3}, answer=hostile),
            rnd(2, i % 5 != 0, aggregate=7.0 + i % 2, critics={"c/1": 6.0 + i % 3, "c/2": 5.0 + i % 4}, answer=hostile),
        ]
        records.append(rec(item, "orchestrate", i % 5 != 0, rounds=2, history=history, cost=0.05, answer=hostile))
        records.append(rec(item, "self-moa", i % 2 == 0, cost=0.04, answer=hostile))
    records.append(rec("q99", "orchestrate", status="skipped", cost=0.0))
    strategies = ["single:m/a", "single:a|b", "single:selected", "orchestrate", "self-moa"]
    return manifest(strategies, simulated=simulated, models=["m/a", "a|b"]), records


def test_report_is_strict_json_and_deterministic() -> None:
    run_manifest, records = _full_run(simulated=False)
    first = build_report(run_manifest, records, resamples=300, seed=4)
    second = build_report(run_manifest, records, resamples=300, seed=4)
    assert first == second
    parsed = strict_json(first)
    assert parsed["manifest"] == dict(run_manifest)
    assert "records" not in parsed
    assert set(parsed) >= {
        "strategies",
        "oracle",
        "selection",
        "accuracy_by_round",
        "best_vs_last",
        "flips",
        "critic_calibration",
        "critic_agreement",
        "paired_tests",
    }
    assert XSS not in json.dumps(parsed)  # the records (and their answers) are not repeated
    assert build_report(run_manifest, records, resamples=300, seed=5) != first


def test_non_finite_numbers_become_null(tmp_path: Path) -> None:
    records = [
        rec("1", "single:m/a", True, cost=float("nan"), latency=float("inf")),
        rec("2", "single:m/a", False, cost=0.01, latency=10.0),
    ]
    report = build_report(manifest(), records, resamples=100)
    strict_json(report)
    s = by_name(report, "single:m/a")
    assert s["cost_total_usd"] is None
    assert s["latency_p90_ms"] == 10.0  # the unmeasurable latency is left out
    assert s["accuracy"] == 0.5
    write_report(tmp_path, manifest(), records)
    strict_json(json.loads((tmp_path / "report.json").read_text()))


def test_write_report_writes_png_charts_json_and_markdown(tmp_path: Path) -> None:
    run_manifest, records = _full_run(simulated=True)
    paths = write_report(tmp_path, run_manifest, records)
    names = {p.relative_to(tmp_path).as_posix() for p in paths}
    assert names == {
        "report.json",
        "report.md",
        "charts/accuracy_vs_cost.png",
        "charts/accuracy_by_round.png",
        "charts/selection_vs_oracle.png",
        "charts/cost_per_correct.png",
    }
    for path in paths:
        assert path.is_file()
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(PNG_MAGIC)
            assert len(data) > 5000
    report = json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail)
    assert report["charts"] == [f"charts/{name}" for name in charts.CHARTS]
    markdown = (tmp_path / "report.md").read_text()
    for chart in report["charts"]:
        assert f"]({chart})" in markdown


def test_markdown_banner_iff_simulated_and_no_answer_text() -> None:
    for simulated in (True, False):
        run_manifest, records = _full_run(simulated=simulated)
        markdown = render_markdown(build_report(run_manifest, records, resamples=200))
        lines = markdown.splitlines()
        assert lines[0] == "# Evaluation report: gsm8k (2026-03-01)"
        assert ("**Simulation.**" in markdown) is simulated
        if simulated:
            assert lines[2].startswith("**Simulation.** Every model in this run is simulated")
        assert XSS not in markdown
        assert "<script" not in markdown
        assert SECRET not in markdown
        assert "UNAVAILABLE" not in markdown  # nor error text
        assert "a|b" not in markdown
        assert "single:a\\|b" in markdown
        for section in (
            "## Strategies",
            "## Oracle and selection",
            "## Accuracy by round",
            "## Best-scored vs last version",
            "## Refinement flips",
        ):
            assert section in markdown
        assert "## Critic calibration" in markdown
        assert "## Critic agreement" in markdown
        assert "## Paired tests" in markdown
        assert "## How to read this" in markdown
        assert "oracle *(derived)*" in markdown


def test_strategy_table_rows_have_as_many_cells_as_the_header() -> None:
    run_manifest, records = _full_run(simulated=False)
    markdown = render_markdown(build_report(run_manifest, records, resamples=100))
    table = markdown.split("## Strategies", 1)[1].split("\n\n", 2)[1].splitlines()
    widths = {line.replace("\\|", "").count("|") for line in table}
    assert len(table) == 2 + 5 + 1  # header, rule, five strategies, oracle
    assert len(widths) == 1


def test_chart_titles_say_simulated() -> None:
    run_manifest, records = _full_run(simulated=True)
    report = build_report(run_manifest, records, resamples=100)
    for draw in charts.CHARTS.values():
        figure = draw(report)
        assert figure is not None
        assert figure.axes[0].get_title().endswith("(simulated)")
    report["simulated"] = False
    figure = charts.accuracy_vs_cost(report)
    assert figure is not None
    assert "simulated" not in figure.axes[0].get_title()


def test_charts_without_data_are_skipped_and_stale_ones_removed(tmp_path: Path) -> None:
    (tmp_path / "charts").mkdir()
    stale = tmp_path / "charts" / "accuracy_by_round.png"
    stale.write_bytes(PNG_MAGIC)
    records = [rec("1", "single:m/a$x$", True), rec("1", "self-moa", False)]  # "$" would be mathtext
    paths = write_report(tmp_path, manifest(), records)
    names = {p.name for p in paths}
    assert "accuracy_by_round.png" not in names
    assert "accuracy_vs_cost.png" in names
    assert not stale.exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert "charts/accuracy_by_round.png" not in report["charts"]
    assert "accuracy_by_round.png" not in (tmp_path / "report.md").read_text()


def test_empty_records_make_a_report_that_says_so(tmp_path: Path) -> None:
    report = build_report(manifest(["single:m/a"]), [], resamples=100)
    assert report["empty"] is True
    assert report["strategies"] == []
    assert report["oracle"] is None
    strict_json(report)
    paths = write_report(tmp_path, manifest(["single:m/a"], simulated=True), [])
    assert {p.name for p in paths} == {"report.json", "report.md"}
    markdown = (tmp_path / "report.md").read_text()
    assert "Nothing to report" in markdown
    assert "**Simulation.**" in markdown


def test_a_run_where_everything_was_skipped(tmp_path: Path) -> None:
    records = [rec(str(i), s, status="skipped", cost=0.0) for i in range(3) for s in ("single:m/a", "single:m/b")]
    paths = write_report(tmp_path, manifest(["single:m/a", "single:m/b"]), records)
    report = json.loads((tmp_path / "report.json").read_text())
    assert by_name(report, "single:m/a")["accuracy"] is None
    assert by_name(report, "single:m/a")["skipped"] == 3
    assert report["oracle"]["items"] == 0
    assert {p.name for p in paths} >= {"report.json", "report.md"}
    assert "Nothing to report" not in (tmp_path / "report.md").read_text()


def test_md_escape_neutralises_table_and_html_syntax() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("`x`") == "\\`x\\`"
    assert md_escape("<img src=x>") == "&lt;img src=x&gt;"
    assert md_escape("[link](http://x)") == "\\[link\\](http://x)"
    assert md_escape("two\nlines") == "two lines"
    assert md_escape("openai/gpt-oss-120b") == "openai/gpt-oss-120b"


def test_pairwise_outcomes_are_counted_and_order_dependent_verdicts_are_half_wins() -> None:
    records = []
    outcomes = [["win", "win"], ["tie", "loss"], ["inconsistent", "unparsed"], ["win", "loss"]]
    for i, pair in enumerate(outcomes):
        records.append(rec(f"q{i}", "single:selected", score=6.0))
        mine = rec(f"q{i}", "orchestrate", score=7.0)
        mine["pairwise"] = Pairwise(baseline="single:selected", outcomes=pair)  # type: ignore[typeddict-item]
        records.append(mine)
    report = build_report(manifest(["single:selected", "orchestrate"], suite="mt-bench"), records, resamples=200)
    (row,) = report["pairwise"]
    assert (row["strategy"], row["baseline"]) == ("orchestrate", "single:selected")
    assert (row["win"], row["tie"], row["loss"], row["inconsistent"], row["unparsed"]) == (3, 1, 2, 1, 1)
    assert row["judgements"] == 8 and row["win_rate"] == pytest.approx((3 + 0.5 * 2) / 7)
    assert row["inconsistent_rate"] == pytest.approx(1 / 7)
    markdown = render_markdown(report)
    assert "## Pairwise (judge asked in both orders)" in markdown
    assert "| orchestrate | single:selected | 8 | 3 | 1 | 2 | 1 | 1 | 57.1% | 14.3% |" in markdown
