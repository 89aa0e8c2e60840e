"""Resilience of provider calls: retries, client-side rate limits and a circuit breaker per model.

Pure asyncio, no gRPC; :func:`services.providers.generation.generate` applies it to every call when
given a :class:`Resilience`. One call goes through, per attempt::

    holds                      -> Held (kind the vendor gave, retry-after = time left) while the vendor's
                                  Retry-After window runs, or its provider rejects the API key
    breaker.admit()            -> CircuitOpen (UNAVAILABLE, retry-after = cooldown left) when open
    limiter.slot(deadline)     -> ClientRateLimited (RESOURCE_EXHAUSTED) when no slot in time
      backend.stream(request)  -> deltas + end, or BackendError
    breaker.record(outcome)    -> success / counted failure / neutral
    note_failure               -> a Retry-After window holds the model, a rejected key the provider
    retry decision             -> sleep (backoff, full jitter, >= Retry-After, inside the deadline) or give up

Why each piece, with the evidence behind it:

* :mod:`.retry` — retry only what can succeed (docs/openrouter.md's status table; "retrying what
  can never succeed ... and not honouring Retry-After" is mistake 7 of other clients), and only
  before the first token (no failover happens after it).
* :mod:`.limiter` — requests/minute and concurrency per model, with bounded queueing; ``:free``
  models default to OpenRouter's 20/minute.
* :mod:`.breaker` — fail fast on a model that keeps failing, probe it after a growing cooldown,
  and never count the caller's own cancellation or deadline against it (docs/research.md,
  production gateways: "cooldowns that don't punish a model for the caller's own timeout").
* :mod:`.clock` — every wait goes through an injectable clock so tests are exact and instant.
"""

from __future__ import annotations

from services.providers.resilience.breaker import (
    COUNTED_KINDS,
    BreakerConfig,
    BreakerSnapshot,
    CircuitBreaker,
    CircuitState,
    Outcome,
    Ticket,
    classify,
)
from services.providers.resilience.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
from services.providers.resilience.errors import CircuitOpen, ClientRateLimited, Held, Origin, Rejected
from services.providers.resilience.limiter import (
    FREE_SUFFIX,
    LimitOverride,
    LimitsConfig,
    ModelLimiter,
    ModelLimits,
)
from services.providers.resilience.policy import (
    ENV_VARS,
    AttemptGuard,
    HealthSnapshot,
    HoldConfig,
    Resilience,
    ResilienceConfig,
    config_from_env,
    config_from_settings,
)
from services.providers.resilience.retry import (
    CLIENT_ERROR_STATUSES,
    RETRYABLE_KINDS,
    RetryDecision,
    RetryPolicy,
    is_client_error,
    is_retryable,
)

__all__ = [
    "CLIENT_ERROR_STATUSES",
    "COUNTED_KINDS",
    "ENV_VARS",
    "FREE_SUFFIX",
    "RETRYABLE_KINDS",
    "SYSTEM_CLOCK",
    "AttemptGuard",
    "BreakerConfig",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "ClientRateLimited",
    "Clock",
    "HealthSnapshot",
    "Held",
    "HoldConfig",
    "LimitOverride",
    "LimitsConfig",
    "ManualClock",
    "ModelLimiter",
    "ModelLimits",
    "Origin",
    "Outcome",
    "Rejected",
    "Resilience",
    "ResilienceConfig",
    "RetryDecision",
    "RetryPolicy",
    "SystemClock",
    "Ticket",
    "classify",
    "config_from_env",
    "config_from_settings",
    "is_client_error",
    "is_retryable",
]
