"""Orchestrator replicas as real processes on one SQLite database (WAL): a session started on A is watched
on B with no gap and cancelled through B; after ``kill -9`` of A, exactly one of B and C adopts A's running
session and ends it, with the best answer so far, after A's last stored event; a rolling restart under load
(each replica in turn drains on SIGTERM and comes back) loses no event."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from tests.e2e.conftest import Processes
from tests.ports import free_port

pytestmark = pytest.mark.e2e

TERMINAL = ("session_completed", "session_failed")


def _replica(processes: Processes, key: str) -> str:
    """Start orchestrator replica ``key`` on a port of its own; its address."""
    address = f"127.0.0.1:{free_port()}"
    processes.start("orchestrator", key, ORX_ORCHESTRATOR_LISTEN=address, ORX_ORCHESTRATOR_LEASE_TTL="2")
    processes.addr[key] = address
    return address


async def _suite(processes: Processes, replicas: tuple[str, ...]) -> None:
    for name in ("providers", "selector", "analytics"):
        processes.start(name)
    for key in replicas:
        _replica(processes, key)
    for name in ("providers", "selector", "analytics"):
        await processes.healthy(name)
    for key in replicas:
        await processes.healthy("orchestrator", key=key)


async def _answering(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str) -> str:
    """A detached session, once its author is streaming (the simulator is slowed down)."""
    call = stub.Orchestrate(pb.OrchestrateRequest(prompt=prompt, detached=True), timeout=60)
    try:
        async for response in call:
            if response.event.HasField("response_delta"):
                return str(response.event.session_id)
    finally:
        call.cancel()
    raise AssertionError("the session ended before answering")


async def _watch(address: str, session_id: str) -> list[pb.OrchestrationEvent]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        call = stub.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=120)
        return [r.event async for r in call]


def _one_end_no_gap(events: list[pb.OrchestrationEvent]) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.WhichOneof("kind") in TERMINAL for e in events].count(True) == 1
    assert events[-1].WhichOneof("kind") in TERMINAL


async def test_watch_and_cancel_through_another_replica_and_adoption_after_kill(processes: Processes) -> None:
    processes.env["ORX_SIM_SPEED"] = "2"  # a session takes seconds: still running when A is killed
    await _suite(processes, ("a", "b", "c"))
    async with grpc.aio.insecure_channel(processes.addr["a"]) as channel:
        a = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        watched = await _answering(a, "Explain TCP slow start step by step")
        from_b, from_a = await asyncio.gather(
            _watch(processes.addr["b"], watched), _watch(processes.addr["a"], watched)
        )
        _one_end_no_gap(from_b)
        assert from_b == from_a
        assert from_b[-1].HasField("session_completed")

        cancelled = await _answering(a, "Explain how a B-tree splits a full node")
        async with grpc.aio.insecure_channel(processes.addr["b"]) as b_channel:
            b = orchestrator_pb2_grpc.OrchestratorServiceStub(b_channel)
            got = await b.CancelSession(pb.CancelSessionRequest(session_id=cancelled, reason="via B"), timeout=30)
        assert got.session.status == pb.SESSION_STATUS_CANCELLED
        events = await _watch(processes.addr["a"], cancelled)
        _one_end_no_gap(events)
        assert events[-1].session_failed.reason == "cancelled: via B"

        orphan = await _answering(a, "Describe the water cycle in detail")
    processes.procs["a"].send_signal(signal.SIGKILL)
    processes.procs["a"].wait(30)

    # A's lease is provably dead (same machine, pid gone): B or C adopts at its next sweep (half the lease TTL).
    from_b, from_c = await asyncio.gather(_watch(processes.addr["b"], orphan), _watch(processes.addr["c"], orphan))
    assert from_b == from_c
    _one_end_no_gap(from_b)
    failed = from_b[-1].session_failed
    assert failed.status == pb.SESSION_STATUS_FAILED and "interrupted" in failed.reason


async def test_a_rolling_restart_under_load_loses_no_event(processes: Processes) -> None:
    # Sessions of a second or two, and a grace period far longer: every drain lets its sessions finish.
    processes.env.update(ORX_SIM_SPEED="6", ORX_SHUTDOWN_GRACE="60")
    await _suite(processes, ("a", "b"))
    channels = {key: grpc.aio.insecure_channel(processes.addr[key]) for key in ("a", "b")}
    stubs = {key: orchestrator_pb2_grpc.OrchestratorServiceStub(ch) for key, ch in channels.items()}
    started: list[tuple[str, str]] = []
    stop = asyncio.Event()

    async def load(key: str) -> None:
        """Start sessions on replica ``key`` until told to stop; a refusal while it drains is expected."""
        n = 0
        while not stop.is_set():
            n += 1
            try:
                started.append((key, await _answering(stubs[key], f"Summarise topic {key}-{n} in three lines")))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                await asyncio.sleep(0.2)  # the replica drains or restarts: try again shortly

    workers = [asyncio.ensure_future(load(key)) for key in ("a", "b")]
    try:
        loop = asyncio.get_running_loop()
        for key in ("a", "b"):
            deadline = loop.time() + 60
            while sum(1 for k, _ in started if k == key) < 2:
                assert loop.time() < deadline, f"no load reached {key}"
                await asyncio.sleep(0.05)  # waiting for load on the replica about to restart
            processes.procs[key].send_signal(signal.SIGTERM)  # drains: running sessions finish first
            processes.procs[key].wait(90)
            assert processes.procs[key].returncode == 0
            _replica(processes, key)
            await processes.healthy("orchestrator", key=key)
            await channels[key].close(None)
            channels[key] = grpc.aio.insecure_channel(processes.addr[key])
            stubs[key] = orchestrator_pb2_grpc.OrchestratorServiceStub(channels[key])
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert len(started) >= 4
    for _, session_id in started:
        events = await _watch(processes.addr["a"], session_id)
        _one_end_no_gap(events)
        assert events[-1].HasField("session_completed"), (session_id, events[-1])
    for channel in channels.values():
        await channel.close(None)
