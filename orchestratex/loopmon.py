"""Event-loop lag monitor: how late the loop wakes a task that asked to sleep a few milliseconds.

Two users. ``ORX_LOOP_MONITOR=<path>``: the process samples lag every 5 ms and writes a JSON summary (samples,
p50/p99/max lag in ms, peak RSS) to ``path`` when it shuts down (the benchmarks). And the metrics endpoint
(:mod:`orchestratex.metrics`), which feeds every sample to the ``orx_event_loop_lag_seconds`` histogram.

Lag is measured with :func:`time.perf_counter`, not ``loop.time()``: uvloop's clock has a resolution of 1 ms,
so most lags would read 0 or 1 ms. What it measures still includes the loop's timer granularity: on uvloop
(libuv timers, whole milliseconds) an idle loop shows up to about 1 ms; on the standard loop, tens of µs.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class LoopLagMonitor:
    """Samples event-loop lag in the background.

    Keeps up to ``max_samples`` samples for :meth:`summary` (0 keeps none) and passes each one to ``observe``.
    """

    def __init__(
        self,
        interval: float = 0.005,
        max_samples: int = 1_000_000,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.observe = observe
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
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(self.interval)
            lag = max(0.0, clock() - start - self.interval)
            if self.observe is not None:
                self.observe(lag)
            if len(self.samples) < self.max_samples:
                self.samples.append(lag)

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
