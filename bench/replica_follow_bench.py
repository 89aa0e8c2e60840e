"""What following a session through another replica adds: the owner's live log against the store, polled.

Two orchestrator processes (A and B) share one SQLite database, with the real providers (simulated models),
selector and analytics. Each session starts on A (``Orchestrate``, detached); the client follows it at once on
A, the owner (its live log: the reference), and on B (``WatchSession``: B replays the stored events and polls the
store for more). Both streams are read in one client process, so each event's arrival on B minus its arrival on
A is the delay B adds, on one clock. Every event reaches A's watchers only once it is stored, so the reference
never runs ahead of the store.

Sessions run one at a time, then in waves of ``--concurrency``. CPU per event is read from /proc for B (the
follower) and A (the owner) over the whole run, beside B's CPU over an idle period as long (its cancel polling and
sweeps), so the follow cost is not confused with housekeeping. Results: bench/results/replica_follow.json.

    .venv/bin/python -m bench.replica_follow_bench            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from bench._suite import BIN, SERVICE_NAMES, Cluster, _wait_healthy, cluster, cpu_seconds, free_port, percentile
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc

OUT = Path(__file__).parent / "results" / "replica_follow.json"
PROMPTS = (
    "Explain how TCP slow start works",
    "Write a Python function that merges two sorted lists",
    "Summarize: the city council met to discuss the new bus routes and the budget",
    "Brainstorm ideas for a rainy weekend",
)


def _second(c: Cluster, name: str) -> str:
    addr = f"127.0.0.1:{free_port()}"
    c.procs[name] = subprocess.Popen(
        [str(BIN / "orchestratex"), "serve", "orchestrator"],
        env={**c.env, "ORX_ORCHESTRATOR_LISTEN": addr},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    asyncio.run(_wait_healthy(addr, SERVICE_NAMES["orchestrator"], c.procs[name]))
    c.addr[name] = addr
    return addr


async def _one(
    a: orchestrator_pb2_grpc.OrchestratorServiceStub, b: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str
) -> list[float]:
    """Added delay (seconds) of every event of one session: its arrival on B minus on A."""
    call = a.Orchestrate(pb.OrchestrateRequest(prompt=prompt, detached=True), timeout=120)
    seen_a: dict[int, float] = {}
    seen_b: dict[int, float] = {}
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_a() -> None:
        async for response in call:
            seen_a[response.event.sequence] = time.monotonic()
            if not started.done():
                started.set_result(response.event.session_id)

    async def on_b() -> None:
        session_id = await started
        async for response in b.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=120):
            seen_b[response.event.sequence] = time.monotonic()

    await asyncio.gather(on_a(), on_b())
    assert seen_a.keys() == seen_b.keys(), "B did not see the same events as A"
    # Event 1 is read on A before B is asked: its delay would be the client's, not B's.
    return [seen_b[s] - seen_a[s] for s in sorted(seen_a) if s > 1]


async def _run(addr_a: str, addr_b: str, sessions: int, concurrency: int) -> dict[str, list[float]]:
    async with grpc.aio.insecure_channel(addr_a) as ca, grpc.aio.insecure_channel(addr_b) as cb:
        a, b = orchestrator_pb2_grpc.OrchestratorServiceStub(ca), orchestrator_pb2_grpc.OrchestratorServiceStub(cb)
        single: list[float] = []
        for i in range(sessions):
            single += await _one(a, b, f"{PROMPTS[i % len(PROMPTS)]} (#{i})")
        waves: list[float] = []
        for w in range(max(1, sessions // concurrency)):
            done = await asyncio.gather(
                *(_one(a, b, f"{PROMPTS[i % len(PROMPTS)]} (wave {w} #{i})") for i in range(concurrency))
            )
            waves += [d for delays in done for d in delays]
        return {"one at a time": single, f"{concurrency} at once": waves}


def _summary(delays: list[float]) -> dict[str, float]:
    ms = [d * 1000 for d in delays]
    return {
        "events": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "below_zero": sum(1 for m in ms if m < 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--speed", default="8", help="ORX_SIM_SPEED")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as data,
        cluster(
            Path(data), {"ORX_SIM_SPEED": args.speed, "ORX_SHADOW_SAMPLE_RATE": "0", "ORX_PROVIDER_RPM": "100000"}
        ) as c,
    ):
        for name in ("providers", "selector", "analytics", "orchestrator"):
            c.start(name)
        addr_b = _second(c, "orchestrator-b")
        pid_a, pid_b = c.procs["orchestrator"].pid, c.procs["orchestrator-b"].pid
        idle_b0 = cpu_seconds(pid_b)
        idle_started = time.monotonic()
        time.sleep(10)  # an idle period: B's housekeeping alone (cancel polling, sweeps)
        idle_cpu_per_s = (cpu_seconds(pid_b) - idle_b0) / (time.monotonic() - idle_started)
        a0, b0, t0 = cpu_seconds(pid_a), cpu_seconds(pid_b), time.monotonic()
        results = asyncio.run(_run(c.addr["orchestrator"], addr_b, args.sessions, args.concurrency))
        elapsed = time.monotonic() - t0
        cpu_a, cpu_b = cpu_seconds(pid_a) - a0, cpu_seconds(pid_b) - b0
    events = sum(len(v) for v in results.values())
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "sim_speed": args.speed,
        "added_delay": {name: _summary(delays) for name, delays in results.items()},
        "events_followed": events,
        "elapsed_s": round(elapsed, 2),
        "cpu_ms_per_event": {
            "B (follower)": round(cpu_b * 1000 / events, 3),
            "B (follower), housekeeping taken out": round((cpu_b - idle_cpu_per_s * elapsed) * 1000 / events, 3),
            "A (owner, runs the sessions)": round(cpu_a * 1000 / events, 3),
        },
        "b_idle_cpu_ms_per_s": round(idle_cpu_per_s * 1000, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
