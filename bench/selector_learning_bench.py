"""Does the selector learn? (issue #4)

    .venv/bin/python -m bench.selector_learning_bench [--sessions 500] [--out bench/results/selector_learning.json]

A simulator profile makes one model that the catalogue priors rank LOWEST for math
(meta-llama/llama-4-maverick, prior 0.60) actually the best at math (hidden skill 0.95; the others
0.68-0.86). Then ``--sessions`` math prompts run through the full stack, in process but over real
gRPC: orchestrator → selector → providers (simulator), with outcomes flowing orchestrator → outbox →
analytics → the selector's history refresh. Each session runs one round with two critics, and the
weights are quality-only.

Three selection policies, each on a fresh store:

* **thompson**: history on, exploration 1 (the default);
* **prior-only**: history off, exploration 0 (the catalogue priors alone);
* **random**: a uniformly random model, pinned per session.

Regret per session = hidden math skill of the best model − hidden math skill of the chosen primary.
We report cumulative regret against that oracle, and the session from which the best model is the
usual choice: the primary in at least half of every later 20-session window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from tests.orchestrator.real_stack import real_services

BEST = "meta-llama/llama-4-maverick"
SKILL = {
    "z-ai/glm-4.5": 0.78,
    "openai/gpt-oss-120b": 0.84,
    "meta-llama/llama-4-maverick": 0.95,
    "moonshotai/kimi-k2": 0.74,
    "qwen/qwen3-coder": 0.68,
    "tngtech/deepseek-r1t2-chimera": 0.86,
}
PROFILE = "seed = 11\nlatency_jitter = false\n" + "".join(
    f'[models."{m}"]\nskill = {{ math = {s} }}\n' for m, s in SKILL.items()
)
WINDOW = 20


def math_prompts(n: int, seed: int = 3) -> list[str]:
    """Varied grade-school word problems (written for this benchmark)."""
    rng = random.Random(seed)
    templates = [
        "A baker makes {a} loaves in the morning and {b} in the afternoon. She sells {c}. How many are left?",
        "Tom has {a} marbles. He gives {b} to each of his {c} friends. How many marbles does he have now?",
        "A train travels {a} km in {b} hours. What is its average speed in km per hour?",
        "What is {a} percent of {b}?",
        "Solve for x: {a}x + {b} = {c}",
        "A rectangle is {a} cm long and {b} cm wide. What is its area and its perimeter?",
        "If {a} workers build a wall in {b} days, how long would {c} workers take?",
        "The sum of two numbers is {a} and their difference is {b}. What are the numbers?",
    ]
    out = []
    for _ in range(n):
        a, b, c = rng.randint(3, 90), rng.randint(2, 40), rng.randint(2, 12)
        out.append(rng.choice(templates).format(a=a, b=b, c=c))
    return out


def usual_from(chosen: list[str]) -> int | None:
    """First session (1-based) from which BEST is the primary in >= half of every later window."""
    hits = [m == BEST for m in chosen]
    start = None
    for end in range(WINDOW, len(hits) + 1):
        share = sum(hits[end - WINDOW : end]) / WINDOW
        if share >= 0.5:
            if start is None:
                start = end - WINDOW + 1
        else:
            start = None
    return start


async def run_policy(policy: str, prompts: list[str], profile: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = {
            "ORX_DATA_DIR": tmp,
            "ORX_SIM_SPEED": "1000",
            "ORX_SIM_PROFILE": str(profile),
            "ORX_LOG_LEVEL": "ERROR",
            "ORX_OUTBOX_INTERVAL": "0.05",
            "ORX_HISTORY_REFRESH": "0.05",
            "ORX_SELECTOR_SEED": "17",
            "ORX_EXPLORATION": "0" if policy == "prior-only" else "1",
            "ORX_SELECTOR_HISTORY": "off" if policy == "prior-only" else "on",
            # Simulated time runs 1000x faster than the wall clock the providers' per-model rate limit counts
            # in: at 10+ sessions a second, prior-only would send its one model more than the default 600 calls
            # a minute and wait on the limiter instead of measuring selection.
            "ORX_PROVIDER_RPM": "1000000",
        }
        rng = random.Random(5)
        chosen: list[str] = []
        domains_seen: dict[int, int] = {}
        async with real_services(base) as stub:
            for prompt in prompts:
                prefs = common_pb2.Preferences(quality_weight=1.0, cost_weight=0.0, latency_weight=0.0)
                if policy == "random":
                    prefs.pinned_model = rng.choice(sorted(SKILL))
                request = pb.OrchestrateRequest(prompt=prompt, max_rounds=1, critic_count=2, preferences=prefs)
                events = [r.event async for r in stub.Orchestrate(request, timeout=60)]
                selected = next(e.model_selected for e in events if e.HasField("model_selected"))
                domain = selected.analysis.primary_domain
                domains_seen[domain] = domains_seen.get(domain, 0) + 1
                chosen.append(selected.primary_model)
    best = SKILL[BEST]
    regret = [best - SKILL[m] for m in chosen]
    cumulative = [sum(regret[: i + 1]) for i in range(len(regret))]
    return {
        "policy": policy,
        "sessions": len(chosen),
        "cumulative_regret": cumulative[-1],
        "regret_at": {n: cumulative[n - 1] for n in (50, 100, 200, 300, 500) if n <= len(cumulative)},
        "best_model_share": sum(m == BEST for m in chosen) / len(chosen),
        "best_model_share_last_100": sum(m == BEST for m in chosen[-100:]) / min(100, len(chosen)),
        "usual_choice_from_session": usual_from(chosen),
        "first_choice_of_best": next((i + 1 for i, m in enumerate(chosen) if m == BEST), None),
        "primary_counts": {m: chosen.count(m) for m in sorted(set(chosen))},
        "math_share": domains_seen.get(common_pb2.DOMAIN_MATH, 0) / len(chosen),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/results/selector_learning.json"))
    args = parser.parse_args(argv)
    prompts = math_prompts(args.sessions)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile.toml"
        profile.write_text(PROFILE)
        for policy in ("thompson", "prior-only", "random"):
            started = time.perf_counter()
            result = asyncio.run(run_policy(policy, prompts, profile))
            result["seconds"] = round(time.perf_counter() - started, 1)
            results.append(result)
            print(json.dumps(result, indent=2), flush=True)
    out = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "best": BEST, "skill": SKILL, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
