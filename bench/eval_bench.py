"""``orchestratex eval`` as a user runs it: a simulated report, a defaults study, and a local-model smoke report.

    .venv/bin/python -m bench.eval_bench [--gsm8k 1319] [--humaneval 164] [--mt-bench 80] [--local 6]
        [--out bench/results/eval] [--skip-local]

**Simulated** (every figure here is a SIMULATION: it measures the pipeline on models of known hidden quality,
never real models). The four services run as subprocesses (``orchestratex serve``) on the embedded defaults
with ``ORX_SIM_ANSWER_KEY`` written by ``orchestratex eval --export-sim-answer-key`` for the GSM8K and HumanEval
items, and ``ORX_SIM_SPEED`` high so simulated latency does not dominate; then ``orchestratex eval`` runs, as a
subprocess:

- GSM8K (first ``--gsm8k`` items): every single model, ``single:selected``, ``oracle``, ``orchestrate``,
  ``self-refine``, ``panel-judge``, ``self-moa``, and the defaults study: ``orchestrate`` with critics 1/3,
  threshold 7/9, rounds 5, patience 2, plateau epsilon 0.1/0.5 (one setting changed at a time from the
  server's defaults);
- HumanEval (first ``--humaneval``; code runs in the sandbox): ``single:selected``, ``orchestrate``,
  ``self-refine``, ``self-moa``;
- MT-Bench (first ``--mt-bench``, judged by ``z-ai/glm-4.5``, and pairwise against ``single:selected``):
  ``single:selected``, ``orchestrate``, ``self-moa``.

Each suite's strategies run in one ``eval`` invocation (so every item meets every strategy while the services
are in the same state, and item order alternates strategies naturally); the report's figures and the run's wall
time and CPU per item (the eval process and each service, from /proc) are collected into ``<out>/summary.json``.

**Local model** (real, tiny): Gemma 3 270M behind llama-cpp-python's server, on the real-model catalogue of
``tests/real_model`` (three ids, one set of weights), GSM8K first ``--local`` items with ``single:local/lark``,
``orchestrate:rounds=2,critics=1`` and ``self-refine:rounds=2``, answers capped at 256 tokens. A smoke report:
it shows the harness works on a real model end to end, not that the model is any good.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._suite import BIN, cluster

ROOT = Path(__file__).resolve().parents[1]
EVAL_DATA = ROOT.parent / "shared" / "datasets" / "eval"
SIM_MODELS = (
    "z-ai/glm-4.5",
    "openai/gpt-oss-120b",
    "meta-llama/llama-4-maverick",
    "moonshotai/kimi-k2",
    "qwen/qwen3-coder",
    "tngtech/deepseek-r1t2-chimera",
)
DEFAULTS_STUDY = (
    "orchestrate:critics=1",
    "orchestrate:critics=3",
    "orchestrate:threshold=7",
    "orchestrate:threshold=9",
    "orchestrate:rounds=5",
    "orchestrate:patience=2",
    "orchestrate:epsilon=0.1",
    "orchestrate:epsilon=0.5",
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _eval(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``orchestratex eval``; returns the result, wall seconds and its CPU seconds (children included)."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "orchestratex"), "eval", "--data-dir", str(EVAL_DATA), "--no-progress", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if done.returncode != 0:
        raise RuntimeError(f"eval {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done, wall, cpu


def _records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def best_vs_last(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For refining strategies: accuracy of the returned (best-scored) version vs the last version written."""
    out: dict[str, dict[str, float]] = {}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == "ok" and r["round_history"] and r["verdict"]["correct"] is not None:
            by.setdefault(r["strategy"], []).append(r)
    for strategy, rs in by.items():
        last = [r["round_history"][-1].get("verdict", {}).get("correct") for r in rs]
        first = [r["round_history"][0].get("verdict", {}).get("correct") for r in rs]
        out[strategy] = {
            "n": len(rs),
            "returned": sum(bool(r["verdict"]["correct"]) for r in rs) / len(rs),
            "last": sum(bool(x) for x in last) / len(rs),
            "first": sum(bool(x) for x in first) / len(rs),
            "mean_rounds": sum(r["rounds"] for r in rs) / len(rs),
        }
    return out


def simulated(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ORX_")}
    base_env.pop("OPENROUTER_API_KEY", None)
    keys = []
    for suite, limit in (("gsm8k", args.gsm8k), ("humaneval", args.humaneval)):
        if not limit:
            continue
        path = out / f"{suite}.key.jsonl"
        _eval(base_env, "--suite", suite, "--limit", str(limit), "--export-sim-answer-key", str(path))
        keys.append(path.read_text(encoding="utf-8"))
    key = out / "answer-key.jsonl"
    key.write_text("".join(keys), encoding="utf-8")
    summary: dict[str, Any] = {"simulated": True}
    # The simulator is no vendor: the providers' per-model limits (600 requests a minute by default) are raised so
    # the run measures the pipeline, not our own limiter.
    env = {
        "ORX_SIM_ANSWER_KEY": str(key),
        "ORX_SIM_SPEED": str(args.sim_speed),
        "ORX_SHADOW_SAMPLE_RATE": "0",
        "ORX_PROVIDER_RPM": "1000000",
        "ORX_PROVIDER_CONCURRENCY": "512",
        "ORX_PROVIDER_QUEUE": "4096",
    }
    with cluster(out / "data", env) as c:
        for name in ("analytics", "selector", "providers", "orchestrator"):
            c.start(name)
        client_env = {**base_env, **{f"ORX_{n.upper()}_ADDR": a for n, a in c.addr.items()}}
        plans = [
            (
                "gsm8k",
                args.gsm8k,
                [
                    *(f"single:{m}" for m in SIM_MODELS),
                    "single:selected",
                    "oracle",
                    "orchestrate",
                    "self-refine",
                    "panel-judge",
                    "self-moa",
                    *DEFAULTS_STUDY,
                ],
            ),
            ("humaneval", args.humaneval, ["single:selected", "orchestrate", "self-refine", "self-moa"]),
            ("mt-bench", args.mt_bench, ["single:selected", "orchestrate", "self-moa"]),
        ]
        for suite, limit, strategies in plans:
            if not limit:
                continue
            run_dir = out / suite
            cpu_before = {n: _cpu_seconds(p.pid) for n, p in c.procs.items()}
            done, wall, cpu = _eval(
                client_env,
                "--suite",
                suite,
                "--limit",
                str(limit),
                "--concurrency",
                str(args.concurrency),
                "--strategies",
                ",".join(strategies),
                "--output",
                str(run_dir),
                *(
                    ("--judge-model", "z-ai/glm-4.5", "--pairwise-baseline", "single:selected")
                    if suite == "mt-bench"
                    else ()
                ),
            )
            services_cpu = {n: _cpu_seconds(p.pid) - cpu_before[n] for n, p in c.procs.items()}
            report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
            records = _records(run_dir)
            summary[suite] = {
                "items": limit,
                "strategies": strategies,
                "runs": len(records),
                "wall_seconds": round(wall, 1),
                "eval_cpu_ms_per_run": round(cpu * 1000 / max(1, len(records)), 2),
                "services_cpu_ms_per_run": {
                    n: round(v * 1000 / max(1, len(records)), 2) for n, v in services_cpu.items()
                },
                "best_vs_last": best_vs_last(records),
                "report": report,
                "stdout": done.stdout.strip().splitlines()[-2:],
            }
            print(f"{suite}: {len(records)} runs in {wall:.1f}s", flush=True)
    return summary


def local(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from tests.real_model.llama import catalogue_for, ensure_gguf, gguf_path, start_llama_server

    out.mkdir(parents=True, exist_ok=True)
    server = start_llama_server(ensure_gguf(gguf_path()), out / "llama.log")
    try:
        catalogue = out / "catalogue.toml"
        catalogue.write_text(
            catalogue_for(server.base_url).replace("max_output_tokens = 1024", "max_output_tokens = 256"),
            encoding="utf-8",
        )
        env = {"ORX_CATALOGUE": str(catalogue), "ORX_PROVIDER_MODE": "live", "ORX_SHADOW_SAMPLE_RATE": "0"}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ORX_")}
        with cluster(out / "data", env) as c:
            for name in ("analytics", "selector", "providers", "orchestrator"):
                c.start(name)
            client_env = {**base_env, **{f"ORX_{n.upper()}_ADDR": a for n, a in c.addr.items()}}
            run_dir = out / "gsm8k"
            llama_before = _cpu_seconds(server.process.pid)
            strategies = ["single:local/lark", "orchestrate:rounds=2,critics=1", "self-refine:rounds=2"]
            done, wall, cpu = _eval(
                client_env,
                "--suite",
                "gsm8k",
                "--limit",
                str(args.local),
                "--concurrency",
                "1",
                "--strategies",
                ",".join(strategies),
                "--max-tokens",
                "256",
                "--timeout",
                "900",
                "--output",
                str(run_dir),
            )
            llama_cpu = _cpu_seconds(server.process.pid) - llama_before
            records = _records(run_dir)
            report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    finally:
        server.stop()
    return {
        "simulated": False,
        "model": "Gemma 3 270M (Q4_K_M) via llama-cpp-python, alpaca chat format, 256-token answers",
        "items": args.local,
        "strategies": strategies,
        "runs": len(records),
        "wall_seconds": round(wall, 1),
        "eval_cpu_seconds": round(cpu, 2),
        "llama_cpu_seconds": round(llama_cpu, 1),
        "statuses": {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "skipped")},
        "best_vs_last": best_vs_last(records),
        "report": report,
        "stdout": done.stdout.strip().splitlines()[-2:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gsm8k", type=int, default=1319)
    parser.add_argument("--humaneval", type=int, default=164)
    parser.add_argument("--mt-bench", type=int, default=80)
    parser.add_argument("--local", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sim-speed", type=float, default=100.0)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval")
    args = parser.parse_args()
    summary = args.out / "summary.json"
    # A run of one part (--skip-local / --skip-simulated) keeps the other part's figures from an earlier run.
    results: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    results.update(python=sys.version.split()[0], cpus=os.cpu_count())
    if not args.skip_simulated:
        # Per suite: a run of some suites (others at 0) keeps the other suites' figures.
        results["simulated"] = {**results.get("simulated", {}), **simulated(args, args.out / "simulated")}
    if not args.skip_local:
        results["local"] = local(args, args.out / "local")
    summary.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k not in ("simulated", "local")}))
    print(f"wrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
