"""The evaluation report: statistics over the records of a run, as JSON, Markdown and PNG charts.

:func:`build_report` turns a :class:`~services.evaluation.records.Manifest` and its records into one JSON-able
dict (no numpy types, no NaN: undefined values are ``None``); :func:`render_markdown` writes that dict for
people; :func:`write_report` writes ``report.json``, ``report.md`` and ``charts/*.png`` into a run directory.

Rules the whole report follows:

- A resumed run may hold the same (item, strategy) twice: the last record wins.
- ``failed`` and ``skipped`` records are not wrong answers. They are counted apart and left out of accuracy,
  scores, latency and paired tests; their cost still counts (it was spent).
- The suite is *judged* when any verdict has a judge score (MT-Bench, custom files), else *checkable*
  (GSM8K, HumanEval). Accuracy is always the share of checked ok answers that are correct (for a judged
  suite: that pass the judge's pass mark); a judged suite is compared on the mean score.
- Confidence intervals are 95% percentile bootstraps over items, seeded per quantity from ``seed`` so the
  same records give the same report.
- Strategies are grouped by kind: ``orchestrate:rounds=5`` is an ``orchestrate`` and ``self-moa:samples=3`` a
  ``self-moa`` wherever the report pairs strategies. Critic figures (AUC, agreement) are per strategy, never
  pooled: critics and panel sizes differ between strategies.
- A comparison of two quantities is made on the items both have a value for (paired tests, the oracle gap,
  best-scored against last version).
- Model answers, prompts, errors and verdict details are untrusted text: none of them reaches the Markdown
  (and report.json does not repeat the records; results.jsonl has them). Strategy names and model ids are
  escaped wherever they are printed.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.evaluation import charts, stats
from services.evaluation.records import Manifest, Record, Round

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

REPORT_SCHEMA = 2
"""Version of the report.json layout (2: per-strategy critic figures, two accuracy-by-round curves)."""

CI_LEVEL = 0.95
ALPHA = 0.05
SELECTED = "single:selected"
ORCHESTRATE = "orchestrate"
SELF_MOA = "self-moa"
ORACLE = "oracle"

_NOT_WRONG = (
    "Failed and skipped records are not wrong answers: they are counted apart and excluded from accuracy, "
    "scores, latency and the paired tests (their cost still counts)."
)


# ---------------------------------------------------------------------------------------------------------------
# Record helpers


def dedupe(records: Iterable[Record]) -> list[Record]:
    """One record per (item_id, strategy), the last one given winning (a resumed run appends its retries)."""
    latest: dict[tuple[str, str], Record] = {}
    for record in records:
        key = (record["item_id"], record["strategy"])
        latest.pop(key, None)  # re-insert, so the order is that of the winning records
        latest[key] = record
    return list(latest.values())


def is_single_model(strategy: str) -> bool:
    """``single:<model id>``: one call to a fixed model (``single:selected`` is the selector's, not one)."""
    return strategy.startswith("single:") and strategy != SELECTED


def is_kind(strategy: str, kind: str) -> bool:
    """``strategy`` is ``kind`` itself or ``kind`` with options (``self-moa:samples=3`` is a ``self-moa``)."""
    return strategy == kind or strategy.startswith(kind + ":")


def is_refining(strategy: str, records: Sequence[Record] = ()) -> bool:
    """A strategy that revises its answer over rounds (``orchestrate*``, ``self-refine``, or any with rounds)."""
    if strategy.startswith(("orchestrate", "self-refine")):
        return True
    return any(len(r["round_history"]) >= 2 for r in records)


def _correct(record: Record) -> bool | None:
    """The final answer's correctness, None unless the record is ok and checked."""
    verdict = record["verdict"]
    if record["status"] != "ok" or verdict is None or verdict["correct"] is None:
        return None
    return bool(verdict["correct"])


def _score(record: Record) -> float | None:
    verdict = record["verdict"]
    if record["status"] != "ok" or verdict is None or verdict["score"] is None:
        return None
    return stats.finite(verdict["score"])


def _last_turn(record: Record) -> list[Round]:
    """The versions of the record's last turn (the one ``rounds`` describes), by round; empty unless ok."""
    history = record["round_history"]
    if record["status"] != "ok" or not history:
        return []
    last_turn = max(r["turn"] for r in history)
    return sorted((r for r in history if r["turn"] == last_turn), key=lambda r: r["round"])


def _round_verdicts(record: Record) -> dict[int, bool]:
    """Round -> correctness for the checked rounds of the record's last turn (the one ``rounds`` describes)."""
    checked: dict[int, bool] = {}
    for entry in _last_turn(record):
        verdict = entry.get("verdict")
        if verdict is not None and verdict["correct"] is not None:
            checked[entry["round"]] = bool(verdict["correct"])
    return checked


def returned_round(versions: Sequence[Round]) -> int | None:
    """The round a refining strategy returns among ``versions``: the highest aggregate score, earliest on ties;
    the last version when none was scored (as the orchestrator and self-refine do). None for no versions."""
    if not versions:
        return None
    scored = [(score, v["round"]) for v in versions if (score := stats.finite(v["aggregate_score"])) is not None]
    if not scored:
        return max(v["round"] for v in versions)
    return max(scored, key=lambda sr: (sr[0], -sr[1]))[1]


def _seed(seed: int, *labels: str) -> list[int]:
    """A seed per quantity: stable across runs and independent of the order quantities are computed in."""
    return [seed, *(zlib.crc32(label.encode("utf-8")) for label in labels)]


def _ci(values: Sequence[float], resamples: int, seed: list[int]) -> list[float] | None:
    interval = stats.bootstrap_ci(values, resamples=resamples, seed=seed, level=CI_LEVEL)
    return None if interval is None else [interval[0], interval[1]]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# ---------------------------------------------------------------------------------------------------------------
# Sections


def _strategy_summary(name: str, records: Sequence[Record], *, resamples: int, seed: int) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    failed = sum(1 for r in records if r["status"] == "failed")
    skipped = sum(1 for r in records if r["status"] == "skipped")
    outcomes = [c for c in (_correct(r) for r in ok) if c is not None]
    scores = [s for s in (_score(r) for r in ok) if s is not None]
    correct = sum(outcomes)
    cost_total = math.fsum(r["cost_usd"] for r in records)
    attempted = len(ok) + failed
    latencies = [r["latency_ms"] for r in ok]
    return {
        "strategy": name,
        "derived": False,
        "refining": is_refining(name, records),
        "items": len(records),
        "ok": len(ok),
        "failed": failed,
        "skipped": skipped,
        "checked": len(outcomes),
        "correct": correct,
        "accuracy": _ratio(correct, len(outcomes)),
        "accuracy_ci": _ci([float(c) for c in outcomes], resamples, _seed(seed, name, "accuracy")),
        "scored": len(scores),
        "mean_score": stats.mean(scores),
        "score_ci": _ci(scores, resamples, _seed(seed, name, "score")),
        "cost_total_usd": cost_total,
        "cost_mean_usd": _ratio(cost_total, attempted),
        "cost_per_correct_usd": _ratio(cost_total, correct),
        "latency_median_ms": stats.percentile(latencies, 50),
        "latency_p90_ms": stats.percentile(latencies, 90),
        "mean_rounds": stats.mean([float(r["rounds"]) for r in ok]),
        "stop_reasons": dict(Counter(r["stop_reason"] for r in records).most_common()),
        "judge_cost_usd": math.fsum(r["judge_cost_usd"] for r in records),
    }


def _checked_singles(by_strategy: Mapping[str, Sequence[Record]]) -> dict[str, list[Record]]:
    """item -> the single:<model> records of that item that are ok and checked (the oracle's candidates)."""
    per_item: dict[str, list[Record]] = {}
    for name, records in by_strategy.items():
        if is_single_model(name):
            for record in records:
                if _correct(record) is not None:
                    per_item.setdefault(record["item_id"], []).append(record)
    return per_item


def _oracle_score(runs: Sequence[Record]) -> float | None:
    return max((s for s in (_score(r) for r in runs) if s is not None), default=None)


def _oracle(
    by_strategy: Mapping[str, Sequence[Record]], *, resamples: int, seed: int
) -> tuple[dict[str, Any] | None, str | None]:
    """The best single model per item, in hindsight: an upper bound for routing among these singles."""
    singles = [name for name in by_strategy if is_single_model(name)]
    if len(singles) < 2:
        return None, (f"Oracle omitted: it needs at least two single:<model> strategies, this run has {len(singles)}.")
    per_item = _checked_singles(by_strategy)
    outcomes: list[float] = []
    scores: list[float] = []
    costs: list[float] = []
    for runs in per_item.values():
        right = [r for r in runs if _correct(r)]
        outcomes.append(1.0 if right else 0.0)
        if (best := _oracle_score(runs)) is not None:
            scores.append(best)
        # The oracle pays for the cheapest model that would have been right (the cheapest one when none was).
        costs.append(min(r["cost_usd"] for r in (right or runs)))
    correct = int(sum(outcomes))
    cost_total = math.fsum(costs)
    return {
        "strategy": ORACLE,
        "derived": True,
        "refining": False,
        "singles": singles,
        "note": "Derived from the single:<model> records: an upper bound for routing, not a runnable strategy.",
        "items": len(per_item),
        "ok": len(per_item),
        "failed": 0,
        "skipped": 0,
        "checked": len(outcomes),
        "correct": correct,
        "accuracy": _ratio(correct, len(outcomes)),
        "accuracy_ci": _ci(outcomes, resamples, _seed(seed, ORACLE, "accuracy")),
        "scored": len(scores),
        "mean_score": stats.mean(scores),
        "score_ci": _ci(scores, resamples, _seed(seed, ORACLE, "score")),
        "cost_total_usd": cost_total,
        "cost_mean_usd": _ratio(cost_total, len(costs)),
        "cost_per_correct_usd": _ratio(cost_total, correct),
        "latency_median_ms": None,
        "latency_p90_ms": None,
        "mean_rounds": None,
        "stop_reasons": {},
        "judge_cost_usd": 0.0,
    }, None


def _selection(
    by_strategy: Mapping[str, Sequence[Record]], oracle: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """How often the selector picked a model that was right, on items where some single model was right.

    The pick is judged by the record of ``single:<pick>`` on the same item. When there is none that is ok and
    checked (the picked model was not run as a single, or its run failed there), the pick can be neither a
    hit nor a miss: the item is left out of the denominator and counted apart.

    The gap to the oracle compares the two on the items both were checked on (a per-strategy accuracy over
    different items would mix the difficulty of the items into the gap).
    """
    singles = [name for name in by_strategy if is_single_model(name)]
    if SELECTED not in by_strategy:
        return None, "Selection accuracy omitted: the run has no single:selected strategy."
    if not singles:
        return None, "Selection accuracy omitted: the run has no single:<model> strategy to compare with."
    single_models = {name.removeprefix("single:") for name in singles}
    per_item = _checked_singles(by_strategy)
    # item -> model -> correct, from the single:<model> strategies (the model is the strategy's suffix)
    single_outcomes = {
        item: {r["strategy"].removeprefix("single:"): bool(_correct(r)) for r in runs}
        for item, runs in per_item.items()
    }
    compared = hits = not_run = not_checked = no_single_correct = 0
    picks: Counter[str] = Counter()
    for record in by_strategy[SELECTED]:
        if record["status"] != "ok":
            continue
        picks[record["model"]] += 1
        outcomes = single_outcomes.get(record["item_id"], {})
        if not any(outcomes.values()):
            no_single_correct += 1
            continue
        if record["model"] not in outcomes:
            if record["model"] in single_models:
                not_checked += 1
            else:
                not_run += 1
            continue
        compared += 1
        hits += outcomes[record["model"]]

    # The gap to the oracle, over the items both have a value for.
    selected_by_item = {r["item_id"]: r for r in by_strategy[SELECTED]}
    acc_pairs: list[tuple[float, float]] = []
    score_pairs: list[tuple[float, float]] = []
    if oracle is not None:
        for item, runs in per_item.items():
            answer = selected_by_item.get(item)
            if answer is None:
                continue
            if (correct := _correct(answer)) is not None:
                acc_pairs.append((1.0 if any(_correct(r) for r in runs) else 0.0, float(correct)))
            oracle_score, score = _oracle_score(runs), _score(answer)
            if oracle_score is not None and score is not None:
                score_pairs.append((oracle_score, score))
    oracle_acc = stats.mean([o for o, _ in acc_pairs])
    selected_acc = stats.mean([s for _, s in acc_pairs])
    oracle_score_mean = stats.mean([o for o, _ in score_pairs])
    selected_score_mean = stats.mean([s for _, s in score_pairs])
    return {
        "items": compared,
        "selected_correct_model": hits,
        "selection_accuracy": _ratio(hits, compared),
        "left_out": not_run + not_checked,
        "selected_model_not_run_as_single": not_run,
        "selected_model_single_unchecked": not_checked,
        "items_no_single_correct": no_single_correct,
        "picks": dict(sorted(picks.items(), key=lambda kv: (-kv[1], kv[0]))),
        "gap_items": len(acc_pairs),
        "selected_accuracy": selected_acc,
        "oracle_accuracy": oracle_acc,
        "oracle_gap": None if oracle_acc is None or selected_acc is None else oracle_acc - selected_acc,
        "score_gap_items": len(score_pairs),
        "selected_mean_score": selected_score_mean,
        "oracle_mean_score": oracle_score_mean,
        "oracle_score_gap": (
            None
            if oracle_score_mean is None or selected_score_mean is None
            else oracle_score_mean - selected_score_mean
        ),
    }, None


def accuracy_by_round(records: Sequence[Record]) -> dict[str, Any] | None:
    """Accuracy had the strategy stopped after round k, for k = 1 .. the most rounds any item used: two curves.

    - *last version*: the latest checked version among rounds 1..k (an item that stopped before round k keeps
      its last checked version). What a loop that returns its last draft would have scored.
    - *returned*: the version the strategy would have returned after round k: the best aggregate score among
      rounds 1..k, earliest on ties, the latest when none was scored (:func:`returned_round`). At the last
      round it is the answer the strategy did return, so it ends at ``final_accuracy``. An item whose returned
      version was not checked is left out of that round's ``returned_n``.

    Rounds are those of each item's last turn; items without a checked round are left out. ``final_accuracy``
    is the record's own verdict over the same items.
    """
    checked = [(r, v) for r in records if (v := _round_verdicts(r))]
    if not checked:
        return None
    last_round = max(max(v) for _, v in checked)
    rows: list[dict[str, Any]] = []
    for k in range(1, last_round + 1):
        last_values: list[bool] = []
        returned_values: list[bool] = []
        reached = 0
        for record, verdicts in checked:
            earlier = [r for r in verdicts if r <= k]
            if earlier:
                last_values.append(verdicts[max(earlier)])
            versions = [v for v in _last_turn(record) if v["round"] <= k]
            chosen = returned_round(versions)
            if chosen is not None and chosen in verdicts:
                returned_values.append(verdicts[chosen])
            reached += max(verdicts) >= k
        rows.append(
            {
                "round": k,
                "still_refining": reached,
                "last_version_n": len(last_values),
                "last_version_accuracy": _ratio(sum(last_values), len(last_values)),
                "returned_n": len(returned_values),
                "returned_accuracy": _ratio(sum(returned_values), len(returned_values)),
            }
        )
    finals = [c for c in (_correct(r) for r, _ in checked) if c is not None]
    return {"items": len(checked), "rounds": rows, "final_accuracy": _ratio(sum(finals), len(finals))}


def best_vs_last(records: Sequence[Record]) -> dict[str, Any] | None:
    """The answer the strategy returned (best-scored version) against the last version it wrote.

    Over the items whose record is checked and whose last turn has a checked version: ``returned`` is the
    record's verdict, ``last`` the verdict of the latest checked version. ``returned_not_last`` counts the
    items where the strategy returned an earlier version than its last; the exact McNemar test asks whether
    returning the best-scored version changed accuracy. None when no item qualifies.
    """
    pairs: list[tuple[bool, bool]] = []
    earlier = 0
    for record in records:
        verdicts = _round_verdicts(record)
        final = _correct(record)
        if not verdicts or final is None:
            continue
        pairs.append((final, verdicts[max(verdicts)]))
        versions = _last_turn(record)
        earlier += returned_round(versions) != versions[-1]["round"]
    if not pairs:
        return None
    only_returned = sum(1 for r, last in pairs if r and not last)
    only_last = sum(1 for r, last in pairs if last and not r)
    returned_correct = sum(r for r, _ in pairs)
    last_correct = sum(last for _, last in pairs)
    return {
        "items": len(pairs),
        "returned_not_last": earlier,
        "returned_correct": returned_correct,
        "last_correct": last_correct,
        "returned_accuracy": returned_correct / len(pairs),
        "last_accuracy": last_correct / len(pairs),
        "difference": (returned_correct - last_correct) / len(pairs),
        "only_returned_correct": only_returned,
        "only_last_correct": only_last,
        "p_value": stats.mcnemar_exact(only_returned, only_last),
    }


def refinement_flips(records: Sequence[Record]) -> dict[str, Any] | None:
    """How often refinement broke a right first answer or fixed a wrong one, overall and per round transition.

    "First" is round 1's verdict (the earliest checked round) and "final" the record's verdict (the answer
    the strategy returned). Rates are over all compared items; the conditional shares are over the items
    whose first answer was right (broke) or wrong (fixed).
    """
    n = first_right = final_right = broke = fixed = 0
    transitions: dict[int, list[int]] = {}  # k -> [n, broke, fixed] for round k -> k + 1
    for record in records:
        verdicts = _round_verdicts(record)
        final = _correct(record)
        if not verdicts or final is None:
            continue
        first = verdicts[min(verdicts)]
        n += 1
        first_right += first
        final_right += final
        broke += first and not final
        fixed += final and not first
        for k in sorted(verdicts):
            if k + 1 in verdicts:
                counts = transitions.setdefault(k, [0, 0, 0])
                counts[0] += 1
                counts[1] += verdicts[k] and not verdicts[k + 1]
                counts[2] += verdicts[k + 1] and not verdicts[k]
    if n == 0:
        return None
    return {
        "items": n,
        "first_correct": first_right,
        "final_correct": final_right,
        "broke": broke,
        "fixed": fixed,
        "broke_rate": broke / n,
        "fixed_rate": fixed / n,
        "broke_share_of_first_correct": _ratio(broke, first_right),
        "fixed_share_of_first_wrong": _ratio(fixed, n - first_right),
        "transitions": [
            {
                "from_round": k,
                "to_round": k + 1,
                "items": c[0],
                "broke": c[1],
                "fixed": c[2],
                "broke_rate": c[1] / c[0],
                "fixed_rate": c[2] / c[0],
            }
            for k, c in sorted(transitions.items())
        ],
    }


def critic_calibration(records: Sequence[Record]) -> dict[str, Any] | None:
    """ROC AUC of the critics' scores as predictors of the checker's verdict, over every checked round.

    Tells whether the loop's stop rule (a threshold on the aggregate score) can tell right answers from
    wrong ones: 0.5 is chance, 1.0 perfect. None when no round has both a score and a verdict.

    Pass the records of one strategy: critics differ between strategies (self-refine's model grades its own
    answers; orchestrate variants aggregate different numbers of critics), so a pooled AUC would describe
    no loop that was run.
    """
    aggregate: list[tuple[float, bool]] = []
    per_critic: dict[str, list[tuple[float, bool]]] = {}
    for record in records:
        if record["status"] != "ok":
            continue
        for entry in record["round_history"]:
            verdict = entry.get("verdict")
            if verdict is None or verdict["correct"] is None:
                continue
            label = bool(verdict["correct"])
            score = stats.finite(entry["aggregate_score"])
            if score is not None:
                aggregate.append((score, label))
            for critic in entry["critic_scores"]:
                value = stats.finite(critic["score"])
                if value is not None:
                    per_critic.setdefault(critic["model"], []).append((value, label))
    if not aggregate and not per_critic:
        return None

    def auc(pairs: Sequence[tuple[float, bool]]) -> dict[str, Any]:
        positives = sum(1 for _, label in pairs if label)
        return {
            "rounds": len(pairs),
            "positives": positives,
            "negatives": len(pairs) - positives,
            "auc": stats.roc_auc([s for s, _ in pairs], [label for _, label in pairs]),
        }

    return {
        "aggregate": auc(aggregate),
        "critics": [{"model": model, **auc(pairs)} for model, pairs in sorted(per_critic.items())],
    }


def critic_agreement(records: Sequence[Record]) -> dict[str, Any] | None:
    """Pairwise correlation of the critics' scores and the effective number of independent critics.

    Over every round (any turn) with at least two critic scores; a critic that scored a round twice counts
    with its mean. See :func:`services.evaluation.stats.effective_number` for ``n_eff`` (Kish's design
    effect, ``n_eff = k / (1 + (k - 1) * r_mean)``). Pass the records of one strategy: ``k`` is the panel size
    of one configuration, and pooling panels of different sizes would give an ``n_eff`` of none of them.
    """
    rounds: list[dict[str, float]] = []
    for record in records:
        if record["status"] != "ok":
            continue
        for entry in record["round_history"]:
            given: dict[str, list[float]] = {}
            for critic in entry["critic_scores"]:
                value = stats.finite(critic["score"])
                if value is not None:
                    given.setdefault(critic["model"], []).append(value)
            if len(given) >= 2:
                rounds.append({model: math.fsum(v) / len(v) for model, v in given.items()})
    if not rounds:
        return None
    result = stats.critic_agreement(rounds)
    return {
        "rounds": result.rounds,
        "k": result.k,
        "mean_r": result.mean_r,
        "n_eff": result.n_eff,
        "pairs": [{"a": p.a, "b": p.b, "shared_rounds": p.shared, "r": p.r} for p in result.pairs],
    }


def pairwise_summary(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Per strategy: pairwise outcomes against the baseline over every judged turn.

    The win rate counts a tie, and a verdict that flipped with the order (``inconsistent``), as half a win;
    unreadable verdicts are left out. The inconsistent share measures the judge's position bias.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        pairwise = record.get("pairwise")
        if record["status"] != "ok" or not pairwise:
            continue
        row = rows.setdefault(
            record["strategy"],
            {
                "strategy": record["strategy"],
                "baseline": pairwise["baseline"],
                "win": 0,
                "tie": 0,
                "loss": 0,
                "inconsistent": 0,
                "unparsed": 0,
            },
        )
        for outcome in pairwise["outcomes"]:
            row[outcome] += 1
    out = []
    for row in rows.values():
        read = row["win"] + row["tie"] + row["loss"] + row["inconsistent"]
        row["judgements"] = read + row["unparsed"]
        row["win_rate"] = _ratio(row["win"] + 0.5 * (row["tie"] + row["inconsistent"]), read)
        row["inconsistent_rate"] = _ratio(row["inconsistent"], read)
        out.append(row)
    return out


def _conclusion(p_value: float, direction: float) -> str:
    if p_value < ALPHA and direction != 0:
        return "better" if direction > 0 else "worse"
    return "no significant difference"


def _pairs(a: Sequence[Record], b: Sequence[Record], value: Callable[[Record], _T | None]) -> list[tuple[_T, _T]]:
    """(a's value, b's value) for each item where both records have one."""
    b_by_item = {r["item_id"]: r for r in b}
    pairs: list[tuple[_T, _T]] = []
    for record in a:
        other = b_by_item.get(record["item_id"])
        x, y = value(record), None if other is None else value(other)
        if x is not None and y is not None:
            pairs.append((x, y))
    return pairs


def paired_test(
    a: Sequence[Record], b: Sequence[Record], *, judged: bool, resamples: int, seed: list[int]
) -> dict[str, Any]:
    """Compare strategy ``a`` with ``b`` on the items both answered (ok and checked).

    Checkable suites: exact McNemar on the discordant items and a paired bootstrap CI of the accuracy
    difference. Judged suites: a paired bootstrap CI of the mean score difference and an exact sign test.
    The conclusion is at alpha = 0.05, from the exact test, with no correction for multiple comparisons.
    """
    if not judged:
        pairs_c = _pairs(a, b, _correct)
        only_a = sum(1 for x, y in pairs_c if x and not y)
        only_b = sum(1 for x, y in pairs_c if y and not x)
        p_value = stats.mcnemar_exact(only_a, only_b)
        xs = [float(x) for x, _ in pairs_c]
        ys = [float(y) for _, y in pairs_c]
        interval = stats.paired_bootstrap_ci(xs, ys, resamples=resamples, seed=seed, level=CI_LEVEL)
        mean_a, mean_b = stats.mean(xs), stats.mean(ys)
        return {
            "metric": "accuracy",
            "test": "exact McNemar",
            "n": len(pairs_c),
            "a_value": mean_a,
            "b_value": mean_b,
            "difference": None if mean_a is None or mean_b is None else mean_a - mean_b,
            "difference_ci": None if interval is None else list(interval),
            "only_a_correct": only_a,
            "only_b_correct": only_b,
            "p_value": p_value,
            "conclusion": _conclusion(p_value, only_a - only_b),
        }
    pairs_s = _pairs(a, b, _score)
    xs = [x for x, _ in pairs_s]
    ys = [y for _, y in pairs_s]
    sign = stats.sign_test([x - y for x, y in pairs_s])
    interval = stats.paired_bootstrap_ci(xs, ys, resamples=resamples, seed=seed, level=CI_LEVEL)
    mean_a, mean_b = stats.mean(xs), stats.mean(ys)
    return {
        "metric": "mean_score",
        "test": "exact sign test",
        "n": len(pairs_s),
        "a_value": mean_a,
        "b_value": mean_b,
        "difference": None if mean_a is None or mean_b is None else mean_a - mean_b,
        "difference_ci": None if interval is None else list(interval),
        "a_higher": sign.positive,
        "b_higher": sign.negative,
        "ties": sign.ties,
        "p_value": sign.p_value,
        "conclusion": _conclusion(sign.p_value, sign.positive - sign.negative),
    }


# ---------------------------------------------------------------------------------------------------------------
# The report


def build_report(
    manifest: Manifest, records: Sequence[Record], *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Every statistic of the run as one JSON-able dict (see the module docstring for the rules).

    Top-level keys: ``schema``, ``manifest``, ``suite``, ``simulated``, ``kind`` (checkable or judged),
    ``metric``, ``empty``, ``settings``, ``totals``, ``strategies`` (one summary per strategy, in the
    manifest's order), ``oracle``, ``selection``, ``accuracy_by_round``, ``best_vs_last``, ``flips`` (these
    three per refining strategy), ``critic_calibration``, ``critic_agreement`` (per strategy with critic
    scores), ``paired_tests``, ``pairwise``, ``notes`` and ``charts`` (filled by :func:`write_report`).
    """
    unique = dedupe(records)
    order = list(dict.fromkeys([*manifest["strategies"], *(r["strategy"] for r in unique)]))
    by_strategy: dict[str, list[Record]] = {name: [] for name in order}
    for record in unique:
        by_strategy[record["strategy"]].append(record)
    by_strategy = {name: recs for name, recs in by_strategy.items() if recs}
    # Judged when a judge scored anything; with no verdict yet, MT-Bench is known to be judged.
    judged = any(_score(r) is not None for r in unique) or (
        manifest["suite"] == "mt-bench" and all(_correct(r) is None for r in unique)
    )
    notes: list[str] = []
    if unique:
        notes.append(_NOT_WRONG)
    if len(unique) < len(records):
        notes.append(
            f"{len(records) - len(unique)} superseded records (same item and strategy, from a resumed run) "
            "were replaced by the later one; their cost still counts in the amount spent."
        )

    summaries = {
        name: _strategy_summary(name, recs, resamples=resamples, seed=seed) for name, recs in by_strategy.items()
    }
    oracle, note = _oracle(by_strategy, resamples=resamples, seed=seed) if unique else (None, None)
    if note:
        notes.append(note)
    selection, note = _selection(by_strategy, oracle) if unique else (None, None)
    if note and SELECTED in by_strategy:
        notes.append(note)

    by_round: list[dict[str, Any]] = []
    best_last: list[dict[str, Any]] = []
    flips: list[dict[str, Any]] = []
    calibration: list[dict[str, Any]] = []
    agreement: list[dict[str, Any]] = []
    for name, recs in by_strategy.items():
        # Critic figures for any strategy whose rounds carry critic scores, one strategy at a time.
        if (auc := critic_calibration(recs)) is not None:
            calibration.append({"strategy": name, **auc})
        if (agree := critic_agreement(recs)) is not None:
            agreement.append({"strategy": name, **agree})
        if not summaries[name]["refining"]:
            continue
        if (curve := accuracy_by_round(recs)) is not None:
            by_round.append({"strategy": name, **curve})
        if (versus := best_vs_last(recs)) is not None:
            best_last.append({"strategy": name, **versus})
        if (flip := refinement_flips(recs)) is not None:
            flips.append({"strategy": name, **flip})

    # Every orchestrate variant against the selector and every self-moa variant (matched on the kind, so
    # options such as ``self-moa:samples=3`` do not hide a baseline).
    baselines = [n for n in by_strategy if n == SELECTED or is_kind(n, SELF_MOA)]
    paired: list[dict[str, Any]] = []
    for name, recs in by_strategy.items():
        if not is_kind(name, ORCHESTRATE):
            continue
        for baseline in baselines:
            test = paired_test(
                recs,
                by_strategy[baseline],
                judged=judged,
                resamples=resamples,
                seed=_seed(seed, name, baseline, "paired"),
            )
            if test["n"] == 0:
                notes.append(f"No paired test of {name} against {baseline}: no item was answered and checked by both.")
                continue
            paired.append({"a": name, "b": baseline, **test})

    spent = math.fsum(r["cost_usd"] for r in records)
    judge_spent = math.fsum(r["judge_cost_usd"] for r in records)
    report = {
        "schema": REPORT_SCHEMA,
        "manifest": dict(manifest),
        "suite": manifest["suite"],
        "simulated": bool(manifest["simulated"]),
        "kind": "judged" if judged else "checkable",
        "metric": "mean_score" if judged else "accuracy",
        "empty": not unique,
        "settings": {"resamples": resamples, "seed": seed, "ci_level": CI_LEVEL, "alpha": ALPHA},
        "totals": {
            "records": len(unique),
            "superseded_records": len(records) - len(unique),
            "items": len({r["item_id"] for r in unique}),
            "ok": sum(1 for r in unique if r["status"] == "ok"),
            "failed": sum(1 for r in unique if r["status"] == "failed"),
            "skipped": sum(1 for r in unique if r["status"] == "skipped"),
            "strategy_cost_usd": spent,
            "judge_cost_usd": judge_spent,
            "spent_usd": spent + judge_spent,
            "estimate_usd": manifest["estimate_usd"],
            "budget_usd": manifest["budget_usd"],
        },
        "strategies": list(summaries.values()),
        "oracle": oracle,
        "selection": selection,
        "accuracy_by_round": by_round,
        "best_vs_last": best_last,
        "flips": flips,
        "critic_calibration": calibration,
        "critic_agreement": agreement,
        "paired_tests": paired,
        "pairwise": pairwise_summary(unique),
        "notes": notes,
        "charts": [],
    }
    # A NaN cost or latency in one record is an upstream bug, but it must not cost the run its report.
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None and numpy scalars made plain, at any depth."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return stats.finite(float(value))
    return value


# ---------------------------------------------------------------------------------------------------------------
# Markdown

_MD_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "`": "\\`",
        "*": "\\*",
        "_": "\\_",
        "~": "\\~",
        "[": "\\[",
        "]": "\\]",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "\n": " ",
        "\r": " ",
    }
)


def md_escape(text: object) -> str:
    """``text`` safe inside Markdown prose and table cells: no pipes, code spans, HTML, links or line breaks."""
    return str(text).translate(_MD_ESCAPES)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    # Two significant digits, never fewer than two decimals and never scientific notation: $0.60, $0.0020.
    decimals = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"${value:.{decimals}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _with_ci(value: float | None, ci: Sequence[float] | None, percent: bool) -> str:
    if value is None:
        return "—"
    if percent:
        text = _pct(value)
        return text if ci is None else f"{text} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    text = _num(value)
    return text if ci is None else f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _strategy_rows(report: Mapping[str, Any]) -> list[list[str]]:
    judged = report["kind"] == "judged"
    entries = list(report["strategies"])
    if report.get("oracle"):
        entries.append(report["oracle"])
    rows = []
    for s in entries:
        name = md_escape(s["strategy"]) + (" *(derived)*" if s["derived"] else "")
        stops = ", ".join(f"{md_escape(k)} {v}" for k, v in s["stop_reasons"].items()) or "—"
        row = [name, str(s["items"]), str(s["ok"]), str(s["failed"]), str(s["skipped"])]
        row.append(_with_ci(s["accuracy"], s["accuracy_ci"], percent=True))
        if judged:
            row.append(_with_ci(s["mean_score"], s["score_ci"], percent=False))
        row += [
            _usd(s["cost_total_usd"]),
            _usd(s["cost_mean_usd"]),
            _usd(s["cost_per_correct_usd"]),
            _ms(s["latency_median_ms"]),
            _ms(s["latency_p90_ms"]),
            _num(s["mean_rounds"]),
            stops,
            _usd(s["judge_cost_usd"]),
        ]
        rows.append(row)
    return rows


_CHART_TITLES = {
    "accuracy_vs_cost.png": "Quality against cost",
    "accuracy_by_round.png": "Accuracy by round",
    "selection_vs_oracle.png": "Selector, single models and oracle",
    "cost_per_correct.png": "Cost per correct answer",
}


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report for people. Prints no answer, prompt, error or verdict detail; escapes every name."""
    manifest = report["manifest"]
    date = str(manifest.get("started", ""))[:10]
    lines = [f"# Evaluation report: {md_escape(report['suite'])} ({md_escape(date)})", ""]
    if report["simulated"]:
        lines += [
            "**Simulation.** Every model in this run is simulated: these figures measure the pipeline on the "
            "simulator, not the quality of real models.",
            "",
        ]
    totals = report["totals"]
    budget = totals["budget_usd"]
    lines += [
        "## Run",
        "",
        f"- Suite: {md_escape(report['suite'])} ({report['kind']}: "
        + ("scored 1-10 by an LLM judge)" if report["kind"] == "judged" else "answers checked exactly)"),
        f"- Started: {md_escape(manifest.get('started', '—'))}; "
        f"orchestratex {md_escape(manifest.get('version', '?'))}; "
        f"seed {md_escape(manifest.get('seed', '—'))}; item limit {md_escape(manifest.get('limit') or 'none')}",
        f"- Models: {', '.join(md_escape(m) for m in manifest.get('models', [])) or '—'}",
        f"- Strategies: {', '.join(md_escape(s) for s in manifest.get('strategies', [])) or '—'}",
        *([f"- Code sandbox: {md_escape(manifest['sandbox'])}"] if manifest.get("sandbox") else []),
        f"- Judge: {md_escape(manifest.get('judge_model') or '—')}"
        + (f" (correct at score ≥ {manifest['pass_score']:g})" if manifest.get("pass_score") is not None else ""),
        f"- Cost: estimated {_usd(totals['estimate_usd'])}, spent {_usd(totals['spent_usd'])} "
        f"(strategies {_usd(totals['strategy_cost_usd'])}, judge {_usd(totals['judge_cost_usd'])}); "
        f"budget {'none' if budget is None else _usd(budget)}",
        f"- Records: {totals['records']} over {totals['items']} items ({totals['ok']} ok, {totals['failed']} failed, "
        f"{totals['skipped']} skipped)",
        "",
    ]
    if report["empty"]:
        lines += ["Nothing to report: the run has no records yet.", ""]
        return "\n".join(lines)

    judged = report["kind"] == "judged"
    header = ["Strategy", "Items", "OK", "Failed", "Skipped", "Accuracy [95% CI]"]
    if judged:
        header.append("Mean score [95% CI]")
    header += ["Cost", "Cost/item", "Cost/correct", "Latency p50", "Latency p90", "Rounds", "Stop reasons", "Judge"]
    lines += ["## Strategies", "", *_table(header, _strategy_rows(report))]
    lines += [f"- {md_escape(note)}" for note in report["notes"]]
    lines.append("")

    lines += _oracle_section(report)
    lines += _rounds_section(report)
    lines += _critics_section(report)
    lines += _paired_section(report)
    lines += _pairwise_section(report)
    if report.get("charts"):
        lines += ["## Charts", ""]
        for path in report["charts"]:
            name = Path(path).name
            if name in _CHART_TITLES:  # our own fixed file names: safe in a link target as they are
                lines += [f"![{_CHART_TITLES[name]}]({path})", ""]
    lines += _how_to_read(report)
    return "\n".join(lines)


def _oracle_section(report: Mapping[str, Any]) -> list[str]:
    oracle, selection = report.get("oracle"), report.get("selection")
    if not oracle and not selection:
        return []
    lines = ["## Oracle and selection", ""]
    if oracle:
        score = f", mean score {_num(oracle['mean_score'])}" if report["kind"] == "judged" else ""
        lines.append(
            f"- Oracle (best of {', '.join(md_escape(s) for s in oracle['singles'])} per item, in hindsight): "
            f"accuracy {_pct(oracle['accuracy'])}{score}, {_usd(oracle['cost_mean_usd'])} per item. "
            "An upper bound for routing, not a runnable strategy."
        )
    if selection:
        left_out = ""
        if selection["left_out"]:
            left_out = (
                f"; {selection['left_out']} items were left out because the picked model has no checked single "
                f"run on them ({selection['selected_model_not_run_as_single']} picks of a model not run as a "
                f"single, {selection['selected_model_single_unchecked']} whose single run failed or was skipped)"
            )
        lines.append(
            f"- Selection accuracy: on {selection['items']} items where single:selected answered, some single "
            f"model was right and the picked model's own single run was checked, the selector picked a right "
            f"model {_pct(selection['selection_accuracy'])} of the time "
            f"({selection['selected_correct_model']}/{selection['items']}){left_out}."
        )
        if selection["oracle_gap"] is not None:
            score_gap = ""
            if selection["oracle_score_gap"] is not None:
                score_gap = (
                    f"; {_num(selection['oracle_mean_score'])} - {_num(selection['selected_mean_score'])} = "
                    f"{_num(selection['oracle_score_gap'])} points of mean score on {selection['score_gap_items']} "
                    "items"
                )
            lines.append(
                f"- Gap to the oracle, on the {selection['gap_items']} items both were checked on: "
                f"{_pct(selection['oracle_accuracy'])} - {_pct(selection['selected_accuracy'])} "
                f"= {100 * selection['oracle_gap']:.1f} points of accuracy{score_gap}."
            )
        if selection["picks"]:
            picks = ", ".join(f"{md_escape(m)} {n}" for m, n in selection["picks"].items())
            lines.append(f"- Picks: {picks}")
    return [*lines, ""]


def _rounds_section(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if report["accuracy_by_round"]:
        lines += ["## Accuracy by round", ""]
        lines += [
            "Had the strategy stopped after round k: *returned* is the version it would have returned (the best "
            "critic score so far), *last version* the latest one it wrote.",
            "",
        ]
        rows = []
        for curve in report["accuracy_by_round"]:
            for row in curve["rounds"]:
                rows.append(
                    [
                        md_escape(curve["strategy"]),
                        str(row["round"]),
                        str(row["returned_n"]),
                        str(row["still_refining"]),
                        _pct(row["returned_accuracy"]),
                        _pct(row["last_version_accuracy"]),
                    ]
                )
            rows.append(
                [
                    md_escape(curve["strategy"]),
                    "final answer",
                    str(curve["items"]),
                    "—",
                    _pct(curve["final_accuracy"]),
                    "—",
                ]
            )
        header = ["Strategy", "Stopped at round", "Items", "Still refining", "Returned", "Last version"]
        lines += _table(header, rows)
    if report.get("best_vs_last"):
        lines += ["## Best-scored vs last version", ""]
        rows = [
            [
                md_escape(b["strategy"]),
                str(b["items"]),
                str(b["returned_not_last"]),
                _pct(b["returned_accuracy"]),
                _pct(b["last_accuracy"]),
                f"{100 * b['difference']:+.1f} pts",
                f"{b['only_returned_correct']} / {b['only_last_correct']}",
                _p(b["p_value"]),
            ]
            for b in report["best_vs_last"]
        ]
        header = [
            "Strategy",
            "Items",
            "Returned an earlier version",
            "Returned (best-scored)",
            "Last version",
            "Difference",
            "Only returned right / only last right",
            "p (McNemar)",
        ]
        lines += _table(header, rows)
    if report["flips"]:
        lines += ["## Refinement flips", ""]
        rows = []
        for flip in report["flips"]:
            rows.append(
                [
                    md_escape(flip["strategy"]),
                    "first → final",
                    str(flip["items"]),
                    f"{flip['broke']} ({_pct(flip['broke_rate'])})",
                    f"{flip['fixed']} ({_pct(flip['fixed_rate'])})",
                ]
            )
            for t in flip["transitions"]:
                rows.append(
                    [
                        md_escape(flip["strategy"]),
                        f"round {t['from_round']} → {t['to_round']}",
                        str(t["items"]),
                        f"{t['broke']} ({_pct(t['broke_rate'])})",
                        f"{t['fixed']} ({_pct(t['fixed_rate'])})",
                    ]
                )
        lines += _table(["Strategy", "Step", "Items", "Broke (right → wrong)", "Fixed (wrong → right)"], rows)
    return lines


def _critics_section(report: Mapping[str, Any]) -> list[str]:
    calibration, agreement = report.get("critic_calibration"), report.get("critic_agreement")
    if not calibration and not agreement:
        return []
    lines: list[str] = []
    if calibration:
        rows = []
        for entry in calibration:
            name = md_escape(entry["strategy"])
            rows.append([name, "aggregate", *_auc_cells(entry["aggregate"])])
            rows += [[name, md_escape(c["model"]), *_auc_cells(c)] for c in entry["critics"]]
        lines += ["## Critic calibration", ""]
        lines += [
            "ROC AUC of the critics' scores against the checker's verdict, over every checked round, per strategy:",
            "",
        ]
        lines += _table(["Strategy", "Critic", "Rounds", "Right", "Wrong", "AUC"], rows)
    if agreement:
        lines += ["## Critic agreement", ""]
        lines += ["Per strategy, over the rounds with two or more critics:", ""]
        rows = [
            [
                md_escape(a["strategy"]),
                str(a["rounds"]),
                str(a["k"]) if a["k"] is not None else "—",
                _num(a["mean_r"]),
                _num(a["n_eff"]),
            ]
            for a in agreement
        ]
        lines += _table(["Strategy", "Rounds", "Critics per round (k)", "Mean pairwise r", "n_eff"], rows)
        pairs = [
            [md_escape(a["strategy"]), md_escape(p["a"]), md_escape(p["b"]), str(p["shared_rounds"]), _num(p["r"])]
            for a in agreement
            for p in a["pairs"]
        ]
        if pairs:
            lines += _table(["Strategy", "Critic", "Critic", "Shared rounds", "Pearson r"], pairs)
    return lines


def _auc_cells(entry: Mapping[str, Any]) -> list[str]:
    return [str(entry["rounds"]), str(entry["positives"]), str(entry["negatives"]), _num(entry["auc"])]


def _paired_section(report: Mapping[str, Any]) -> list[str]:
    if not report["paired_tests"]:
        return []
    judged = report["kind"] == "judged"
    rows = []
    for t in report["paired_tests"]:
        ci = t["difference_ci"]
        if judged:
            diff = _with_ci(t["difference"], ci, percent=False)
            discordant = f"{t['a_higher']} / {t['b_higher']} / {t['ties']}"
        else:
            diff = "—" if t["difference"] is None else f"{100 * t['difference']:+.1f} pts"
            if ci is not None:
                diff += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
            discordant = f"{t['only_a_correct']} / {t['only_b_correct']}"
        rows.append(
            [
                md_escape(t["a"]),
                md_escape(t["b"]),
                str(t["n"]),
                diff,
                discordant,
                t["test"],
                _p(t["p_value"]),
                t["conclusion"],
            ]
        )
    counts = "A higher / B higher / ties" if judged else "Only A right / only B right"
    header = ["A", "B", "Items", "Difference A - B [95% CI]", counts, "Test", "p", "A is"]
    return ["## Paired tests", "", *_table(header, rows)]


def _pairwise_section(report: Mapping[str, Any]) -> list[str]:
    rows = report.get("pairwise") or []
    if not rows:
        return []
    header = [
        "Strategy",
        "Baseline",
        "Judgements",
        "Wins",
        "Ties",
        "Losses",
        "Order-dependent",
        "Unreadable",
        "Win rate",
        "Order-dependent share",
    ]
    body = [
        [
            md_escape(r["strategy"]),
            md_escape(r["baseline"]),
            str(r["judgements"]),
            str(r["win"]),
            str(r["tie"]),
            str(r["loss"]),
            str(r["inconsistent"]),
            str(r["unparsed"]),
            _pct(r["win_rate"]),
            _pct(r["inconsistent_rate"]),
        ]
        for r in rows
    ]
    return [
        "## Pairwise (judge asked in both orders)",
        "",
        *_table(header, body),
        "",
        "- A verdict counts only when both orders agree; order-dependent verdicts (position bias) and ties count as "
        "half a win in the win rate.",
        "",
    ]


def _how_to_read(report: Mapping[str, Any]) -> list[str]:
    judged = report["kind"] == "judged"
    lines = [
        "## How to read this",
        "",
        "- **Accuracy** is the share of checked answers that are right"
        + (" (judge score at or above the pass mark)" if judged else "")
        + ". Failed and skipped items are not wrong answers: they are counted apart and left out. "
        "The bracket is a 95% percentile bootstrap interval over items; overlapping intervals do not mean "
        "two strategies are equal; the paired tests compare them on the same items.",
    ]
    if judged:
        lines.append("- **Mean score** is the LLM judge's 1-10 score, averaged over the checked answers.")
    lines.append(
        "- **Cost** is what the providers reported for the strategy's calls, judge excluded (its own column). "
        "Cost/item divides by the items attempted (ok or failed); cost/correct divides the total by the "
        "number of right answers (— when none)."
    )
    if report.get("oracle") or report.get("selection"):
        lines.append(
            "- **Oracle** picks, per item and in hindsight, a single model that was right (the cheapest such; "
            "the cheapest single when none was). No router can beat it with these models: the gap between "
            "single:selected and the oracle (on the items both were checked on) is what better routing could "
            "still win. **Selection accuracy** is how often the selector's pick was one of the right models, on "
            "items where one existed and the picked model was also run as a single."
        )
    if report["accuracy_by_round"] or report["flips"] or report.get("best_vs_last"):
        lines.append(
            "- **Accuracy by round** is what a refining strategy would have scored had it stopped after round k "
            "(items that stopped earlier keep their answer), two ways: *returned* takes the version with the "
            "best critic score so far (earliest on ties, the latest when none was scored), which is what the "
            "strategy returns, so it ends at the final accuracy; *last version* takes the latest draft. "
            "**Best-scored vs last version** compares the answer returned with the last draft on the same "
            "items: it shows what choosing by critic score won or lost. **Flips** count right first answers "
            "that refinement broke and wrong ones it fixed: self-correction without external checks is known "
            "to break right answers."
        )
    if report.get("critic_calibration") or report.get("critic_agreement"):
        lines.append(
            "- **Critic AUC** is the probability that a right answer got a higher critic score than a wrong "
            "one: 0.5 is chance, 1.0 perfect. **n_eff** = k / (1 + (k - 1) r) is the number of independent "
            "critics the panel is worth given their mean pairwise correlation r (k when independent, 1 when "
            "identical). Both are per strategy: critics and panel sizes differ between strategies."
        )
    if report["paired_tests"]:
        lines.append(
            "- **Paired tests** compare two strategies on the items both answered: "
            + (
                "an exact sign test on the judge-score differences"
                if judged
                else "an exact McNemar test on the items only one of them got right"
            )
            + ', with a paired bootstrap interval of the difference; "better"/"worse" means p < 0.05, '
            "not corrected for the several comparisons made."
        )
    charts_written = {Path(p).name for p in report.get("charts", [])}
    chart_help = {
        "accuracy_vs_cost.png": "quality (y) against mean cost per item (x), one point per strategy with its "
        "95% interval"
        + ("; the oracle is the star" if report.get("oracle") else "")
        + ". Up and to the left is better.",
        "accuracy_by_round.png": "accuracy if each refining strategy had stopped after round k: the answer it "
        "would have returned (solid) and its last version (dashed).",
        "selection_vs_oracle.png": "the selector's quality beside each single model's and the oracle's.",
        "cost_per_correct.png": "total cost divided by the number of right answers, per strategy.",
    }
    for name, text in chart_help.items():
        if name in charts_written:
            lines.append(f"- *{name}*: {text}")
    if report["simulated"]:
        lines.append("- This run is a **simulation**: the figures describe the simulator, not real models.")
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------------------------
# Files


def write_report(directory: Path, manifest: Manifest, records: Sequence[Record]) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``charts/*.png`` into ``directory``; return the paths written.

    A chart with no data is not drawn (and a stale one from an earlier report is removed). report.json holds
    the report and the manifest, not the records; it is strict JSON (no NaN).
    """
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(manifest, records)
    chart_paths = charts.write_charts(report, directory / "charts")
    report["charts"] = [path.relative_to(directory).as_posix() for path in chart_paths]
    json_path = directory / "report.json"
    md_path = directory / "report.md"
    _write_text(json_path, json.dumps(report, allow_nan=False, indent=2, ensure_ascii=False) + "\n")
    _write_text(md_path, render_markdown(report))
    logger.info("wrote the report to %s (%d charts)", directory, len(chart_paths))
    return [json_path, md_path, *chart_paths]


def _write_text(path: Path, text: str) -> None:
    # Write then rename, so a reader never sees half a report.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
