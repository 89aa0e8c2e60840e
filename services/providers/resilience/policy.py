"""The per-server call policy: retries, per-model limiters and breakers, their configuration from settings.

One :class:`Resilience` is built per server (``Resilience.from_settings(settings.providers.resilience)``
in ``build``) and shared by every call; limiters and breakers are created lazily per model id (ids are
validated against the catalogue before a call gets here, so the maps stay bounded).

**Holds: what a vendor says about more than the call it answers** (:meth:`Resilience.note_failure`):

* *A Retry-After window* (``Retry-After`` in seconds or as an HTTP date, OpenRouter's
  ``X-RateLimit-Reset``, or the retry hints of an error body) on a retryable failure (429, 503...).
  Up to ``ORX_PROVIDER_MAX_RETRY_AFTER`` the model's limiter holds new starts: callers queue and the
  call itself retries after the window. A longer window is one nobody waits out, so the model is
  *held* for the vendor's whole window (at most ``ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW``, 1 h: a
  "come back tomorrow" hint is re-checked hourly rather than trusted for a day): every call in it
  fails at once with the kind the vendor gave (RATE_LIMITED -> RESOURCE_EXHAUSTED, UPSTREAM_ERROR ->
  UNAVAILABLE) and the time left as retry-after, without contacting the vendor, and ``ListModels``
  shows the model OPEN (reason RATE_LIMITED) with that time as its cooldown, so the selector and the
  orchestrator's fallback pick another model.
* *A rejected API key* (401, ``FailureKind.AUTH``). The key belongs to the provider, not the model:
  every model of that provider would fail the same way. The whole provider is held for
  ``ORX_PROVIDER_AUTH_COOLDOWN`` (60 s; 0 turns this off): calls fail at once with UNAUTHENTICATED,
  ``ListModels`` shows all its models OPEN (reason AUTH), and after the cooldown the next call finds
  out whether the key works again (a disabled key can be re-enabled at the vendor without a restart).
  A success on any of the provider's models ends the hold.
* *Insufficient credits* (402, ``FailureKind.CREDITS``) hold nothing: a 402 can depend on the request
  (``max_tokens`` more than the balance affords) and the model (``:free`` variants cost nothing), a
  top-up fixes it at once, and the vendor answers it fast and free. It fails that call only.

Every call refused by a hold counts in ``orx_provider_rejections_total`` as ``held_`` + the kind
(``held_rate_limited``, ``held_upstream_error``, ``held_auth``; :mod:`services.providers.metrics`).

Environment (all optional; parsed by :class:`orchestratex.config.ResilienceSettings`, where a bad value is a
``ConfigError`` naming the variable):

==================================== ======= ==============================================================
variable                             default meaning
==================================== ======= ==============================================================
``ORX_PROVIDER_MAX_ATTEMPTS``        3       attempts per call, the first included (1 = no retries)
``ORX_PROVIDER_BACKOFF_BASE``        0.5     seconds; cap of the jittered wait after the first failure
``ORX_PROVIDER_BACKOFF_MAX``         8       seconds; the cap never grows beyond this
``ORX_PROVIDER_MAX_RETRY_AFTER``     30      seconds; a longer Retry-After fails the call at once and
                                             holds the model for the vendor's window
``ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW`` 3600  seconds; the longest such window honoured (a longer one is cut)
``ORX_PROVIDER_AUTH_COOLDOWN``       60      seconds a provider is held after it rejects the key (0: never)
``ORX_PROVIDER_BREAKER_THRESHOLD``   5       consecutive counted failures that open a model's circuit
``ORX_PROVIDER_BREAKER_COOLDOWN``    30      seconds open after the first trip (doubles per trip in a row)
``ORX_PROVIDER_BREAKER_MAX_COOLDOWN`` 300    seconds; cap of the growing cooldown
``ORX_PROVIDER_RPM``                 3000    requests per minute per model
``ORX_PROVIDER_FREE_RPM``            20      requests per minute for ``:free`` model ids
``ORX_PROVIDER_CONCURRENCY``         256     requests in flight per model
``ORX_PROVIDER_QUEUE``               256     calls that may wait for a slot per model (0: no queueing)
``ORX_PROVIDER_QUEUE_WAIT``          30      seconds a call may wait for a slot (never past its deadline)
``ORX_PROVIDER_MODEL_LIMITS``        ""      per-model ``ID=RPM[/CONCURRENCY]``, comma-separated, e.g.
                                             ``z-ai/glm-4.5=120/8,openai/gpt-oss-120b:free=10,x/y=/2``
``ORX_PROVIDER_PEERS``               ""      a DNS name with one address per providers pod (the headless
                                             Service): each pod enforces its share of the limits above
``ORX_PROVIDER_PEERS_INTERVAL``      10      seconds between two counts of those addresses
==================================== ======= ==============================================================

**Shares of the limits.** The limits are per-model totals. Worker processes of one pod each enforce
``1/workers`` of them from the start (:meth:`~orchestratex.config.ResilienceSettings.per_worker`), and with
``ORX_PROVIDER_PEERS`` a :class:`~services.providers.peers.PeerCount` divides that again by the providers pods it
counts (:meth:`Resilience.share_among`), in place and as often as the count changes. Breakers and holds are
never shared: each process learns them from its own calls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from orchestratex.config import ResilienceSettings
from services.providers import metrics
from services.providers.backend import BackendError, FailureKind
from services.providers.resilience.breaker import (
    BreakerConfig,
    CircuitBreaker,
    CircuitState,
    Outcome,
)
from services.providers.resilience.clock import SYSTEM_CLOCK, Clock
from services.providers.resilience.errors import Held
from services.providers.resilience.limiter import LimitOverride, LimitsConfig, ModelLimiter
from services.providers.resilience.retry import RetryDecision, RetryPolicy, is_retryable

log = logging.getLogger(__name__)

ENV_VARS = (
    "ORX_PROVIDER_MAX_ATTEMPTS",
    "ORX_PROVIDER_BACKOFF_BASE",
    "ORX_PROVIDER_BACKOFF_MAX",
    "ORX_PROVIDER_MAX_RETRY_AFTER",
    "ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW",
    "ORX_PROVIDER_AUTH_COOLDOWN",
    "ORX_PROVIDER_BREAKER_THRESHOLD",
    "ORX_PROVIDER_BREAKER_COOLDOWN",
    "ORX_PROVIDER_BREAKER_MAX_COOLDOWN",
    "ORX_PROVIDER_RPM",
    "ORX_PROVIDER_FREE_RPM",
    "ORX_PROVIDER_CONCURRENCY",
    "ORX_PROVIDER_QUEUE",
    "ORX_PROVIDER_QUEUE_WAIT",
    "ORX_PROVIDER_MODEL_LIMITS",
    "ORX_PROVIDER_PEERS",
    "ORX_PROVIDER_PEERS_INTERVAL",
)
"""Every environment variable of the policy (all optional), parsed by
:class:`orchestratex.config.ResilienceSettings`."""


@dataclass(frozen=True)
class HoldConfig:
    """How long what a vendor says holds a model or its provider (see the module docstring)."""

    max_window: float = 3600.0
    """Longest Retry-After window honoured, in seconds (``ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW``)."""
    auth_cooldown: float = 60.0
    """Seconds a provider is held after it rejected the key; 0 never holds (``ORX_PROVIDER_AUTH_COOLDOWN``)."""

    def __post_init__(self) -> None:
        for name in ("max_window", "auth_cooldown"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")


@dataclass(frozen=True)
class ResilienceConfig:
    """All resilience settings."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    holds: HoldConfig = field(default_factory=HoldConfig)


@dataclass(frozen=True)
class HealthSnapshot:
    """Live health of one model, for ``ListModels`` (``ModelHealth`` in common.proto) and logs.

    ``held`` is set while the model (or its provider) is held — the kind the vendor gave (RATE_LIMITED,
    UPSTREAM_ERROR, AUTH); ``state`` is then OPEN and ``cooldown_remaining`` the time the hold has left.
    """

    state: CircuitState
    consecutive_failures: int
    cooldown_remaining: float
    in_flight: int
    queued: int
    held: FailureKind | None = None


@dataclass(frozen=True)
class _Hold:
    until: float
    kind: FailureKind
    since: float


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
        self._whole_limits = self._config.limits
        self._parts = 1
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiters: dict[str, ModelLimiter] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._model_holds: dict[str, _Hold] = {}
        self._provider_holds: dict[str, _Hold] = {}

    @classmethod
    def from_settings(
        cls,
        settings: ResilienceSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> Resilience:
        """The policy ``settings`` (``Settings.providers.resilience``) configure."""
        return cls(config_from_settings(settings), clock=clock, rng=rng)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> Resilience:
        """:meth:`from_settings` of :data:`ENV_VARS` in ``env`` (tests); :class:`ConfigError` names a bad one."""
        return cls(config_from_env(env), clock=clock, rng=rng)

    @property
    def config(self) -> ResilienceConfig:
        """The settings, with the limits this process enforces now (its share, see :meth:`share_among`)."""
        return self._config

    @property
    def parts(self) -> int:
        """How many processes share the configured limits (1 until :meth:`share_among` says otherwise)."""
        return self._parts

    def share_among(self, parts: int) -> None:
        """Enforce one ``parts``-th of the configured limits from now on (:meth:`LimitsConfig.shared_by`).

        Changed in place on every limiter already made, so no call in flight is cut (see
        :meth:`ModelLimiter.set_limits`). Breakers are untouched.
        """
        parts = max(1, parts)
        if parts == self._parts:
            return
        self._parts = parts
        limits = self._whole_limits.shared_by(parts)
        self._config = replace(self._config, limits=limits)
        for model_id, limiter in self._limiters.items():
            limiter.set_limits(limits.for_model(model_id))

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

    def health(self, model_id: str, provider: str = "") -> HealthSnapshot:
        """Live health of ``model_id`` of ``provider`` (a model never called is CLOSED with nothing in flight)."""
        breaker = self._breakers.get(model_id)
        limiter = self._limiters.get(model_id)
        if breaker is None:
            state, failures, remaining = CircuitState.CLOSED, 0, 0.0
        else:
            snap = breaker.snapshot()
            state, failures, remaining = snap.state, snap.consecutive_failures, snap.cooldown_remaining
        held: FailureKind | None = None
        hold = self._hold_of(model_id, provider)
        if hold is not None:
            state, held = CircuitState.OPEN, hold.kind
            remaining = max(remaining, hold.until - self._clock.now())
        return HealthSnapshot(
            state=state,
            consecutive_failures=failures,
            cooldown_remaining=remaining,
            in_flight=0 if limiter is None else limiter.in_flight,
            queued=0 if limiter is None else limiter.queued,
            held=held,
        )

    @contextlib.asynccontextmanager
    async def admit(self, model_id: str, deadline: float | None, provider: str = "") -> AsyncIterator[AttemptGuard]:
        """Admission for one upstream attempt: holds, the breaker, then a limiter slot held for the body.

        Raises :class:`Held`, :class:`CircuitOpen` or :class:`ClientRateLimited` before the body runs. The
        guard's ``outcome`` is recorded on exit; cancellation and early close leave it NEUTRAL.
        """
        self._check_holds(model_id, provider)
        breaker = self.breaker(model_id)
        ticket = breaker.admit()
        guard = AttemptGuard()
        try:
            async with self.limiter(model_id).slot(deadline):
                yield guard
        finally:
            breaker.record(ticket, guard.outcome)
            if guard.outcome is Outcome.SUCCESS and provider in self._provider_holds:
                del self._provider_holds[provider]  # the key works again
                log.info("provider %s answered again: no longer held", provider)

    def decide(self, exc: BackendError, *, attempts: int, streamed: bool, deadline: float | None) -> RetryDecision:
        """The retry decision after attempt ``attempts`` failed with ``exc`` (see :class:`RetryPolicy`)."""
        return self._config.retry.decide(
            exc, attempts=attempts, streamed=streamed, now=self._clock.now(), deadline=deadline, rng=self._rng
        )

    def note_failure(self, model_id: str, exc: BackendError, *, provider: str = "", streamed: bool = False) -> None:
        """What a failed attempt says beyond itself: a Retry-After window, or a key the provider rejects.

        Nothing is learnt from a failure after the first token (the vendor's hints then describe a call
        already half-answered).
        """
        if streamed:
            return
        if exc.kind is FailureKind.AUTH:
            cooldown = self._config.holds.auth_cooldown
            if provider and cooldown > 0:
                now = self._clock.now()
                self._provider_holds[provider] = _Hold(now + cooldown, FailureKind.AUTH, now)
                log.warning("provider %s rejected the API key: none of its models called for %gs", provider, cooldown)
            return
        if exc.retry_after is not None and is_retryable(exc):
            self.note_retry_after(model_id, exc.retry_after, kind=exc.kind)

    def note_retry_after(
        self, model_id: str, retry_after: float, *, kind: FailureKind = FailureKind.RATE_LIMITED
    ) -> None:
        """A provider asked to wait ``retry_after`` seconds before calling ``model_id`` again.

        Up to ``max_retry_after`` new starts wait in the limiter; beyond it the model is held (calls fail
        fast) for the whole window, at most ``max_window``. Never shortens a hold already in force.
        """
        wait = max(retry_after, 0.0)
        now = self._clock.now()
        if wait <= self._config.retry.max_retry_after:
            self.limiter(model_id).hold_until(now + wait)
            return
        until = now + min(wait, self._config.holds.max_window)
        current = self._model_holds.get(model_id)
        if current is None or current.until < until:
            self._model_holds[model_id] = _Hold(until, kind, now)
            log.warning(
                "%s held for %.0fs: the provider asked to wait %.0fs (%s)", model_id, until - now, wait, kind.value
            )

    def _hold_of(self, model_id: str, provider: str) -> _Hold | None:
        """The hold in force on ``model_id`` or ``provider`` (a rejected key first), dropping expired ones."""
        now = self._clock.now()
        found = None
        for holds, key in ((self._model_holds, model_id), (self._provider_holds, provider)):
            hold = holds.get(key)
            if hold is None:
                continue
            if hold.until <= now:
                del holds[key]
            elif found is None or hold.kind is FailureKind.AUTH:
                found = hold
        return found

    def _check_holds(self, model_id: str, provider: str) -> None:
        hold = self._hold_of(model_id, provider)
        if hold is None:
            return
        now = self._clock.now()
        left = hold.until - now
        if hold.kind is FailureKind.AUTH:
            message = (
                f"{model_id}: not called: {provider} rejected the API key {now - hold.since:.0f}s ago (missing, "
                f"invalid or disabled) and every {provider} model uses it; next attempt in {left:.3g}s"
            )
        elif hold.kind is FailureKind.RATE_LIMITED:
            message = (
                f"{model_id}: not called: the provider's rate-limit window ends in {left:.3g}s "
                f"(it asked to wait {hold.until - hold.since:.3g}s)"
            )
        else:
            message = (
                f"{model_id}: not called: the provider said it is unavailable for {left:.3g}s more "
                f"(it asked to wait {hold.until - hold.since:.3g}s)"
            )
        metrics.REJECTIONS.labels(model_id, f"held_{hold.kind.value}").inc()
        raise Held(message, left, hold.kind)


def config_from_settings(settings: ResilienceSettings) -> ResilienceConfig:
    """The policy's configuration from its settings section (parsed by :mod:`orchestratex.config`)."""
    return ResilienceConfig(
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            base_delay=settings.backoff_base,
            max_delay=settings.backoff_max,
            max_retry_after=settings.max_retry_after,
        ),
        limits=LimitsConfig(
            rpm=settings.rpm,
            free_rpm=settings.free_rpm,
            max_concurrent=settings.concurrency,
            max_queue=settings.queue,
            max_wait=settings.queue_wait,
            overrides={
                model_id: LimitOverride(rpm=limit.rpm, max_concurrent=limit.concurrency)
                for model_id, limit in settings.model_limits.items()
            },
        ),
        breaker=BreakerConfig(
            threshold=settings.breaker_threshold,
            cooldown=settings.breaker_cooldown,
            max_cooldown=settings.breaker_max_cooldown,
        ),
        holds=HoldConfig(max_window=settings.max_rate_limit_window, auth_cooldown=settings.auth_cooldown),
    )


def config_from_env(env: Mapping[str, str]) -> ResilienceConfig:
    """Parse :data:`ENV_VARS` of ``env``; unset or blank variables keep the defaults."""
    return config_from_settings(ResilienceSettings.from_env(env))
