"""``orchestratex eval``: the command-line front of :mod:`services.evaluation` (arguments, checks, output).

Exit codes: 0 the run finished (failed items are in the report, not an error), 2 bad input (unknown suite,
strategy or model, a budget too small for one item, an incompatible run directory), 1 the services could
not be reached, 130 interrupted (finished items are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

import grpc

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import (
    common_pb2,
    orchestrator_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    selector_pb2_grpc,
)
from services.evaluation import runner
from services.evaluation.records import SCHEMA_VERSION, Manifest, Record
from services.evaluation.sandbox import SandboxLimits
from services.evaluation.strategies import Services, StrategyError, StrategySpec, parse_strategy, split_strategies
from services.evaluation.suites import Suite, SuiteError, answer_key_rows, load_suite
from services.orchestrator.prompts import load_prompts


def _fail(message: str, err: TextIO) -> int:
    print(f"orchestratex eval: {message}", file=err)
    return 2


async def run_command(
    settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Run ``orchestratex eval`` with parsed arguments; returns the exit code."""
    try:
        specs = [parse_strategy(s) for s in split_strategies(args.strategies)]
    except StrategyError as exc:
        return _fail(str(exc), err)
    if not specs:
        return _fail("no strategy given", err)
    if len({s.text for s in specs}) != len(specs):
        return _fail("a strategy is listed twice", err)
    if args.pairwise_baseline is not None and args.pairwise_baseline not in {s.text for s in specs}:
        return _fail(f"--pairwise-baseline {args.pairwise_baseline!r} is not one of the strategies", err)
    if args.limit is not None and args.limit < 1:
        return _fail("--limit must be at least 1", err)
    for name, value, low, high in (
        ("--timeout", args.timeout, 0.001, 86_400),
        ("--code-timeout", args.code_timeout, 0.1, 600),
        ("--max-tokens", args.max_tokens, 1, 1_000_000),
        ("--pass-score", args.pass_score, 1, 10),
    ):
        if not low <= value <= high:
            return _fail(f"{name} must be between {low:g} and {high:g}", err)
    if not 1 <= args.concurrency <= 256:
        return _fail("--concurrency must be between 1 and 256", err)
    if args.budget_usd is not None and args.budget_usd <= 0:
        return _fail("--budget-usd must be positive", err)
    try:
        suite = load_suite(args.suite, args.data_dir, args.limit)
    except SuiteError as exc:
        return _fail(str(exc), err)
    for row_error in suite.errors:
        print(f"orchestratex eval: {suite.source}: skipped {row_error}", file=err)
    if not suite.items:
        return _fail(f"{suite.source}: no usable item", err)
    if args.export_sim_answer_key is not None:
        rows = answer_key_rows(suite.items)
        args.export_sim_answer_key.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} answer-key rows to {args.export_sim_answer_key} (simulation only)", file=out)
        return 0
    output: Path = args.output or Path("eval-runs") / Path(args.suite).stem
    if args.report_only:
        return _report_only(output, out, err)
    if any(s.kind == "oracle" for s in specs) and sum(s.kind == "single" and s.model != "selected" for s in specs) < 2:
        print("orchestratex eval: note: oracle needs at least two single:<model> strategies", file=err)

    peers = settings.common.peers
    channels = [
        open_channel(peers[name], max_message_bytes=settings.common.max_message_bytes)
        for name in ("providers", "selector", "orchestrator")
    ]
    try:
        return await _run(settings, args, suite, specs, output, channels, out, err)
    finally:
        for channel in channels:
            await channel.close(grace=None)


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    suite: Suite,
    specs: list[StrategySpec],
    output: Path,
    channels: list[grpc.aio.Channel],
    out: TextIO,
    err: TextIO,
) -> int:
    providers = providers_pb2_grpc.ProviderServiceStub(channels[0])
    try:
        listed = await providers.ListModels(providers_pb2.ListModelsRequest(), timeout=settings.common.rpc_timeout)
    except grpc.aio.AioRpcError as exc:
        print(
            f"orchestratex eval: providers service at {settings.common.peers['providers']}: {exc.code().name}", file=err
        )
        return 1
    models = {m.id: m for m in listed.models}
    unknown = sorted({s.model for s in specs if s.kind == "single" and s.model != "selected"} - models.keys())
    unknown += sorted(
        {m for s in specs for key in ("model", "judge") for m in [str(s.options.get(key, ""))] if m}
        - models.keys()
        - {"selected"}
    )
    unknown += sorted({m for s in specs for m in str(s.options.get("models", "")).split("+") if m} - models.keys())
    if unknown:
        return _fail(f"unknown model(s) {', '.join(unknown)}: the providers service lists {', '.join(models)}", err)
    judge = args.judge_model or (_default_judge(models) if suite.judged else "")
    if judge and judge not in models:
        return _fail(f"unknown judge model {judge!r}", err)
    config = runner.RunConfig(
        suite=suite,
        strategies=specs,
        output=output,
        concurrency=args.concurrency,
        budget_usd=args.budget_usd,
        judge_model=judge,
        pass_score=args.pass_score,
        limit=args.limit,
        progress=not args.no_progress,
        sandbox=SandboxLimits(timeout_s=args.code_timeout),
        allow_weak_sandbox=args.allow_weak_sandbox,
        pairwise_baseline=args.pairwise_baseline if suite.judged else None,
    )
    est = runner.estimate(config, models, suite.items)
    simulated = any(m.simulated for m in models.values())
    label = " (simulated models: no money is spent)" if simulated else ""
    print(
        f"{suite.name}: {len(suite.items)} items x {len(specs)} strategies; estimated cost ${est.typical:.4f} "
        f"(worst case ${est.worst:.4f}; one item at most ${est.per_item_worst:.6f}, typically "
        f"${est.per_item_typical:.6f}){label}",
        file=out,
    )
    if args.estimate:
        return 0
    if not simulated and est.worst > 0 and not args.yes:
        # Real money: a person confirms, or the command line does (--yes); never silently.
        if not sys.stdin.isatty():
            return _fail("these models cost money: pass --yes to run without a terminal (and --budget-usd)", err)
        print("These are real models and cost money. Continue? [y/N] ", end="", file=out, flush=True)
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            print("orchestratex eval: nothing run", file=err)
            return 0
    if args.budget_usd is not None and est.per_item_worst > args.budget_usd:
        return _fail(
            f"--budget-usd {args.budget_usd:g} is too small for one item (worst case ${est.per_item_worst:.4f})", err
        )
    if judge and any(judge == (s.model or s.options.get("model")) for s in specs):
        print(f"orchestratex eval: note: the judge {judge} also answers; judges favour their own answers", file=err)
    try:
        manifest = runner.prepare(config, models, est)
    except runner.RunError as exc:
        return _fail(str(exc), err)
    services = Services(
        providers=providers,
        selector=selector_pb2_grpc.SelectorServiceStub(channels[1]),
        orchestrator=orchestrator_pb2_grpc.OrchestratorServiceStub(channels[2]),
        models=models,
        prompts=load_prompts(),
        call_timeout=args.timeout,
        max_tokens=args.max_tokens,
    )
    run = runner.Runner(config, services, err)
    interrupted = False
    try:
        written, kept = await run.run(est)
    except asyncio.CancelledError:
        interrupted = True
        written, kept = 0, 0
    records = run.results.read()
    paths = _write_report(output, manifest, records)
    failed = sum(r["status"] == "failed" for r in records)
    if interrupted:
        print(f"interrupted: {len(records)} records kept in {output}; run the same command to resume", file=err)
        raise asyncio.CancelledError
    print(
        f"{written} runs done ({kept} kept from before, {failed} failed); spent ${run.spent:.4f}; "
        f"report: {', '.join(str(p) for p in paths if p.suffix != '.png')}",
        file=out,
    )
    return 0


def _default_judge(models: dict[str, common_pb2.ModelInfo]) -> str:
    """The model with the best mean published specialty score (the strongest generalist listed)."""

    def strength(info: common_pb2.ModelInfo) -> float:
        scores = [s.score for s in info.specialties]
        return sum(scores) / len(scores) if scores else 0.0

    return max(models.values(), key=strength).id if models else ""


def _report_only(output: Path, out: TextIO, err: TextIO) -> int:
    path = output / runner.MANIFEST
    if not path.exists():
        return _fail(f"{output}: no run here ({runner.MANIFEST} missing)", err)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _fail(f"{path}: unreadable ({exc})", err)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA_VERSION:
        return _fail(f"{path}: not a run manifest of this version", err)
    records = runner.ResultsFile(output / runner.RESULTS).read()
    paths = _write_report(output, manifest, records)  # type: ignore[arg-type]  # checked just above
    print(f"report: {', '.join(str(p) for p in paths if p.suffix != '.png')}", file=out)
    return 0


def _write_report(output: Path, manifest: Manifest, records: list[Record]) -> list[Path]:
    # Imported here: matplotlib takes a second to import, and only a finished run needs it.
    from services.evaluation.report import write_report  # noqa: PLC0415

    return write_report(output, manifest, records)
