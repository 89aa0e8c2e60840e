"""Several orchestrators on one SQLite database (WAL), in process: any replica serves any session.

A session runs on the replica that started it; another one follows its stored log for ``WatchSession``,
forwards ``CancelSession`` through the store, and adopts it (exactly once) when its owner is gone. The same
with real processes, ``kill -9`` and a rolling restart: tests/e2e/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from services.orchestrator import server as orchestrator_server
from services.orchestrator.lease import Holder
from services.orchestrator.replicas import Replicas, best_text, follow_store, instance_lease
from services.orchestrator.store.base import SessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import Stack, start_stack, stop_stack, wait_until


@dataclass
class Replica:
    server: GrpcServer
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    started = await start_stack(tmp_path, ORX_ORCHESTRATOR_LEASE_TTL="1")
    yield started
    await stop_stack(started)


@pytest.fixture
async def replica(stack: Stack) -> AsyncIterator[Replica]:
    """A second orchestrator on the stack's database and fakes."""
    server = await orchestrator_server.build(stack.settings, "127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}")
    yield Replica(server, orchestrator_pb2_grpc.OrchestratorServiceStub(channel))
    await channel.close(None)
    await server.stop(0)


async def _held(stack: Stack, prompt: str = "hold on") -> str:
    """A session on the stack's orchestrator whose author streams a little, then waits to be released."""
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt=prompt, detached=True), timeout=30)
    first = await call.read()
    assert isinstance(first, pb.OrchestrateResponse)
    await wait_until(stack.providers.started.is_set)
    call.cancel()
    return first.event.session_id


async def test_a_session_started_on_one_replica_is_watched_on_another_without_a_gap(
    stack: Stack, replica: Replica
) -> None:
    session_id = await _held(stack)
    remote = replica.stub.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=30)
    first = await remote.read()
    assert isinstance(first, pb.WatchSessionResponse) and first.event.sequence == 1
    stack.providers.block.clear()  # the author answers now: new events arrive while B follows the store
    stack.providers.release.set()
    followed = [first.event] + [r.event async for r in remote]
    direct = await stack.watch(session_id)
    assert [e.sequence for e in followed] == list(range(1, len(followed) + 1))
    assert followed == direct
    assert followed[-1].WhichOneof("kind") == "session_completed"


async def test_a_cancel_through_another_replica_reaches_the_owner(stack: Stack, replica: Replica) -> None:
    session_id = await _held(stack)
    got = await replica.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id, reason="from B"), timeout=30)
    assert got.session.status == pb.SESSION_STATUS_CANCELLED
    events = await stack.watch(session_id)
    assert events[-1].session_failed.status == pb.SESSION_STATUS_CANCELLED
    assert events[-1].session_failed.reason == "cancelled: from B"
    assert sum(e.WhichOneof("kind") in ("session_failed", "session_completed") for e in events) == 1


async def test_get_session_on_another_replica_reports_the_stored_sequence(stack: Stack, replica: Replica) -> None:
    session_id = await _held(stack)
    got = await replica.stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=30)
    assert got.session.status == pb.SESSION_STATUS_RUNNING
    assert got.session.last_sequence >= 2  # session_started, model_selected, at least


async def test_the_sessions_of_a_gone_instance_are_adopted_exactly_once_with_the_best_answer(tmp_path: Path) -> None:
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        await adopted_exactly_once(store)
    finally:
        await store.close()


async def adopted_exactly_once(store: SessionStore) -> None:
    """Three replicas sweep at once: exactly one ends the gone instance's session, with its best answer."""
    ghost = Holder("elsewhere", "boot-x", 4242, 77, "ghost")
    now = time.time()
    await store.claim_lease(instance_lease("ghost"), ghost.encode(), int(now * 1e6), int((now - 1) * 1e6))
    record = pb.Session(session_id="s-orphan", status=pb.SESSION_STATUS_RUNNING)
    await store.create_session("t", record, owner="ghost")
    events = [
        pb.OrchestrationEvent(session_id="s-orphan", sequence=1, session_started=pb.SessionStarted()),
        pb.OrchestrationEvent(
            session_id="s-orphan", sequence=2, response_completed=pb.ResponseCompleted(round=1, text="first")
        ),
        pb.OrchestrationEvent(
            session_id="s-orphan", sequence=3, round_completed=pb.RoundCompleted(round=1, best_round=1)
        ),
        pb.OrchestrationEvent(
            session_id="s-orphan", sequence=4, response_completed=pb.ResponseCompleted(round=2, text="worse")
        ),
        pb.OrchestrationEvent(
            session_id="s-orphan", sequence=5, round_completed=pb.RoundCompleted(round=2, best_round=1)
        ),
    ]
    await store.append_events([("s-orphan", e.sequence, e.SerializeToString()) for e in events])
    # a live instance's session is not touched
    alive = Holder("elsewhere", "boot-x", 4243, 78, "alive")
    await store.claim_lease(instance_lease("alive"), alive.encode(), int(now * 1e6), int((now + 60) * 1e6))
    await store.create_session("t", pb.Session(session_id="s-alive", status=pb.SESSION_STATUS_RUNNING), "alive")

    def replicas(token: str) -> Replicas:
        me = Holder("here", "boot-y", 1, 1, token)
        return Replicas(store, me, 1.0, lambda *_: None, lambda _: False, lambda: False)

    ended = await asyncio.gather(*(replicas(f"r{i}").sweep() for i in range(3)))
    assert sorted(ended) == [0, 0, 1]
    stored = [pb.OrchestrationEvent.FromString(p) for p in await store.read_events("s-orphan", 0)]
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5, 6]
    assert stored[-1].session_failed.best_text == "first"  # round 1 was the best, not the last
    assert "stopped" in stored[-1].session_failed.reason
    orphan = await store.get_session("s-orphan", "")
    assert orphan is not None and orphan.status == pb.SESSION_STATUS_FAILED and orphan.last_sequence == 6
    alive_record = await store.get_session("s-alive", "")
    assert alive_record is not None and alive_record.status == pb.SESSION_STATUS_RUNNING
    assert sum(await asyncio.gather(*(replicas(f"r{i}").sweep() for i in range(3)))) == 0  # nothing left


async def test_a_session_adopted_but_not_ended_is_ended_by_the_next_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adopter owns it now, so no other replica will sweep it: the adopter must finish the job."""
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        now = time.time()
        ghost = Holder("elsewhere", "boot-x", 4242, 77, "ghost")
        await store.claim_lease(instance_lease("ghost"), ghost.encode(), int(now * 1e6), int((now - 1) * 1e6))
        await store.create_session("t", pb.Session(session_id="s-orphan", status=pb.SESSION_STATUS_RUNNING), "ghost")
        append = store.append_events
        failures = iter([OSError("disk full")])

        async def fails_once(events: Sequence[tuple[str, int, bytes]]) -> None:
            if (error := next(failures, None)) is not None:
                raise error
            await append(events)

        monkeypatch.setattr(store, "append_events", fails_once)
        me = Replicas(store, Holder("here", "boot-y", 1, 1, "me"), 1.0, lambda *_: None, lambda _: False, lambda: False)
        with pytest.raises(OSError):
            await me.sweep()
        orphan = await store.get_session("s-orphan", "")
        assert orphan is not None and orphan.status == pb.SESSION_STATUS_RUNNING
        assert await me.sweep() == 1
        orphan = await store.get_session("s-orphan", "")
        assert orphan is not None and orphan.status == pb.SESSION_STATUS_FAILED
    finally:
        await store.close()


def test_best_text_prefers_the_best_round_and_ignores_shadow_answers() -> None:
    def answer(round_no: int, text: str, shadow: bool = False) -> pb.OrchestrationEvent:
        return pb.OrchestrationEvent(response_completed=pb.ResponseCompleted(round=round_no, text=text, shadow=shadow))

    def scored(round_no: int, best: int) -> pb.OrchestrationEvent:
        return pb.OrchestrationEvent(round_completed=pb.RoundCompleted(round=round_no, best_round=best))

    assert best_text([]) == ""
    assert best_text([answer(1, "only")]) == "only"  # unscored: the last answer given
    assert best_text([answer(1, "a"), scored(1, 1), answer(2, "b"), scored(2, 2)]) == "b"
    assert best_text([answer(1, "a"), scored(1, 1), answer(2, "b"), scored(2, 1), answer(3, "c")]) == "a"
    assert best_text([answer(1, "a"), answer(1, "shadow", shadow=True)]) == "a"


async def test_following_the_store_backs_off_while_nothing_comes_and_stops_at_the_end(tmp_path: Path) -> None:
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    waits: list[float] = []
    try:
        await store.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "x")
        first = pb.OrchestrationEvent(session_id="s", sequence=1, session_started=pb.SessionStarted())
        await store.append_events([("s", 1, first.SerializeToString())])

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 5:  # the owner ends the session while the follower waits
                end = pb.OrchestrationEvent(session_id="s", sequence=2, session_failed=pb.SessionFailed())
                await store.append_events([("s", 2, end.SerializeToString())])

        got = [e.sequence async for e in follow_store(store, "s", 0, sleep=sleep)]
        assert got == [1, 2]
        assert waits == [0.02, 0.04, 0.08, 0.16, 0.25]
    finally:
        await store.close()
