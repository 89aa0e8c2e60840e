"""Request validation without gRPC: timestamps at their exact limits, and the default time window."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import common_pb2
from orchestratex.validation import (
    INT64_MAX,
    INT64_MIN,
    TIMESTAMP_MAX_SECONDS,
    TIMESTAMP_MIN_SECONDS,
    check_timestamp,
)
from services.analytics.requests import DEFAULT_WINDOW_NS, time_window

SECOND = 1_000_000_000


def _ts(nanos: int) -> Timestamp:
    seconds, rest = divmod(nanos, SECOND)
    return Timestamp(seconds=seconds, nanos=rest)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(TIMESTAMP_MIN_SECONDS, 0), (TIMESTAMP_MAX_SECONDS, 999_999_999), (0, 0), (-1, 999_999_999)],
)
def test_check_timestamp_accepts_the_whole_valid_range(seconds: int, nanos: int) -> None:
    assert check_timestamp(Timestamp(seconds=seconds, nanos=nanos), "t") == seconds * SECOND + nanos


@pytest.mark.parametrize(
    ("seconds", "nanos", "says"),
    [
        (TIMESTAMP_MIN_SECONDS - 1, 0, "seconds must be in"),
        (TIMESTAMP_MAX_SECONDS + 1, 0, "seconds must be in"),
        (-(2**63), 0, "seconds must be in"),
        (0, -1, "nanos must be in"),
        (0, SECOND, "nanos must be in"),
    ],
)
def test_check_timestamp_names_the_field_and_the_problem(seconds: int, nanos: int, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_timestamp(Timestamp(seconds=seconds, nanos=nanos), "start_time")
    assert info.value.field == "start_time"
    assert says in info.value.message


def test_check_timestamp_narrows_to_what_a_store_holds() -> None:
    bounds = {"earliest_ns": INT64_MIN, "latest_ns": INT64_MAX}
    assert check_timestamp(_ts(INT64_MIN), "t", **bounds) == INT64_MIN
    assert check_timestamp(_ts(INT64_MAX), "t", **bounds) == INT64_MAX
    with pytest.raises(InvalidArgument, match=r"t: must not be before 1677-09-21T00:12:43\.145224192Z"):
        check_timestamp(_ts(INT64_MIN - 1), "t", **bounds)
    with pytest.raises(InvalidArgument, match=r"t: must not be after 2262-04-11T23:47:16\.854775807Z"):
        check_timestamp(_ts(INT64_MAX + 1), "t", **bounds)


def test_the_default_window_is_cut_at_the_earliest_storable_time() -> None:
    end = INT64_MIN + DEFAULT_WINDOW_NS // 2
    assert time_window(common_pb2.TimeRange(end_time=_ts(end)), now_ns=0) == (INT64_MIN, end)
    later = INT64_MIN + 2 * DEFAULT_WINDOW_NS
    assert time_window(common_pb2.TimeRange(end_time=_ts(later)), now_ns=0) == (later - DEFAULT_WINDOW_NS, later)
