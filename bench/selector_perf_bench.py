"""SelectModels speed (issue #4): p99 in process, and requests per second over gRPC on one core.

    .venv/bin/python -m bench.selector_perf_bench [--seconds 10] [--out bench/results/selector_perf.json]

In process: the selector's own code path for one request (``analyze`` with the default classifier, then
``select`` with a full history of 6 models x 9 domains and Thompson sampling), timed per call on a mix
of prompts from one line to a few thousand characters.

Over gRPC: the selector runs as a subprocess pinned to one core (``taskset -c 0``). The providers
service (the catalogue) and the load generator share the other core. The load generator keeps 64
requests in flight for ``--seconds`` and counts completions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench._suite import BIN, SERVICE_NAMES, _wait_healthy, cluster, percentile
from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.v1 import selector_pb2, selector_pb2_grpc

PROMPTS = [
    "Write a Python function that merges two sorted lists",
    "What is the capital of Australia?",
    "A train leaves at 3pm going 60 mph; another at 4pm going 80 mph. When does the second catch up?",
    "Give me ten ideas for a team offsite in the mountains",
    "Is this review positive or negative? The battery died after two days and support never answered.",
    "Summarize: " + "The council met on Tuesday to discuss the new budget, which increases park funding. " * 30,
    "Extract all dates and names from: "
    + "On March 3, Ada met Charles in London; on April 10 they wrote to Mary. " * 20,
    "Write a short story about a lighthouse keeper who finds a message in a bottle",
    "If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies?",
    "```python\ndef f(x):\n    return x*2\n```\nWhy does this return a string when I pass '3'?",
]


def in_process(iterations: int) -> dict[str, Any]:
    from orchestratex.v1 import common_pb2, providers_pb2
    from services.providers import catalogue as cat
    from services.providers.catalogue import load_catalogue
    from services.selector import server as selector_server
    from services.selector.analysis import analyze
    from services.selector.catalogue import catalogue_from_proto
    from services.selector.learning import QualityModel
    from services.selector.ranking import HistoryStats, select

    settings = Settings.from_env({"ORX_DATA_DIR": tempfile.mkdtemp()})
    spec = load_catalogue(settings)
    health = common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED)
    resp = providers_pb2.ListModelsResponse(models=[cat.to_proto(m, health, True) for m in spec])
    models = catalogue_from_proto(resp, fetched_at=time.monotonic()).models
    classifier = _default_classifier(selector_server)
    rng = random.Random(1)
    history = {
        (m.id, d): HistoryStats(mean_quality=rng.uniform(0.5, 0.95), samples=rng.randint(5, 500))
        for m in models
        for d in DOMAINS
    }
    windows = {m.id: m.context_length for m in models}
    quality_model = QualityModel(exploration=1.0)
    for prompt in PROMPTS * 20:  # warm-up
        select(analyze(prompt, classifier, context_windows=windows), models, history=history, rng=rng)
    timings: list[float] = []
    analysis_timings: list[float] = []
    for i in range(iterations):
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.perf_counter_ns()
        analysis = analyze(prompt, classifier, context_windows=windows)
        t1 = time.perf_counter_ns()
        select(analysis, models, history=history, quality_model=quality_model, rng=rng)
        t2 = time.perf_counter_ns()
        timings.append((t2 - t0) / 1e6)
        analysis_timings.append((t1 - t0) / 1e6)
    return {
        "iterations": iterations,
        "classifier": classifier.version,
        "p50_ms": statistics.median(timings),
        "p99_ms": percentile(timings, 99),
        "max_ms": max(timings),
        "analysis_p50_ms": statistics.median(analysis_timings),
        "analysis_p99_ms": percentile(analysis_timings, 99),
    }


def _default_classifier(selector_server: Any) -> Any:
    """The classifier the selector server uses by default."""
    factory = getattr(selector_server, "default_classifier", None)
    if factory is not None:
        return factory()
    from services.selector.analysis import RuleClassifier

    return RuleClassifier()


async def _load(addr: str, seconds: float, concurrency: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = selector_pb2_grpc.SelectorServiceStub(channel)
        requests = [selector_pb2.SelectModelsRequest(prompt=p) for p in PROMPTS]
        for r in requests * 5:
            await stub.SelectModels(r, timeout=10)
        done = 0
        errors = 0
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await stub.SelectModels(requests[i % len(requests)], timeout=10)
                    done += 1
                    latencies.append((time.perf_counter() - t0) * 1000)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "concurrency": concurrency,
        "requests": done,
        "errors": errors,
        "rps": done / elapsed,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": percentile(latencies, 99),
    }


def over_grpc(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), {"ORX_LOG_LEVEL": "WARNING"}) as c:
        c.start("providers")
        c.start("analytics")
        env = {**c.env}
        proc = subprocess.Popen(
            ["taskset", "-c", "0", str(BIN / "orchestratex"), "serve", "selector"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        c.procs["selector"] = proc
        asyncio.run(_wait_healthy(c.addr["selector"], SERVICE_NAMES["selector"], proc))
        os.sched_setaffinity(0, {1})
        try:
            result = asyncio.run(_load(c.addr["selector"], seconds, 64))
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().split()
        result["selector_cpu_seconds"] = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/selector_perf.json"))
    args = parser.parse_args(argv)
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "in_process": in_process(args.iterations)}
    print(json.dumps(result["in_process"], indent=2), flush=True)
    result["grpc_one_core"] = over_grpc(args.seconds)
    print(json.dumps(result["grpc_one_core"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
