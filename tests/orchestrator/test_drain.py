"""Shutdown drains: on stop, the orchestrator refuses new sessions (UNAVAILABLE, health NOT_SERVING) and lets
running ones finish within the grace period; those still running at its end are interrupted, cleanly recorded.

The real orchestrator on port 0 against the fake peers of conftest.py; every provider call waits at a gate the
test opens, so "still running" and "finished" are states the test sets, not timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import providers_pb2
from services.orchestrator.manager import SHUTTING_DOWN
from services.orchestrator.store.sqlite import SqliteSessionStore

from .conftest import FakeProviders, Stack, start_stack

SERVICE = "orchestratex.v1.OrchestratorService"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Event]:
    """Every fake provider call waits until this is set (patched on the class, before the server registers it)."""
    opened = asyncio.Event()
    original = FakeProviders.StreamGenerate

    async def gated(
        self: FakeProviders, request: providers_pb2.StreamGenerateRequest, context: Any
    ) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        self.started.set()
        await opened.wait()
        async for response in original(self, request, context):
            yield response

    monkeypatch.setattr(FakeProviders, "StreamGenerate", gated)
    yield opened


async def _stop_fakes(stack: Stack) -> None:
    await stack.channel.close(None)
    for srv in stack.servers:
        await srv.stop(0)


async def _health(stack: Stack) -> int:
    stub = health_pb2_grpc.HealthStub(stack.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    return int(response.status)


async def _not_serving(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await _health(stack) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert loop.time() < deadline, "health never turned NOT_SERVING"
        await asyncio.sleep(0.02)  # polling a condition, not waiting for time to pass


async def _record(tmp_path: Path, session_id: str) -> pb.Session:
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        record = await store.get_session(session_id, "")
    finally:
        await store.close()
    assert record is not None
    return record


async def test_running_sessions_finish_and_new_ones_are_refused_while_draining(
    tmp_path: Path, gate: asyncio.Event
) -> None:
    stack = await start_stack(tmp_path)
    try:
        streamed = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="streamed", max_rounds=1, critic_count=0))
        streamed_id = (await streamed.read()).event.session_id
        # A detached session whose caller has gone: no RPC holds it, the drain alone keeps it alive.
        detached = stack.stub.Orchestrate(
            pb.OrchestrateRequest(prompt="detached", max_rounds=1, critic_count=0, detached=True)
        )
        detached_id = (await detached.read()).event.session_id
        detached.cancel()
        await asyncio.wait_for(stack.providers.started.wait(), 10)

        loop = asyncio.get_running_loop()
        began = loop.time()
        stopping = asyncio.create_task(stack.orchestrator.stop(30))
        await _not_serving(stack)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="too late", max_rounds=1)).read()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == SHUTTING_DOWN
        assert not stopping.done()

        gate.set()
        rest = [response.event async for response in streamed]
        assert rest[-1].HasField("session_completed")
        await asyncio.wait_for(stopping, 20)
        assert loop.time() - began < 20  # it stopped once the sessions were done, not at the end of the grace
        assert (await _record(tmp_path, streamed_id)).status == pb.SESSION_STATUS_COMPLETED
        assert (await _record(tmp_path, detached_id)).status == pb.SESSION_STATUS_COMPLETED
    finally:
        await _stop_fakes(stack)


async def test_sessions_still_running_at_the_deadline_are_interrupted_cleanly(
    tmp_path: Path, gate: asyncio.Event
) -> None:
    stack = await start_stack(tmp_path)
    try:
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="never finishes", max_rounds=1, critic_count=0))
        session_id = (await call.read()).event.session_id
        await asyncio.wait_for(stack.providers.started.wait(), 10)
        stopping = asyncio.create_task(stack.orchestrator.stop(0.5))
        rest = [response.event async for response in call]
        await asyncio.wait_for(stopping, 20)
        assert not gate.is_set()
        final = rest[-1]
        assert final.HasField("session_failed")
        assert final.session_failed.status == pb.SESSION_STATUS_FAILED
        assert final.session_failed.reason == "interrupted: the orchestrator is shutting down"
        assert [e.sequence for e in rest] == list(range(2, len(rest) + 2))
        record = await _record(tmp_path, session_id)
        assert record.status == pb.SESSION_STATUS_FAILED
        assert record.last_sequence == final.sequence
    finally:
        await _stop_fakes(stack)


async def test_a_client_cancel_during_the_drain_is_still_a_cancel(tmp_path: Path, gate: asyncio.Event) -> None:
    stack = await start_stack(tmp_path)
    try:
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="cancel me", max_rounds=1, critic_count=0))
        session_id = (await call.read()).event.session_id
        await asyncio.wait_for(stack.providers.started.wait(), 10)
        stopping = asyncio.create_task(stack.orchestrator.stop(30))
        await _not_serving(stack)
        cancelled = await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id, reason="enough"))
        assert cancelled.session.status == pb.SESSION_STATUS_CANCELLED
        rest = [response.event async for response in call]
        assert rest[-1].session_failed.status == pb.SESSION_STATUS_CANCELLED
        assert rest[-1].session_failed.reason == "cancelled: enough"
        await asyncio.wait_for(stopping, 20)
    finally:
        await _stop_fakes(stack)


async def test_hurry_ends_the_wait_at_once(tmp_path: Path, gate: asyncio.Event) -> None:
    """A second stop signal (``GrpcServer.hurry``, set by ``serve``) interrupts running sessions long before the
    grace period's end."""
    stack = await start_stack(tmp_path)
    try:
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="never finishes", max_rounds=1, critic_count=0))
        await call.read()
        await asyncio.wait_for(stack.providers.started.wait(), 10)
        stopping = asyncio.create_task(stack.orchestrator.stop(600))
        await _not_serving(stack)
        assert not stopping.done()
        stack.orchestrator.hurry.set()
        rest = [response.event async for response in call]
        await asyncio.wait_for(stopping, 20)
        assert rest[-1].session_failed.reason == "interrupted: the orchestrator is shutting down"
        assert not gate.is_set()
    finally:
        await _stop_fakes(stack)
