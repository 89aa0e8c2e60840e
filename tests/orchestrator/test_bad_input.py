"""Bad input to every orchestrator RPC: canonical status and a message naming the field."""

from __future__ import annotations

import base64
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1.common_pb2 import TimeRange
from tests.orchestrator.conftest import Stack


async def _orchestrate_error(stack: Stack, **fields: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stack.stub.Orchestrate(pb.OrchestrateRequest(**fields), timeout=10)]
    return err.value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": "x" * 200_001}, "prompt"),
        ({"prompt": "hi", "max_rounds": 0}, "max_rounds"),
        ({"prompt": "hi", "max_rounds": 11}, "max_rounds"),
        ({"prompt": "hi", "quality_threshold": -0.5}, "quality_threshold"),
        ({"prompt": "hi", "quality_threshold": 10.5}, "quality_threshold"),
        ({"prompt": "hi", "quality_threshold": float("nan")}, "quality_threshold"),
        ({"prompt": "hi", "budget_usd": 0}, "budget_usd"),
        ({"prompt": "hi", "budget_usd": -1}, "budget_usd"),
        ({"prompt": "hi", "critic_count": 0, "max_rounds": 2}, "critic_count"),
        ({"prompt": "hi", "critic_count": 6}, "critic_count"),
        ({"prompt": "hi", "critic_count": -1}, "critic_count"),
        ({"prompt": "hi", "patience": 0}, "patience"),
        ({"prompt": "hi", "plateau_epsilon": -1}, "plateau_epsilon"),
        ({"prompt": "hi", "time_limit": Duration(seconds=0)}, "time_limit"),
        ({"prompt": "hi", "time_limit": Duration(seconds=7200)}, "time_limit"),
        ({"prompt": "hi", "thread_id": "t" * 129}, "thread_id"),
        ({"prompt": "hi", "preferences": {"cost_weight": -1}}, "preferences.cost_weight"),
    ],
)
async def test_orchestrate_rejects_bad_requests(stack: Stack, fields: dict[str, Any], field: str) -> None:
    err = await _orchestrate_error(stack, **fields)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(field + ":")
    assert stack.providers.calls == []


async def test_unknown_session_is_not_found_everywhere(stack: Stack) -> None:
    for call in (
        stack.stub.GetSession(pb.GetSessionRequest(session_id="nope")),
        stack.stub.CancelSession(pb.CancelSessionRequest(session_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stack.stub.WatchSession(pb.WatchSessionRequest(session_id="nope"))]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetSessionRequest(), "session_id"),
        (pb.CancelSessionRequest(), "session_id"),
        (pb.ListSessionsRequest(page_size=101), "page_size"),
        (pb.ListSessionsRequest(page_size=-1), "page_size"),
        (pb.ListSessionsRequest(page_token="%%%not-a-token"), "page_token"),
        (pb.ListSessionsRequest(status=42), "status"),  # type: ignore[arg-type]
        # times no store can hold, and invalid Timestamps (issue 12: these were INTERNAL or accepted)
        (pb.ListSessionsRequest(range=TimeRange(end_time=Timestamp(seconds=-(2**63)))), "range.end_time"),
        (pb.ListSessionsRequest(range=TimeRange(start_time=Timestamp(seconds=10**12))), "range.start_time"),
        (pb.ListSessionsRequest(range=TimeRange(start_time=Timestamp(seconds=0, nanos=-1))), "range.start_time"),
        (
            pb.ListSessionsRequest(range=TimeRange(start_time=Timestamp(seconds=9), end_time=Timestamp(seconds=9))),
            "range",
        ),
        (pb.ListSessionsRequest(page_token=base64.urlsafe_b64encode(b"9223372036854775808|x").decode()), "page_token"),
        (pb.ListSessionsRequest(page_token=base64.urlsafe_b64encode(b"1" + b"0" * 30 + b"|x").decode()), "page_token"),
    ],
)
async def test_unary_rpcs_reject_bad_requests(stack: Stack, request_: Any, field: str) -> None:
    method = {
        pb.GetSessionRequest: stack.stub.GetSession,
        pb.CancelSessionRequest: stack.stub.CancelSession,
        pb.ListSessionsRequest: stack.stub.ListSessions,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await method(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field + ":")


async def test_watch_rejects_negative_sequence(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stack.stub.WatchSession(pb.WatchSessionRequest(session_id="x", after_sequence=-1))]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("after_sequence:")
