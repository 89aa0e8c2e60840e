"""Orchestrator benchmarks (issue #5): overhead against the provider-bound lower bound, concurrency,
event-loop lag, memory per live session, and the quality of the stop rule in simulation.

    .venv/bin/python -m bench.orchestrator_bench [--sessions 64] [--out bench/results/orchestrator.json]

Part 1 runs every service as a real subprocess (`orchestratex serve ...`) with simulated models of FIXED
latency (latency_jitter = false) and measures, per session, the wall time W seen by the client and the
provider-bound lower bound L = sum over rounds of (author call latency + the slowest critic's latency),
read from the session's own events. W/L - 1 is what orchestration adds: selection, scheduling, event
handling, persistence and transport.

Part 2 runs 10-round sessions in process against the simulator (whose hidden answer quality it can read)
and replays the stop rule over each session's recorded scores: rounds used, and the hidden quality of the
answer returned against the best quality reachable within 10 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._suite import cluster, in_process_stack, percentile, rss_kib
from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc

FIXED_PROFILE = """
seed = 7
latency_jitter = false
[defaults]
ttft_ms = 400
tokens_per_second = 100
"""

PROMPTS = {
    "coding": [
        "Write a Python function that merges two sorted lists",
        "Fix this SQL: SELECT name FROM users WHERE age > '30' ORDER BY",
        "Explain what this regex does: ^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$",
        "Implement an LRU cache in TypeScript",
        "Refactor a nested for-loop in Go into a map lookup",
    ],
    "math": [
        "A train leaves at 3pm going 60 mph; another at 4pm going 80 mph. When does the second catch up?",
        "What is the derivative of x^3 * sin(x)?",
        "Solve 2x + 7 = 3x - 5",
        "What is the probability of two sixes in three dice rolls?",
        "Compute the sum of the first 100 odd numbers",
    ],
    "reasoning": [
        "If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies?",
        "Could a person have met both Napoleon and Lincoln? Explain.",
        "Three boxes are mislabeled; you may draw one fruit. How do you fix the labels?",
        "Which weighs more, a kilogram of feathers or a pound of steel?",
        "Alice is taller than Bob, Bob than Carol. Who is shortest?",
    ],
    "creative": [
        "Write a haiku about the first snow in a city",
        "Write a short story about a lighthouse keeper who finds a message in a bottle",
        "Write song lyrics about leaving home",
        "Write a limerick about a cat who codes",
        "Role-play a medieval innkeeper greeting travellers",
    ],
    "factual": [
        "What causes the seasons on Earth?",
        "Who wrote The Brothers Karamazov?",
        "How does a vaccine train the immune system?",
        "What is the capital of Australia?",
        "Explain how a bill becomes law in the United States",
    ],
    "summarization": [
        "Summarize: The city council met on Tuesday to discuss the new budget, which increases park funding.",
        "TL;DR this: Researchers found that sleeping eight hours improves memory consolidation in adults.",
        "Summarize the plot of Hamlet in three sentences",
        "Give a one-paragraph summary of the causes of World War I",
        "Condense this email into one line: Hi team, the launch moves to Friday because QA found bugs.",
    ],
    "extraction": [
        "Extract all dates from: The meeting on March 3 was moved to April 10, 2025.",
        "List the people mentioned: Ada met Charles and later wrote to Mary about the engine.",
        "Extract the price and product: The new phone costs $799 and ships next week.",
        "Pull the email addresses out of: contact bob@example.com or alice@example.org",
        "What company names appear in: Apple and Microsoft shares rose while Intel fell.",
    ],
    "classification": [
        "Is this review positive or negative? The battery died after two days.",
        "Classify the topic: Stocks fell sharply after the central bank raised rates.",
        "Label each as fruit or vegetable: carrot, apple, broccoli, banana",
        "Is this email spam? You have won a free cruise, click here!",
        "Categorize the sentiment: The food was fine but the service was slow.",
    ],
    "brainstorming": [
        "Give me ten ideas for a team offsite",
        "Suggest names for a coffee shop near a university",
        "How can I get better at public speaking?",
        "Plan a three-day trip to Lisbon",
        "What are some ways to reduce my household's energy use?",
    ],
}


# ---------------------------------------------------------------------------- part 1


def lower_bound(events: list[pb.OrchestrationEvent]) -> float:
    """Provider-bound critical path: per round, the author's calls plus the slowest critic."""
    author: dict[int, float] = {}
    critic: dict[int, float] = {}
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "response_completed":
            r = event.response_completed
            author[r.round] = author.get(r.round, 0.0) + r.latency.ToNanoseconds() / 1e9
        elif kind == "provider_fallback":
            f = event.provider_fallback
            author[f.round] = author.get(f.round, 0.0) + f.latency.ToNanoseconds() / 1e9
        elif kind == "critique_completed":
            c = event.critique_completed
            critic[c.round] = max(critic.get(c.round, 0.0), c.latency.ToNanoseconds() / 1e9)
        elif kind == "warning" and event.warning.model:
            w = event.warning
            critic[w.round] = max(critic.get(w.round, 0.0), w.latency.ToNanoseconds() / 1e9)
    return sum(author.values()) + sum(critic.values())


async def one_session(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str) -> dict[str, Any]:
    request = pb.OrchestrateRequest(prompt=prompt, max_rounds=3, critic_count=3, quality_threshold=10, patience=10)
    start = time.perf_counter()
    events = [r.event async for r in stub.Orchestrate(request, timeout=600)]
    wall = time.perf_counter() - start
    bound = lower_bound(events)
    assert events[-1].HasField("session_completed"), events[-1]
    return {"wall": wall, "bound": bound, "ratio": wall / bound, "rounds": events[-1].session_completed.rounds_used}


async def run_sessions(addr: str, prompts: list[str], concurrent: bool) -> list[dict[str, Any]]:
    async with open_channel(addr) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        if concurrent:
            return list(await asyncio.gather(*(one_session(stub, p) for p in prompts)))
        return [await one_session(stub, p) for p in prompts]


def part1(sessions: int) -> dict[str, Any]:
    all_prompts = [p for ps in PROMPTS.values() for p in ps]
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        profile = tmpdir / "fixed.toml"
        profile.write_text(FIXED_PROFILE)
        with cluster(tmpdir, {"ORX_SIM_PROFILE": str(profile), "ORX_OUTBOX_INTERVAL": "1"}) as c:
            for name in ("providers", "analytics", "selector"):
                c.start(name)
            # one session at a time
            c.start("orchestrator", {"ORX_LOOP_MONITOR": str(tmpdir / "lag1.json")})
            asyncio.run(run_sessions(c.addr["orchestrator"], all_prompts[:1], concurrent=False))  # warm-up
            single = asyncio.run(run_sessions(c.addr["orchestrator"], all_prompts[1:11], concurrent=False))
            c.stop("orchestrator")
            # many at once, with memory sampled while they are live
            c.start("orchestrator", {"ORX_LOOP_MONITOR": str(tmpdir / "lag64.json")})
            asyncio.run(run_sessions(c.addr["orchestrator"], all_prompts[:2], concurrent=False))  # warm-up
            pid = c.procs["orchestrator"].pid
            baseline = rss_kib(pid)
            peak = [baseline]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.02):
                    peak[0] = max(peak[0], rss_kib(pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            prompts = [all_prompts[i % len(all_prompts)] + f" (variant {i})" for i in range(sessions)]
            many = asyncio.run(run_sessions(c.addr["orchestrator"], prompts, concurrent=True))
            done.set()
            sampler.join()
            c.stop("orchestrator")
            lag1 = json.loads((tmpdir / "lag1.json").read_text())
            lag64 = json.loads((tmpdir / "lag64.json").read_text())
    ratios1 = [s["ratio"] for s in single]
    ratios64 = [s["ratio"] for s in many]
    return {
        "single": {
            "sessions": len(single),
            "wall_s_p50": statistics.median(s["wall"] for s in single),
            "bound_s_p50": statistics.median(s["bound"] for s in single),
            "w_over_l_p50": statistics.median(ratios1),
            "w_over_l_max": max(ratios1),
            "loop_lag_p99_ms": lag1.get("p99_ms"),
        },
        "concurrent": {
            "sessions": len(many),
            "rounds": 3,
            "critics": 3,
            "wall_s_p50": statistics.median(s["wall"] for s in many),
            "w_over_l_p50": statistics.median(ratios64),
            "w_over_l_p95": percentile(ratios64, 95),
            "loop_lag_p50_ms": lag64.get("p50_ms"),
            "loop_lag_p99_ms": lag64.get("p99_ms"),
            "loop_lag_max_ms": lag64.get("max_ms"),
            "rss_baseline_mib": baseline / 1024,
            "rss_peak_mib": peak[0] / 1024,
            "mib_per_live_session": (peak[0] - baseline) / 1024 / len(many),
        },
    }


# ---------------------------------------------------------------------------- part 2


async def part2() -> dict[str, Any]:
    """Ten-round sessions in process; the stop rules replayed over their recorded scores."""
    from orchestratex.v1 import providers_pb2  # noqa: F401  (registers descriptors)
    from services.orchestrator import policy
    from services.providers import catalogue as cat
    from services.providers.simulator import DRAFT_ID_RE, Simulator

    with tempfile.TemporaryDirectory() as tmp:
        base = {"ORX_DATA_DIR": tmp, "ORX_SIM_SPEED": "1000", "ORX_LOG_LEVEL": "ERROR"}
        settings = Settings.from_env(base)
        sim = Simulator.from_settings(settings, cat.load_catalogue(settings))
        rows = []
        async with in_process_stack(base, backend=sim) as stub:
            for domain, prompts in PROMPTS.items():
                for prompt in prompts:
                    request = pb.OrchestrateRequest(
                        prompt=prompt, max_rounds=10, quality_threshold=10, patience=10, plateau_epsilon=0
                    )
                    events = [r.event async for r in stub.Orchestrate(request, timeout=600)]
                    drafts = [e.response_completed for e in events if e.HasField("response_completed")]
                    scores = [e.round_completed.aggregate_score for e in events if e.HasField("round_completed")]
                    quality = []
                    for d in drafts:
                        found = DRAFT_ID_RE.search(d.text)
                        quality.append(sim.quality_of(found.group(1)) if found else None)
                    rows.append({"domain": domain, "scores": scores, "quality": quality})

    def replay(rules: policy.StopRules, scores: list[float]) -> int:
        """Rounds the loop would use under ``rules`` given the recorded aggregate scores."""
        for used in range(1, len(scores) + 1):
            if policy.decide(rules, scores[:used], 0, 0, 0, 0).stop:
                return used
        return len(scores)

    def evaluate(name: str, rounds_for: Any, pick_best: bool = True) -> dict[str, Any]:
        used, final, best, regret_zero = [], [], [], 0
        for row in rows:
            n = min(rounds_for(row["scores"]), len(row["scores"]))
            scores, quality = row["scores"][:n], row["quality"][:n]
            idx = max(range(n), key=lambda i: (scores[i], -i)) if pick_best else n - 1
            reachable = max(q for q in row["quality"] if q is not None)
            used.append(n)
            final.append(quality[idx])
            best.append(reachable)
            regret_zero += quality[idx] >= reachable - 1e-9
        return {
            "rule": name,
            "mean_rounds": statistics.fmean(used),
            "mean_final_quality": statistics.fmean(final),
            "mean_best_reachable": statistics.fmean(best),
            "final_over_best": statistics.fmean(f / b for f, b in zip(final, best, strict=True)),
            "share_reaching_best": regret_zero / len(rows),
        }

    default_rules = policy.StopRules(
        threshold=8, max_rounds=10, epsilon=0.25, patience=1, budget_usd=None, time_limit_s=1e9
    )
    threshold_only = policy.StopRules(
        threshold=8, max_rounds=10, epsilon=-1, patience=10, budget_usd=None, time_limit_s=1e9
    )
    return {
        "sessions": len(rows),
        "rules": [
            evaluate("default: threshold 8, plateau eps 0.25 / patience 1, max 10", lambda s: replay(default_rules, s)),
            evaluate("threshold 8 only, max 10", lambda s: replay(threshold_only, s)),
            evaluate("always 1 round", lambda s: 1),
            evaluate("always 10 rounds, best-scored version", lambda s: 10),
            evaluate("always 10 rounds, last version", lambda s: 10, pick_best=False),
        ],
    }


# ---------------------------------------------------------------------------- part 3


async def _until_closed(requests: list[Any], within: float = 10.0) -> None:
    """Poll (1 ms) until the stand-in saw every one of ``requests`` disconnect."""
    deadline = time.perf_counter() + within
    while True:
        if all(r.disconnected_at is not None for r in requests):
            return
        if time.perf_counter() > deadline:
            raise TimeoutError("upstream calls still open after the cancel")
        await asyncio.sleep(0.001)


async def part3(sessions: int = 20) -> dict[str, Any]:
    """Cancellation: from CancelSession (or the client dropping its stream) to the moment the vendor sees
    every in-flight HTTP stream of the session close. Live providers against the OpenRouter stand-in,
    whose streams send three chunks and then hang, so calls are in flight when the cancel arrives."""
    from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply

    results: dict[str, list[float]] = {"cancel_session": [], "client_drop": []}
    async with OpenRouterStandIn() as standin:
        standin.default = Reply(hang_after=3)
        with tempfile.TemporaryDirectory() as tmp:
            base = {
                "ORX_DATA_DIR": tmp,
                "ORX_LOG_LEVEL": "ERROR",
                "ORX_PROVIDER_MODE": "live",
                "OPENROUTER_API_KEY": DEFAULT_KEY,
                "ORX_OPENROUTER_BASE_URL": standin.base_url,
            }
            async with in_process_stack(base) as stub:
                for i in range(sessions):
                    for mode, samples in results.items():
                        before = len(standin.chat_requests())
                        call = stub.Orchestrate(pb.OrchestrateRequest(prompt=f"Cancel me {i}", max_rounds=1))
                        sid = ""
                        async for resp in call:
                            sid = resp.event.session_id
                            if resp.event.HasField("response_delta"):
                                break
                        inflight = standin.chat_requests()[before:]
                        started = time.perf_counter()
                        if mode == "cancel_session":
                            await stub.CancelSession(pb.CancelSessionRequest(session_id=sid))
                        else:
                            call.cancel()
                        await _until_closed(inflight)
                        samples.append(max(r.disconnected_at or 0 for r in inflight) - started)
                        call.cancel()
    return {
        mode: {
            "sessions": len(values),
            "p50_ms": statistics.median(values) * 1000,
            "max_ms": max(values) * 1000,
        }
        for mode, values in results.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/orchestrator.json"))
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-cancellation", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": _cpus()}
    if args.only_cancellation:
        print(json.dumps(asyncio.run(part3()), indent=2))
        return
    if not args.skip_latency:
        result["latency"] = part1(args.sessions)
        print(json.dumps(result["latency"], indent=2))
    result["stop_rule"] = asyncio.run(part2())
    print(json.dumps(result["stop_rule"], indent=2))
    result["cancellation"] = asyncio.run(part3())
    print(json.dumps(result["cancellation"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
