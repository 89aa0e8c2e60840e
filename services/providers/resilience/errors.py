"""Local rejections: a call refused by this service before any upstream request was made.

Each carries a :class:`~services.providers.backend.FailureKind` so that the servicer's one status
mapping applies unchanged (RATE_LIMITED -> RESOURCE_EXHAUSTED, UPSTREAM_ERROR -> UNAVAILABLE,
AUTH -> UNAUTHENTICATED), a message that is safe to show to clients and says the refusal is local,
and a ``retry_after`` hint.
"""

from __future__ import annotations

from enum import StrEnum

from services.providers.backend import FailureKind


class Origin(StrEnum):
    """Where a failure came from."""

    UPSTREAM = "upstream"
    """The provider (or the backend's own timeouts) failed the call."""
    CLIENT_RATE_LIMIT = "client_rate_limit"
    """This service's own per-model rate limit refused the call (no upstream request was made)."""
    CIRCUIT_OPEN = "circuit_open"
    """The model's circuit breaker is open (no upstream request was made)."""
    VENDOR_HOLD = "vendor_hold"
    """The vendor said not to call before a time — a Retry-After window longer than anyone waits, or a
    rejected API key for the whole provider — and that time has not come (no upstream request was made)."""


class Rejected(Exception):
    """Base of local rejections."""

    kind: FailureKind
    origin: Origin

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ClientRateLimited(Rejected):
    """The per-model client-side limit has no slot for this call in time (or its queue is full)."""

    kind = FailureKind.RATE_LIMITED
    origin = Origin.CLIENT_RATE_LIMIT


class CircuitOpen(Rejected):
    """The model failed repeatedly and is cooling down; ``retry_after`` is the cooldown left."""

    kind = FailureKind.UPSTREAM_ERROR
    origin = Origin.CIRCUIT_OPEN


class Held(Rejected):
    """The model (or its whole provider) is held: the vendor asked for a window, or rejected the key.

    ``kind`` is what the vendor said: RATE_LIMITED or UPSTREAM_ERROR for a Retry-After window (429, 503),
    AUTH for a rejected key. ``retry_after`` is the time left.
    """

    origin = Origin.VENDOR_HOLD

    def __init__(self, message: str, retry_after: float, kind: FailureKind) -> None:
        super().__init__(message, retry_after)
        self.kind = kind
