"""SelectModels speed (issue #4): p99 in process, and requests per second over gRPC on one core.

    .venv/bin/python -m bench.selector_perf_bench [--repeats 3] [--seconds 8]

**Prompts.** A realistic, varied mix (:func:`prompt_mix`): the classifier's hand-written training prompts
(one line to about 900 characters: questions, tasks, pasted reviews, articles, bios), plus pasted-document
prompts of 2,000-10,000 characters (7 %) and long ones of 10,000-50,000 characters (3 %): an article,
a CSV export, a log or a source file with an instruction before or after it. Every request in a run
gets a different prompt where the pool allows (no cache can flatter the figures).

**In process.** Exactly what the servicer does for one ``SelectModels`` call once the request is
decoded: ``analyze`` with the default (trained) classifier, ``select`` over the catalogue with a full
history (every model x domain measured) and Thompson sampling, and building the response message.
Timed per call; p50/p99 over the mix, and separately over the long prompts. Repeated ``--repeats``
times; the medians of the repeats are reported.

**Over gRPC on one core.** The selector runs as a subprocess pinned to core 0 (``taskset -c 0``),
with analytics on (history refresh) and access logs at WARNING. The providers and analytics services
and the load generator share core 1. The load generator keeps 64 unary calls in flight over 4 channels
for ``--seconds`` and counts completions; the selector's CPU time during the window (from
``/proc/<pid>/stat``) gives CPU per request and shows whether the selector's core was saturated.

The selector runs on the services' default event loop (uvloop) and, for comparison, on asyncio's.

**Floor.** The same load against a servicer that does no work (returns a prebuilt, typical-size
``SelectModelsResponse``), pinned the same way: on a bare ``grpc.aio`` server (uvloop, and asyncio's
loop) and built with ``create_server`` (our interceptor, health, reflection). This is the most any
selector could do on this machine; the ratio selector/floor says how much of the budget our own code takes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from bench._suite import BIN, SERVICE_NAMES, _wait_healthy, cluster, descendants, free_port, percentile
from orchestratex import eventloop
from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.v1 import selector_pb2, selector_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DATA = ROOT / "services" / "selector" / "classifier" / "data" / "train.jsonl"
LONG_MIN, LONG_MAX = 10_000, 50_000
MEDIUM_MIN, MEDIUM_MAX = 2_000, 10_000
MEDIUM_SHARE, LONG_SHARE = 0.07, 0.03

_INSTRUCTIONS_BEFORE = (
    "Summarize the following document in five bullet points:\n\n",
    "Extract every person, organisation and date mentioned in this text:\n\n",
    "Review this code and point out bugs and risky patterns:\n\n",
    "Here is an export of our data. Which rows look like duplicates?\n\n",
    "Classify each paragraph below as complaint, question or praise.\n\n",
)
_INSTRUCTIONS_AFTER = (
    "\n\nWhat are the three most important points above?",
    "\n\nRewrite the above as a short formal e-mail.",
    "\n\nTranslate the error above into plain language and suggest a fix.",
    "\n\nIs the tone of this text positive or negative?",
)


# --------------------------------------------------------------------------------------------------
# Prompts


def _training_prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in TRAIN_DATA.read_text(encoding="utf-8").splitlines() if line]


def _material(kind: str, size: int, rng: random.Random, prose: Sequence[str]) -> str:
    """About ``size`` characters of pasted material of one ``kind``."""
    parts: list[str] = []
    total = 0
    if kind == "code":
        sources = sorted((ROOT / "services").rglob("*.py")) + sorted((ROOT / "orchestratex").rglob("*.py"))
        while total < size:
            text = rng.choice(sources).read_text(encoding="utf-8")
            parts.append(text)
            total += len(text)
    elif kind == "csv":
        parts.append("id,date,customer,country,amount_usd,status\n")
        while total < size:
            row = (
                f"{rng.randint(1000, 99999)},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                f"{rng.choice(['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli'])} {rng.randint(1, 99)},"
                f"{rng.choice(['DE', 'FR', 'US', 'JP', 'BR'])},{rng.uniform(5, 5000):.2f},"
                f"{rng.choice(['paid', 'open', 'refunded'])}\n"
            )
            parts.append(row)
            total += len(row)
    elif kind == "log":
        while total < size:
            line = (
                f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
                f" {rng.choice(['INFO', 'WARN', 'ERROR'])} worker-{rng.randint(1, 8)}"
                f" {rng.choice(['request done', 'retrying upstream', 'cache miss', 'timeout after 30s'])}"
                f" id={rng.getrandbits(48):012x}\n"
            )
            parts.append(line)
            total += len(line)
    else:  # prose: an article stitched from the training prompts' pasted texts
        while total < size:
            text = rng.choice(prose)
            parts.append(text + "\n\n")
            total += len(text) + 2
    return "".join(parts)[:size]


def _document_prompt(size: int, rng: random.Random, prose: Sequence[str]) -> str:
    material = _material(rng.choice(("prose", "prose", "code", "csv", "log")), size, rng, prose)
    if rng.random() < 0.6:
        return rng.choice(_INSTRUCTIONS_BEFORE) + material
    return material + rng.choice(_INSTRUCTIONS_AFTER)


def prompt_mix(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """``count`` (kind, prompt) pairs: ``short`` (training prompts), ``medium`` and ``long`` documents."""
    rng = random.Random(seed)
    short = _training_prompts()
    rng.shuffle(short)
    prose = [p for p in short if len(p) > 300]
    mix: list[tuple[str, str]] = []
    for i in range(count):
        roll = rng.random()
        if roll < LONG_SHARE:
            mix.append(("long", _document_prompt(rng.randint(LONG_MIN, LONG_MAX), rng, prose)))
        elif roll < LONG_SHARE + MEDIUM_SHARE:
            mix.append(("medium", _document_prompt(rng.randint(MEDIUM_MIN, MEDIUM_MAX), rng, prose)))
        else:
            mix.append(("short", short[i % len(short)]))
    return mix


# --------------------------------------------------------------------------------------------------
# In process


def _selector_parts() -> dict[str, Any]:
    """The catalogue, history and classifier the in-process measurement runs on."""
    from orchestratex.v1 import common_pb2, providers_pb2
    from services.providers import catalogue as cat
    from services.providers.catalogue import load_catalogue
    from services.selector.catalogue import catalogue_from_proto
    from services.selector.classifier import default_classifier
    from services.selector.learning import QualityModel
    from services.selector.ranking import HistoryStats

    settings = Settings.from_env({"ORX_DATA_DIR": tempfile.mkdtemp()})
    health = common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED)
    resp = providers_pb2.ListModelsResponse(models=[cat.to_proto(m, health, True) for m in load_catalogue(settings)])
    catalogue = catalogue_from_proto(resp, fetched_at=time.monotonic())
    rng = random.Random(1)
    history = {
        (m.id, d): HistoryStats(mean_quality=rng.uniform(0.5, 0.95), samples=rng.randint(5, 500))
        for m in catalogue.models
        for d in DOMAINS
    }
    return {
        "catalogue": catalogue,
        "classifier": default_classifier(),
        "history": history,
        "quality_model": QualityModel(exploration=1.0),
        "rng": rng,
    }


def _summary(timings: Sequence[float]) -> dict[str, float]:
    return {"n": len(timings), "p50_ms": statistics.median(timings), "p99_ms": percentile(timings, 99)}


def in_process(iterations: int, seed: int) -> dict[str, Any]:
    """One repetition: time ``iterations`` requests of the mix (after a warm-up on other prompts)."""
    from services.selector.analysis import analyze
    from services.selector.convert import selection_to_proto
    from services.selector.ranking import select

    parts = _selector_parts()
    catalogue, classifier = parts["catalogue"], parts["classifier"]
    windows = catalogue.context_windows()

    def one(prompt: str) -> tuple[int, int]:
        t0 = time.perf_counter_ns()
        analysis = analyze(prompt, classifier, context_windows=windows)
        t1 = time.perf_counter_ns()
        selection = select(
            analysis,
            catalogue.models,
            history=parts["history"],
            quality_model=parts["quality_model"],
            rng=parts["rng"],
        )
        selection_to_proto(selection, [])
        return t1 - t0, time.perf_counter_ns() - t0

    for _, prompt in prompt_mix(300, seed + 1000):  # warm-up: memos, caches, branch predictors
        one(prompt)
    # As the server does once started (orchestratex.grpc_server.serve): long-lived objects (the
    # classifier's vocabularies) leave the cyclic GC's work.
    gc.freeze()
    by_kind: dict[str, list[float]] = {"short": [], "medium": [], "long": []}
    total: list[float] = []
    analysis_only: list[float] = []
    for kind, prompt in prompt_mix(iterations, seed):
        analysed, done = one(prompt)
        total.append(done / 1e6)
        analysis_only.append(analysed / 1e6)
        by_kind[kind].append(done / 1e6)
    return {
        "classifier": classifier.version,
        "all": _summary(total),
        "analysis_only": _summary(analysis_only),
        **{kind: _summary(values) for kind, values in by_kind.items() if values},
    }


# --------------------------------------------------------------------------------------------------
# Over gRPC


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(
    addr: str, pid: int | Sequence[int], seconds: float, prompts: Sequence[str], channels: int = 4
) -> dict[str, Any]:
    """64 calls in flight over ``channels`` connections; the CPU of the server process(es) ``pid`` and of this
    load generator, per request, from /proc."""
    pids = [pid] if isinstance(pid, int) else list(pid)
    concurrency = 64
    # Each channel its own connection: channels to one target otherwise share gRPC's global subchannel pool,
    # i.e. one TCP connection, which SO_REUSEPORT would give to a single worker.
    chans = [grpc.aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(channels)]
    try:
        stubs = [selector_pb2_grpc.SelectorServiceStub(c) for c in chans]
        requests = [selector_pb2.SelectModelsRequest(prompt=p) for p in prompts]
        for i, r in enumerate(requests[:200]):  # warm-up (memos, connections)
            await stubs[i % channels].SelectModels(r, timeout=30)
        done = errors = 0
        latencies: list[float] = []
        next_request = 0
        stop_at = time.perf_counter() + seconds

        async def worker(stub: selector_pb2_grpc.SelectorServiceStub) -> None:
            nonlocal done, errors, next_request
            while time.perf_counter() < stop_at:
                request = requests[next_request % len(requests)]
                next_request += 1
                t0 = time.perf_counter()
                try:
                    await stub.SelectModels(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                done += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        cpu0, own0, started = [_cpu_seconds(p) for p in pids], _cpu_seconds(os.getpid()), time.perf_counter()
        await asyncio.gather(*(worker(stubs[k % channels]) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        per_process = [_cpu_seconds(p) - c0 for p, c0 in zip(pids, cpu0, strict=True)]
        cpu, own = sum(per_process), _cpu_seconds(os.getpid()) - own0
    finally:
        for c in chans:
            await c.close(None)
    return {
        "seconds": round(elapsed, 2),
        "concurrency": concurrency,
        "channels": channels,
        "requests": done,
        "errors": errors,
        "rps": done / elapsed,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": percentile(latencies, 99),
        "server_cpu_cores": cpu / elapsed,
        "server_cpu_us_per_request": cpu / max(done, 1) * 1e6,
        "server_cpu_cores_per_process": [c / elapsed for c in per_process],
        "client_cpu_cores": own / elapsed,
        "client_cpu_us_per_request": own / max(done, 1) * 1e6,
    }


def _run_pinned(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _as_load_generator(coro_factory: Any) -> Any:
    """Run the load generator on core 1 (the server under test has core 0)."""
    os.sched_setaffinity(0, {1})
    try:
        return asyncio.run(coro_factory())
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def over_grpc(seconds: float, prompts: Sequence[str], loop: str = "auto") -> dict[str, Any]:
    """The real selector (with providers and analytics running), pinned to core 0, on event loop ``loop``."""
    env = {"ORX_LOG_LEVEL": "WARNING", "ORX_EVENT_LOOP": loop}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), env) as c:
        c.start("providers")
        c.start("analytics")
        proc = _run_pinned([str(BIN / "orchestratex"), "serve", "selector"], dict(c.env))
        c.procs["selector"] = proc
        asyncio.run(_wait_healthy(c.addr["selector"], SERVICE_NAMES["selector"], proc))
        return dict(_as_load_generator(lambda: _load(c.addr["selector"], proc.pid, seconds, prompts)))


def with_workers(seconds: float, prompts: Sequence[str], workers: int) -> dict[str, Any]:
    """The real selector with ``workers`` worker processes (``ORX_SELECTOR_WORKERS``), not pinned: the scaling
    from one core to two. The load generator spreads its calls over 4 connections per worker (as the services'
    own clients do) and shares the 2 cores with the workers, providers and analytics; its CPU is reported."""
    env = {"ORX_LOG_LEVEL": "WARNING", "ORX_SELECTOR_WORKERS": str(workers)}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), env) as c:
        c.start("providers")
        c.start("analytics")
        proc = subprocess.Popen(
            [str(BIN / "orchestratex"), "serve", "selector"],
            env=dict(c.env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        c.procs["selector"] = proc
        asyncio.run(_wait_healthy(c.addr["selector"], SERVICE_NAMES["selector"], proc))
        pids = descendants(proc.pid) if workers > 1 else [proc.pid]
        while len(pids) < workers:  # the parent starts its workers before the first answers
            time.sleep(0.05)
            pids = descendants(proc.pid)
        result = asyncio.run(_load(c.addr["selector"], pids, seconds, prompts, channels=4 * workers))
        result["workers"] = workers
        return result


def floor(seconds: float, prompts: Sequence[str], mode: str) -> dict[str, Any]:
    """A servicer doing no work, pinned to core 0: on a bare server (``plain``; ``plain_asyncio`` on
    asyncio's own event loop), or built with ``create_server`` (``orx``: our interceptor, health, reflection)."""
    addr = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "bench.selector_perf_bench", "--serve-floor", mode]
    proc = _run_pinned([*argv, "--listen", addr], {**os.environ, "ORX_LOG_LEVEL": "WARNING"})
    try:
        asyncio.run(_wait_floor(addr, proc))
        return dict(_as_load_generator(lambda: _load(addr, proc.pid, seconds, prompts)))
    finally:
        proc.terminate()
        proc.wait(30)


async def _wait_floor(addr: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {proc.returncode}")
        async with grpc.aio.insecure_channel(addr) as ch:
            try:
                await selector_pb2_grpc.SelectorServiceStub(ch).SelectModels(
                    selector_pb2.SelectModelsRequest(prompt="ping"), timeout=1
                )
                return
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.1)
    raise RuntimeError("floor server did not start")


class _FloorServicer(selector_pb2_grpc.SelectorServiceServicer):
    """Answers every SelectModels with the same prebuilt response: gRPC's own cost, nothing else."""

    def __init__(self, response: selector_pb2.SelectModelsResponse) -> None:
        self._response = response

    async def SelectModels(self, request: Any, context: Any) -> selector_pb2.SelectModelsResponse:
        return self._response


def _typical_response() -> selector_pb2.SelectModelsResponse:
    from services.selector.analysis import analyze
    from services.selector.convert import selection_to_proto
    from services.selector.ranking import select

    parts = _selector_parts()
    catalogue = parts["catalogue"]
    prompt = "Write a Python function that merges two sorted lists"
    analysis = analyze(prompt, parts["classifier"], context_windows=catalogue.context_windows())
    return selection_to_proto(select(analysis, catalogue.models, history=parts["history"]), [])


async def _serve_floor(mode: str, listen: str) -> None:
    from orchestratex.grpc_server import ServiceBinding, create_server

    servicer = _FloorServicer(_typical_response())
    if mode in ("plain", "plain_asyncio"):
        server = grpc.aio.server()
        selector_pb2_grpc.add_SelectorServiceServicer_to_server(servicer, server)
        server.add_insecure_port(listen)
        await server.start()
        await server.wait_for_termination()
        return
    binding = ServiceBinding(
        selector_pb2_grpc.add_SelectorServiceServicer_to_server, servicer, SERVICE_NAMES["selector"]
    )
    srv = create_server([binding], listen)
    await srv.start()
    await srv.server.wait_for_termination()


# --------------------------------------------------------------------------------------------------


def _median_of(runs: Sequence[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000, help="requests per in-process repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per gRPC run")
    parser.add_argument("--skip-grpc", action="store_true")
    parser.add_argument(
        "--workers-only",
        action="store_true",
        help="only the 1 -> 2 workers scaling runs (alternating), written under 'workers' in --out",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/selector_perf.json"))
    parser.add_argument("--serve-floor", choices=("plain", "plain_asyncio", "orx"), help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        loop = "asyncio" if args.serve_floor == "plain_asyncio" else Settings.from_env(sections=()).common.event_loop
        eventloop.run(_serve_floor(args.serve_floor, args.listen), loop)
        return

    if args.workers_only:
        _workers_scaling(args)
        return
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mix": {"short": 1 - MEDIUM_SHARE - LONG_SHARE, "medium": MEDIUM_SHARE, "long": LONG_SHARE},
        "loadavg_before": os.getloadavg(),
    }
    runs = [in_process(args.iterations, seed) for seed in range(args.repeats)]
    result["in_process_runs"] = runs
    result["in_process"] = {
        kind: {stat: _median_of(runs, kind, stat) for stat in ("p50_ms", "p99_ms")}
        for kind in ("all", "analysis_only", "short", "medium", "long")
    }
    print(json.dumps(result["in_process"], indent=2), flush=True)
    if not args.skip_grpc:
        prompts = [p for _, p in prompt_mix(4000, 99)]
        floors = {"floor_plain": "plain", "floor_plain_asyncio": "plain_asyncio", "floor_interceptor": "orx"}
        grpc_runs: dict[str, list[dict[str, Any]]] = {
            "selector": [],
            "selector_asyncio": [],
            **{name: [] for name in floors},
        }
        for _ in range(args.repeats):  # interleaved, so that a busy moment hits them all alike
            grpc_runs["selector"].append(over_grpc(args.seconds, prompts))
            grpc_runs["selector_asyncio"].append(over_grpc(args.seconds, prompts, loop="asyncio"))
            for name, mode in floors.items():
                grpc_runs[name].append(floor(args.seconds, prompts, mode))
        result["grpc_runs"] = grpc_runs
        summary: dict[str, Any] = {
            name: {
                stat: _median_of(runs_, stat)
                for stat in ("rps", "latency_p50_ms", "latency_p99_ms", "server_cpu_cores", "server_cpu_us_per_request")
            }
            for name, runs_ in grpc_runs.items()
        }
        summary["selector_vs_floor"] = summary["selector"]["rps"] / summary["floor_interceptor"]["rps"]
        summary["interceptor_cost_us"] = (
            summary["floor_interceptor"]["server_cpu_us_per_request"]
            - summary["floor_plain"]["server_cpu_us_per_request"]
        )
        result["grpc_one_core"] = summary
        print(json.dumps(summary, indent=2))
    result["loadavg_after"] = os.getloadavg()
    if args.out.exists():  # the workers comparison runs on its own (--workers-only): keep its figures
        previous = json.loads(args.out.read_text())
        if "workers" in previous:
            result["workers"] = previous["workers"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


def _workers_scaling(args: argparse.Namespace) -> None:
    """1 and 2 selector workers in alternating blocks; medians; merged into ``--out`` under ``workers``."""
    prompts = [p for _, p in prompt_mix(4000, 99)]
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for block in range(args.repeats):
        for workers in (1, 2) if block % 2 == 0 else (2, 1):
            runs[workers].append(with_workers(args.seconds, prompts, workers))
            print(f"block {block + 1}: {workers} worker(s): {runs[workers][-1]['rps']:.0f} req/s", file=sys.stderr)
    stats = ("rps", "latency_p50_ms", "latency_p99_ms", "server_cpu_cores", "server_cpu_us_per_request",
             "client_cpu_cores", "client_cpu_us_per_request")  # fmt: skip
    summary: dict[str, Any] = {f"{w}_workers": {k: _median_of(r, k) for k in stats} for w, r in runs.items()}
    summary["speedup_2_over_1"] = summary["2_workers"]["rps"] / summary["1_workers"]["rps"]
    summary["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summary["runs"] = runs
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["workers"] = summary
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
