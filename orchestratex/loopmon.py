"""Event-loop lag monitor: how long an event that arrives at an arbitrary moment waits for the loop to run it.

Two users. ``ORX_LOOP_MONITOR=<path>``: the process samples lag every 10 ms and writes a JSON summary (samples,
p50/p99/max lag in ms, peak RSS) to ``path`` when it shuts down (the benchmarks). And the metrics endpoint
(:mod:`orchestratex.metrics`), which feeds every sample to the ``orx_event_loop_lag_seconds`` histogram.

**What a sample is.** A small thread is due to wake every ``interval`` (``threading.Event.wait``: a
high-resolution sleep) and hands the loop a callback with ``call_soon_threadsafe``, which wakes it as a socket
would; the lag is the time from when the poke was due (:func:`time.perf_counter`) until the loop runs that
callback: whatever the loop was busy with when the "event" arrived (the thread waits for the GIL like any I/O
completion of gRPC's threads), plus the rest of its batch of ready callbacks. Because the thread's schedule is not
the loop's, the samples land at arbitrary points of the loop's work, as network events do.

Two earlier designs were wrong in ways the benchmark (``bench/loopmon_bench.py``) shows. Timing an
``asyncio.sleep`` measures the timer's lateness, and uvloop's timers (libuv) tick in whole milliseconds, so an
idle loop read 0-1 ms and a busy one was rounded up to the next millisecond. A timer that schedules a
``call_soon`` callback has no rounding, but it always samples just after the timer phase, where the queue of
ready callbacks is shortest: on a loop running bursts of up to 1.2 ms of work it reported a p99 of 0.18 ms.
Timing from when the thread *ran* (rather than when it was due) was wrong too (p99 0.06 ms on the same loop): the
thread runs only when the loop releases the GIL, that is when it is idle.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class LoopLagMonitor:
    """Samples event-loop lag in the background (a daemon thread that pokes the loop).

    Keeps up to ``max_samples`` samples for :meth:`summary` (0 keeps none) and passes each one to ``observe``
    (called on the loop, so it needs no locking).
    """

    def __init__(
        self,
        interval: float = 0.01,
        max_samples: int = 1_000_000,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.observe = observe
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin sampling the running loop."""
        loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poke, args=(loop,), name="loop-lag-monitor", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop sampling (waits for the thread in the default executor, never blocking the loop)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _poke(self, loop: asyncio.AbstractEventLoop) -> None:
        # Lag is measured from when the poke was due, not from when this thread ran: a thread needs the GIL,
        # which a busy loop holds, so a clock read after the wake-up would only ever see the loop's idle moments.
        clock = time.perf_counter
        due = clock() + self.interval
        while not self._stop.wait(max(0.0, due - clock())):
            try:
                loop.call_soon_threadsafe(self._measure, due)
            except RuntimeError:  # the loop is closed
                return
            due = max(due + self.interval, clock())

    def _measure(self, poked: float) -> None:
        lag = time.perf_counter() - poked
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
