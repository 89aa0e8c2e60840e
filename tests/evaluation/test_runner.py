"""The runner over stand-in stubs: budgets, failures, resuming, the run directory's rules, pairwise judging."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from orchestratex.v1 import common_pb2, orchestrator_pb2, providers_pb2
from services.evaluation import runner
from services.evaluation.records import SCHEMA_VERSION
from services.evaluation.runner import Estimate, ResultsFile, RunConfig, RunError, Runner, estimate, prepare
from services.evaluation.strategies import parse_strategy
from services.evaluation.suites import Item, Suite
from tests.evaluation.fakes import MODELS, services

NUMBERS = [
    Item(id=f"q{i}", turns=(f"What is {i} + {i}?",), check="number", category="t", expected=str(2 * i))
    for i in range(5)
]


def _config(tmp_path: Path, strategies: list[str], items: list[Item] = NUMBERS, **kw: Any) -> RunConfig:
    suite = Suite(name="custom.jsonl", items=items, errors=[], source="custom.jsonl")
    return RunConfig(
        suite=suite, strategies=[parse_strategy(s) for s in strategies], output=tmp_path / "run", progress=False, **kw
    )


def _right(request: providers_pb2.GenerateRequest) -> str:
    question = request.messages[-1].content
    n = int(question.split("What is ", 1)[1].split(" ", 1)[0])
    return f"Answer: {2 * n}"


async def _run(config: RunConfig, svc: object, est: Estimate) -> tuple[Runner, list[dict[str, Any]]]:
    prepare(config, svc.models, est)  # type: ignore[attr-defined]
    run = Runner(config, svc)  # type: ignore[arg-type]
    await run.run(est)
    return run, ResultsFile(config.output / runner.RESULTS).read()  # type: ignore[return-value]


async def test_items_are_checked_and_recorded_once_each(tmp_path: Path) -> None:
    svc, providers, _, _ = services(_right)
    config = _config(tmp_path, ["single:lab/alpha", "single:selected"])
    run, records = await _run(config, svc, Estimate(0, 0, 0, 0))
    assert sorted((r["item_id"], r["strategy"]) for r in records) == sorted(
        (i.id, s) for i in NUMBERS for s in ("single:lab/alpha", "single:selected")
    )
    assert all(r["status"] == "ok" and r["verdict"]["correct"] for r in records)
    assert run.spent == pytest.approx(0.001 * len(records))
    # Again: nothing left to do, nothing called.
    before = len(providers.requests)
    written, kept = await Runner(config, svc).run(Estimate(0, 0, 0, 0))
    assert (written, kept, len(providers.requests)) == (0, 10, before)


@pytest.mark.parametrize("concurrency", [1, 5])
async def test_the_budget_is_never_passed_items_that_would_pass_it_are_skipped(
    tmp_path: Path, concurrency: int
) -> None:
    svc, _, _, _ = services(_right)
    config = _config(tmp_path, ["single:lab/alpha"], budget_usd=0.0035, concurrency=concurrency)
    run, records = await _run(config, svc, Estimate(0.005, 0.0075, 0.001, 0.0015))
    statuses = [r["status"] for r in records]
    assert "ok" in statuses and "skipped" in statuses and len(statuses) == 5
    spent = sum(r["cost_usd"] for r in records)
    assert spent <= 0.0035 and run.spent == pytest.approx(spent)
    if concurrency == 1:  # one at a time: every item runs while its worst case still fits
        assert statuses.count("ok") == 3
    assert all(
        r["error"] == "budget $0.0035 spent before this item started" for r in records if r["status"] == "skipped"
    )


async def test_a_resumed_run_counts_what_was_already_spent(tmp_path: Path) -> None:
    svc, _, _, _ = services(_right)
    config = _config(tmp_path, ["single:lab/alpha"], items=NUMBERS[:2])
    await _run(config, svc, Estimate(0, 0, 0, 0))
    more = _config(tmp_path, ["single:lab/alpha"], budget_usd=0.0035)
    run, records = await _run(more, svc, Estimate(0, 0, 0.001, 0.0015))
    # 0.002 spent before: one more item fits (0.002 + 0.0015 <= 0.0035), then the budget is reached.
    assert [r["status"] for r in records].count("ok") == 3 and run.spent <= 0.0035


async def test_a_failed_item_keeps_what_it_spent_and_the_run_goes_on(tmp_path: Path) -> None:
    def session(request: orchestrator_pb2.OrchestrateRequest) -> list[orchestrator_pb2.OrchestrationEvent]:
        if "What is 1 " in request.prompt:
            return [
                orchestrator_pb2.OrchestrationEvent(
                    session_failed=orchestrator_pb2.SessionFailed(reason="all models down", total_cost_usd=0.02)
                )
            ]
        done = orchestrator_pb2.SessionCompleted(final_text="Answer: 0", rounds_used=1, total_cost_usd=0.01)
        return [orchestrator_pb2.OrchestrationEvent(session_completed=done)]

    def reply(request: providers_pb2.GenerateRequest) -> str:
        if "What is 2 " in request.messages[-1].content:
            raise ValueError("a bug in a stand-in")
        return _right(request)

    svc, _, _, _ = services(reply, script=session)
    config = _config(tmp_path, ["orchestrate", "single:lab/alpha"], items=NUMBERS[:3])
    run, records = await _run(config, svc, Estimate(0, 0, 0, 0))
    by = {(r["item_id"], r["strategy"]): r for r in records}
    assert len(by) == 6
    failed = by[("q1", "orchestrate")]
    assert failed["status"] == "failed" and failed["error"] == "session failed: all models down"
    assert failed["cost_usd"] == pytest.approx(0.02)
    bug = by[("q2", "single:lab/alpha")]
    assert bug["status"] == "failed" and bug["error"] == "unexpected ValueError: a bug in a stand-in"
    assert by[("q0", "orchestrate")]["status"] == "ok" and by[("q1", "single:lab/alpha")]["status"] == "ok"
    assert run.spent == pytest.approx(sum(r["cost_usd"] for r in records))


def test_a_torn_last_line_is_ignored_and_the_next_record_starts_a_fresh_line(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "results.jsonl")
    good = {"schema": SCHEMA_VERSION, "item_id": "a", "strategy": "s", "status": "ok"}
    results.path.write_text(json.dumps(good) + "\n" + '{"schema": 1, "item_id": "b", "stra', encoding="utf-8")
    assert [r["item_id"] for r in results.read()] == ["a"]
    results.append({**good, "item_id": "c"})  # type: ignore[typeddict-item]
    assert [r["item_id"] for r in results.read()] == ["a", "c"]


def test_a_run_directory_refuses_another_kind_of_model_another_suite_or_another_judge(tmp_path: Path) -> None:
    svc, _, _, _ = services(_right)
    config = _config(tmp_path, ["single:lab/alpha"])
    prepare(config, svc.models, Estimate(0, 0, 0, 0))
    real = {m: common_pb2.ModelInfo(id=m, simulated=False) for m in MODELS}
    with pytest.raises(RunError, match="simulated and real results are never mixed"):
        prepare(config, real, Estimate(0, 0, 0, 0))
    other = RunConfig(suite=Suite("gsm8k", NUMBERS, [], "x"), strategies=config.strategies, output=config.output)
    with pytest.raises(RunError, match=re.escape("holds a run of 'custom.jsonl', not 'gsm8k'")):
        prepare(other, svc.models, Estimate(0, 0, 0, 0))
    judged = _config(tmp_path, ["single:lab/alpha"], judge_model="lab/beta")
    with pytest.raises(RunError, match="judge_model"):
        prepare(judged, svc.models, Estimate(0, 0, 0, 0))
    # Adding a strategy to a run is allowed: the manifest lists both.
    more = _config(tmp_path, ["single:lab/beta"])
    assert prepare(more, svc.models, Estimate(0, 0, 0, 0))["strategies"] == ["single:lab/alpha", "single:lab/beta"]


def test_the_estimate_prices_unknown_picks_at_the_mean_typically_and_the_dearest_at_worst() -> None:
    svc, _, _, _ = services(_right)
    models = dict(svc.models)
    models["lab/alpha"] = common_pb2.ModelInfo(id="lab/alpha", input_price_per_mtok=10, output_price_per_mtok=40)
    config = RunConfig(
        suite=Suite("s", NUMBERS, [], "x"), strategies=[parse_strategy("single:selected")], output=Path("unused")
    )
    est = estimate(config, models, NUMBERS)
    assert 0 < est.typical < est.worst and est.per_item_typical < est.per_item_worst
    pinned = RunConfig(suite=config.suite, strategies=[parse_strategy("single:lab/alpha")], output=Path("unused"))
    pinned_est = estimate(pinned, models, NUMBERS)
    assert pinned_est.typical == pytest.approx(pinned_est.worst) == pytest.approx(est.worst)
    judged_items = [Item(id="j", turns=("Write a poem.", "Shorter."), check="judge", category="w")]
    plain = estimate(
        RunConfig(
            suite=Suite("s", judged_items, [], "x"),
            strategies=config.strategies,
            output=Path("unused"),
            judge_model="lab/alpha",
        ),
        models,
        judged_items,
    )
    assert plain.per_item_worst > plain.per_item_typical > 0


async def test_pairwise_after_resume_uses_the_baseline_answer_already_recorded(tmp_path: Path) -> None:
    item = Item(id="poem", turns=("Write a poem about tea.",), check="judge", category="writing")

    def reply(request: providers_pb2.GenerateRequest) -> str:
        text = request.messages[-1].content
        if request.context.purpose == common_pb2.CALL_PURPOSE_CRITIQUE:
            if "[[A]]" not in text:
                return "Fine. Rating: [[7]]"
            # The judge prefers lab/beta's answer, whichever position it is in.
            return "[[A]]" if text.index("by lab/") == text.index("by lab/beta") else "[[B]]"
        return f"A poem by {request.model}"

    svc, providers, _, _ = services(reply)
    first = _config(
        tmp_path, ["single:lab/alpha"], items=[item], judge_model="lab/gamma", pairwise_baseline="single:lab/alpha"
    )
    await _run(first, svc, Estimate(0, 0, 0, 0))
    calls = len(providers.requests)
    second = _config(
        tmp_path,
        ["single:lab/alpha", "single:lab/beta"],
        items=[item],
        judge_model="lab/gamma",
        pairwise_baseline="single:lab/alpha",
    )
    _, records = await _run(second, svc, Estimate(0, 0, 0, 0))
    (beta,) = [r for r in records if r["strategy"] == "single:lab/beta"]
    assert beta["pairwise"] == {"baseline": "single:lab/alpha", "outcomes": ["win"]}
    assert beta["verdict"]["score"] == 7.0
    # The baseline was not run again: one answer, one single-answer judgement and two pairwise ones.
    assert len(providers.requests) - calls == 4
