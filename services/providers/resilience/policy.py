"""The per-server call policy: retries, per-model limiters and breakers, their configuration from env.

One :class:`Resilience` is built per server (``Resilience.from_env()`` in ``build``) and shared by
every call; limiters and breakers are created lazily per model id (ids are validated against the
catalogue before a call gets here, so the maps stay bounded).

Environment (all optional; a bad value is a ``ConfigError`` naming the variable):

==================================== ======= ==============================================================
variable                             default meaning
==================================== ======= ==============================================================
``ORX_PROVIDER_MAX_ATTEMPTS``        3       attempts per call, the first included (1 = no retries)
``ORX_PROVIDER_BACKOFF_BASE``        0.5     seconds; cap of the jittered wait after the first failure
``ORX_PROVIDER_BACKOFF_MAX``         8       seconds; the cap never grows beyond this
``ORX_PROVIDER_MAX_RETRY_AFTER``     30      seconds; a longer Retry-After fails the call at once
``ORX_PROVIDER_BREAKER_THRESHOLD``   5       consecutive counted failures that open a model's circuit
``ORX_PROVIDER_BREAKER_COOLDOWN``    30      seconds open after the first trip (doubles per trip in a row)
``ORX_PROVIDER_BREAKER_MAX_COOLDOWN`` 300    seconds; cap of the growing cooldown
``ORX_PROVIDER_RPM``                 600     requests per minute per model
``ORX_PROVIDER_FREE_RPM``            20      requests per minute for ``:free`` model ids
``ORX_PROVIDER_CONCURRENCY``         32      requests in flight per model
``ORX_PROVIDER_QUEUE``               64      calls that may wait for a slot per model (0: no queueing)
``ORX_PROVIDER_QUEUE_WAIT``          30      seconds a call may wait for a slot (never past its deadline)
``ORX_PROVIDER_MODEL_LIMITS``        ""      per-model ``ID=RPM[/CONCURRENCY]``, comma-separated, e.g.
                                             ``z-ai/glm-4.5=120/8,openai/gpt-oss-120b:free=10,x/y=/2``
==================================== ======= ==============================================================
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from orchestratex.errors import ConfigError
from services.providers.backend import BackendError
from services.providers.resilience.breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitState,
    Outcome,
)
from services.providers.resilience.clock import SYSTEM_CLOCK, Clock
from services.providers.resilience.limiter import LimitOverride, LimitsConfig, ModelLimiter
from services.providers.resilience.retry import RetryDecision, RetryPolicy

T = TypeVar("T", int, float)

ENV_VARS = (
    "ORX_PROVIDER_MAX_ATTEMPTS",
    "ORX_PROVIDER_BACKOFF_BASE",
    "ORX_PROVIDER_BACKOFF_MAX",
    "ORX_PROVIDER_MAX_RETRY_AFTER",
    "ORX_PROVIDER_BREAKER_THRESHOLD",
    "ORX_PROVIDER_BREAKER_COOLDOWN",
    "ORX_PROVIDER_BREAKER_MAX_COOLDOWN",
    "ORX_PROVIDER_RPM",
    "ORX_PROVIDER_FREE_RPM",
    "ORX_PROVIDER_CONCURRENCY",
    "ORX_PROVIDER_QUEUE",
    "ORX_PROVIDER_QUEUE_WAIT",
    "ORX_PROVIDER_MODEL_LIMITS",
)
"""Every environment variable :meth:`Resilience.from_env` reads (all optional)."""


@dataclass(frozen=True)
class ResilienceConfig:
    """All resilience settings."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(frozen=True)
class HealthSnapshot:
    """Live health of one model, for ``ListModels`` (``ModelHealth`` in common.proto) and logs."""

    state: CircuitState
    consecutive_failures: int
    cooldown_remaining: float
    in_flight: int
    queued: int


@dataclass
class AttemptGuard:
    """Set ``outcome`` before leaving :meth:`Resilience.admit`; left NEUTRAL it counts for nothing."""

    outcome: Outcome = Outcome.NEUTRAL


class Resilience:
    """Retry policy plus a rate limiter and a circuit breaker per model, on one clock.

    ``rng`` drives the backoff jitter (pass a seeded ``random.Random`` for reproducible tests).
    """

    def __init__(
        self,
        config: ResilienceConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config or ResilienceConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiters: dict[str, ModelLimiter] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> Resilience:
        """Read :data:`ENV_VARS` (``os.environ`` when ``env`` is None); :class:`ConfigError` names a bad one."""
        return cls(config_from_env(os.environ if env is None else env), clock=clock, rng=rng)

    @property
    def config(self) -> ResilienceConfig:
        """The settings."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The clock deadlines are expressed on."""
        return self._clock

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._config.retry

    def deadline_after(self, time_remaining: float | None) -> float | None:
        """Absolute deadline on :attr:`clock` from a relative budget (gRPC ``context.time_remaining()``)."""
        return None if time_remaining is None else self._clock.now() + time_remaining

    def limiter(self, model_id: str) -> ModelLimiter:
        """The rate limiter of ``model_id`` (created on first use)."""
        limiter = self._limiters.get(model_id)
        if limiter is None:
            limiter = ModelLimiter(model_id, self._config.limits.for_model(model_id), self._clock)
            self._limiters[model_id] = limiter
        return limiter

    def breaker(self, model_id: str) -> CircuitBreaker:
        """The circuit breaker of ``model_id`` (created on first use)."""
        breaker = self._breakers.get(model_id)
        if breaker is None:
            breaker = CircuitBreaker(model_id, self._config.breaker, self._clock)
            self._breakers[model_id] = breaker
        return breaker

    def health(self, model_id: str) -> HealthSnapshot:
        """Live health of ``model_id`` (a model never called is CLOSED with nothing in flight)."""
        breaker = self._breakers.get(model_id)
        limiter = self._limiters.get(model_id)
        if breaker is None:
            state, failures, remaining = CircuitState.CLOSED, 0, 0.0
        else:
            snap = breaker.snapshot()
            state, failures, remaining = snap.state, snap.consecutive_failures, snap.cooldown_remaining
        return HealthSnapshot(
            state=state,
            consecutive_failures=failures,
            cooldown_remaining=remaining,
            in_flight=0 if limiter is None else limiter.in_flight,
            queued=0 if limiter is None else limiter.queued,
        )

    @contextlib.asynccontextmanager
    async def admit(self, model_id: str, deadline: float | None) -> AsyncIterator[AttemptGuard]:
        """Admission for one upstream attempt: the breaker, then a limiter slot held for the body.

        Raises :class:`CircuitOpen` or :class:`ClientRateLimited` before the body runs. The guard's
        ``outcome`` is recorded on exit; cancellation and early close leave it NEUTRAL.
        """
        breaker = self.breaker(model_id)
        ticket = breaker.admit()
        guard = AttemptGuard()
        try:
            async with self.limiter(model_id).slot(deadline):
                yield guard
        finally:
            breaker.record(ticket, guard.outcome)

    def decide(self, exc: BackendError, *, attempts: int, streamed: bool, deadline: float | None) -> RetryDecision:
        """The retry decision after attempt ``attempts`` failed with ``exc`` (see :class:`RetryPolicy`)."""
        return self._config.retry.decide(
            exc, attempts=attempts, streamed=streamed, now=self._clock.now(), deadline=deadline, rng=self._rng
        )

    def note_retry_after(self, model_id: str, retry_after: float) -> None:
        """A provider asked to wait: hold new starts on this model (capped at ``max_retry_after``)."""
        wait = min(max(retry_after, 0.0), self._config.retry.max_retry_after)
        self.limiter(model_id).hold_until(self._clock.now() + wait)


def config_from_env(env: Mapping[str, str]) -> ResilienceConfig:
    """Parse :data:`ENV_VARS`; unset or blank variables keep the defaults."""
    retry_defaults, limit_defaults, breaker_defaults = RetryPolicy(), LimitsConfig(), BreakerConfig()
    retry = RetryPolicy(
        max_attempts=_read(env, "ORX_PROVIDER_MAX_ATTEMPTS", retry_defaults.max_attempts, int, 1, 20),
        base_delay=_read(env, "ORX_PROVIDER_BACKOFF_BASE", retry_defaults.base_delay, float, 0, 60),
        max_delay=_read(env, "ORX_PROVIDER_BACKOFF_MAX", retry_defaults.max_delay, float, 0, 600),
        max_retry_after=_read(env, "ORX_PROVIDER_MAX_RETRY_AFTER", retry_defaults.max_retry_after, float, 0, 3600),
    )
    cooldown = _read(env, "ORX_PROVIDER_BREAKER_COOLDOWN", breaker_defaults.cooldown, float, 0, 3600)
    max_cooldown = _read(
        env, "ORX_PROVIDER_BREAKER_MAX_COOLDOWN", max(breaker_defaults.max_cooldown, cooldown), float, 0, 86400
    )
    if max_cooldown < cooldown:
        raise ConfigError(
            f"ORX_PROVIDER_BREAKER_MAX_COOLDOWN: must be >= ORX_PROVIDER_BREAKER_COOLDOWN ({cooldown:g}), "
            f"got {max_cooldown:g}"
        )
    breaker = BreakerConfig(
        threshold=_read(env, "ORX_PROVIDER_BREAKER_THRESHOLD", breaker_defaults.threshold, int, 1, 1000),
        cooldown=cooldown,
        max_cooldown=max_cooldown,
    )
    limits = LimitsConfig(
        rpm=_read(env, "ORX_PROVIDER_RPM", limit_defaults.rpm, int, 1, 1_000_000),
        free_rpm=_read(env, "ORX_PROVIDER_FREE_RPM", limit_defaults.free_rpm, int, 1, 1_000_000),
        max_concurrent=_read(env, "ORX_PROVIDER_CONCURRENCY", limit_defaults.max_concurrent, int, 1, 100_000),
        max_queue=_read(env, "ORX_PROVIDER_QUEUE", limit_defaults.max_queue, int, 0, 100_000),
        max_wait=_read(env, "ORX_PROVIDER_QUEUE_WAIT", limit_defaults.max_wait, float, 0, 3600),
        overrides=_model_limits(env.get("ORX_PROVIDER_MODEL_LIMITS", "")),
    )
    return ResilienceConfig(retry=retry, limits=limits, breaker=breaker)


def _read(env: Mapping[str, str], var: str, default: T, kind: Callable[[str], T], low: T, high: T) -> T:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{var}: expected {noun}, got {raw!r}") from None
    if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
        raise ConfigError(f"{var}: must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _model_limits(raw: str) -> dict[str, LimitOverride]:
    """``id=RPM[/CONCURRENCY],...`` e.g. ``z-ai/glm-4.5=120/8,openai/gpt-oss-120b:free=10,x/y=/2``."""
    var = "ORX_PROVIDER_MODEL_LIMITS"
    overrides: dict[str, LimitOverride] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        model_id, sep, spec = item.rpartition("=")
        model_id = model_id.strip()
        if not sep or not model_id:
            raise ConfigError(f"{var}: expected MODEL=RPM[/CONCURRENCY], got {item!r}")
        rpm_text, _, concurrency_text = spec.partition("/")
        try:
            rpm = int(rpm_text) if rpm_text.strip() else None
            concurrency = int(concurrency_text) if concurrency_text.strip() else None
        except ValueError:
            raise ConfigError(f"{var}: {model_id}: expected integers in RPM[/CONCURRENCY], got {spec!r}") from None
        if (rpm is None and concurrency is None) or any(v is not None and v < 1 for v in (rpm, concurrency)):
            raise ConfigError(f"{var}: {model_id}: limits must be integers >= 1, got {spec!r}")
        overrides[model_id] = LimitOverride(rpm=rpm, max_concurrent=concurrency)
    return overrides
