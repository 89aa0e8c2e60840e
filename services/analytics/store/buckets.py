"""The one time-bucketing scheme of the analytics counters, the same for every backend.

A counter row belongs to a **block** ``(level, unit)``: ``level`` is the block's length in hours, one of
:data:`LEVELS` (1 hour, 1 UTC day, 8 days, 64 days), and ``unit`` its first hour (hours since the Unix
epoch, a multiple of ``level``: blocks are aligned to the epoch, so 24-hour blocks are UTC days). A
session's figures are added to the block of every level that holds the session's **creation hour**
(:func:`blocks`), once under its tenant and once under :data:`ALL_TENANTS` (:func:`owners`), so that a
query for every tenant reads one row per key. The narrow day counters use :data:`DAY_LEVELS` only.

A time range ``[start_ns, end_ns)`` is answered by :func:`cover`: the whole hours inside it with the
fewest aligned blocks (at most two runs per level, about 80 blocks for a 366-day range, whatever the
volume), and the partial hours at either edge from the raw facts of the sessions created in them.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.analytics.store.model import NANOS_PER_HOUR

#: Block lengths in hours, shortest first: an hour, a UTC day, 8 days, 64 days.
LEVELS: tuple[int, ...] = (1, 24, 8 * 24, 64 * 24)
#: The block lengths of the day counters (the per-day breakdowns need no longer blocks).
DAY_LEVELS: tuple[int, ...] = (1, 24)
HOURS_PER_DAY = 24
#: The tenant under which counters are also kept summed over every tenant. No tenant can have this name
#: (gRPC metadata values cannot hold a NUL character).
ALL_TENANTS = "\x00all"


def hour_of(time_ns: int) -> int:
    """Hours since the epoch (UTC) of a time in nanoseconds."""
    return time_ns // NANOS_PER_HOUR


def blocks(hour: int, levels: tuple[int, ...] = LEVELS) -> list[tuple[int, int]]:
    """The ``(level, unit)`` of the block of each of ``levels`` that holds ``hour``."""
    return [(level, hour // level * level) for level in levels]


def owners(tenant: str) -> tuple[str, str]:
    """The tenants whose counters a session of ``tenant`` adds to: its own and :data:`ALL_TENANTS`."""
    return (tenant, ALL_TENANTS)


def counter_tenant(tenant: str) -> str:
    """The tenant of the counter rows that answer a query for ``tenant`` ("" = every tenant)."""
    return tenant or ALL_TENANTS


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive blocks of one level: units ``first``, ``first + level``, ... before ``end``."""

    level: int
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class Cover:
    """How to answer a time range: ``runs`` of counter blocks, and ``edges`` ``[a, b)`` read from raw facts."""

    runs: tuple[Run, ...]
    edges: tuple[tuple[int, int], ...]


def cover(start_ns: int, end_ns: int, levels: tuple[int, ...] = LEVELS) -> Cover:
    """Cover ``[start_ns, end_ns)``: its whole hours with the fewest aligned blocks of ``levels`` (which
    must include 1), and the partial hours at either end as edges."""
    if start_ns >= end_ns:
        return Cover((), ())
    first = -(-start_ns // NANOS_PER_HOUR)
    end = end_ns // NANOS_PER_HOUR
    if first >= end:
        return Cover((), ((start_ns, end_ns),))
    edges = ((start_ns, first * NANOS_PER_HOUR), (end * NANOS_PER_HOUR, end_ns))
    longest_first = sorted(levels, reverse=True)
    runs: list[Run] = []
    hour = first
    while hour < end:
        level = next(z for z in longest_first if hour % z == 0 and hour + z <= end)
        if runs and runs[-1].level == level and runs[-1].end == hour:
            runs[-1] = Run(level, runs[-1].first, hour + level)
        else:
            runs.append(Run(level, hour, hour + level))
        hour += level
    return Cover(tuple(runs), tuple((a, b) for a, b in edges if a < b))
