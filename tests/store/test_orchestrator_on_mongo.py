"""The real orchestrator service with ``ORX_MONGODB_URI`` set: sessions, replay, the outbox and crash
recovery all go through :class:`MongoSessionStore` (on the double, or a real server when configured).

The replica tests of tests/orchestrator/test_replicas.py run here too, on MongoDB: the same test functions,
given this module's ``stack`` and ``replica`` fixtures (two orchestrators on one database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.store import mongo
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from services.orchestrator import server as orchestrator_server
from services.orchestrator.store.mongo import MongoSessionStore
from tests.orchestrator import test_replicas as on_sqlite
from tests.orchestrator.conftest import Stack, start_stack, stop_stack, wait_until
from tests.store.conftest import BACKENDS, MONGODB_URI, MongoTarget


@pytest.fixture(params=BACKENDS[1:])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def env(mongo_target: MongoTarget | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    assert mongo_target is not None
    if mongo_target.settings is not None:
        return {"ORX_MONGODB_URI": MONGODB_URI, "ORX_MONGODB_DATABASE": mongo_target.name}
    client = mongo_target.client

    async def connect_double(settings: Settings, appname: str) -> Any:
        return client

    monkeypatch.setattr(mongo, "connect", connect_double)
    monkeypatch.setattr(type(client), "close", _keep_open)
    return {"ORX_MONGODB_URI": "mongodb://double.invalid:27017", "ORX_MONGODB_DATABASE": mongo_target.name}


async def _keep_open(self: Any) -> None:
    """The double is this process's "server": a restarted service must find its data again."""


@pytest.fixture
async def stack(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Stack]:
    started = await start_stack(tmp_path, ORX_ORCHESTRATOR_LEASE_TTL="1", **env)
    yield started
    await stop_stack(started)


@pytest.fixture
async def replica(stack: Stack) -> AsyncIterator[on_sqlite.Replica]:
    """A second orchestrator on the stack's MongoDB database."""
    server = await orchestrator_server.build(stack.settings, "127.0.0.1:0")
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}")
    yield on_sqlite.Replica(server, orchestrator_pb2_grpc.OrchestratorServiceStub(channel))
    await channel.close(None)
    await server.stop(0)


test_replicas_watch_another_replicas_session_without_a_gap = (
    on_sqlite.test_a_session_started_on_one_replica_is_watched_on_another_without_a_gap
)
test_replicas_forward_a_cancel_to_the_owner = on_sqlite.test_a_cancel_through_another_replica_reaches_the_owner
test_replicas_report_the_stored_sequence = on_sqlite.test_get_session_on_another_replica_reports_the_stored_sequence


async def test_replicas_adopt_a_gone_instances_sessions_exactly_once(mongo_target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(mongo_target.db)
    try:
        await on_sqlite.adopted_exactly_once(store)
    finally:
        await store.close()


async def test_sessions_outbox_and_restart_on_mongodb(
    tmp_path: Path, env: dict[str, str], mongo_target: MongoTarget
) -> None:
    stack = await start_stack(tmp_path, **env)
    try:
        stack.providers.answers["m/alpha"] = ["an answer quality=9"]
        events = await stack.run(prompt="What is WAL?", max_rounds=1)
        sid = events[0].session_id
        assert events[-1].HasField("session_completed")
        expected = [e for e in events if not e.HasField("response_delta")]
        await wait_until(lambda: len(stack.analytics.events) >= len(expected))
        assert stack.analytics.events == expected
        # a finished session is replayed from the store
        assert await stack.watch(sid) == events
        listed = await stack.stub.ListSessions(pb.ListSessionsRequest(page_size=10))
        assert [s.session_id for s in listed.sessions] == [sid]
        # an interrupted one is left "running" in the database, as after a crash
        stack.providers.block.add("m/alpha")
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1, detached=True), timeout=30)
        interrupted = (await call.read()).event.session_id
        await asyncio.wait_for(stack.providers.started.wait(), 5)
        call.cancel()
    finally:
        await stop_stack(stack)
    store = await MongoSessionStore.attach(mongo_target.db)
    record = await store.get_session(interrupted, "")
    assert record is not None
    record.status = pb.SESSION_STATUS_RUNNING
    await store.save_session(record)
    assert (tmp_path / "orchestrator.db").exists() is False  # nothing went to SQLite
    again = await start_stack(tmp_path, **env)
    try:
        got = (await again.stub.GetSession(pb.GetSessionRequest(session_id=interrupted))).session
        assert got.status == pb.SESSION_STATUS_FAILED and "interrupted" in got.failure.reason
        replay = await again.watch(interrupted)
        assert replay[-1].HasField("session_failed")
        assert [e.sequence for e in replay] == list(range(1, len(replay) + 1))
        # the terminal event the shutdown wrote is the only one: recovery brought the record in line
        assert [e for e in replay if e.HasField("session_failed")] == [replay[-1]]
        # the outbox resumed from its stored cursor: a new session is delivered, the first one not again
        again.providers.answers["m/alpha"] = ["another answer quality=9"]
        fresh = (await again.run(prompt="And now?", max_rounds=1))[0].session_id
        await wait_until(lambda: any(e.session_id == fresh for e in again.analytics.events))
        assert all(e.session_id != sid for e in again.analytics.events)
    finally:
        await stop_stack(again)


@pytest.mark.parametrize("change_feed", ["on", "off"])
async def test_the_orchestrator_opens_one_change_feed_unless_told_not_to(
    tmp_path: Path, env: dict[str, str], change_feed: str
) -> None:
    stack = await start_stack(tmp_path, ORX_ORCHESTRATOR_CHANGE_FEED=change_feed, **env)
    try:
        feeds = [task for task in asyncio.all_tasks() if task.get_name() == "change-feed"]
        assert len(feeds) == (1 if change_feed == "on" else 0)
    finally:
        await stop_stack(stack)
    assert all(task.done() for task in feeds)


async def test_both_replicas_sessions_reach_analytics_once_through_the_leaders_outbox(
    stack: Stack, replica: on_sqlite.Replica
) -> None:
    """Two writers on one database, one outbox (the leader's): each replica's events are delivered once each, and
    each session's in order."""
    on_a = await stack.run(prompt="first, on A", max_rounds=1)
    on_b = [r.event async for r in replica.stub.Orchestrate(pb.OrchestrateRequest(prompt="then on B", max_rounds=1))]
    expected = [e for e in on_a + on_b if not e.HasField("response_delta")]
    await wait_until(lambda: len(stack.analytics.events) >= len(expected))
    delivered = stack.analytics.events
    assert sorted(delivered, key=lambda e: (e.session_id, e.sequence)) == sorted(
        expected, key=lambda e: (e.session_id, e.sequence)
    )
    assert len({(e.session_id, e.sequence) for e in delivered}) == len(delivered)
    for session_id in {e.session_id for e in expected}:
        sequences = [e.sequence for e in delivered if e.session_id == session_id]
        assert sequences == sorted(sequences), session_id  # store-position order keeps each session's order
