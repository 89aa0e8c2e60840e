"""The shapes an evaluation run writes: one manifest, one record per (item, strategy), one verdict per answer.

A run directory holds ``run.json`` (the :class:`Manifest`), ``results.jsonl`` (one :class:`Record` per line,
appended as items finish, so a crash keeps what was done), and the report built from both
(``report.json``, ``report.md``, ``charts/*.png``). Everything is plain JSON; these ``TypedDict`` classes
document the keys and let mypy check the code that reads and writes them.

Costs are in USD as the providers service reported them; ``cost_usd`` never includes the checker's own
calls (the LLM judge), which are in ``judge_cost_usd``.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

SCHEMA_VERSION = 1
"""Bumped when a key changes meaning; a run directory of another version is not resumed."""

CallRole = Literal["select", "answer", "critique", "refine", "aggregate", "judge", "orchestrate"]
"""What a call was for. ``orchestrate`` is a whole session seen from outside (its calls are summed)."""

RecordStatus = Literal["ok", "failed", "skipped"]
"""``failed``: the strategy could not produce an answer (model unavailable, error); ``skipped``: the budget
ran out before the item started. Neither counts as a wrong answer: the report shows them apart."""


class Call(TypedDict):
    """One model call made by a strategy or a checker."""

    role: CallRole
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    simulated: bool


class Verdict(TypedDict):
    """What a checker said of one answer.

    ``correct`` is set by exact checkers (GSM8K, HumanEval, custom rows with an expected number) and by the
    judge (``score >= pass_score``); ``score`` (1-10) only by the judge. ``detail`` is short and for people
    (the number found, the sandbox's outcome, the judge's verdict line); it never holds secrets.
    """

    correct: bool | None
    score: float | None
    detail: str


class CriticScore(TypedDict):
    """One critic's score of one round's answer."""

    model: str
    score: float


class Round(TypedDict):
    """One version of the answer inside a refining strategy (``orchestrate``, ``self-refine``)."""

    turn: int
    """0 for single-turn items; MT-Bench items have turns 0 and 1."""
    round: int
    """1 for the first answer."""
    model: str
    answer: str
    aggregate_score: float | None
    """The critics' aggregate (0-10) as the strategy saw it; None when no critic scored it."""
    critic_scores: list[CriticScore]
    verdict: NotRequired[Verdict]
    """Set for checkable suites (every round is checked, so accuracy by round can be reported)."""


PairOutcome = Literal["win", "loss", "tie", "inconsistent", "unparsed"]
"""A pairwise judgement of this record's answer against the baseline's, asked in both orders: ``inconsistent``
when the two orders disagree (position bias), ``unparsed`` when the judge's verdict could not be read."""


class Pairwise(TypedDict):
    """Pairwise judgements against ``--pairwise-baseline`` (judged suites only), one per turn."""

    baseline: str
    outcomes: list[PairOutcome]


class Record(TypedDict):
    """One item run through one strategy: a line of ``results.jsonl``."""

    schema: int
    item_id: str
    strategy: str
    """As given on the command line, e.g. ``single:openai/gpt-oss-120b``, ``orchestrate:rounds=3``."""
    status: RecordStatus
    error: str | None
    """Why it failed (a gRPC status name and a short message); None when ok."""
    model: str
    """The primary model (single: the model; selected/orchestrate: the selector's pick; panel: the judge)."""
    answers: list[str]
    """The final answer of each turn."""
    verdict: Verdict | None
    """Of the final answer (mean judge score over turns for MT-Bench); None unless status is ok."""
    calls: list[Call]
    cost_usd: float
    judge_cost_usd: float
    latency_ms: float
    """Wall time of the strategy for this item (all turns), excluding checking."""
    rounds: int
    """Rounds used (1 for strategies without refinement); the last turn's for multi-turn items."""
    stop_reason: str
    """``threshold``, ``plateau``, ``max_rounds``, ``no_critique``, ... for refining strategies; ``single``
    for one-shot ones; ``failed`` or ``skipped`` otherwise."""
    round_history: list[Round]
    category: str
    """The item's category (MT-Bench) or the suite name."""
    pairwise: NotRequired[Pairwise]
    """Set with ``--pairwise-baseline`` on judged items, for strategies other than the baseline."""


class Manifest(TypedDict):
    """``run.json``: what was run, so a resumed run is the same run and a report says what it measured."""

    schema: int
    suite: str
    """``gsm8k``, ``humaneval``, ``mt-bench`` or the path of a custom JSONL file."""
    strategies: list[str]
    limit: int | None
    seed: int
    judge_model: str
    pass_score: float | None
    sandbox: NotRequired[str | None]
    """What protected the host while HumanEval's tests ran (``bwrap+rlimits+audit``...); None without code items."""
    pairwise_baseline: NotRequired[str | None]
    """The strategy every other one is compared with pairwise (judged suites), if any."""
    """The judge score counted as correct (None when no item is judged)."""
    simulated: bool
    """True when the providers service listed simulated models (in its simulated mode every model is): the
    report then says SIMULATION at the top and on every chart."""
    models: list[str]
    """Model ids the providers service listed when the run started."""
    started: str
    """ISO 8601 UTC."""
    version: str
    """orchestratex version that made the run."""
    budget_usd: float | None
    estimate_usd: float
    """The cost estimate printed before the run started (strategies and judge)."""
