"""One orchestrator per database, as processes: a second one is refused and exits at once without
touching the live one's sessions; after a SIGKILL of the holder, the next one takes over and recovers."""

from __future__ import annotations

import signal

import grpc
import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from services.workers import CONFIG_ERROR_EXIT
from tests.e2e.conftest import Processes
from tests.ports import free_port

pytestmark = pytest.mark.e2e


async def _started(stub: orchestrator_pb2_grpc.OrchestratorServiceStub) -> str:
    """A detached session that runs for a while (the simulator is slowed down)."""
    call = stub.Orchestrate(pb.OrchestrateRequest(prompt="Explain TCP slow start step by step", detached=True))
    try:
        async for response in call:
            if response.event.HasField("response_delta"):
                session_id: str = response.event.session_id
                return session_id
    finally:
        call.cancel()
    raise AssertionError("the session ended before answering")


async def test_a_second_orchestrator_is_refused_and_a_killed_one_is_taken_over(processes: Processes) -> None:
    for name in ("providers", "selector", "analytics", "orchestrator"):
        processes.start(name)
    for name in ("providers", "selector", "analytics", "orchestrator"):
        await processes.healthy(name)
    async with grpc.aio.insecure_channel(processes.addr["orchestrator"]) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        first = await _started(stub)

        second = processes.start(
            "orchestrator", "second", capture=True, ORX_ORCHESTRATOR_LISTEN=f"127.0.0.1:{free_port()}"
        )
        _, err = second.communicate(timeout=60)  # exits on its own, promptly: no lingering threads
        assert second.returncode == CONFIG_ERROR_EXIT
        assert b"holds this database's lease" in err and b"pid " in err, err

        watch = stub.WatchSession(pb.WatchSessionRequest(session_id=first), timeout=120)
        events = [r.event async for r in watch]
        assert events[-1].HasField("session_completed"), events[-1]
        assert not any(e.HasField("session_failed") for e in events)

        interrupted = await _started(stub)
    processes.procs["orchestrator"].send_signal(signal.SIGKILL)
    processes.procs["orchestrator"].wait(30)

    # the holder is provably dead (same machine, its pid gone): the next one need not wait for expiry
    processes.start("orchestrator")
    await processes.healthy("orchestrator")
    async with grpc.aio.insecure_channel(processes.addr["orchestrator"]) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        session = await stub.GetSession(pb.GetSessionRequest(session_id=interrupted), timeout=30)
        assert session.session.status == pb.SESSION_STATUS_FAILED
        assert "interrupted" in session.session.failure.reason
