"""Validation of analytics requests: time ranges, limits, filters and feedback.

Every function raises :class:`~orchestratex.errors.InvalidArgument` naming the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestratex.errors import InvalidArgument, PermissionDenied
from orchestratex.v1 import analytics_pb2, common_pb2
from orchestratex.validation import INT64_MIN, check_enum, check_max_len, check_timestamp, require_text
from services.analytics.ingest import EARLIEST_NS, LATEST_NS, MAX_ID_CHARS

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_DAY = 86_400 * NANOS_PER_SECOND
DEFAULT_WINDOW_NS = 30 * NANOS_PER_DAY
MAX_WINDOW_NS = 366 * NANOS_PER_DAY
DEFAULT_SESSION_LIMIT = 100
MAX_SESSION_LIMIT = 1000
MAX_COMMENT_CHARS = 5000
MAX_USER_ID_CHARS = 128
ANONYMOUS = "anonymous"


def time_window(time_range: common_pb2.TimeRange | None, now_ns: int) -> tuple[int, int]:
    """``[start_ns, end_ns)`` from an optional range.

    Unset end = now; unset start = 30 days before the end. The start must be before the end and the
    window at most 366 days wide. Both must be times the store can hold (nanoseconds in 64 bits: years
    1677 to 2262); a default start before the earliest such time is cut there, since no session can be
    older.
    """
    end_ns = now_ns
    start_ns: int | None = None
    if time_range is not None:
        if time_range.HasField("start_time"):
            start_ns = _stored_time(time_range, "start_time")
        if time_range.HasField("end_time"):
            end_ns = _stored_time(time_range, "end_time")
    if start_ns is None:
        start_ns = max(end_ns - DEFAULT_WINDOW_NS, INT64_MIN)
    if start_ns >= end_ns:
        raise InvalidArgument("range", "start_time must be before end_time")
    if end_ns - start_ns > MAX_WINDOW_NS:
        raise InvalidArgument("range", "may span at most 366 days")
    return start_ns, end_ns


def _stored_time(time_range: common_pb2.TimeRange, name: str) -> int:
    value = getattr(time_range, name)
    return check_timestamp(value, f"range.{name}", earliest_ns=EARLIEST_NS, latest_ns=LATEST_NS)


def session_limit(value: int) -> int:
    """1 to 1000; 0 (unset in proto3) means the default, 100."""
    if value == 0:
        return DEFAULT_SESSION_LIMIT
    if not 1 <= value <= MAX_SESSION_LIMIT:
        raise InvalidArgument("session_limit", f"must be 1 to {MAX_SESSION_LIMIT}, got {value}")
    return value


def domain_filter(value: int) -> int:
    """A known ``Domain``; UNSPECIFIED means any domain."""
    return check_enum(value, common_pb2.Domain.DESCRIPTOR, "domain", allow_unspecified=True)


def model_filter(value: str) -> str:
    """A model id of reasonable length; empty means any model."""
    return check_max_len(value, "model", MAX_ID_CHARS)


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    """A validated :class:`SubmitFeedbackRequest`."""

    session_id: str
    rating: int
    comment: str
    user_id: str


def feedback_input(request: analytics_pb2.SubmitFeedbackRequest) -> FeedbackInput:
    """Rating 1-5, comment at most 5,000 characters, user id at most 128 (default ``anonymous``)."""
    session_id = require_text(request.session_id, "session_id", MAX_ID_CHARS)
    if not 1 <= request.rating <= 5:
        raise InvalidArgument("rating", f"must be 1 to 5, got {request.rating}")
    comment = check_max_len(request.comment, "comment", MAX_COMMENT_CHARS)
    user_id = check_max_len(request.user_id, "user_id", MAX_USER_ID_CHARS).strip() or ANONYMOUS
    return FeedbackInput(session_id, request.rating, comment, user_id)


def tenant_for_ingest(request_tenant: str, caller_tenant: str) -> str:
    """The tenant owning an ingested batch.

    Internal callers (no tenant in metadata) may ingest for any tenant. A caller bound to a tenant may
    only ingest for itself, so it cannot plant sessions in another tenant's reports.
    """
    check_max_len(request_tenant, "tenant", MAX_USER_ID_CHARS)
    if any(ord(c) < 32 for c in request_tenant):
        # Also keeps the store's every-tenant counter name (which holds a NUL) out of reach.
        raise InvalidArgument("tenant", "must not contain control characters")
    if caller_tenant and request_tenant and request_tenant != caller_tenant:
        raise PermissionDenied("tenant: differs from the caller's tenant", field="tenant")
    return request_tenant or caller_tenant
