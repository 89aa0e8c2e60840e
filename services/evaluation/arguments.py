"""The arguments of ``orchestratex eval``, kept apart from :mod:`.command` so that building the ``orchestratex``
parser (every command, ``serve`` and ``up`` included) imports none of the evaluation machinery."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_STRATEGIES = "single:selected,orchestrate,self-refine,self-moa"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``eval`` on the ``orchestratex`` command's subparsers."""
    p = sub.add_parser(
        "eval",
        help="measure strategies (one model, orchestration, self-refine, panels) on a benchmark",
        description="Run the same items through several strategies, check the answers and write a report "
        "(docs/evaluation.md).",
    )
    p.add_argument("--suite", required=True, help="gsm8k, humaneval, mt-bench, or the path of a .jsonl file")
    p.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help="comma-separated: single:<model>, single:selected, oracle, orchestrate[:rounds=3,critics=2,...], "
        f"self-refine, panel-judge, self-moa (docs/evaluation.md; default {DEFAULT_STRATEGIES})",
    )
    p.add_argument("--limit", type=int, default=None, help="the first N items of the suite")
    p.add_argument("--concurrency", type=int, default=4, help="items in flight at once (default 4)")
    p.add_argument("--output", type=Path, default=None, help="run directory (default eval-runs/<suite>)")
    p.add_argument("--budget-usd", type=float, default=None, help="stop starting items when this is spent")
    p.add_argument("--judge-model", default="", help="the LLM judge for mt-bench and custom files")
    p.add_argument(
        "--pairwise-baseline",
        default=None,
        metavar="STRATEGY",
        help="judged suites: also compare every strategy with this one pairwise (judge asked in both orders)",
    )
    p.add_argument("--pass-score", type=float, default=7.0, help="judge score counted as correct (default 7)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ORX_EVAL_DATA_DIR", "eval-data")),
        help="where gsm8k/humaneval/mt-bench files are (default $ORX_EVAL_DATA_DIR or ./eval-data)",
    )
    p.add_argument("--max-tokens", type=int, default=2048, help="answer length limit per call (default 2048)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per model call or session (default 600)")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per HumanEval test run (default 10)")
    p.add_argument("--yes", action="store_true", help="do not ask before spending money on real models")
    p.add_argument(
        "--allow-weak-sandbox",
        action="store_true",
        help="run HumanEval tests even where bubblewrap is missing (only rlimits and an audit hook protect the host)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--export-sim-answer-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the simulator's answer key for these items (ORX_SIM_ANSWER_KEY) and exit",
    )
    p.add_argument("--estimate", action="store_true", help="print the cost estimate and exit")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the run directory and exit")
