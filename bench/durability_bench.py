"""What publishing only durable events costs (issue 12, item 2).

    .venv/bin/python -m bench.durability_bench [--repeats 3] [--seconds 3] [--out bench/results/durability.json]

The orchestrator shows a watcher an event only once the store has committed it, so no client can see
an event that a crash then loses. The reference is the previous design: the same hub, writer and
SQLite store, but every event visible the moment it is emitted (the writer still writes it). Both run
in this process, side by side, in alternating blocks:

- **paced**: S sessions each emit an event every 50 ms (the rate of coalesced answer deltas) and a
  watcher per session records emit-to-visible latency;
- **burst**: 64 sessions emit 200 events each as fast as the loop allows; events per second until
  every watcher has seen every event, and CPU per event (user + system of this process from
  /proc/self/stat, which includes aiosqlite's writer thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._suite import percentile
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.hub import EventWriter, Hub, LiveSession
from services.orchestrator.store.sqlite import SqliteSessionStore

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class ImmediateHub(Hub):
    """The reference: the previous design, every event visible as soon as it is emitted."""

    def emit(self, live: LiveSession, event: pb.OrchestrationEvent) -> pb.OrchestrationEvent:
        event = super().emit(live, event)
        live.mark_durable(event.sequence)
        return event


async def _session(hub: Hub, sid: str, events: int, pause: float, sent: dict[tuple[str, int], float]) -> None:
    live = hub.open(sid, "")
    for _ in range(events):
        delta = pb.ResponseDelta(round=1, model="m", text="some words of an answer")
        event = hub.emit(live, pb.OrchestrationEvent(response_delta=delta))
        sent[(sid, event.sequence)] = time.perf_counter()
        await asyncio.sleep(pause)


async def _watch(live: LiveSession, events: int, sent: dict[tuple[str, int], float], lags: list[float]) -> None:
    seen = 0
    async for event in live.follow(0):
        lags.append(time.perf_counter() - sent[(event.session_id, event.sequence)])
        seen += 1
        if seen == events:
            return


async def run_block(mode: str, sessions: int, events: int, pause: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteSessionStore.open(Path(tmp) / "orchestrator.db")
        writer = EventWriter(store)
        writer.start()
        hub: Hub = ImmediateHub(writer) if mode == "immediate" else Hub(writer)
        sent: dict[tuple[str, int], float] = {}
        lags: list[float] = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        producers = []
        watchers = []
        for i in range(sessions):
            sid = f"{mode}-{i}"
            producers.append(asyncio.ensure_future(_session(hub, sid, events, pause, sent)))
            await asyncio.sleep(0)
            live = hub.get(sid)
            assert live is not None
            watchers.append(asyncio.ensure_future(_watch(live, events, sent, lags)))
        await asyncio.gather(*producers, *watchers)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        await writer.close()
        await store.close()
    total = sessions * events
    return {
        "mode": mode,
        "events": total,
        "lag_p50_ms": percentile(lags, 50) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "events_per_s": total / wall,
        "cpu_us_per_event": cpu / total * 1e6,
        "batches": writer.batches,
    }


def _median(blocks: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(b[key]) for b in blocks))


async def main_async(repeats: int, seconds: float) -> dict[str, Any]:
    scenarios = {
        "paced, 1 session": (1, int(seconds / 0.05), 0.05),
        "paced, 16 sessions": (16, int(seconds / 0.05), 0.05),
        "paced, 64 sessions": (64, int(seconds / 0.05), 0.05),
        "burst, 64 sessions": (64, 200, 0.0),
    }
    out: dict[str, Any] = {}
    for name, (sessions, events, pause) in scenarios.items():
        blocks: dict[str, list[dict[str, Any]]] = {"immediate": [], "durable": []}
        for _ in range(repeats):
            for mode in ("immediate", "durable"):  # alternating blocks
                blocks[mode].append(await run_block(mode, sessions, events, pause))
        summary: dict[str, Any] = {
            mode: {
                key: round(_median(runs, key), 3)
                for key in ("lag_p50_ms", "lag_p99_ms", "events_per_s", "cpu_us_per_event", "batches")
            }
            for mode, runs in blocks.items()
        }
        ref, new = summary["immediate"], summary["durable"]
        summary["added_lag_p50_ms"] = round(new["lag_p50_ms"] - ref["lag_p50_ms"], 3)
        summary["added_lag_p99_ms"] = round(new["lag_p99_ms"] - ref["lag_p99_ms"], 3)
        summary["throughput_ratio"] = round(new["events_per_s"] / ref["events_per_s"], 3)
        summary["cpu_ratio"] = round(new["cpu_us_per_event"] / ref["cpu_us_per_event"], 3)
        summary["blocks"] = blocks
        out[name] = summary
        print(
            f"{name:20s} lag p50 {ref['lag_p50_ms']:.3f} -> {new['lag_p50_ms']:.3f} ms, "
            f"p99 {ref['lag_p99_ms']:.3f} -> {new['lag_p99_ms']:.3f} ms, "
            f"{ref['events_per_s']:.0f} -> {new['events_per_s']:.0f} ev/s, "
            f"CPU {ref['cpu_us_per_event']:.1f} -> {new['cpu_us_per_event']:.1f} us/event"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/durability.json"))
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args.repeats, args.seconds))
    result["measured"] = time.strftime("%Y-%m-%d")
    result["cpus"] = os.cpu_count()
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
