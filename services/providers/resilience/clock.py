"""Time sources for the resilience layer: the real monotonic clock and a manual one for tests.

Every policy in this package reads time and waits through a :class:`Clock` handed to it, never
through ``time``/``asyncio.sleep`` directly, so that tests can drive backoff schedules, rate-limit
windows and breaker cooldowns of minutes in microseconds, deterministically.

Deadlines are absolute times on the same clock (``clock.now() + context.time_remaining()``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic time source that can also wait."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences and comparisons are meaningful)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns after one event-loop turn when ``seconds <= 0``); cancellable."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`asyncio.sleep`."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep`` (negative durations are treated as 0)."""
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()
"""The shared real clock (stateless)."""


class ManualClock:
    """A clock that moves only when told to — for deterministic tests of time-based policies.

    * ``auto_advance=True``: every :meth:`sleep` moves time forward by exactly the slept duration
      and returns after one event-loop turn. Ideal for one task at a time (a retry loop).
    * ``auto_advance=False``: sleepers stay blocked until :meth:`advance` moves time past their wake
      time. Use it when several tasks wait concurrently (rate limiters); :meth:`wait_for_sleepers`
      lets a test wait until tasks are parked without sleeping for real.

    ``sleeps`` records every requested duration, in order.
    """

    def __init__(self, start: float = 1000.0, *, auto_advance: bool = False) -> None:
        self._now = start
        self._auto = auto_advance
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed: asyncio.Event | None = None
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The current manual time."""
        return self._now

    @property
    def pending_sleepers(self) -> int:
        """Tasks currently blocked in :meth:`sleep` (manual mode)."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds``; auto mode advances time, manual mode waits for :meth:`advance`."""
        self.sleeps.append(seconds)
        if self._auto or seconds <= 0:
            if self._auto and seconds > 0:
                self._now += seconds
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + seconds, future)
        self._sleepers.append(entry)
        self._signal()
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                self._signal()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose wake time has come (earliest first)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        due = sorted((e for e in self._sleepers if e[0] <= self._now), key=lambda e: e[0])
        for entry in due:
            self._sleepers.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)
        if due:
            self._signal()

    async def wait_for_sleepers(self, count: int) -> None:
        """Return once at least ``count`` tasks are blocked in :meth:`sleep`."""
        while len(self._sleepers) < count:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
