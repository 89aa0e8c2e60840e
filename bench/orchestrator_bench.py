"""Orchestrator benchmarks (issues #5 and #18): what orchestration adds to the models' own time, at 1 to 128
concurrent sessions; the client-side limiter's waits and rejections; event-loop lag; CPU per session; memory per
live session; the quality of the stop rule in simulation; cancellation latency.

    .venv/bin/python -m bench.orchestrator_bench [--scenarios SPEC,...] [--repeats 2]
        [--out bench/results/orchestrator.json]

``--sessions N`` runs the scenarios 1 and N only (the command line before issue 18); ``--only-latency`` skips
parts 2 and 3; ``--only-stop-rule`` runs part 2 alone (write it beside the others with ``--out``);
``--cprofile DIR`` runs the orchestrator and the providers service under cProfile and writes their profiles there,
one per scenario run.

Part 1 runs every service as a real subprocess (``orchestratex serve ...``), a fresh suite per scenario run,
with simulated models of FIXED latency (``latency_jitter = false``: 400 ms to the first token, then 100
tokens/s), each session 3 rounds of an author and 3 critics. Per session it measures the wall time W the
client sees, from sending ``Orchestrate`` to receiving ``session_completed``, against two critical paths read
from the session's own events (shadow calls, which run beside the loop, left out):

* L, measured: the sum over rounds of the author's call latency plus the slowest critic's, as the orchestrator
  timed them. It includes whatever delayed a call: queueing in our own client-side limiter, the providers
  service, transport. W/L - 1 is what the orchestrator adds around its calls.
* Lnom, nominal: the same sum with each call's latency replaced by the profile's for the tokens it produced
  (ttft + completion_tokens / tokens_per_second; the simulator paces a stream exactly so). W/Lnom - 1 is
  everything we add: the orchestrator, the limiter's waits, the providers service and the transport.

Around each measured run it reads the providers service's Prometheus endpoint (``ORX_PROVIDERS_METRICS_LISTEN``:
the limiter wait histogram and the rejection counters), the CPU time of every service process (with its worker
processes) and of the client (``/proc/<pid>/stat``; each service's idle rate, measured for a few seconds before
the run, is subtracted too, to give the CPU a session adds), and the orchestrator's resident memory (sampled
every 20 ms). The orchestrator and the providers service write their event-loop lag summaries
(``ORX_LOOP_MONITOR``, over their whole life, warm-up included) when they stop; the client samples its own
the same way, to show it was not the bottleneck. From the events it also counts, per model, the calls made and
the most in flight at once (what a concurrency limit must allow), and where calls lost time against the profile:
before their first token or after it.

A scenario (``--scenarios``, comma-separated) is ``N[xWAVES][:LIMITS][:noshadow][:wWORKERS]``: N sessions at
once (1: one after another, ``--single-sessions`` of them), WAVES such batches back to back in one suite (within
the limiter's 60 s rate window), LIMITS ``shipped`` (the code's defaults), ``raised`` (none reached) or
``proposed`` (:data:`PROPOSED_LIMITS`), ``noshadow`` to turn shadow evaluation off (its simulated default samples
a quarter of the sessions), ``wN`` to run N providers workers. With ``--repeats`` the scenarios run in rotated
order per repeat (alternating blocks, so drift in the machine's state spreads over all of them) and each
scenario's summary holds the median of every figure over the repeats; every run is kept beside it.

Part 2 runs 10-round sessions in process against the simulator (whose hidden answer quality it can read)
and replays the stop rule over each session's recorded scores: rounds used, and the hidden quality of the
answer returned against the best quality reachable within 10 rounds; and, with the request's defaults (3 rounds),
how many sessions stop after round 1, 2 and 3 and how first drafts score. The selector explores at random, so it
runs ``--stop-rule-runs`` times and reports medians with their range.

Part 3 measures cancellation: from ``CancelSession`` (or the client dropping its stream) to the moment the
vendor sees every in-flight HTTP stream of the session close.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._suite import (
    cluster,
    cpu_seconds,
    free_port,
    percentile,
    rss_kib,
    sample_sum,
    scrape,
)
from orchestratex import eventloop
from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.loopmon import LoopLagMonitor
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from tests.orchestrator.real_stack import real_services

FIXED_PROFILE = """
seed = 7
latency_jitter = false
[defaults]
ttft_ms = 400
tokens_per_second = 100
"""

LIMIT_VARS = ("ORX_PROVIDER_CONCURRENCY", "ORX_PROVIDER_QUEUE", "ORX_PROVIDER_RPM")
"""The limits a scenario sets; removed from this process's environment so that ``shipped`` means the code's."""

RAISED_LIMITS = {"ORX_PROVIDER_CONCURRENCY": "100000", "ORX_PROVIDER_QUEUE": "100000", "ORX_PROVIDER_RPM": "1000000"}
"""Limits no scenario reaches: what orchestration costs with the limiter out of the way."""

PROPOSED_LIMITS = {"ORX_PROVIDER_CONCURRENCY": "256", "ORX_PROVIDER_QUEUE": "256", "ORX_PROVIDER_RPM": "3000"}
"""The defaults proposed for issue 18 (docs/benchmarks.md explains the choice)."""

LIMITS: dict[str, dict[str, str]] = {"shipped": {}, "raised": RAISED_LIMITS, "proposed": PROPOSED_LIMITS}

DEFAULT_SCENARIOS = "1,64,96,128,128:raised,128:proposed,128x3,128x3:proposed,128:raised:noshadow,128:proposed:w2"

SCENARIO_SYNTAX = "N[xWAVES][:shipped|raised|proposed][:noshadow][:wWORKERS]"

IDLE_S = 3.0
"""Seconds each run first measures the services idle, to tell their background CPU from the sessions'."""

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


@dataclass(frozen=True)
class Scenario:
    """How many sessions run at once (1: one after another) in how many waves (each starts when the last has
    ended, within the limiter's 60 s rate window), under which limits, with shadow evaluation at its simulated
    default (a quarter of the sessions) or off, and with how many providers workers."""

    sessions: int
    limits: str
    waves: int = 1
    shadow: bool = True
    providers_workers: int = 1

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """E.g. ``128``, ``128:raised``, ``128x3:proposed``, ``128:raised:noshadow``, ``128:proposed:w2``."""
        head, *rest = spec.split(":")
        count, _, waves = head.partition("x")
        limits = (rest.pop(0) if rest else "") or "shipped"
        shadow, workers = True, 1
        for flag in rest:
            if flag == "noshadow":
                shadow = False
            elif flag.startswith("w") and flag[1:].isdigit():
                workers = int(flag[1:])
            else:
                raise SystemExit(f"scenario {spec!r}: {SCENARIO_SYNTAX}")
        if limits not in LIMITS or not count.isdigit() or not (waves or "1").isdigit():
            raise SystemExit(f"scenario {spec!r}: {SCENARIO_SYNTAX}")
        return cls(int(count), limits, int(waves or 1), shadow, workers)

    @property
    def name(self) -> str:
        who = "one at a time" if self.sessions == 1 else f"{self.sessions} concurrent"
        if self.waves > 1:
            who += f", {self.waves} waves"
        extra = "" if self.shadow else ", no shadow evaluation"
        if self.providers_workers > 1:
            extra += f", {self.providers_workers} providers workers"
        return f"{who}, {self.limits} limits{extra}"

    @property
    def tag(self) -> str:
        """A file-name-safe label."""
        return self.name.replace(", ", "-").replace(" ", "_")


@dataclass(frozen=True)
class Nominal:
    """A model's nominal latency from the simulator profile (already scaled by ``sim_speed``)."""

    ttft_s: float
    tokens_per_second: float

    def latency(self, completion_tokens: int) -> float:
        """Nominal time of a call that produced ``completion_tokens`` (0 for a call refused before any)."""
        if completion_tokens <= 0:
            return 0.0
        return self.ttft_s + completion_tokens / self.tokens_per_second


def nominal_profile(profile: Path) -> dict[str, Nominal]:
    """Per model id, the profile's nominal latency."""
    from services.providers import catalogue as cat
    from services.providers.sim_profile import load_profile

    settings = Settings.from_env({"ORX_SIM_PROFILE": str(profile)}, sections=("providers",))
    speed = settings.providers.sim_speed
    models = load_profile(profile, cat.load_catalogue(settings)).models
    return {m: Nominal(p.ttft_ms / 1000 / speed, p.tokens_per_second * speed) for m, p in models.items()}


def critical_paths(events: Sequence[pb.OrchestrationEvent], nominal: Mapping[str, Nominal]) -> tuple[float, float]:
    """(L, Lnom): per round, the author's calls plus the slowest critic, measured and nominal. Shadow answers
    and their critiques run beside the loop and are left out."""
    author: dict[int, list[float]] = {}
    critic: dict[int, list[float]] = {}

    def add(into: dict[int, list[float]], round_no: int, measured: float, nominal_s: float, summed: bool) -> None:
        now = into.setdefault(round_no, [0.0, 0.0])
        if summed:
            now[0] += measured
            now[1] += nominal_s
        else:
            now[0], now[1] = max(now[0], measured), max(now[1], nominal_s)

    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "response_completed" and not event.response_completed.shadow:
            r = event.response_completed
            add(author, r.round, _seconds(r.latency), nominal[r.model].latency(r.usage.completion_tokens), True)
        elif kind == "provider_fallback":
            f = event.provider_fallback
            nom = nominal[f.failed_model].latency(f.usage.completion_tokens)
            add(author, f.round, _seconds(f.latency), nom, True)
        elif kind == "critique_completed" and not event.critique_completed.shadow:
            c = event.critique_completed
            nom = nominal[c.critic_model].latency(c.usage.completion_tokens)
            add(critic, c.round, _seconds(c.latency), nom, False)
        elif kind == "warning" and event.warning.code == pb.WARNING_CODE_CRITIC_FAILED:
            w = event.warning
            add(critic, w.round, _seconds(w.latency), nominal[w.model].latency(w.usage.completion_tokens), False)
    measured = sum(v[0] for v in author.values()) + sum(v[0] for v in critic.values())
    nominal_total = sum(v[1] for v in author.values()) + sum(v[1] for v in critic.values())
    return measured, nominal_total


def call_excess(
    events: Sequence[pb.OrchestrationEvent], nominal: Mapping[str, Nominal]
) -> list[tuple[str, float, float]]:
    """Per finished call of the loop: (``author`` or ``critic``, its time to first token beyond the profile's,
    the rest of its latency beyond the profile's), in seconds. Where a stretched L comes from: starting (queues,
    a burst of starts) or streaming (per-chunk costs)."""
    found = []
    for event in events:
        kind = event.WhichOneof("kind")
        call: pb.ResponseCompleted | pb.CritiqueCompleted
        if kind == "response_completed" and not event.response_completed.shadow:
            call, who, model = event.response_completed, "author", event.response_completed.model
        elif kind == "critique_completed" and not event.critique_completed.shadow:
            call, who, model = event.critique_completed, "critic", event.critique_completed.critic_model
        else:
            continue
        nom = nominal[model]
        ttft, total = _seconds(call.time_to_first_token), _seconds(call.latency)
        rest = (total - ttft) - (nom.latency(call.usage.completion_tokens) - nom.ttft_s)
        found.append((who, ttft - nom.ttft_s, rest))
    return found


def call_spans(events: Sequence[pb.OrchestrationEvent]) -> list[tuple[str, float, float]]:
    """Every provider call of the session, shadow calls included: (model, start, end) in epoch seconds (an
    event's time is its call's end, and it carries the call's latency)."""
    spans = []
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "response_completed":
            model, latency = event.response_completed.model, event.response_completed.latency
        elif kind == "critique_completed":
            model, latency = event.critique_completed.critic_model, event.critique_completed.latency
        elif kind == "provider_fallback":
            model, latency = event.provider_fallback.failed_model, event.provider_fallback.latency
        elif kind == "warning" and event.warning.model:
            model, latency = event.warning.model, event.warning.latency
        else:
            continue
        end = event.time.ToNanoseconds() / 1e9
        spans.append((model, end - _seconds(latency), end))
    return spans


def demand(spans: Sequence[tuple[str, float, float]]) -> dict[str, dict[str, int]]:
    """Per model: the calls made and the most in flight at once (what the limiter's concurrency must allow for
    none of them to queue)."""
    out = {}
    for model in sorted({m for m, _, _ in spans}):
        edges = sorted([(s, 1) for m, s, _ in spans if m == model] + [(e, -1) for m, _, e in spans if m == model])
        level = peak = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        out[model] = {"calls": sum(1 for m, _, _ in spans if m == model), "peak_in_flight": peak}
    return out


def _seconds(d: Any) -> float:
    return float(d.ToNanoseconds()) / 1e9


async def one_session(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub,
    prompt: str,
    nominal: Mapping[str, Nominal],
    rounds: int = 3,
) -> dict[str, Any]:
    request = pb.OrchestrateRequest(prompt=prompt, max_rounds=rounds, critic_count=3, quality_threshold=10, patience=10)
    start = time.perf_counter()
    events = [r.event async for r in stub.Orchestrate(request, timeout=600)]
    wall = time.perf_counter() - start
    assert events[-1].HasField("session_completed"), events[-1]
    bound, nominal_bound = critical_paths(events, nominal)
    kinds = [e.WhichOneof("kind") for e in events]
    return {
        "wall": wall,
        "bound": bound,
        "nominal": nominal_bound,
        "rounds": events[-1].session_completed.rounds_used,
        "deltas": kinds.count("response_delta"),
        "critic_failures": sum(
            1 for e in events if e.HasField("warning") and e.warning.code == pb.WARNING_CODE_CRITIC_FAILED
        ),
        "fallbacks": kinds.count("provider_fallback"),
        "shadow": any(e.HasField("response_completed") and e.response_completed.shadow for e in events),
        "calls": call_excess(events, nominal),
        "spans": call_spans(events),
    }


async def run_sessions(
    addr: str, prompts: list[str], nominal: Mapping[str, Nominal], *, concurrent: bool, rounds: int = 3
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sessions' results, and the client's own loop lag while it ran them."""
    monitor = LoopLagMonitor()
    monitor.start()
    try:
        async with open_channel(addr) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            if concurrent:
                results = list(await asyncio.gather(*(one_session(stub, p, nominal, rounds) for p in prompts)))
            else:
                results = [await one_session(stub, p, nominal, rounds) for p in prompts]
    finally:
        await monitor.stop()
    return results, monitor.summary()


def limiter_figures(before: Sequence[Mapping[Any, float]], after: Sequence[Mapping[Any, float]]) -> dict[str, Any]:
    """Limiter waits and rejections between two scrapes of the providers service (one scrape per worker)."""

    def delta(name: str, **labels: str) -> float:
        return sum(
            sample_sum(a, name, **labels) - sample_sum(b, name, **labels) for a, b in zip(after, before, strict=True)
        )

    waits = delta("orx_provider_limiter_wait_seconds_count")
    quick = delta("orx_provider_limiter_wait_seconds_bucket", le="0.005")
    waited_s = delta("orx_provider_limiter_wait_seconds_sum")
    reasons = sorted(
        {dict(labels)["reason"] for a in after for (name, labels) in a if name == "orx_provider_rejections_total"}
    )
    rejected = {r: int(delta("orx_provider_rejections_total", reason=r)) for r in reasons}
    return {
        "admissions": int(waits),
        "waited_over_5ms": int(waits - quick),
        "wait_s_total": waited_s,
        "wait_s_mean_of_waiting": waited_s / (waits - quick) if waits > quick else 0.0,
        "rejected": {r: n for r, n in rejected.items() if n},
        "rejected_total": sum(rejected.values()),
        "attempts": int(delta("orx_provider_attempts_total")),
    }


def _lag(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("samples", "p50_ms", "p99_ms", "max_ms")}


def run_scenario(
    scenario: Scenario, prompts: list[str], *, single: int, cprofile: Path | None, tag: str
) -> dict[str, Any]:
    """One scenario in a fresh suite: warm up, measure, stop (the services then write their lag summaries)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        profile = tmpdir / "fixed.toml"
        profile.write_text(FIXED_PROFILE)
        nominal = nominal_profile(profile)
        metrics_port = free_port()
        workers = scenario.providers_workers
        # One metrics endpoint per providers worker, on consecutive ports (services/workers.py).
        metrics_urls = [f"http://127.0.0.1:{metrics_port + i}/metrics" for i in range(workers)]
        env = {
            "ORX_SIM_PROFILE": str(profile),
            "ORX_OUTBOX_INTERVAL": "1",
            "ORX_PROVIDERS_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "ORX_PROVIDERS_WORKERS": str(workers),
            **LIMITS[scenario.limits],
        }
        lag_files = {name: tmpdir / f"lag-{name}.json" for name in ("providers", "orchestrator")}

        def profiled(name: str) -> list[str]:
            """The command that runs ``name`` under cProfile (one worker only), or [] for the plain one."""
            if cprofile is None or (name == "providers" and workers > 1):
                return []
            cprofile.mkdir(parents=True, exist_ok=True)
            out = cprofile / f"{name}-{tag}.prof"
            return [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "services.cli"]

        with cluster(tmpdir, env) as c:
            c.start("providers", {"ORX_LOOP_MONITOR": str(lag_files["providers"])}, command=profiled("providers"))
            c.start("analytics")
            c.start("selector")
            own = {"ORX_LOOP_MONITOR": str(lag_files["orchestrator"])}
            if not scenario.shadow:
                own["ORX_SHADOW_SAMPLE_RATE"] = "0"
            c.start("orchestrator", own, command=profiled("orchestrator"))
            addr = c.addr["orchestrator"]
            # Warm-up: every code path once (selection, streaming, critics), two one-round sessions.
            warm = [f"{p} (warm-up)" for p in prompts[-2:]]
            eventloop.run(run_sessions(addr, warm, nominal, concurrent=True, rounds=1), "auto")
            pids = {name: proc.pid for name, proc in c.procs.items()}
            orchestrator_pid = pids["orchestrator"]
            baseline = rss_kib(orchestrator_pid)
            peak = [baseline]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.02):
                    peak[0] = max(peak[0], rss_kib(orchestrator_pid))

            sampler = threading.Thread(target=sample)
            # Idle first: what each process burns with no session (lag monitors, outbox polling, refreshes).
            idle_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            time.sleep(IDLE_S)
            idle = {name: (cpu_seconds(pid) - idle_before[name]) / IDLE_S for name, pid in pids.items()}
            scraped = [scrape(url) for url in metrics_urls]
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            client_before = cpu_seconds(os.getpid(), tree=False)
            sampler.start()
            started = time.perf_counter()
            results: list[dict[str, Any]] = []
            client_lags = []
            for wave in range(scenario.waves):
                concurrent = scenario.sessions > 1
                if concurrent:
                    chosen = [
                        f"{prompts[i % len(prompts)]} (variant {i}, wave {wave})" for i in range(scenario.sessions)
                    ]
                else:
                    chosen = [f"{p} (wave {wave})" for p in prompts[:single]]
                got, lag_of_wave = eventloop.run(run_sessions(addr, chosen, nominal, concurrent=concurrent), "auto")
                results += got
                client_lags.append(lag_of_wave)
            elapsed = time.perf_counter() - started
            client_cpu = cpu_seconds(os.getpid(), tree=False) - client_before
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            limiter = limiter_figures(scraped, [scrape(url) for url in metrics_urls])
            done.set()
            sampler.join()
        lag = {name: _lag(json.loads(path.read_text())) for name, path in lag_files.items() if path.exists()}
        for i in range(workers if workers > 1 else 0):  # each worker writes its own summary, ".<index>"
            lag[f"providers.{i}"] = _lag(json.loads(Path(f"{lag_files['providers']}.{i}").read_text()))
    n = len(results)
    ratio_l = [r["wall"] / r["bound"] for r in results]
    ratio_nom = [r["wall"] / r["nominal"] for r in results]
    stretch = [r["bound"] / r["nominal"] for r in results]
    return {
        "scenario": scenario.name,
        "sessions": n,
        "limits": LIMITS[scenario.limits] or "code defaults",
        "run_s": elapsed,
        "sessions_with_shadow": sum(r["shadow"] for r in results),
        "w_s_p50": statistics.median(r["wall"] for r in results),
        "l_s_p50": statistics.median(r["bound"] for r in results),
        "lnom_s_p50": statistics.median(r["nominal"] for r in results),
        "w_over_l": _spread(ratio_l),
        "w_over_lnom": _spread(ratio_nom),
        "l_over_lnom": _spread(stretch),
        "limiter": {**limiter, "wait_s_per_session": limiter["wait_s_total"] / n},
        "critic_failures": sum(r["critic_failures"] for r in results),
        "author_fallbacks": sum(r["fallbacks"] for r in results),
        "deltas_per_session_p50": statistics.median(r["deltas"] for r in results),
        "per_model": demand([span for r in results for span in r["spans"]]),
        "call_excess_ms": {
            who: {
                "calls": len(rows),
                "ttft": _spread([t * 1000 for _, t, _ in rows]),
                "after_first_token": _spread([x * 1000 for _, _, x in rows]),
            }
            for who in ("author", "critic")
            if (rows := [c for r in results for c in r["calls"] if c[0] == who])
        },
        "loop_lag_ms": {**lag, "client": _lag(max(client_lags, key=lambda x: x.get("p99_ms") or 0))},
        "cpu_ms_per_session": {**{k: v * 1000 / n for k, v in cpu.items()}, "client": client_cpu * 1000 / n},
        "cpu_ms_per_session_above_idle": {k: (v - idle[k] * elapsed) * 1000 / n for k, v in cpu.items()},
        "cpu_idle_ms_per_s": {k: v * 1000 for k, v in idle.items()},
        "cpu_cores_during_run": {**{k: v / elapsed for k, v in cpu.items()}, "client": client_cpu / elapsed},
        "orchestrator_rss": {
            "baseline_mib": baseline / 1024,
            "peak_mib": peak[0] / 1024,
            "mib_per_live_session": (peak[0] - baseline) / 1024 / scenario.sessions,
        },
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 95), "max": max(values)}


def median_of(runs: Sequence[Any]) -> Any:
    """The element-wise median of runs with the same shape (numbers; other values from the first run)."""
    first = next((r for r in runs if r is not None), None)
    if first is None or isinstance(first, bool) or not isinstance(first, (int, float, dict)):
        return first
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs if isinstance(r, dict) and k in r]) for k in first}
    return statistics.median(r for r in runs if isinstance(r, (int, float)))


def part1(scenarios: Sequence[Scenario], *, repeats: int, single: int, cprofile: Path | None) -> dict[str, Any]:
    """Every scenario ``repeats`` times, in rotated order per repeat; the median over repeats per scenario."""
    for var in LIMIT_VARS:
        os.environ.pop(var, None)
    prompts = [p for ps in PROMPTS.values() for p in ps]
    runs: dict[Scenario, list[dict[str, Any]]] = {s: [] for s in scenarios}
    for rep in range(repeats):
        order = list(scenarios[rep % len(scenarios) :]) + list(scenarios[: rep % len(scenarios)])
        for scenario in order:
            tag = f"{scenario.tag}-{rep + 1}"
            print(f"[{time.strftime('%H:%M:%S')}] repeat {rep + 1}/{repeats}: {scenario.name}", file=sys.stderr)
            result = run_scenario(scenario, prompts, single=single, cprofile=cprofile, tag=tag)
            print(
                f"    W/L p95 {result['w_over_l']['p95']:.3f}  W/Lnom p50 {result['w_over_lnom']['p50']:.3f} "
                f"p95 {result['w_over_lnom']['p95']:.3f}  rejected {result['limiter']['rejected_total']}  "
                f"lag p99 {result['loop_lag_ms']['orchestrator']['p99_ms']:.1f} ms",
                file=sys.stderr,
            )
            runs[scenario].append(result)
    return {
        "profile": FIXED_PROFILE.strip(),
        "request": {"max_rounds": 3, "critic_count": 3, "quality_threshold": 10, "patience": 10},
        "repeats": repeats,
        "scenarios": [{"scenario": s.name, "summary": median_of(runs[s]), "runs": runs[s]} for s in scenarios],
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
        async with real_services(base, backend=sim) as stub:
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
    # The request's defaults (3 rounds): how many rounds a default session uses, and what first drafts score.
    shipped = policy.StopRules(threshold=8, max_rounds=3, epsilon=0.25, patience=1, budget_usd=None, time_limit_s=1e9)
    used_by_default = [replay(shipped, list(row["scores"])) for row in rows]
    firsts = sorted(float(row["scores"][0]) for row in rows)
    deciles = statistics.quantiles(firsts, n=10)
    return {
        "sessions": len(rows),
        "default_settings": {
            "rounds": {str(n): used_by_default.count(n) for n in (1, 2, 3)},
            "mean_rounds": statistics.fmean(used_by_default),
            "first_score": {"median": statistics.median(firsts), "p10": deciles[0], "p90": deciles[-1]},
        },
        "rules": [
            evaluate("default: threshold 8, plateau eps 0.25 / patience 1, max 10", lambda s: replay(default_rules, s)),
            evaluate("threshold 8 only, max 10", lambda s: replay(threshold_only, s)),
            evaluate("always 1 round", lambda s: 1),
            evaluate("always 10 rounds, best-scored version", lambda s: 10),
            evaluate("always 10 rounds, last version", lambda s: 10, pick_best=False),
        ],
    }


def part2_repeated(runs: int) -> dict[str, Any]:
    """:func:`part2` ``runs`` times: each rule's figures as the median over the runs, with their range.

    A run does not replay the last: the selector explores at random (Thompson sampling) and learns from analytics
    as the sessions end, so the models, drafts and scores differ from run to run."""
    results = [asyncio.run(part2()) for _ in range(runs)]
    rules = []
    for i, first in enumerate(results[0]["rules"]):
        each = [r["rules"][i] for r in results]
        summary: dict[str, Any] = {"rule": first["rule"]}
        for key in first:
            if key != "rule":
                values = [e[key] for e in each]
                summary[key] = statistics.median(values)
                summary[f"{key}_range"] = [min(values), max(values)]
        rules.append(summary)
    defaults = [r["default_settings"] for r in results]
    summary_defaults = {
        "rounds": {n: sum(d["rounds"][n] for d in defaults) for n in defaults[0]["rounds"]},
        "mean_rounds": statistics.median(d["mean_rounds"] for d in defaults),
        "first_score": {
            k: statistics.median(d["first_score"][k] for d in defaults) for k in defaults[0]["first_score"]
        },
    }
    return {
        "sessions": results[0]["sessions"],
        "runs": runs,
        "rules": rules,
        "default_settings": summary_defaults,
        "each_run": results,
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
            async with real_services(base) as stub:
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
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help=f"comma-separated {SCENARIO_SYNTAX}")
    parser.add_argument("--sessions", type=int, help="run the scenarios 1 and N (shipped limits) only")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every scenario, in rotated order")
    parser.add_argument("--single-sessions", type=int, default=6, help="sessions of the one-at-a-time scenario")
    parser.add_argument("--stop-rule-runs", type=int, default=5, help="runs of part 2 (medians over them)")
    parser.add_argument("--cprofile", type=Path, help="profile orchestrator and providers; .prof files in this dir")
    parser.add_argument("--out", type=Path, default=Path("bench/results/orchestrator.json"))
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-latency", action="store_true", help="part 1 only")
    parser.add_argument("--only-cancellation", action="store_true")
    parser.add_argument("--only-stop-rule", action="store_true", help="part 2 only")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": _cpus()}
    if args.only_cancellation:
        print(json.dumps(asyncio.run(part3()), indent=2))
        return
    if not args.skip_latency and not args.only_stop_rule:
        spec = f"1,{args.sessions}" if args.sessions else args.scenarios
        scenarios = [Scenario.parse(s) for s in spec.split(",") if s]
        result["latency"] = part1(scenarios, repeats=args.repeats, single=args.single_sessions, cprofile=args.cprofile)
        print(json.dumps([s["summary"] for s in result["latency"]["scenarios"]], indent=2))
    if not args.only_latency:
        result["stop_rule"] = part2_repeated(args.stop_rule_runs)
        print(json.dumps(result["stop_rule"]["rules"], indent=2))
        print(json.dumps(result["stop_rule"]["default_settings"], indent=2))
    if not args.only_latency and not args.only_stop_rule:
        result["cancellation"] = asyncio.run(part3())
        print(json.dumps(result["cancellation"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
