"""A circuit breaker per model: stop sending calls to a model that keeps failing, then probe it.

States (``CircuitState`` in common.proto, shown in ``ListModels``):

* CLOSED — calls go through; each failure that points at the *model* adds one to a consecutive
  count, any success resets it. At ``threshold`` (default 5) the circuit OPENs.
* OPEN — calls fail at once (:class:`CircuitOpen`, UNAVAILABLE) with the cooldown left as
  retry-after. The cooldown starts at ``cooldown`` (30 s) and doubles on each trip in a row, up to
  ``max_cooldown``: a model that is down for an hour is probed a handful of times, not 120.
* HALF_OPEN — once the cooldown is over, exactly one trial call goes through; other calls keep
  failing fast. Success closes the circuit (and forgets past trips); failure re-opens it with the
  next, longer cooldown.

What counts (:func:`classify`): upstream errors, timeouts of the model's own (time to first token,
idle, total), rate limits, mid-stream breaks and invalid output. What never counts, because it says
nothing about the model — the production-gateway lesson of "cooldowns that don't punish a model for
the caller's own timeout" (docs/research.md): the caller cancelling, a timeout at or after the
caller's deadline, and requests refused as such (400/402/403/404/413/422: invalid, unaffordable,
moderated) that would fail the same on any healthy model. A rejected key (401) says nothing about
the model either: it is held provider-wide by :class:`~services.providers.resilience.policy.Resilience`
instead. Such neutral outcomes leave the count as it is; a neutral half-open trial simply lets the
next call be the trial.

Outcomes of calls admitted before the circuit last opened are ignored (their news is stale).

Metrics (:mod:`services.providers.metrics`): each trip adds one to ``orx_provider_breaker_trips_total``,
each refusal to ``orx_provider_rejections_total`` (``circuit_open``, ``circuit_trial_in_flight``), and
``orx_provider_breaker_state`` reads :meth:`CircuitBreaker.snapshot` when scraped.
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass
from enum import StrEnum

from services.providers import metrics
from services.providers.backend import BackendError, FailureKind
from services.providers.resilience.clock import Clock
from services.providers.resilience.errors import CircuitOpen
from services.providers.resilience.retry import is_client_error

log = logging.getLogger(__name__)

COUNTED_KINDS = frozenset(
    {
        FailureKind.UPSTREAM_ERROR,
        FailureKind.TIMEOUT,
        FailureKind.RATE_LIMITED,
        FailureKind.MID_STREAM_ERROR,
        FailureKind.INVALID_OUTPUT,
    }
)
"""Failure kinds that indicate trouble with the model itself."""

DEADLINE_TOLERANCE = 0.01
"""A timeout within this many seconds of the caller's deadline is blamed on the deadline."""

TRIAL_RETRY_AFTER = 1.0
"""Retry-after hint (seconds) for calls refused while a half-open trial is in flight."""


class CircuitState(StrEnum):
    """Breaker state of one model."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(StrEnum):
    """How one admitted call ended, as far as the model's health is concerned."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


def classify(exc: BackendError, *, now: float, deadline: float | None) -> Outcome:
    """Whether a failed call at time ``now`` counts against its model (FAILURE) or not (NEUTRAL)."""
    if is_client_error(exc):
        return Outcome.NEUTRAL
    if exc.kind is FailureKind.TIMEOUT and deadline is not None and now >= deadline - DEADLINE_TOLERANCE:
        return Outcome.NEUTRAL
    return Outcome.FAILURE if exc.kind in COUNTED_KINDS else Outcome.NEUTRAL


@dataclass(frozen=True)
class BreakerConfig:
    """Trip after ``threshold`` consecutive failures; cooldown ``cooldown * multiplier**(trips-1)`` capped."""

    threshold: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ValueError("cooldown must be a finite number >= 0")
        if not (math.isfinite(self.max_cooldown) and self.max_cooldown >= self.cooldown):
            raise ValueError("max_cooldown must be a finite number >= cooldown")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError("multiplier must be >= 1")

    def cooldown_for(self, trips: int) -> float:
        """Cooldown after the ``trips``-th trip in a row (1-based)."""
        exponent = min(trips - 1, 64)
        return min(self.max_cooldown, self.cooldown * self.multiplier**exponent)


@dataclass(frozen=True)
class BreakerSnapshot:
    """What ``ListModels`` shows about a breaker."""

    state: CircuitState
    consecutive_failures: int
    cooldown_remaining: float
    trips: int


@dataclass(frozen=True)
class Ticket:
    """Proof of admission; hand it back to :meth:`CircuitBreaker.record` exactly once."""

    epoch: int
    trial: bool


class CircuitBreaker:
    """The breaker of one model (single event loop; no locking needed)."""

    def __init__(self, model_id: str, config: BreakerConfig, clock: Clock) -> None:
        self._model_id = model_id
        self._config = config
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trips = 0
        self._open_until = 0.0
        self._trial_in_flight = False
        self._epoch = 0
        self._trips_total = metrics.BREAKER_TRIPS.labels(model_id)
        self._refused_open = metrics.REJECTIONS.labels(model_id, "circuit_open")
        self._refused_trial = metrics.REJECTIONS.labels(model_id, "circuit_trial_in_flight")
        # Read when scraped, through a weak reference: the gauge never keeps a dropped breaker alive.
        ref = weakref.ref(self)
        metrics.BREAKER_STATE.labels(model_id).set_function(lambda: _gauge_value(ref()))

    def admit(self) -> Ticket:
        """Admit a call or raise :class:`CircuitOpen`. Every ticket must be :meth:`record`-ed."""
        if self._state is CircuitState.CLOSED:
            return Ticket(self._epoch, trial=False)
        now = self._clock.now()
        if self._state is CircuitState.OPEN:
            if now < self._open_until:
                remaining = self._open_until - now
                self._refused_open.inc()
                raise CircuitOpen(
                    f"{self._model_id}: circuit open after {self._failures} consecutive failures; "
                    f"the model is cooling down for {remaining:.3g}s more",
                    remaining,
                )
            self._state = CircuitState.HALF_OPEN
            log.info("circuit of %s half-open: letting one trial call through", self._model_id)
        if self._trial_in_flight:
            self._refused_trial.inc()
            raise CircuitOpen(
                f"{self._model_id}: circuit half-open, a trial call is checking whether the model recovered",
                TRIAL_RETRY_AFTER,
            )
        self._trial_in_flight = True
        return Ticket(self._epoch, trial=True)

    def record(self, ticket: Ticket, outcome: Outcome) -> None:
        """Account for an admitted call's ``outcome``."""
        if ticket.trial:
            self._trial_in_flight = False
            if outcome is Outcome.SUCCESS:
                log.info("circuit of %s closed: the trial call succeeded", self._model_id)
                self._close()
            elif outcome is Outcome.FAILURE:
                self._failures += 1
                self._trip()
            return
        if ticket.epoch != self._epoch or self._state is not CircuitState.CLOSED:
            return
        if outcome is Outcome.SUCCESS:
            self._failures = 0
        elif outcome is Outcome.FAILURE:
            self._failures += 1
            if self._failures >= self._config.threshold:
                self._trip()

    def snapshot(self) -> BreakerSnapshot:
        """Current state; an OPEN circuit whose cooldown is over shows as HALF_OPEN."""
        state, remaining = self._state, 0.0
        if state is CircuitState.OPEN:
            remaining = max(0.0, self._open_until - self._clock.now())
            if remaining == 0.0:
                state = CircuitState.HALF_OPEN
        return BreakerSnapshot(state, self._failures, remaining, self._trips)

    def _trip(self) -> None:
        self._trips += 1
        self._trips_total.inc()
        cooldown = self._config.cooldown_for(self._trips)
        self._state = CircuitState.OPEN
        self._open_until = self._clock.now() + cooldown
        self._epoch += 1
        log.warning(
            "circuit of %s open after %d consecutive failures (trip %d): cooling down %.3gs",
            self._model_id,
            self._failures,
            self._trips,
            cooldown,
        )

    def _close(self) -> None:
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trips = 0
        self._epoch += 1


_GAUGE_VALUES = {
    CircuitState.CLOSED: metrics.BREAKER_CLOSED,
    CircuitState.HALF_OPEN: metrics.BREAKER_HALF_OPEN,
    CircuitState.OPEN: metrics.BREAKER_OPEN,
}


def _gauge_value(breaker: CircuitBreaker | None) -> float:
    """``orx_provider_breaker_state`` of ``breaker`` (closed once the breaker is gone)."""
    if breaker is None:
        return metrics.BREAKER_CLOSED
    return _GAUGE_VALUES[breaker.snapshot().state]
