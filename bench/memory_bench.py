"""Memory benchmark (issue 18): does any process of the suite grow with the number of sessions it has served?

    .venv/bin/python -m bench.memory_bench [--sessions 10000] [--every 1000] [--warm-up 3000]
        [--concurrency 16] [--out bench/results/memory.json]

Every service runs as a real subprocess (``orchestratex serve ...``: providers, analytics, selector,
orchestrator) and the gateway in front of them. The client starts each session through the gateway's REST API
(``POST /v1/orchestrations``) and follows it over Server-Sent Events to its end, ``--concurrency`` at a time,
with the default request (3 rounds at most, 2 critics, threshold 8, so the stop rule ends many sessions early)
and a prompt no other session uses (as real traffic: every call is new to the simulator). The models are the
packaged simulator profile run fast (``ORX_SIM_SPEED=1000``) so that 10,000 sessions take minutes; shadow
evaluation runs at its simulated default (a quarter of the sessions). The providers' client-side limits are raised
out of the way (the orchestrator benchmark measures them), so sessions end as they would unthrottled.

Every ``--every`` sessions, with none in flight, it reads each process's resident memory (``VmRSS`` in
``/proc/<pid>/status``, and its anonymous part ``RssAnon``, which is what a leak grows). Growth per 1,000
sessions is the least-squares slope of those samples after ``--warm-up`` sessions (caches fill during the
warm-up: the simulator keeps its last 8,192 drafts, about 3,500 sessions of this kind);
``growth_after_warm_up_mib`` is the last sample minus the first one after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench._suite import cluster, cpu_seconds, memory_kib
from bench.orchestrator_bench import PROMPTS, RAISED_LIMITS

TERMINAL = ("session_completed", "session_failed")


async def one_session(http: aiohttp.ClientSession, base: str, prompt: str) -> str:
    """Start a session through the gateway and follow its events to the end; returns the terminal kind."""
    async with http.post(f"{base}/v1/orchestrations", json={"prompt": prompt}) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /v1/orchestrations: {resp.status} {await resp.text()}")
        session_id = (await resp.json())["session_id"]
    async with http.get(f"{base}/v1/orchestrations/{session_id}/events") as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET events: {resp.status} {await resp.text()}")
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: error"):
                raise RuntimeError(f"session {session_id}: error event")
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            for kind in TERMINAL:
                if kind in event:
                    return kind
    raise RuntimeError(f"session {session_id}: the stream ended without a terminal event")


async def run_block(base: str, prompts: list[str], concurrency: int) -> dict[str, int]:
    """Run ``prompts`` as sessions, ``concurrency`` at a time; how many ended each way."""
    ends: dict[str, int] = {}
    queue = list(reversed(prompts))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def worker() -> None:
            while queue:
                kind = await one_session(http, base, queue.pop())
                ends[kind] = ends.get(kind, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ends


def slope_per_thousand(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (sessions, MiB), in MiB per 1,000 sessions."""
    if len(points) < 2:
        return float("nan")
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000, help="sessions between two memory samples")
    parser.add_argument("--warm-up", type=int, default=3_000, help="sessions before the growth is fitted")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    args = parser.parse_args(argv)
    base_prompts = [p for ps in PROMPTS.values() for p in ps]
    samples: list[dict[str, Any]] = []
    ends: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Limits raised: at about 40 sessions a second the shipped ones (600 calls a minute per model) would turn
        # most sessions into rejections, and a session that fails early is not the session being measured.
        env = {"ORX_SIM_SPEED": "1000", "ORX_OUTBOX_INTERVAL": "1", **RAISED_LIMITS}
        with cluster(Path(tmp), env) as c:
            for name in ("providers", "analytics", "selector", "orchestrator"):
                c.start(name)
            base = f"http://{c.start_gateway()}"
            pids = {name: proc.pid for name, proc in c.procs.items()}
            started = time.perf_counter()
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}

            def sample(done: int) -> None:
                memory = {name: memory_kib(pid) for name, pid in pids.items()}
                rss = {name: m["VmRSS"] / 1024 for name, m in memory.items()}
                anon = {name: m["RssAnon"] / 1024 for name, m in memory.items()}
                now = time.perf_counter() - started
                samples.append({"sessions": done, "elapsed_s": now, "rss_mib": rss, "rss_anon_mib": anon})
                shown = "  ".join(f"{name} {mib:6.1f}" for name, mib in rss.items())
                print(f"[{time.strftime('%H:%M:%S')}] {done:6d} sessions  RSS MiB: {shown}", file=sys.stderr)

            sample(0)
            done = 0
            while done < args.sessions:
                count = min(args.every, args.sessions - done)
                prompts = [f"{base_prompts[(done + i) % len(base_prompts)]} (session {done + i})" for i in range(count)]
                for kind, n in asyncio.run(run_block(base, prompts, args.concurrency)).items():
                    ends[kind] = ends.get(kind, 0) + n
                done += count
                sample(done)
            elapsed = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    services = list(samples[0]["rss_mib"])
    fitted = [s for s in samples if s["sessions"] >= args.warm_up]
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "warm_up_sessions": args.warm_up,
        "ends": ends,
        "elapsed_s": elapsed,
        "cpu_ms_per_session": {name: cpu[name] * 1000 / args.sessions for name in services},
        "growth_mib_per_1000_sessions": {
            name: slope_per_thousand([(s["sessions"], s["rss_mib"][name]) for s in fitted]) for name in services
        },
        "anon_growth_mib_per_1000_sessions": {
            name: slope_per_thousand([(s["sessions"], s["rss_anon_mib"][name]) for s in fitted]) for name in services
        },
        "growth_after_warm_up_mib": {
            name: fitted[-1]["rss_mib"][name] - fitted[0]["rss_mib"][name] if fitted else float("nan")
            for name in services
        },
        "growth_during_warm_up_mib": {
            name: (fitted[0]["rss_mib"][name] if fitted else samples[-1]["rss_mib"][name]) - samples[0]["rss_mib"][name]
            for name in services
        },
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if ends.get("session_completed", 0) < 0.95 * args.sessions:
        print(f"WARNING: only {ends.get('session_completed', 0)} sessions completed: {ends}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
