"""Event-loop lag monitor: how late the loop wakes a task that asked to sleep a few milliseconds.

Enabled per process with ``ORX_LOOP_MONITOR=<path>``: the process samples lag every 5 ms and writes a
JSON summary (samples, p50/p99/max lag in ms, peak RSS) to ``path`` when it shuts down. Used by the
benchmarks; cheap enough to leave on in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from pathlib import Path
from typing import Any

import orjson


class LoopLagMonitor:
    """Samples event-loop lag in the background."""

    def __init__(self, interval: float = 0.005, max_samples: int = 1_000_000) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = loop.time() - start - self.interval
            if len(self.samples) < self.max_samples:
                self.samples.append(max(0.0, lag))

    def summary(self) -> dict[str, Any]:
        """Lag percentiles in milliseconds and the process's peak resident memory."""
        ordered = sorted(self.samples)
        out: dict[str, Any] = {"samples": len(ordered), "rss_peak_kib": _status_kib("VmHWM")}
        if ordered:
            q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
            out.update(p50_ms=q[49] * 1000, p99_ms=q[98] * 1000, max_ms=ordered[-1] * 1000)
        return out

    def write(self, path: Path) -> None:
        """Write :meth:`summary` as JSON."""
        path.write_bytes(orjson.dumps(self.summary(), option=orjson.OPT_INDENT_2))


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
