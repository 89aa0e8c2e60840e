"""When to retry a failed provider call, and how long to wait first.

Policy (docs/openrouter.md, "Errors" and "Mistakes other clients made" 7):

* Retry only what can succeed on a second try: 408, 429, 5xx, connection errors, invalid or empty
  replies. Never 400/401/402/403/404 (nor 413/422): a context-length error, a bad key, an empty
  balance or a moderation flag fail the same way every time, and retrying them only burns quota.
  The backend says so with ``BackendError.retryable``; without it, the failure kind decides.
* Only before the first token reached the caller. After that OpenRouter itself no longer fails over
  and the caller has already shown text, so the failure is final (a ``MID_STREAM_ERROR`` carrying
  the usage so far).
* Exponential backoff with *full jitter* (``uniform(0, min(max_delay, base * 2**(n-1)))``): many
  callers that failed together do not retry together.
* Honour the provider's ``Retry-After`` / ``X-RateLimit-Reset`` (``BackendError.retry_after``):
  wait at least that long. A hint longer than ``max_retry_after`` (a daily quota, say) is not
  waited out: the call fails at once and the caller gets the hint — and the model is held for the
  vendor's whole window, so later calls fail fast too (``policy.Resilience.note_failure``).
* Stay inside the caller's deadline: when the next wait would end at or past it, fail at once with
  the last failure's kind (a 429 stays RESOURCE_EXHAUSTED with its retry-after, a timeout becomes
  DEADLINE_EXCEEDED) instead of sleeping into a deadline nobody is waiting for any more.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from services.providers.backend import BackendError, FailureKind

RETRYABLE_KINDS = frozenset(
    {FailureKind.RATE_LIMITED, FailureKind.UPSTREAM_ERROR, FailureKind.TIMEOUT, FailureKind.INVALID_OUTPUT}
)
"""Kinds retried when the backend does not say (``BackendError.retryable`` absent)."""

CLIENT_ERROR_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})
"""HTTP statuses that never succeed on retry and never count against a model's health."""

CLIENT_ERROR_CATEGORIES = frozenset(
    {"bad_request", "unauthenticated", "insufficient_credits", "forbidden", "not_found"}
)
"""``BackendError.category`` values (``ErrorCategory``) that mean the request, not the model, is at fault."""


def http_status(exc: BackendError) -> int | None:
    """The upstream HTTP status of a failure, when the backend reports one."""
    status = getattr(exc, "http_status", None)
    return status if isinstance(status, int) else None


def is_client_error(exc: BackendError) -> bool:
    """True when the request itself is at fault (400/401/402/403/404/413/422 or their categories)."""
    category = getattr(exc, "category", None)
    return http_status(exc) in CLIENT_ERROR_STATUSES or (category is not None and category in CLIENT_ERROR_CATEGORIES)


def is_retryable(exc: BackendError) -> bool:
    """True when trying the same request again may succeed.

    A client error (status or category) always wins (defence in depth: a backend flag can't make a 402 retried).
    Then ``exc.retryable`` when the backend sets it, else :data:`RETRYABLE_KINDS`.
    """
    if is_client_error(exc):
        return False
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    return exc.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class RetryDecision:
    """Whether to try again and after how many seconds.

    ``reason`` is set when a retryable failure is not retried for a reason worth telling the caller
    (the deadline, an over-long Retry-After); it is empty for plain final failures.
    """

    retry: bool
    wait: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings. Delays are seconds; ``max_attempts`` counts the first try."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")

    def backoff_cap(self, failures: int) -> float:
        """Upper bound of the jittered wait after the ``failures``-th failed attempt (1-based)."""
        # min() before the power would overflow for large attempt counts.
        exponent = min(failures - 1, 64)
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full-jitter wait after the ``failures``-th failed attempt: ``uniform(0, backoff_cap)``."""
        return rng.uniform(0.0, self.backoff_cap(failures))

    def decide(
        self,
        exc: BackendError,
        *,
        attempts: int,
        streamed: bool,
        now: float,
        deadline: float | None,
        rng: random.Random,
    ) -> RetryDecision:
        """What to do after attempt number ``attempts`` failed with ``exc`` at time ``now``."""
        if streamed or not is_retryable(exc) or attempts >= self.max_attempts:
            return RetryDecision(False)
        hint = exc.retry_after
        if hint is not None and hint > self.max_retry_after:
            return RetryDecision(False, reason=f"the provider asks to wait {hint:.3g}s")
        wait = max(self.backoff(attempts, rng), hint or 0.0)
        if deadline is not None and now + wait >= deadline:
            return RetryDecision(False, wait, reason="the next attempt would start after the deadline")
        return RetryDecision(True, wait)
