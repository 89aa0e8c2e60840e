"""The event-loop lag monitor: a loop that is blocked shows up as lag, an idle one does not."""

from __future__ import annotations

import asyncio
import time

from orchestratex.loopmon import LoopLagMonitor


async def test_a_blocked_loop_is_measured_as_lag_from_when_the_poke_was_due() -> None:
    seen: list[float] = []
    got_big = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        if lag >= 0.04:
            got_big.set()

    monitor = LoopLagMonitor(interval=0.005, observe=observe)
    monitor.start()
    try:
        time.sleep(0.06)  # noqa: ASYNC251 - blocking the loop is the point: pokes due meanwhile wait
        await asyncio.wait_for(got_big.wait(), timeout=10)
    finally:
        await monitor.stop()
    assert max(monitor.samples) >= 0.04
    assert monitor.samples == seen  # every sample is kept and observed


async def test_an_idle_loop_shows_small_lag_and_stop_ends_sampling() -> None:
    monitor = LoopLagMonitor(interval=0.002)
    enough = asyncio.Event()
    monitor.observe = lambda lag: enough.set() if len(monitor.samples) >= 20 else None
    monitor.start()
    await asyncio.wait_for(enough.wait(), timeout=10)
    await monitor.stop()
    count = len(monitor.samples)
    # The median of an idle loop is a thread hand-off, far below the 40 ms a blocked loop shows above.
    assert sorted(monitor.samples)[count // 2] < 0.02
    summary = monitor.summary()
    assert summary["samples"] == count and summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    await asyncio.sleep(0)  # callbacks already queued by the stopped thread may still run once
    settled = len(monitor.samples)
    assert settled <= count + 1
    assert monitor._thread is None


async def test_max_samples_bounds_what_is_kept_but_not_what_is_observed() -> None:
    observed = asyncio.Queue[float]()
    monitor = LoopLagMonitor(interval=0.001, max_samples=3, observe=observed.put_nowait)
    monitor.start()
    for _ in range(6):
        await asyncio.wait_for(observed.get(), timeout=10)
    await monitor.stop()
    assert len(monitor.samples) == 3
