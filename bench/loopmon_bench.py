"""What the event-loop lag monitor sees, and what it costs (issue 18).

    .venv/bin/python -m bench.loopmon_bench [--blocks 5] [--seconds 4] [--out bench/results/loopmon.json]

Each block runs one fresh child process per variant, one after the other (variants alternate their order
from block to block), on uvloop as the services run:

- **none**: no monitor (the reference);
- **timer 5 ms**: the earlier sampler, ``asyncio.sleep(0.005)`` in a task, lag = how late it woke on
  :func:`time.perf_counter` (what ``ORX_LOOP_MONITOR`` used before issue 18);
- **timer+call_soon 10 ms**: a timer every 10 ms schedules a ``call_soon`` callback; lag = its wait (no rounding, but
  it always samples just after the timer phase);
- **thread 10 ms** / **thread 5 ms**: :class:`orchestratex.loopmon.LoopLagMonitor`, a thread pokes the loop with
  ``call_soon_threadsafe`` every 10 or 5 ms; lag = the wait until the loop runs the callback.

Two workloads: **idle** (the loop has nothing else to do: the worst case for the sampler's own cost, since every
sample is a wake-up of its own) and **busy** (a synthetic service: 2,000 callbacks a second, each burning 150 µs of
CPU, in bursts of 1-8, i.e. about 0.3 of a core and a real queue). CPU is user + system time from
``/proc/<pid>/stat`` over the run; the sampler's cost is the variant's CPU minus **none**'s in the same block.
Reported: medians over blocks of CPU ms per second of run, cost per sample, and the lag percentiles each sampler
reports on the same busy workload (the distribution it draws, including its resolution).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("none", "timer 5 ms", "timer+call_soon 10 ms", "thread 10 ms", "thread 5 ms")
WORKLOADS = ("idle", "busy")
CLK_TCK = os.sysconf("SC_CLK_TCK")

CHILD = r"""
import asyncio, json, random, sys, time
from orchestratex import eventloop
from orchestratex.loopmon import LoopLagMonitor

variant, workload, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

def soon_sampler(loop, samples, state=[0.0]):
    def mark():
        state[0] = time.perf_counter()
        loop.call_soon(measure)
    def measure():
        samples.append(time.perf_counter() - state[0])
        loop.call_later(0.01, mark)
    loop.call_later(0.01, mark)

async def timer_sampler(samples):
    while True:
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(max(0.0, time.perf_counter() - start - 0.005))

def burn(us):
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass

async def busy(stop):
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    while not stop.is_set():
        for _ in range(rng.randint(1, 8)):
            loop.call_soon(burn, 150)
        await asyncio.sleep(rng.expovariate(2000 / 4.5))

async def main():
    samples = []
    monitor = task = None
    if variant == "timer 5 ms":
        task = asyncio.get_running_loop().create_task(timer_sampler(samples))
    elif variant.startswith("timer+"):
        soon_sampler(asyncio.get_running_loop(), samples)
    elif variant.startswith("thread"):
        monitor = LoopLagMonitor(interval=float(variant.split()[1]) / 1000)
        monitor.start()
        samples = monitor.samples
    stop = asyncio.Event()
    load = asyncio.get_running_loop().create_task(busy(stop)) if workload == "busy" else None
    await asyncio.sleep(seconds)
    stop.set()
    if load is not None:
        await load
    if task is not None:
        task.cancel()
    if monitor is not None:
        await monitor.stop()
    print(json.dumps(sorted(samples)))

eventloop.run(main(), "uvloop")
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_one(variant: str, workload: str, seconds: float) -> dict[str, Any]:
    """One child process: its CPU (from /proc, read just before it exits) and its samples."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, variant, workload, str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Read CPU over the measured window only (not the ~0.3 s of imports): sample at start and near the end.
    time.sleep(0.6)
    cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
    time.sleep(seconds - 0.8)
    cpu1, t1 = _cpu_seconds(proc.pid), time.perf_counter()
    out, _ = proc.communicate()
    samples = json.loads(out)
    return {"cpu_ms_per_s": (cpu1 - cpu0) * 1000 / (t1 - t0), "samples": samples}


def _q(samples: list[float], q: float) -> float | None:
    if len(samples) < 2:
        return None
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 1000) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/loopmon.json")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {v: [] for v in VARIANTS} for w in WORKLOADS}
    for block in range(args.blocks):
        order = VARIANTS[block % len(VARIANTS) :] + VARIANTS[: block % len(VARIANTS)]
        for workload in WORKLOADS:
            for variant in order:
                runs[workload][variant].append(run_one(variant, workload, args.seconds))
        print(f"block {block + 1}/{args.blocks} done", file=sys.stderr)
    result: dict[str, Any] = {"blocks": args.blocks, "seconds": args.seconds, "workloads": {}}
    for workload in WORKLOADS:
        rows = {}
        for variant in VARIANTS:
            blocks = runs[workload][variant]
            costs = [
                b["cpu_ms_per_s"] - ref["cpu_ms_per_s"] for b, ref in zip(blocks, runs[workload]["none"], strict=True)
            ]
            rate = statistics.median(len(b["samples"]) for b in blocks) / args.seconds
            every = [s for b in blocks for s in b["samples"]]
            rows[variant] = {
                "cpu_ms_per_s": statistics.median(b["cpu_ms_per_s"] for b in blocks),
                "added_cpu_ms_per_s": statistics.median(costs),
                "samples_per_s": rate,
                "added_cpu_us_per_sample": statistics.median(costs) * 1000 / rate if rate else None,
                "lag_ms": {
                    "p50": _q(every, 0.5),
                    "p90": _q(every, 0.9),
                    "p99": _q(every, 0.99),
                    "distinct_values_below_1ms": len({round(s * 1e6) for s in every if s < 0.001}),
                },
            }
        result["workloads"][workload] = rows
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for workload, rows in result["workloads"].items():
        print(f"\n{workload}")
        for variant, row in rows.items():
            lag = row["lag_ms"]
            print(
                f"  {variant:<22} cpu {row['cpu_ms_per_s']:6.1f} ms/s  added {row['added_cpu_ms_per_s']:6.2f} ms/s"
                f"  per sample {row['added_cpu_us_per_sample'] or 0:6.1f} µs  lag p50 {lag['p50'] or 0:.3f}"
                f" p90 {lag['p90'] or 0:.3f} p99 {lag['p99'] or 0:.3f} ms"
            )


if __name__ == "__main__":
    main()
