"""Small request-validation helpers. Each raises :class:`InvalidArgument` naming the field."""

from __future__ import annotations

import math

from google.protobuf.descriptor import EnumDescriptor

from orchestratex.errors import InvalidArgument


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
