"""Small request-validation helpers. Each raises :class:`InvalidArgument` naming the field."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.errors import InvalidArgument

NANOS_PER_SECOND = 1_000_000_000
#: The range ``google.protobuf.Timestamp`` allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799
#: What a signed 64-bit integer holds. Stores keep integers in 64 bits (SQLite INTEGER, BSON int64), so
#: a time kept as nanoseconds since the epoch must lie in 1677-09-21T00:12:43.145224192Z to
#: 2262-04-11T23:47:16.854775807Z. Times kept as microseconds (or BSON milliseconds) fit whatever the
#: Timestamp allows.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def require_text(value: str, field: str, max_chars: int | None = None) -> str:
    """A non-blank string, at most ``max_chars`` characters."""
    if not value or not value.strip():
        raise InvalidArgument(field, "is required and must not be blank")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidArgument(field, f"is {len(value):,} characters; the limit is {max_chars:,}")
    return value


def check_enum(value: int, descriptor: EnumDescriptor, field: str, *, allow_unspecified: bool) -> int:
    """A known enum value; ``*_UNSPECIFIED`` (0) only when allowed."""
    if value not in descriptor.values_by_number:
        names = ", ".join(v.name for v in descriptor.values if v.number != 0)
        raise InvalidArgument(field, f"unknown value {value}; expected one of {names}")
    if value == 0 and not allow_unspecified:
        names = ", ".join(v.name for v in descriptor.values if v.number != 0)
        raise InvalidArgument(field, f"is required; expected one of {names}")
    return value


def check_range(value: float, field: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (or ``(low, high]``)."""
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise InvalidArgument(field, f"must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return value


def check_max_len(value: str, field: str, max_chars: int) -> str:
    """At most ``max_chars`` characters (empty allowed)."""
    if len(value) > max_chars:
        raise InvalidArgument(field, f"is {len(value):,} characters; the limit is {max_chars:,}")
    return value


def check_timestamp(
    value: Timestamp, field: str, *, earliest_ns: int | None = None, latest_ns: int | None = None
) -> int:
    """A valid ``google.protobuf.Timestamp``, as nanoseconds since the Unix epoch.

    ``seconds`` must be in [``TIMESTAMP_MIN_SECONDS``, ``TIMESTAMP_MAX_SECONDS``] (years 1 to 9999) and
    ``nanos`` in [0, 999,999,999]. ``earliest_ns``/``latest_ns`` narrow that to what a store can hold:
    pass ``INT64_MIN``/``INT64_MAX`` when the time is kept as 64-bit nanoseconds.
    """
    seconds, nanos = value.seconds, value.nanos
    if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument(
            field,
            f"is not a valid timestamp: seconds must be in [{TIMESTAMP_MIN_SECONDS}, {TIMESTAMP_MAX_SECONDS}] "
            f"(years 1 to 9999), got {seconds}",
        )
    if not 0 <= nanos < NANOS_PER_SECOND:
        raise InvalidArgument(field, f"is not a valid timestamp: nanos must be in [0, 999999999], got {nanos}")
    total = seconds * NANOS_PER_SECOND + nanos
    if earliest_ns is not None and total < earliest_ns:
        raise InvalidArgument(field, f"must not be before {_iso(earliest_ns)}")
    if latest_ns is not None and total > latest_ns:
        raise InvalidArgument(field, f"must not be after {_iso(latest_ns)}")
    return total


def _iso(nanos: int) -> str:
    seconds, rest = divmod(nanos, NANOS_PER_SECOND)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rest:09d}Z"
