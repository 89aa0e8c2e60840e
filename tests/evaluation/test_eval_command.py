"""``orchestratex eval`` end to end on the simulator: the suite started as a user starts it, the command run as a
user runs it, on the public sets in ../shared/datasets/eval, with the simulator's answer key (a simulation hook).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.evaluation.sandbox import isolation_available
from services.evaluation.suites import load_suite
from tests.e2e.conftest import BIN, Suite, launch_suite, wait_for
from tests.evaluation.test_suites import EVAL_DATA

pytestmark = pytest.mark.e2e

SINGLES = ("openai/gpt-oss-120b", "meta-llama/llama-4-maverick")
STRATEGIES = ",".join(
    [
        *(f"single:{m}" for m in SINGLES),
        "single:selected",
        "oracle",
        "orchestrate",
        "orchestrate:rounds=2,critics=1",
        "self-refine",
        "panel-judge",
        "self-moa:samples=3",
    ]
)


def _eval(suite: Suite | None, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORX_")}
    if suite is not None:
        env.update({f"ORX_{n.upper()}_ADDR": a for n, a in suite.addr.items() if n != "gateway"})
    return subprocess.run(
        [str(BIN / "orchestratex"), "eval", "--data-dir", str(EVAL_DATA), "--no-progress", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def keyed_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """The suite with an answer key for the first GSM8K and HumanEval items (written by the command itself)."""
    directory = tmp_path_factory.mktemp("eval-suite")
    keys = []
    for suite, limit in (("gsm8k", "8"), ("humaneval", "3")):
        path = directory / f"{suite}.key.jsonl"
        done = _eval(None, "--suite", suite, "--limit", limit, "--export-sim-answer-key", str(path))
        assert done.returncode == 0, done.stderr
        keys.append(path.read_text(encoding="utf-8"))
    key = directory / "key.jsonl"
    key.write_text("".join(keys), encoding="utf-8")
    with launch_suite(directory, ORX_SIM_ANSWER_KEY=str(key), ORX_SHADOW_SAMPLE_RATE="0") as running:
        yield running


def _records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_gsm8k_every_strategy_runs_checks_and_reports(keyed_suite: Suite, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _eval(
        keyed_suite,
        "--suite",
        "gsm8k",
        "--limit",
        "6",
        "--concurrency",
        "3",
        "--strategies",
        STRATEGIES,
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "(simulated models: no money is spent)" in done.stdout
    records = _records(out)
    run_strategies = [s for s in STRATEGIES.split(",") if s not in ("oracle", "critics=1")]
    run_strategies[run_strategies.index("orchestrate:rounds=2")] = "orchestrate:rounds=2,critics=1"
    assert sorted((r["item_id"], r["strategy"]) for r in records) == sorted(
        {(r["item_id"], s) for r in records for s in run_strategies}
    )
    assert len(records) == 6 * len(run_strategies)
    assert all(r["status"] == "ok" and isinstance(r["verdict"]["correct"], bool) for r in records), [
        r["error"] for r in records if r["status"] != "ok"
    ]
    # The checker and the simulator agree: a right answer states the expected number, a wrong one does not.
    expected = {r["item_id"]: r["verdict"]["detail"].rsplit("expected ", 1)[1] for r in records}
    for r in records:
        assert (f"Answer: {expected[r['item_id']]}" in r["answers"][0]) == r["verdict"]["correct"]
    assert 0 < sum(r["verdict"]["correct"] for r in records) < len(records)
    refining = [r for r in records if r["strategy"].startswith(("orchestrate", "self-refine"))]
    assert all(r["round_history"] and all("verdict" in h for h in r["round_history"]) for r in refining)
    assert all(r["cost_usd"] > 0 for r in records)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["manifest"]["simulated"] is True
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "Simulation" in markdown and "oracle" in markdown
    assert sorted(p.name for p in (out / "charts").iterdir()) == [
        "accuracy_by_round.png",
        "accuracy_vs_cost.png",
        "cost_per_correct.png",
        "selection_vs_oracle.png",
    ]
    # The same command again resumes: nothing is run twice.
    again = _eval(keyed_suite, "--suite", "gsm8k", "--limit", "6", "--strategies", STRATEGIES, "--output", str(out))
    assert again.returncode == 0, again.stderr
    assert f"0 runs done ({len(records)} kept from before" in again.stdout
    assert len(_records(out)) == len(records)


def test_humaneval_answers_run_in_the_sandbox(keyed_suite: Suite, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _eval(
        keyed_suite,
        "--suite",
        "humaneval",
        "--limit",
        "3",
        "--strategies",
        "single:selected,orchestrate",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    details = [r["verdict"]["detail"] for r in records]
    assert all(d == "passed" or d.startswith(("failed", "timeout", "blocked", "memory")) for d in details), details
    assert [r["verdict"]["correct"] for r in records] == [d == "passed" for d in details]
    assert any(r["verdict"]["correct"] for r in records)
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["sandbox"] == isolation_available() and manifest["sandbox"].startswith("bwrap")
    # The sandbox agrees with the simulator: an answer passes exactly when it holds the canonical body.
    canonical = {i.id: i.meta["canonical_solution"] for i in load_suite("humaneval", EVAL_DATA, limit=3).items}
    for r in records:
        assert (canonical[r["item_id"]].strip() in r["answers"][0]) == r["verdict"]["correct"], r["item_id"]


def test_mt_bench_is_judged_pairwise_too_and_the_judge_cost_is_recorded(keyed_suite: Suite, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _eval(
        keyed_suite,
        "--suite",
        "mt-bench",
        "--limit",
        "2",
        "--strategies",
        "single:selected,self-moa:samples=2,orchestrate:rounds=2",
        "--judge-model",
        "z-ai/glm-4.5",
        "--pairwise-baseline",
        "single:selected",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert len(records) == 6
    for r in records:
        assert r["status"] == "ok" and len(r["answers"]) == 2
        assert 1 <= r["verdict"]["score"] <= 10 and r["verdict"]["detail"].count("turn") == 2
        judge_calls = [c for c in r["calls"] if c["role"] == "judge"]
        # Two single-answer judgements, and for the non-baseline strategy two pairwise ones per turn.
        paired = r["strategy"] != "single:selected"
        assert len(judge_calls) == (6 if paired else 2) and {c["model"] for c in judge_calls} == {"z-ai/glm-4.5"}, r
        if paired:
            assert r["pairwise"]["baseline"] == "single:selected"
            outcomes = r["pairwise"]["outcomes"]
            assert len(outcomes) == 2 and set(outcomes) <= {"win", "loss", "tie", "inconsistent"}
        else:
            assert "pairwise" not in r
        assert r["judge_cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in judge_calls), abs=1e-8)
        assert r["judge_cost_usd"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--suite", "mmlu"), "unknown suite 'mmlu'"),
        (("--suite", "gsm8k", "--strategies", "best-of-n"), "unknown strategy 'best-of-n'"),
        (("--suite", "gsm8k", "--strategies", "orchestrate:rounds=0"), "rounds must be between 1 and 10"),
        (("--suite", "gsm8k", "--strategies", "single:nobody/none"), "unknown model(s) nobody/none"),
        (("--suite", "gsm8k", "--limit", "0"), "--limit must be at least 1"),
        (
            ("--suite", "mt-bench", "--pairwise-baseline", "panel-judge"),
            "--pairwise-baseline 'panel-judge' is not one of",
        ),
        (("--suite", "gsm8k", "--budget-usd", "0.0000001"), "is too small for one item"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    keyed_suite: Suite, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = _eval(keyed_suite, *args, "--output", str(tmp_path / "run"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_malformed_rows_are_reported_by_line_and_the_rest_run(keyed_suite: Suite, tmp_path: Path) -> None:
    custom = tmp_path / "mine.jsonl"
    custom.write_text(
        json.dumps({"id": "sum", "prompt": "What is 19 + 23?", "expected_number": 42})
        + "\n{oops\n"
        + json.dumps({"id": "poem", "prompt": "Write a two-line poem about tea."})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    done = _eval(keyed_suite, "--suite", str(custom), "--strategies", "single:selected", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert f"{custom}: skipped line 2: not JSON" in done.stderr
    records = {r["item_id"]: r for r in _records(out)}
    assert set(records) == {"sum", "poem"}
    assert isinstance(records["sum"]["verdict"]["correct"], bool) and records["sum"]["verdict"]["score"] is None
    assert 1 <= records["poem"]["verdict"]["score"] <= 10


def test_a_budget_skips_the_items_it_cannot_pay_for(keyed_suite: Suite, tmp_path: Path) -> None:
    probe = _eval(
        keyed_suite,
        "--suite",
        "gsm8k",
        "--limit",
        "8",
        "--strategies",
        "orchestrate",
        "--estimate",
        "--output",
        str(tmp_path / "run"),
    )
    assert probe.returncode == 0, probe.stderr
    assert not (tmp_path / "run").exists()
    worst = float(probe.stdout.split("one item at most $", 1)[1].split(",", 1)[0])
    budget = worst * 1.01
    out = tmp_path / "run"
    done = _eval(
        keyed_suite,
        "--suite",
        "gsm8k",
        "--limit",
        "8",
        "--concurrency",
        "1",
        "--strategies",
        "orchestrate",
        "--budget-usd",
        f"{budget:.10f}",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    records = _records(out)
    statuses = [r["status"] for r in records]
    assert len(statuses) == 8 and statuses[0] == "ok" and "skipped" in statuses, statuses
    # Items reserve their worst case before they start: what was spent never passes the budget.
    spent = sum(r["cost_usd"] for r in records)
    assert spent <= budget
    assert all(r["error"].startswith("budget $") for r in records if r["status"] == "skipped")


def test_ctrl_c_keeps_finished_items_and_the_same_command_resumes(keyed_suite: Suite, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORX_")}
    env.update({f"ORX_{n.upper()}_ADDR": a for n, a in keyed_suite.addr.items() if n != "gateway"})
    args = [
        str(BIN / "orchestratex"),
        "eval",
        "--data-dir",
        str(EVAL_DATA),
        "--no-progress",
        "--suite",
        "gsm8k",
        "--limit",
        "8",
        "--concurrency",
        "1",
        "--strategies",
        "orchestrate",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    wait_for(lambda: results.exists() and results.read_text(encoding="utf-8").count("\n") >= 2, within=120)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command to resume" in stderr, stderr
    kept = _records(out)
    assert 2 <= len(kept) < 8
    done = _eval(keyed_suite, *args[5:])
    assert done.returncode == 0, done.stderr
    assert f"{len(kept)} kept from before" in done.stdout
    final = _records(out)
    assert sorted(r["item_id"] for r in final) == sorted({r["item_id"] for r in final}) and len(final) == 8
