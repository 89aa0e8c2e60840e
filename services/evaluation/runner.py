"""Running an evaluation: items concurrently, every strategy per item, resumable, within a budget.

The run directory (``--output``) holds ``run.json`` and ``results.jsonl`` (see :mod:`.records`). A record is
appended and flushed to disk as soon as its item is checked, so a crash or Ctrl-C keeps finished items and
running the same command again resumes: items with an ``ok`` record for a strategy are not run again, failed
and skipped ones are. A directory made with simulated models is never resumed with real ones, nor the reverse.

Before it starts, the run prints a cost estimate (typical and worst case, strategies and judge) from the
catalogue's prices; a budget smaller than one item's worst case is refused. During the run an item starts
only while the money spent plus its typical estimate stays within ``--budget-usd``; the rest are recorded
as ``skipped``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import grpc

from orchestratex.v1 import common_pb2, providers_pb2
from services.evaluation import checkers, strategies
from services.evaluation.humaneval import check_humaneval
from services.evaluation.records import SCHEMA_VERSION, Call, Manifest, PairOutcome, Pairwise, Record, Verdict
from services.evaluation.sandbox import SandboxLimits, isolation_available
from services.evaluation.strategies import Services, StrategyFailed, StrategySpec
from services.evaluation.suites import Item, Suite

RESULTS = "results.jsonl"
MANIFEST = "run.json"

_TOKENS_OUT = {"number": 350, "python": 300, "judge": 600}
"""Typical answer length in tokens per check kind, for the estimate only."""
_CRITIQUE_TOKENS = 250
_JUDGE_TOKENS = 250


class RunError(Exception):
    """The run cannot start (budget too small, incompatible run directory); the message says why."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs besides the services."""

    suite: Suite
    strategies: Sequence[StrategySpec]
    output: Path
    concurrency: int = 4
    budget_usd: float | None = None
    judge_model: str = ""
    pass_score: float = 7.0
    seed: int = 0
    limit: int | None = None
    progress: bool = True
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    sandbox_concurrency: int = 2
    pairwise_baseline: str | None = None
    """Judged items: compare every other strategy's answers with this one's, pairwise, both orders."""
    allow_weak_sandbox: bool = False
    """Run HumanEval tests even where the strong sandbox (bubblewrap) is unavailable."""


@dataclass
class Estimate:
    """Estimated USD for the whole run (typical and worst case) and for one item (worst case)."""

    typical: float
    worst: float
    per_item_typical: float
    per_item_worst: float


def estimate(config: RunConfig, models: Mapping[str, common_pb2.ModelInfo], items: Sequence[Item]) -> Estimate:
    """A cost estimate from the catalogue's prices and typical token counts.

    Models the selector will pick are unknown in advance: the typical figure prices them at the mean
    price of the listed models, the worst case at the highest.
    """
    prices = [(m.input_price_per_mtok, m.output_price_per_mtok) for m in models.values()]
    if not prices:
        return Estimate(0.0, 0.0, 0.0, 0.0)
    mean_in, mean_out = statistics.fmean(p[0] for p in prices), statistics.fmean(p[1] for p in prices)
    max_in, max_out = max(p[0] for p in prices), max(p[1] for p in prices)

    def price(model: str, worst: bool) -> tuple[float, float]:
        info = models.get(model)
        if info is not None:
            return info.input_price_per_mtok, info.output_price_per_mtok
        return (max_in, max_out) if worst else (mean_in, mean_out)

    total_typical = total_worst = 0.0
    worst_item = typical_item = 0.0
    for item in items:
        prompt_tokens = 300 + sum(len(t) for t in item.turns) // 4
        out_tokens = _TOKENS_OUT[item.check]
        item_typical = item_worst = 0.0
        for spec in config.strategies:
            if spec.kind == "oracle":
                continue
            typical_calls, worst_calls = strategies.expected_calls(spec)
            model = spec.model if spec.kind == "single" else str(spec.options.get("model", ""))
            for worst, calls in ((False, typical_calls), (True, worst_calls)):
                p_in, p_out = price(model, worst)
                per_call = (prompt_tokens + out_tokens) * p_in / 1e6 + out_tokens * p_out / 1e6
                cost = calls * per_call * len(item.turns)
                if worst:
                    item_worst += cost
                else:
                    item_typical += cost
            if item.check == "judge":
                j_in, j_out = price(config.judge_model, True)
                judge = len(item.turns) * ((prompt_tokens + 2 * out_tokens) * j_in + _JUDGE_TOKENS * j_out) / 1e6
                if config.pairwise_baseline and spec.text != config.pairwise_baseline:
                    judge *= 3  # and two pairwise judgements, one in each order
                item_typical += judge
                item_worst += judge
        total_typical += item_typical
        total_worst += item_worst
        worst_item = max(worst_item, item_worst)
        typical_item = max(typical_item, item_typical)
    return Estimate(total_typical, total_worst, typical_item, worst_item)


class ResultsFile:
    """``results.jsonl``: appended and flushed record by record; read back tolerantly (a torn last line
    from a crash is ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Record]:
        """Every complete record, in file order."""
        if not self.path.exists():
            return []
        records: list[Record] = []
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("schema") == SCHEMA_VERSION:
                    records.append(record)  # type: ignore[arg-type]
        return records

    def append(self, record: Record) -> None:
        """Write one record durably (a crash right after loses nothing written before)."""
        line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            # A torn line left by a crash would glue onto this one: start on a fresh line.
            if handle.tell() > 0 and not _ends_with_newline(self.path):
                handle.write("\n")
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def prepare(config: RunConfig, models: Mapping[str, common_pb2.ModelInfo], est: Estimate) -> Manifest:
    """Create or reopen the run directory; refuse to mix simulated and real results or two suites."""
    config.output.mkdir(parents=True, exist_ok=True)
    simulated = any(m.simulated for m in models.values())
    path = config.output / MANIFEST
    manifest = Manifest(
        schema=SCHEMA_VERSION,
        suite=config.suite.name,
        strategies=[s.text for s in config.strategies],
        limit=config.limit,
        seed=config.seed,
        judge_model=config.judge_model,
        pass_score=config.pass_score if config.suite.judged else None,
        pairwise_baseline=config.pairwise_baseline,
        sandbox=isolation_available() if any(i.check == "python" for i in config.suite.items) else None,
        simulated=simulated,
        models=sorted(models),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        version=_version(),
        budget_usd=config.budget_usd,
        estimate_usd=round(est.typical, 6),
    )
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: unreadable ({exc}); use another --output") from None
        if old.get("schema") != SCHEMA_VERSION:
            raise RunError(f"{path}: made by another version of the results format; use another --output")
        if old.get("suite") != config.suite.name:
            raise RunError(f"{config.output} holds a run of {old.get('suite')!r}, not {config.suite.name!r}")
        if bool(old.get("simulated")) != simulated:
            kinds = ("real", "simulated")
            raise RunError(
                f"{config.output} holds results from {kinds[bool(old.get('simulated'))]} models and the services now "
                f"serve {kinds[simulated]} ones: simulated and real results are never mixed; use another --output"
            )
        for key in ("judge_model", "pass_score", "pairwise_baseline"):
            if key in old and old[key] != manifest.get(key):
                raise RunError(
                    f"{config.output} was run with {key} {old[key]!r}, not {manifest.get(key)!r}: verdicts would be "
                    "mixed; use the same settings or another --output"
                )
        manifest["started"] = old.get("started", manifest["started"])
        manifest["strategies"] = list(dict.fromkeys([*old.get("strategies", []), *manifest["strategies"]]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(path)
    return manifest


def _version() -> str:
    try:
        return metadata.version("orchestratex")
    except metadata.PackageNotFoundError:
        return "unknown"


class Runner:
    """Runs the items of one config against one set of services."""

    def __init__(self, config: RunConfig, services: Services, err: TextIO = sys.stderr) -> None:
        self.config = config
        self.services = services
        self.err = err
        self.results = ResultsFile(config.output / RESULTS)
        self.spent = 0.0
        """Money spent, plus what running items have reserved (their worst-case estimate) until they settle."""
        self._earlier_ok: dict[tuple[str, str], Record] = {}
        self._sandbox = asyncio.Semaphore(config.sandbox_concurrency)
        self._lock = asyncio.Lock()

    async def run(self, est: Estimate) -> tuple[int, int]:
        """Run what is not done yet; returns (records written, records kept from before)."""
        earlier = self.results.read()
        # A resumed run has already spent what its records say (superseded ones too: that money is gone).
        self.spent = sum(r["cost_usd"] + r["judge_cost_usd"] for r in earlier)
        self._earlier_ok = {(r["item_id"], r["strategy"]): r for r in earlier if r["status"] == "ok"}
        done = set(self._earlier_ok)
        todo = [
            (item, [s for s in self.config.strategies if s.kind != "oracle" and (item.id, s.text) not in done])
            for item in self.config.suite.items
        ]
        todo = [(item, specs) for item, specs in todo if specs]
        progress = _progress(sum(len(s) for _, s in todo), self.config.progress, self.err)
        gate = asyncio.Semaphore(self.config.concurrency)
        written = 0

        async def one(item: Item, specs: list[StrategySpec]) -> None:
            nonlocal written
            async with gate:
                for record in await self._item(item, specs, est):
                    self.results.append(record)
                    written += 1
                    progress.update(1)

        try:
            await asyncio.gather(*(one(item, specs) for item, specs in todo))
        finally:
            progress.close()
        return written, len(done)

    async def _item(self, item: Item, specs: list[StrategySpec], est: Estimate) -> list[Record]:
        # An item reserves its worst-case estimate before it starts and settles its real cost when it is
        # done, so items running side by side cannot together overrun the budget (as far as the estimate
        # holds: it prices the typical answer length).
        budget = self.config.budget_usd
        reserve = est.per_item_worst
        async with self._lock:
            over = budget is not None and self.spent + reserve > budget
            if not over:
                self.spent += reserve
        if over:
            return [_skipped(item, spec, budget) for spec in specs]
        records: list[Record] = []
        try:
            records = list(await asyncio.gather(*(self._one(item, spec) for spec in specs)))
            await self._pairwise(item, records)
        finally:
            async with self._lock:
                self.spent += sum(r["cost_usd"] + r["judge_cost_usd"] for r in records) - reserve
        return records

    async def _one(self, item: Item, spec: StrategySpec) -> Record:
        started = time.perf_counter()
        outcome = strategies.Outcome()
        try:
            await strategies.run(self.services, spec, item, outcome)
        except Exception as exc:  # one item fails, never the run: every error becomes a failed record
            if isinstance(exc, grpc.aio.AioRpcError):
                error = f"{exc.code().name}: {exc.details()}"
            elif isinstance(exc, StrategyFailed):
                error = str(exc)
            else:
                error = f"unexpected {type(exc).__name__}: {exc}"
            record = _record(item, spec, "failed", error=error[:500], latency=time.perf_counter() - started)
            # What the failed attempt spent is still spent: the budget and the report count it.
            record["calls"] = outcome.calls
            record["cost_usd"] = round(outcome.cost_usd, 8)
            record["model"] = outcome.model
            return record
        latency = time.perf_counter() - started
        judge_calls: list[Call] = []
        verdict = await self._check(item, outcome.answers, judge_calls)
        if item.check != "judge":
            for version in outcome.history:
                if version["turn"] == len(item.turns) - 1:
                    version["verdict"] = await self._check(item, [version["answer"]], judge_calls)
        record = _record(item, spec, "ok", latency=latency)
        record["model"] = outcome.model
        record["answers"] = outcome.answers
        record["verdict"] = verdict
        record["calls"] = [*outcome.calls, *judge_calls]
        record["cost_usd"] = round(outcome.cost_usd, 8)
        record["judge_cost_usd"] = round(sum(c["cost_usd"] for c in judge_calls), 8)
        record["rounds"] = outcome.rounds
        record["stop_reason"] = outcome.stop_reason
        record["round_history"] = outcome.history
        return record

    async def _pairwise(self, item: Item, records: list[Record]) -> None:
        """Judge each record's answers against the baseline's of the same item, in both orders (MT-Bench's
        pairwise prompt; a verdict counts only when both orders agree). The baseline's answer comes from this
        batch or, in a resumed run, from its earlier ``ok`` record."""
        baseline_name = self.config.pairwise_baseline
        if baseline_name is None or item.check != "judge":
            return
        baseline = next((r for r in records if r["strategy"] == baseline_name and r["status"] == "ok"), None)
        baseline = baseline or self._earlier_ok.get((item.id, baseline_name))
        if baseline is None:
            return
        for record in records:
            if record is baseline or record["status"] != "ok":
                continue
            calls: list[Call] = []
            outcomes: list[PairOutcome] = []
            questions = list(item.shown_questions[: len(record["answers"])])
            for turn in range(len(questions)):
                # Each turn is judged with the conversation up to it, each assistant's own earlier answers.
                mine, theirs = record["answers"][: turn + 1], baseline["answers"][: turn + 1]
                first = await self._pair_verdict(questions[: turn + 1], mine, theirs, calls)
                second = await self._pair_verdict(questions[: turn + 1], theirs, mine, calls)
                outcomes.append(checkers.combine_swapped(first, second))
            record["pairwise"] = Pairwise(baseline=baseline_name, outcomes=outcomes)
            record["calls"] = [*record["calls"], *calls]
            record["judge_cost_usd"] = round(record["judge_cost_usd"] + sum(c["cost_usd"] for c in calls), 8)

    async def _pair_verdict(
        self, questions: list[str], first: list[str], second: list[str], calls: list[Call]
    ) -> checkers.PairVerdict | None:
        prompt = checkers.pairwise_prompt(questions, first, second)
        try:
            text, call = await strategies.generate(
                self.services,
                self.config.judge_model,
                [
                    common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=prompt.system),
                    common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=prompt.user),
                ],
                common_pb2.CALL_PURPOSE_CRITIQUE,
                "judge",
                max_tokens=1024,
                temperature=0.0,
            )
        except grpc.aio.AioRpcError:
            return None
        calls.append(call)
        return checkers.parse_pairwise(text)

    async def _check(self, item: Item, answers: list[str], judge_calls: list[Call]) -> Verdict:
        final = answers[-1]
        if item.check == "number":
            return checkers.check_number(item, final)
        if item.check == "python":
            async with self._sandbox:
                return await check_humaneval(
                    final,
                    prompt=item.code_prompt,
                    test=item.test,
                    entry_point=item.entry_point,
                    limits=self.config.sandbox,
                    allow_weak=self.config.allow_weak_sandbox,
                )
        scores: list[float] = []
        details: list[str] = []
        for turn in range(len(answers)):
            score = await self._judge(item, answers, turn, judge_calls)
            if score is None:
                details.append(f"turn {turn + 1}: judge reply unreadable")
            else:
                scores.append(score)
                details.append(f"turn {turn + 1}: {score:g}")
        if not scores:
            return Verdict(correct=None, score=None, detail="; ".join(details))
        mean = statistics.fmean(scores)
        return Verdict(correct=mean >= self.config.pass_score, score=round(mean, 3), detail="; ".join(details))

    async def _judge(self, item: Item, answers: list[str], turn: int, judge_calls: list[Call]) -> float | None:
        prompt = checkers.single_prompt(item, answers, turn)
        messages = [
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=prompt.system),
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=prompt.user),
        ]
        try:
            text, call = await strategies.generate(
                self.services,
                self.config.judge_model,
                messages,
                common_pb2.CALL_PURPOSE_CRITIQUE,
                "judge",
                max_tokens=1024,
                temperature=0.0,
                response_format=providers_pb2.ResponseFormat(),
            )
        except grpc.aio.AioRpcError:
            return None
        judge_calls.append(call)
        return checkers.parse_rating(text)


def _record(item: Item, spec: StrategySpec, status: str, *, error: str | None = None, latency: float = 0.0) -> Record:
    return Record(
        schema=SCHEMA_VERSION,
        item_id=item.id,
        strategy=spec.text,
        status=status,  # type: ignore[typeddict-item]
        error=error,
        model="",
        answers=[],
        verdict=None,
        calls=[],
        cost_usd=0.0,
        judge_cost_usd=0.0,
        latency_ms=round(latency * 1000, 3),
        rounds=0,
        stop_reason=status if status != "ok" else "single",
        round_history=[],
        category=item.category,
    )


def _skipped(item: Item, spec: StrategySpec, budget: float | None) -> Record:
    return _record(item, spec, "skipped", error=f"budget ${budget:g} spent before this item started")


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, err: TextIO) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm  # noqa: PLC0415 (only a run with a progress bar needs it)

    return tqdm(total=total, unit="run", file=err, dynamic_ncols=True, desc="eval")
