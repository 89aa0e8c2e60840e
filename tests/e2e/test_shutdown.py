"""Ctrl-C under `orchestratex up` drains: the gateway stops first, then the orchestrator refuses new sessions and
lets running ones finish within ``ORX_SHUTDOWN_GRACE`` (the services they call still up); what is still running
at the deadline is interrupted with a clean, recorded status.

Each test starts its own `up` (simulated models slowed down so a session lasts seconds), runs a session straight on
the orchestrator's gRPC port, and sends SIGINT to `up` while it runs.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from services.orchestrator.manager import SHUTTING_DOWN
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.e2e.conftest import Suite, launch_suite, wait_for

pytestmark = pytest.mark.e2e

SERVICE = "orchestratex.v1.OrchestratorService"
# Three rounds with two critics and a threshold no score reaches: about 20 s at ORX_SIM_SPEED=1.
LONG_SESSION = pb.OrchestrateRequest(
    prompt="Explain TCP slow start", max_rounds=3, critic_count=2, quality_threshold=10
)


def _draining(channel: grpc.Channel) -> bool:
    """True once the orchestrator reports NOT_SERVING (it still answers: it is draining, not gone)."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
    except grpc.RpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.NOT_SERVING)


def _refuses_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _record(data_dir: Path, session_id: str) -> pb.Session:
    async def read() -> pb.Session | None:
        store = await SqliteSessionStore.open(data_dir / "orchestrator.db")
        try:
            return await store.get_session(session_id, "")
        finally:
            await store.close()

    record = asyncio.run(read())
    assert record is not None
    return record


@pytest.fixture
def channel_to() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def _start_session(suite: Suite, opened: list[grpc.Channel]) -> tuple[grpc.Channel, Iterator[pb.OrchestrateResponse]]:
    """A long session on the orchestrator's port, read until its primary answer is streaming."""
    channel = grpc.insecure_channel(suite.addr["orchestrator"])
    opened.append(channel)
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    stream = stub.Orchestrate(LONG_SESSION, timeout=120)
    for response in stream:
        if response.event.HasField("response_delta"):
            break
    return channel, stream


def test_ctrl_c_lets_a_running_session_finish(tmp_path: Path, channel_to: list[grpc.Channel]) -> None:
    with launch_suite(tmp_path, ORX_SIM_SPEED="2", ORX_SHUTDOWN_GRACE="90") as suite:
        channel, stream = _start_session(suite, channel_to)
        suite.proc.send_signal(signal.SIGINT)
        wait_for(lambda: _draining(channel), within=30)
        # `up` stops the gateway, and waits for it to exit, before it tells the orchestrator to stop.
        assert _refuses_connections(suite.addr["gateway"])

        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.Orchestrate(pb.OrchestrateRequest(prompt="too late", max_rounds=1), timeout=10)))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == SHUTTING_DOWN

        rest = [response.event for response in stream]
        assert rest[-1].HasField("session_completed"), rest[-1]
        assert rest[-1].session_completed.rounds_used == 3
        assert suite.proc.wait(60) == 0
    assert _record(tmp_path, rest[-1].session_id).status == pb.SESSION_STATUS_COMPLETED
    log = "".join(suite.errors)
    assert log.index("stopping gateway") < log.index("stopping orchestrator") < log.index("stopping providers")


def test_a_session_still_running_at_the_grace_deadline_is_interrupted_cleanly(
    tmp_path: Path, channel_to: list[grpc.Channel]
) -> None:
    with launch_suite(tmp_path, ORX_SIM_SPEED="0.5", ORX_SHUTDOWN_GRACE="1") as suite:
        _, stream = _start_session(suite, channel_to)
        suite.proc.send_signal(signal.SIGINT)
        rest = [response.event for response in stream]
        final = rest[-1]
        assert final.HasField("session_failed"), final
        assert final.session_failed.status == pb.SESSION_STATUS_FAILED
        assert final.session_failed.reason == "interrupted: the orchestrator is shutting down"
        assert suite.proc.wait(60) == 0
    record = _record(tmp_path, final.session_id)
    assert record.status == pb.SESSION_STATUS_FAILED
    assert record.last_sequence == final.sequence


def test_a_second_ctrl_c_interrupts_the_drain(tmp_path: Path, channel_to: list[grpc.Channel]) -> None:
    with launch_suite(tmp_path, ORX_SIM_SPEED="0.5", ORX_SHUTDOWN_GRACE="300") as suite:
        channel, stream = _start_session(suite, channel_to)
        suite.proc.send_signal(signal.SIGINT)
        wait_for(lambda: _draining(channel), within=30)
        suite.proc.send_signal(signal.SIGINT)
        rest = [response.event for response in stream]
        assert rest[-1].session_failed.reason == "interrupted: the orchestrator is shutting down", rest[-1]
        assert suite.proc.wait(60) == 0
    assert "stop signal again: orchestrator stops now" in "".join(suite.errors)
