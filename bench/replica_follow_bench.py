"""What following a session through another replica adds: the owner's live log against the store.

Orchestrator processes share one database, with the real providers (simulated models), selector and analytics.
Each session starts on A (``Orchestrate``, detached); the client follows it at once on A, the owner (its live log:
the reference), and on every follower (``WatchSession``: it replays the stored events and follows the store). All
streams are read in one client process, so each event's arrival on a follower minus its arrival on A is the delay
that follower adds, on one clock. Every event reaches A's watchers only once it is stored, so the reference never
runs ahead of the store.

* On SQLite (the default): one follower, B, which polls.
* With ``--mongodb-uri`` (default: ``ORX_TEST_MONGODB_URI``), a replica set: B follows with the change stream and
  C, with ``ORX_ORCHESTRATOR_CHANGE_FEED=off``, polls, side by side on the same sessions. A fresh database is
  used and dropped.

Sessions run one at a time, then in waves of ``--concurrency``. CPU per event is read from /proc for each follower
and A (the owner) over the whole run, beside each follower's CPU over an idle period (its cancel polling and
sweeps), so the follow cost is not confused with housekeeping. Results: bench/results/replica_follow.json (or
replica_follow_mongodb.json).

    .venv/bin/python -m bench.replica_follow_bench            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from bench._suite import BIN, SERVICE_NAMES, Cluster, _wait_healthy, cluster, cpu_seconds, free_port, percentile
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1.orchestrator_pb2_grpc import OrchestratorServiceStub as Stub

OUT = Path(__file__).parent / "results" / "replica_follow.json"
PROMPTS = (
    "Explain how TCP slow start works",
    "Write a Python function that merges two sorted lists",
    "Summarize: the city council met to discuss the new bus routes and the budget",
    "Brainstorm ideas for a rainy weekend",
)


def _another(c: Cluster, name: str, env: dict[str, str]) -> str:
    addr = f"127.0.0.1:{free_port()}"
    c.procs[name] = subprocess.Popen(
        [str(BIN / "orchestratex"), "serve", "orchestrator"],
        env={**c.env, "ORX_ORCHESTRATOR_LISTEN": addr, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    asyncio.run(_wait_healthy(addr, SERVICE_NAMES["orchestrator"], c.procs[name]))
    c.addr[name] = addr
    return addr


async def _one(a: Stub, followers: dict[str, Stub], prompt: str) -> dict[str, list[float]]:
    """Added delay (seconds) of every event of one session on each follower: its arrival there minus on A."""
    call = a.Orchestrate(pb.OrchestrateRequest(prompt=prompt, detached=True), timeout=120)
    seen_a: dict[int, float] = {}
    seen: dict[str, dict[int, float]] = {name: {} for name in followers}
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_a() -> None:
        async for response in call:
            seen_a[response.event.sequence] = time.monotonic()
            if not started.done():
                started.set_result(response.event.session_id)

    async def on(name: str) -> None:
        session_id = await started
        async for response in followers[name].WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=120):
            seen[name][response.event.sequence] = time.monotonic()

    await asyncio.gather(on_a(), *(on(name) for name in followers))
    for name, times in seen.items():
        assert seen_a.keys() == times.keys(), f"{name} did not see the same events as A"
    # Event 1 is read on A before the followers are asked: its delay would be the client's, not theirs.
    return {name: [times[s] - seen_a[s] for s in sorted(seen_a) if s > 1] for name, times in seen.items()}


async def _run(addr_a: str, followers: dict[str, str], sessions: int, concurrency: int) -> dict[str, list[float]]:
    channels = [grpc.aio.insecure_channel(addr) for addr in (addr_a, *followers.values())]
    a = Stub(channels[0])
    stubs = {name: Stub(channel) for name, channel in zip(followers, channels[1:], strict=True)}
    out: dict[str, list[float]] = {}
    try:
        for i in range(sessions):
            for name, delays in (await _one(a, stubs, f"{PROMPTS[i % len(PROMPTS)]} (#{i})")).items():
                out.setdefault(f"{name}: one at a time", []).extend(delays)
        for w in range(max(1, sessions // concurrency)):
            done = await asyncio.gather(
                *(_one(a, stubs, f"{PROMPTS[i % len(PROMPTS)]} (wave {w} #{i})") for i in range(concurrency))
            )
            for per_session in done:
                for name, delays in per_session.items():
                    out.setdefault(f"{name}: {concurrency} at once", []).extend(delays)
    finally:
        for channel in channels:
            await channel.close(None)
    return out


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
    parser.add_argument("--mongodb-uri", default=os.environ.get("ORX_TEST_MONGODB_URI", ""))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    env = {"ORX_SIM_SPEED": args.speed, "ORX_SHADOW_SAMPLE_RATE": "0", "ORX_PROVIDER_RPM": "100000"}
    if args.mongodb_uri:
        env |= {"ORX_MONGODB_URI": args.mongodb_uri, "ORX_MONGODB_DATABASE": f"orx_bench_{uuid.uuid4().hex[:12]}"}
        wanted = {"B (change stream)": {}, "C (polling)": {"ORX_ORCHESTRATOR_CHANGE_FEED": "off"}}
    else:
        wanted = {"B (polling)": {}}
    with tempfile.TemporaryDirectory() as data, cluster(Path(data), env) as c:
        try:
            for name in ("providers", "selector", "analytics", "orchestrator"):
                c.start(name)
            followers = {name: _another(c, name, extra) for name, extra in wanted.items()}
            pids = {name: c.procs[name].pid for name in followers}
            pid_a = c.procs["orchestrator"].pid
            idle0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            idle_started = time.monotonic()
            time.sleep(10)  # an idle period: the followers' housekeeping alone (cancel polling, sweeps)
            idle_s = time.monotonic() - idle_started
            idle_per_s = {name: (cpu_seconds(pid) - idle0[name]) / idle_s for name, pid in pids.items()}
            a0, f0, t0 = cpu_seconds(pid_a), {n: cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
            results = asyncio.run(_run(c.addr["orchestrator"], followers, args.sessions, args.concurrency))
            elapsed = time.monotonic() - t0
            cpu_a = cpu_seconds(pid_a) - a0
            cpu = {name: cpu_seconds(pid) - f0[name] for name, pid in pids.items()}
        finally:
            if args.mongodb_uri:
                _drop(args.mongodb_uri, env["ORX_MONGODB_DATABASE"])
    events = sum(len(v) for k, v in results.items() if k.startswith(next(iter(followers))))
    cpu_ms: dict[str, float] = {}
    for name in followers:
        cpu_ms[f"{name}"] = round(cpu[name] * 1000 / events, 3)
        cpu_ms[f"{name}, housekeeping taken out"] = round((cpu[name] - idle_per_s[name] * elapsed) * 1000 / events, 3)
    cpu_ms["A (owner, runs the sessions)"] = round(cpu_a * 1000 / events, 3)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "store": "mongodb" if args.mongodb_uri else "sqlite",
        "sim_speed": args.speed,
        "added_delay": {name: _summary(delays) for name, delays in results.items()},
        "events_followed": events,
        "elapsed_s": round(elapsed, 2),
        "cpu_ms_per_event": cpu_ms,
        "idle_cpu_ms_per_s": {name: round(v * 1000, 3) for name, v in idle_per_s.items()},
    }
    if args.out is None:
        args.out = OUT.with_name("replica_follow_mongodb.json") if args.mongodb_uri else OUT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _drop(uri: str, database: str) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    with client:
        client.drop_database(database)


if __name__ == "__main__":
    main()
