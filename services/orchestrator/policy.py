"""Scoring and stopping: pure functions, no I/O.

Research (docs/research.md) drives the defaults: refinement gains shrink after one or two rounds, so
the loop stops on a plateau, not only on a threshold; judges are noisy and biased, so scores are
aggregated with the median (a trimmed mean with 5+ critics); and the answer returned is the best
version seen, not the last.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from orchestratex.v1 import orchestrator_pb2 as pb


def aggregate(scores: list[float]) -> float:
    """Robust aggregate: median, or the mean without the extremes when there are 5 or more scores."""
    if not scores:
        raise ValueError("no scores to aggregate")
    if len(scores) >= 5:
        ordered = sorted(scores)[1:-1]
        return sum(ordered) / len(ordered)
    return float(statistics.median(scores))


@dataclass(frozen=True)
class StopRules:
    """The limits of one session."""

    threshold: float
    max_rounds: int
    epsilon: float
    patience: int
    budget_usd: float | None
    time_limit_s: float


@dataclass(frozen=True)
class Decision:
    """Continue, or stop with a reason."""

    stop: bool
    reason: pb.StopReason
    text: str


def plateau_length(history: list[float], epsilon: float) -> int:
    """Trailing rounds whose score beat the best earlier score by less than ``epsilon``."""
    count = 0
    for i in range(len(history) - 1, 0, -1):
        if history[i] - max(history[:i]) < epsilon:
            count += 1
        else:
            break
    return count


def decide(
    rules: StopRules,
    history: list[float],
    spent_usd: float,
    next_cost_usd: float,
    elapsed_s: float,
    next_time_s: float,
) -> Decision:
    """What to do after round ``len(history)`` given the aggregate scores so far and the forecasts."""
    rounds = len(history)
    score = history[-1]
    if score >= rules.threshold:
        return Decision(True, pb.STOP_REASON_THRESHOLD, f"score {score:.2f} reached the threshold {rules.threshold:g}")
    if rounds >= rules.max_rounds:
        return Decision(True, pb.STOP_REASON_MAX_ROUNDS, f"used all {rules.max_rounds} rounds")
    flat = plateau_length(history, rules.epsilon)
    if flat >= rules.patience:
        return Decision(
            True,
            pb.STOP_REASON_PLATEAU,
            f"score improved by less than {rules.epsilon:g} for {flat} round(s)",
        )
    if rules.budget_usd is not None and spent_usd + next_cost_usd > rules.budget_usd:
        return Decision(
            True,
            pb.STOP_REASON_BUDGET,
            f"next round would cost about ${next_cost_usd:.6f}; ${spent_usd:.6f} of ${rules.budget_usd:g} spent",
        )
    if elapsed_s + next_time_s > rules.time_limit_s:
        return Decision(
            True,
            pb.STOP_REASON_DEADLINE,
            f"next round would take about {next_time_s:.1f}s; {elapsed_s:.1f}s of {rules.time_limit_s:g}s used",
        )
    return Decision(False, pb.STOP_REASON_UNSPECIFIED, f"score {score:.2f} below {rules.threshold:g}: refining")
