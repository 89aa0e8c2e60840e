"""Client-side rate limits per model: requests per minute, concurrent requests, bounded queueing.

Why: a provider's 429 costs a round trip, counts against the model's health and often comes with
a long Retry-After; staying under the known limits is cheaper than hitting them. OpenRouter's
``:free`` variants allow 20 requests per minute (docs/openrouter.md), so those default to 20/min;
other models get generous defaults (3,000/min, 256 in flight) that only stop runaway fan-out.

Policy:

* **Sliding window** of ``rpm`` starts per ``window`` seconds: at most ``rpm`` upstream requests
  begin in any window, exactly what a "N per minute" limit promises (a token bucket would allow
  bursts of up to twice that across a window boundary). Every attempt, retries included, counts.
* **Concurrency**: at most ``max_concurrent`` requests in flight; a slot is held until the stream
  ends, fails, or is closed.
* **Bounded FIFO queue**: a call that cannot start waits in line, at most ``max_queue`` of them,
  each at most ``max_wait`` seconds and never past its caller's deadline. When the rate window
  alone shows the wait would end too late, or the queue is full, it fails *at once* with
  :class:`ClientRateLimited` (RESOURCE_EXHAUSTED with a retry-after estimate) rather than holding
  a request nobody will wait for.
* **Upstream hints**: :meth:`ModelLimiter.hold_until` pauses new starts after a provider 429 with
  Retry-After, so concurrent callers do not hammer a model that just said "wait".
* Waiting is cancellable: a caller that goes away leaves the queue and never holds a slot.
* **Shares**: limits hold per process. Where several processes share the configured figures (workers,
  providers pods counted by ``ORX_PROVIDER_PEERS``), each enforces :meth:`LimitsConfig.shared_by` of them, and
  :meth:`ModelLimiter.set_limits` changes a limiter's share in place as the count changes: calls holding a slot
  keep it, queued calls stay in line and re-check against the new figures (a larger share starts them at
  once), and the rate window keeps the starts it has seen, so a smaller share takes effect as it moves on.

Metrics (:mod:`services.providers.metrics`, children bound per model): ``orx_provider_limiter_queue_length``
and ``orx_provider_limiter_in_flight`` read :attr:`ModelLimiter.queued` and :attr:`ModelLimiter.in_flight` when
scraped (exact, and free on the call path); ``orx_provider_limiter_wait_seconds`` observes each admission's
wait (0 without queueing); ``orx_provider_rejections_total`` counts refusals as ``queue_full``,
``queue_timeout`` or ``deadline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from orchestratex.config import limit_share, queue_share
from services.providers import metrics
from services.providers.resilience.clock import Clock
from services.providers.resilience.errors import ClientRateLimited

FREE_SUFFIX = ":free"
"""Model ids ending with this are OpenRouter's free variants (20 requests/minute)."""

NOMINAL_RETRY_AFTER = 1.0
"""Retry-after hint (seconds) when the wait depends on other calls finishing, which can't be predicted."""


@dataclass(frozen=True)
class ModelLimits:
    """The effective limits of one model."""

    rpm: int
    max_concurrent: int
    max_queue: int
    max_wait: float
    window: float = 60.0


@dataclass(frozen=True)
class LimitOverride:
    """Per-model overrides; None keeps the default."""

    rpm: int | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True)
class LimitsConfig:
    """Defaults for every model, the ``:free`` default, and per-model overrides (by exact id)."""

    rpm: int = 3000
    free_rpm: int = 20
    max_concurrent: int = 256
    max_queue: int = 256
    max_wait: float = 30.0
    window: float = 60.0
    overrides: Mapping[str, LimitOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("rpm", "free_rpm", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if not (math.isfinite(self.max_wait) and self.max_wait >= 0):
            raise ValueError("max_wait must be a finite number >= 0")
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError("window must be a positive number")
        for model_id, override in self.overrides.items():
            for value in (override.rpm, override.max_concurrent):
                if value is not None and value < 1:
                    raise ValueError(f"limits for {model_id}: values must be at least 1")

    def shared_by(self, parts: int) -> LimitsConfig:
        """What one of ``parts`` processes enforces so that together they stay within these limits: every rate
        and concurrency by :func:`~orchestratex.config.limit_share` (rounded down, at least 1), the queue by
        :func:`~orchestratex.config.queue_share` (rounded up); ``max_wait`` and the window unchanged."""
        if parts <= 1:
            return self

        def share(value: int | None) -> int | None:
            return None if value is None else limit_share(value, parts)

        return replace(
            self,
            rpm=limit_share(self.rpm, parts),
            free_rpm=limit_share(self.free_rpm, parts),
            max_concurrent=limit_share(self.max_concurrent, parts),
            max_queue=queue_share(self.max_queue, parts),
            overrides={
                model_id: LimitOverride(rpm=share(override.rpm), max_concurrent=share(override.max_concurrent))
                for model_id, override in self.overrides.items()
            },
        )

    def for_model(self, model_id: str) -> ModelLimits:
        """Effective limits of ``model_id``: override, else ``free_rpm`` for ``:free`` ids, else defaults."""
        override = self.overrides.get(model_id, LimitOverride())
        default_rpm = self.free_rpm if model_id.endswith(FREE_SUFFIX) else self.rpm
        return ModelLimits(
            rpm=override.rpm if override.rpm is not None else default_rpm,
            max_concurrent=override.max_concurrent if override.max_concurrent is not None else self.max_concurrent,
            max_queue=self.max_queue,
            max_wait=self.max_wait,
            window=self.window,
        )


class ModelLimiter:
    """The limiter of one model. Use ``async with limiter.slot(deadline): <one upstream request>``."""

    def __init__(self, model_id: str, limits: ModelLimits, clock: Clock) -> None:
        self._model_id = model_id
        self._limits = limits
        self._clock = clock
        self._starts: deque[float] = deque()
        self._in_flight = 0
        self._hold_until = -math.inf
        self._queue: deque[object] = deque()
        self._changed = asyncio.Event()
        self._waited = metrics.LIMITER_WAIT.labels(model_id)
        # Read when scraped, through a weak reference: the gauges never keep a dropped limiter alive.
        ref = weakref.ref(self)
        metrics.LIMITER_QUEUE_LENGTH.labels(model_id).set_function(lambda: _queued(ref()))
        metrics.LIMITER_IN_FLIGHT.labels(model_id).set_function(lambda: _in_flight(ref()))

    @property
    def limits(self) -> ModelLimits:
        """The effective limits."""
        return self._limits

    def set_limits(self, limits: ModelLimits) -> None:
        """Enforce ``limits`` from now on (a changed share). Nothing running is cut: a call holding a slot keeps
        it (with fewer slots, new starts wait until enough have ended), and the starts already in the rate window
        still count. Queued calls stay in line and re-check at once: they may start sooner, or, when the smaller
        share means they can no longer start before their deadline or ``max_wait``, be refused as on arrival."""
        if limits != self._limits:
            self._limits = limits
            self._notify()

    @property
    def in_flight(self) -> int:
        """Requests holding a slot."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Calls waiting for a slot."""
        return len(self._queue)

    def hold_until(self, when: float) -> None:
        """Start no new request before ``when`` (a provider asked to wait). Never shortens a hold."""
        if when > self._hold_until:
            self._hold_until = when
            self._notify()

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body. Raises :class:`ClientRateLimited` when none is free in time."""
        await self._acquire(deadline)
        # No await between a successful acquire and this try: a cancellation cannot leak the slot.
        try:
            yield
        finally:
            self._in_flight -= 1
            self._notify()

    async def _acquire(self, deadline: float | None) -> None:
        now = self._clock.now()
        self._prune(now)
        if not self._queue and self._ready(now):
            self._start(now)
            self._waited.observe(0.0)
            return
        arrived = now
        position = len(self._queue) + 1
        if position > self._limits.max_queue:
            raise self._rejected(f"{len(self._queue)} calls already waiting", now, position, "queue_full")
        limit = now + self._limits.max_wait
        why, reason = f"no slot free within {self._limits.max_wait:g}s", "queue_timeout"
        if deadline is not None and deadline < limit:
            limit, why, reason = deadline, "no slot free before the deadline", "deadline"
        if self._eta(now, position) > limit:
            raise self._rejected(why, now, position, reason)

        token = object()
        self._queue.append(token)
        try:
            while True:
                changed = self._changed
                now = self._clock.now()
                self._prune(now)
                head = self._queue[0] is token
                if head and self._ready(now):
                    self._queue.popleft()
                    self._start(now)
                    self._waited.observe(now - arrived)
                    # The next in line may be able to start too (several slots freed at once).
                    self._notify()
                    return
                position = self._queue.index(token) + 1
                eta = self._eta(now, position)
                if now >= limit or eta > limit:
                    raise self._rejected(why, now, position, reason)
                wake = limit
                if head and self._in_flight < self._limits.max_concurrent:
                    wake = min(wake, eta)  # only the rate window (or a hold) is in the way
                await self._wait(changed, wake - now)
        finally:
            if token in self._queue:  # left without a slot: rejected or cancelled
                self._queue.remove(token)
                self._notify()

    def _ready(self, now: float) -> bool:
        return (
            self._in_flight < self._limits.max_concurrent
            and self._hold_until <= now
            and len(self._starts) < self._limits.rpm
        )

    def _start(self, now: float) -> None:
        self._in_flight += 1
        self._starts.append(now)

    def _prune(self, now: float) -> None:
        # Same expression as in _eta (start + window), so "ready" and "eta <= now" never disagree by a rounding.
        window = self._limits.window
        while self._starts and self._starts[0] + window <= now:
            self._starts.popleft()

    def _eta(self, now: float, position: int) -> float:
        """Earliest start of the ``position``-th call in line as far as the window and holds allow."""
        rpm, window = self._limits.rpm, self._limits.window
        earliest = max(now, self._hold_until)
        if len(self._starts) + position <= rpm:
            return earliest
        # Replay the window: each start frees a place ``window`` seconds later.
        starts = list(self._starts)[-rpm:]
        t = earliest
        for _ in range(position):
            if len(starts) >= rpm:
                t = max(t, starts[-rpm] + window)
            starts.append(t)
        return t

    def _rejected(self, why: str, now: float, position: int, reason: str) -> ClientRateLimited:
        """The refusal to raise; ``reason`` labels ``orx_provider_rejections_total``."""
        metrics.REJECTIONS.labels(self._model_id, reason).inc()
        limits = self._limits
        retry_after = max(self._eta(now, position) - now, NOMINAL_RETRY_AFTER)
        return ClientRateLimited(
            f"{self._model_id}: client-side rate limit ({limits.rpm} requests per {limits.window:g}s, "
            f"{limits.max_concurrent} concurrent): {why}",
            retry_after,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, changed: asyncio.Event, seconds: float) -> None:
        """Until the limiter's state changes or ``seconds`` pass on the clock."""
        woken = asyncio.ensure_future(changed.wait())
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((woken, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            timer.cancel()


def _queued(limiter: ModelLimiter | None) -> float:
    """``orx_provider_limiter_queue_length`` of ``limiter`` (0 once it is gone)."""
    return 0 if limiter is None else limiter.queued


def _in_flight(limiter: ModelLimiter | None) -> float:
    """``orx_provider_limiter_in_flight`` of ``limiter`` (0 once it is gone)."""
    return 0 if limiter is None else limiter.in_flight
