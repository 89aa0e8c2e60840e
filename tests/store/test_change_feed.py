"""Following another replica's session with the store's change feed (MongoDB change streams) instead of polling.

On the double (``AsyncClientDouble(replica_set=True)`` imitates a replica set's change streams for inserts);
a real server's timing is for ``bench/replica_follow_bench.py`` with ``ORX_TEST_MONGODB_URI``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from orchestratex.config import Settings
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import replicas
from services.orchestrator.replicas import ChangeFeed, follow_store
from services.orchestrator.store.mongo import MongoSessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import wait_until
from tests.store.conftest import MONGODB_URI
from tests.store.mongo_double import AsyncClientDouble


def db(client: AsyncClientDouble) -> Any:
    """The double's database, where the stores expect PyMongo's."""
    return client["orx"]


def started(session_id: str) -> tuple[str, int, bytes]:
    return (session_id, 1, pb.OrchestrationEvent(session_id=session_id, sequence=1).SerializeToString())


def delta(session_id: str, sequence: int) -> tuple[str, int, bytes]:
    event = pb.OrchestrationEvent(session_id=session_id, sequence=sequence, response_delta=pb.ResponseDelta(text="x"))
    return (session_id, sequence, event.SerializeToString())


def ended(session_id: str, sequence: int) -> tuple[str, int, bytes]:
    event = pb.OrchestrationEvent(session_id=session_id, sequence=sequence, session_failed=pb.SessionFailed())
    return (session_id, sequence, event.SerializeToString())


async def never_poll(seconds: float) -> None:
    raise AssertionError(f"the follower polled ({seconds} s) while the feed was live")


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncClientDouble]:
    """A double of a replica set. Followers' safety reads are pushed out of reach, so only the feed can wake
    them (a test fails by its timeout, not by a slow pass)."""
    monkeypatch.setattr(replicas, "FEED_SAFETY_POLL", 3600.0)
    yield AsyncClientDouble(replica_set=True)


async def test_a_live_feed_wakes_the_follower_of_each_stored_event_without_polling(client: AsyncClientDouble) -> None:
    await woken_without_polling(await MongoSessionStore.attach(db(client)), await MongoSessionStore.attach(db(client)))


async def woken_without_polling(owner: MongoSessionStore, follower: MongoSessionStore) -> None:
    """``owner`` (the replica running the session) stores events; ``follower``'s feed wakes its follower."""
    feed = ChangeFeed(follower)
    assert feed.start()
    await wait_until(lambda: feed.live)
    await owner.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "a")
    await owner.create_session("t", pb.Session(session_id="other", status=pb.SESSION_STATUS_RUNNING), "a")
    await owner.append_events([started("s")])
    following = follow_store(follower, "s", 0, feed=feed, sleep=never_poll)
    async with asyncio.timeout(10):
        assert (await anext(following)).sequence == 1
        for sequence in (2, 3):
            await owner.append_events([started("other"), delta("s", sequence)])  # another session's events too
            assert (await anext(following)).sequence == sequence
        await owner.append_events([ended("s", 4)])
        assert [e.sequence async for e in following] == [4]
    assert not feed._waiters  # the follower unsubscribed at the end
    await feed.stop()
    assert not feed.live


@pytest.mark.skipif(not MONGODB_URI, reason="ORX_TEST_MONGODB_URI is not set (docs/storage.md)")
async def test_on_a_real_server_the_feed_wakes_followers_on_a_replica_set_and_is_refused_standalone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "FEED_SAFETY_POLL", 3600.0)
    name = f"orx_test_{uuid.uuid4().hex[:16]}"
    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path), "ORX_MONGODB_URI": MONGODB_URI, "ORX_MONGODB_DATABASE": name}
    )
    owner, follower = await MongoSessionStore.open(settings), await MongoSessionStore.open(settings)
    try:
        hello = await owner.db.command("hello")
        if "setName" in hello or hello.get("msg") == "isdbgrid":
            await woken_without_polling(owner, follower)
        else:
            feed = ChangeFeed(follower)
            feed.start()
            await wait_until(lambda: feed._task is not None and feed._task.done())
            assert not feed.live
    finally:
        await owner.db.client.drop_database(name)
        await owner.close()
        await follower.close()


async def test_without_a_replica_set_the_follower_polls(caplog: pytest.LogCaptureFixture) -> None:
    store = await MongoSessionStore.attach(db(AsyncClientDouble()))  # a standalone server
    feed = ChangeFeed(store)
    with caplog.at_level(logging.INFO, logger="services.orchestrator.replicas"):
        assert feed.start()
        await wait_until(lambda: feed._task is not None and feed._task.done())
    assert not feed.live
    assert "no change streams" in caplog.text
    await store.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "a")
    await store.append_events([started("s")])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            await store.append_events([ended("s", 2)])

    assert [e.sequence async for e in follow_store(store, "s", 0, feed=feed, sleep=sleep)] == [1, 2]
    assert waits == [0.02, 0.04, 0.08]
    await feed.stop()


async def test_a_broken_feed_wakes_its_followers_who_poll_until_it_reopens(
    client: AsyncClientDouble, caplog: pytest.LogCaptureFixture
) -> None:
    store = await MongoSessionStore.attach(db(client))
    feed = ChangeFeed(store, retry=3600)
    feed.start()
    await wait_until(lambda: feed.live)
    await store.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "a")
    await store.append_events([started("s")])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await store.append_events([ended("s", 2)])

    following = follow_store(store, "s", 0, feed=feed, sleep=sleep)
    assert (await anext(following)).sequence == 1
    waiting = anext(following)  # waits on the feed
    with caplog.at_level(logging.WARNING, logger="services.orchestrator.replicas"):
        client.break_streams(AutoReconnect("primary stepped down"))
        async with asyncio.timeout(10):
            last = await waiting
    assert last.sequence == 2 and waits == [0.02]  # woken by the break, then polled once
    assert not feed.live
    assert "change feed broke (AutoReconnect)" in caplog.text
    await following.aclose()
    await feed.stop()


async def test_a_store_without_a_feed_is_not_followed_by_one(tmp_path: Path) -> None:
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        assert store.change_feed() is None
        assert not ChangeFeed(store).start()
    finally:
        await store.close()


async def test_a_follower_that_goes_away_mid_wait_unsubscribes(client: AsyncClientDouble) -> None:
    store = await MongoSessionStore.attach(db(client))
    feed = ChangeFeed(store)
    feed.start()
    await wait_until(lambda: feed.live)
    await store.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "a")
    following = follow_store(store, "s", 0, feed=feed, sleep=never_poll)
    waiting = asyncio.create_task(anext(following))
    await wait_until(lambda: "s" in feed._waiters)
    waiting.cancel()  # the WatchSession client disconnected
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not feed._waiters
    await feed.stop()


async def test_an_event_stored_while_the_feed_opens_is_not_left_to_the_safety_read(client: AsyncClientDouble) -> None:
    """The feed opens during the follower's read, just after an event was stored that it will never announce:
    the follower polls once more instead of waiting on the feed."""
    owner = await MongoSessionStore.attach(db(client))
    follower = await MongoSessionStore.attach(db(client))
    await owner.create_session("t", pb.Session(session_id="s", status=pb.SESSION_STATUS_RUNNING), "a")
    await owner.append_events([started("s")])
    feed = ChangeFeed(follower)
    read_events = follower.read_events
    reads = 0

    async def read_while_the_feed_opens(session_id: str, after_sequence: int, limit: int = 1000) -> list[bytes]:
        nonlocal reads
        got = await read_events(session_id, after_sequence, limit)
        reads += 1
        if reads == 2:  # the read after event 1 found nothing; meanwhile 2 is stored, then the feed opens
            await owner.append_events([ended("s", 2)])
            feed.start()
            await wait_until(lambda: feed.live)
        return got

    follower.read_events = read_while_the_feed_opens  # type: ignore[method-assign]
    polls: list[float] = []

    async def sleep(seconds: float) -> None:
        polls.append(seconds)

    async with asyncio.timeout(10):
        got = [e.sequence async for e in follow_store(follower, "s", 0, feed=feed, sleep=sleep)]
    assert got == [1, 2] and polls == [0.02, 0.04]  # polled after event 1, and once more as the feed opened
    await feed.stop()
