"""kill -9 of the orchestrator under load: no event a client has seen is lost or has its sequence reused.

Every service runs as its own process (``orchestratex serve <name>``), simulated models stream
slowly enough for sessions to be mid-answer, and 24 clients follow their sessions live. After the
orchestrator is killed with SIGKILL and started again, each client's received events must be a
prefix of the stored log, byte for byte, and the log must end with exactly one terminal event that a
client resuming from its last sequence receives.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from tests.e2e.conftest import GRPC_SERVICES as SERVICES
from tests.e2e.conftest import Processes

pytestmark = pytest.mark.e2e

SESSIONS = int(os.environ.get("ORX_CRASH_SESSIONS", "24"))
TERMINAL = ("session_completed", "session_failed")


async def _follow(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str, seen: list[pb.OrchestrationEvent]
) -> None:
    request = pb.OrchestrateRequest(prompt=prompt, max_rounds=3, detached=True)
    try:
        async for response in stub.Orchestrate(request, timeout=120):
            seen.append(response.event)
    except grpc.aio.AioRpcError as err:
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), err


async def test_kill_9_under_load_loses_no_event_a_client_saw(processes: Processes) -> None:
    for name in SERVICES:
        processes.start(name)
    for name in SERVICES:
        await processes.healthy(name)
    received: list[list[pb.OrchestrationEvent]] = [[] for _ in range(SESSIONS)]
    async with grpc.aio.insecure_channel(processes.addr["orchestrator"]) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        clients = [
            asyncio.ensure_future(_follow(stub, f"Explain topic number {i} in detail, step by step", received[i]))
            for i in range(SESSIONS)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        # wait until every session is streaming its answer, then kill the orchestrator mid-flight
        while not all(any(e.HasField("response_delta") for e in seen) for seen in received):
            assert loop.time() < deadline, [len(seen) for seen in received]
            await asyncio.sleep(0.02)
        processes.procs["orchestrator"].send_signal(signal.SIGKILL)
        processes.procs["orchestrator"].wait(30)
        await asyncio.gather(*clients)
    assert all(not any(e.WhichOneof("kind") in TERMINAL for e in seen) for seen in received)

    processes.start("orchestrator")
    await processes.healthy("orchestrator")
    async with grpc.aio.insecure_channel(processes.addr["orchestrator"]) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        for seen in received:
            session_id = seen[0].session_id
            watch = stub.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=30)
            stored = [r.event async for r in watch]
            # everything the client saw is stored, byte for byte, under the same sequences
            assert [e.SerializeToString() for e in stored[: len(seen)]] == [e.SerializeToString() for e in seen]
            assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
            terminal = [e for e in stored if e.WhichOneof("kind") in TERMINAL]
            assert terminal == [stored[-1]] and "interrupted" in stored[-1].session_failed.reason
            # a client resuming from the last sequence it saw gets the terminal event
            resume = stub.WatchSession(
                pb.WatchSessionRequest(session_id=session_id, after_sequence=seen[-1].sequence), timeout=30
            )
            rest = [r.event async for r in resume]
            assert rest and rest[-1] == stored[-1]
