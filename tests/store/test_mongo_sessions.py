"""MongoDB-only behaviour of the session store: schema metadata, migrations, indexes, store positions,
duplicate handling and connecting. Runs on ``mongo-double`` always and on ``mongodb`` when
``ORX_TEST_MONGODB_URI`` is set."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError

from orchestratex.config import Settings
from orchestratex.store import mongo
from orchestratex.store.mongo import SCHEMA_COLLECTION, client_options, connect, duplicate_indexes
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SessionQuery
from services.orchestrator.store.mongo import (
    COUNTERS,
    EVENT_POSITIONS,
    EVENTS,
    SESSION_INDEXES,
    SESSION_MIGRATIONS,
    MongoSessionStore,
)
from tests.store.conftest import BACKENDS, MongoTarget
from tests.store.test_session_store_contract import event, session, tenant


@pytest.fixture(params=BACKENDS[1:])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def target(mongo_target: MongoTarget | None) -> MongoTarget:
    assert mongo_target is not None
    return mongo_target


async def test_schema_meta_records_the_migrations_once(target: MongoTarget) -> None:
    stores = await asyncio.gather(*(MongoSessionStore.attach(target.db) for _ in range(3)))
    again = await MongoSessionStore.attach(target.db)
    meta = await target.db[SCHEMA_COLLECTION].find_one({"_id": "sessions"})
    assert meta["version"] == len(SESSION_MIGRATIONS)
    assert [m["name"] for m in meta["migrations"]] == [name for name, _ in SESSION_MIGRATIONS]
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["allocated"], counter["base"], counter["open"]) == (0, 0, [])
    assert "committed" not in counter
    for store in [*stores, again]:
        await store.close()


async def test_newer_schema_is_refused(target: MongoTarget) -> None:
    await target.db[SCHEMA_COLLECTION].insert_one({"_id": "sessions", "version": 99, "migrations": []})
    with pytest.raises(RuntimeError, match="newer than this code"):
        await MongoSessionStore.attach(target.db)


async def test_every_query_path_has_its_index(target: MongoTarget) -> None:
    await MongoSessionStore.attach(target.db)
    for spec in SESSION_INDEXES:
        info = await target.db[spec.collection].index_information()
        assert spec.name in info, spec.name
        assert [tuple(k) for k in info[spec.name]["key"]] == [tuple(k) for k in spec.keys]
        assert bool(info[spec.name].get("unique")) == spec.unique


class Through:
    """A collection that passes every call on to ``real``, except those a subclass overrides (a test's fault)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def pause_inserts(store: MongoSessionStore, pauses: Callable[[], int]) -> None:
    """Make every insert of ``store`` yield to the event loop ``pauses()`` times first (other writers and the
    reader run meanwhile)."""

    class Paused(Through):
        async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
            for _ in range(pauses()):
                await asyncio.sleep(0)
            return await self.real.insert_many(docs, **kwargs)

    store._events = Paused(store._events)  # type: ignore[assignment]


class Clock:
    """A wall clock the test moves by hand (the horizon compares reservation times with it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def drain(store: MongoSessionStore, cursor: int) -> tuple[list[int], int]:
    """Read everything past ``cursor`` as the outbox does: positions read, and the new cursor."""
    seen: list[int] = []
    while page := await store.events_after(cursor, 7):
        seen += [r.position for r in page]
        cursor = page[-1].position
    return seen, cursor


async def test_a_failed_batch_holds_the_horizon_until_its_retry_stores_its_events(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    await store.append_events([event(rec.session_id, 1)])
    real_events = store._events

    class FirstLandsThenFails(Through):
        """The insert stores the first event, then the connection drops (the reply is lost)."""

        async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
            await self.real.insert_one(docs[0])
            raise AutoReconnect("connection closed")

    store._events = FirstLandsThenFails(real_events)  # type: ignore[assignment]
    with pytest.raises(AutoReconnect):
        await store.append_events([event(rec.session_id, 2), event(rec.session_id, 3)])
    store._events = real_events
    assert await drain(store, 0) == ([1], 1)  # event 2 landed at position 2, but the batch is not done
    # the writer's retry resends the same events first: event 2 is a duplicate (kept at 2), 3 lands at 5
    await store.append_events([event(rec.session_id, 2), event(rec.session_id, 3)])
    assert await drain(store, 1) == ([2, 5], 5)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["base"], counter["open"], counter["allocated"]) == (5, [], 5)
    await store.close()


async def test_a_dead_writers_reservation_is_skipped_once_old_and_what_landed_is_read(target: MongoTarget) -> None:
    """The age that counts is how long the reader has watched the reservation head the list, on its own clock:
    the dead writer's clock is an hour off, and changes nothing."""
    clock = Clock()
    await (await MongoSessionStore.attach(target.db)).close()
    skewed = Clock()
    skewed.now -= 3600
    dead = MongoSessionStore(target.db, clock=skewed)
    live = MongoSessionStore(target.db, hole_timeout=30, clock=clock)
    rec = session()
    await live.create_session(tenant(), rec)
    # the dead writer reserved three positions, stored one event, and was killed before marking them done
    reservation = await dead._reserve(3)
    await target.db[EVENTS].insert_one(
        {"position": reservation.start, "session_id": rec.session_id, "sequence": 1, "payload": b"p"}
    )
    await live.append_events([event(rec.session_id, 2)])  # position 4, behind the hole
    assert await drain(live, 0) == ([], 0)
    clock.now += 29
    assert await drain(live, 0) == ([], 0)
    clock.now += 2
    assert await drain(live, 0) == ([1, 4], 4)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["base"], counter["open"]) == (4, [])
    await live.close()
    await dead.close()


async def test_a_writer_slower_than_the_hole_timeout_moves_its_events_past_the_readers(target: MongoTarget) -> None:
    clock = Clock()
    slow = MongoSessionStore(target.db, hole_timeout=30, clock=clock)
    reader = MongoSessionStore(target.db, hole_timeout=30, clock=clock)
    rec = session()
    await reader.create_session(tenant(), rec)
    entered, release = asyncio.Event(), asyncio.Event()

    class Stalls(Through):
        async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await self.real.insert_many(docs, **kwargs)

    slow._events = Stalls(slow._events)  # type: ignore[assignment]
    writing = asyncio.create_task(slow.append_events([event(rec.session_id, 1), event(rec.session_id, 2)]))
    await entered.wait()
    await reader.append_events([event(rec.session_id, 3)])
    assert await drain(reader, 0) == ([], 0)  # the reader sees the stalled batch at the head...
    clock.now += 31
    assert await drain(reader, 0) == ([3], 3)  # ... and gives up on it
    release.set()
    await writing  # it lands at 1 and 2, below the reader's cursor, finds itself skipped and moves on
    assert await drain(reader, 3) == ([4, 5], 5)
    stored = await target.db[EVENTS].find({"session_id": rec.session_id}).sort("sequence", 1).to_list(None)
    assert [(d["sequence"], d["position"]) for d in stored] == [(1, 4), (2, 5), (3, 3)]
    await reader.close()
    await slow.close()


@pytest.mark.parametrize("seed", range(4))
async def test_several_writers_and_a_reader_at_once_lose_nothing(target: MongoTarget, seed: int) -> None:
    """Three writers append batches of random sizes with random pauses while a reader follows the
    horizon; every event is read, once, in position order, and the reader never passes a position that
    is stored later."""
    rng = random.Random(seed)
    writers = [await MongoSessionStore.attach(target.db) for _ in range(3)]
    rec = session()
    await writers[0].create_session(tenant(), rec)
    for store in writers:
        pause_inserts(store, lambda: rng.randrange(6))
    sequences = iter(range(1, 10_000))
    written: list[int] = []

    async def write(store: MongoSessionStore) -> None:
        for _ in range(12):
            batch = [next(sequences) for _ in range(rng.randint(1, 5))]
            await store.append_events([event(rec.session_id, n) for n in batch])
            written.extend(batch)

    delivered: list[int] = []
    cursor = 0
    done = asyncio.Event()

    async def read() -> None:
        nonlocal cursor
        while not done.is_set():
            seen, cursor = await drain(writers[1], cursor)
            delivered.extend(seen)
            await asyncio.sleep(0)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(w) for w in writers))
    done.set()
    await reading
    seen, cursor = await drain(writers[2], cursor)
    delivered.extend(seen)
    assert delivered == sorted(set(delivered))
    stored = await target.db[EVENTS].find({"session_id": rec.session_id}).to_list(None)
    assert sorted(delivered) == sorted(d["position"] for d in stored)
    assert sorted(d["sequence"] for d in stored) == sorted(written)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["base"], counter["open"]) == (counter["allocated"], [])
    for store in writers:
        await store.close()


async def test_the_v4_migration_converts_committed_once_and_keeps_later_reservations(target: MongoTarget) -> None:
    await target.db[SCHEMA_COLLECTION].insert_one({"_id": "sessions", "version": 3, "migrations": []})
    # a release before replicas left positions 4 and 5 reserved (its writer crashed): they are committed
    await target.db[COUNTERS].insert_one({"_id": EVENT_POSITIONS, "allocated": 5, "committed": 3})
    store = await MongoSessionStore.attach(target.db)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["allocated"], counter["base"], counter["open"]) == (5, 5, [])
    assert "committed" not in counter
    reservation = await store._reserve(2)
    # a second process that read version 3 before the first recorded 4 runs the migration again
    await SESSION_MIGRATIONS[3][1](target.db)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert [r["token"] for r in counter["open"]] == [reservation.token]
    assert counter["base"] == 5
    await store.close()


async def test_a_position_collision_is_an_error_not_a_duplicate(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    await store.append_events([event(rec.session_id, 1), event(rec.session_id, 2)])
    # a counter that went backwards (say, restored into a live database) must not drop events silently
    await target.db[COUNTERS].update_one({"_id": EVENT_POSITIONS}, {"$set": {"allocated": 0}})
    with pytest.raises(RuntimeError, match="collided on store position"):
        await store.append_events([event(rec.session_id, 3)])
    await store.close()


def test_only_duplicate_key_errors_count_as_duplicates() -> None:
    dup = {"writeErrors": [{"index": 0, "code": 11000}, {"index": 3, "code": 11000}], "writeConcernErrors": []}
    assert duplicate_indexes(BulkWriteError(dup)) == [0, 3]
    mixed = {"writeErrors": [{"index": 0, "code": 11000}, {"index": 1, "code": 121}], "writeConcernErrors": []}
    assert duplicate_indexes(BulkWriteError(mixed)) is None
    concern = {"writeErrors": [{"index": 0, "code": 11000}], "writeConcernErrors": [{"code": 64}]}
    assert duplicate_indexes(BulkWriteError(concern)) is None
    assert duplicate_indexes(BulkWriteError({"writeErrors": []})) is None


def test_client_options_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_MONGODB_URI": "mongodb://db.example:27017",
            "ORX_MONGODB_MAX_POOL_SIZE": "7",
            "ORX_MONGODB_MIN_POOL_SIZE": "2",
            "ORX_MONGODB_TIMEOUT": "1.5",
            "ORX_MONGODB_SOCKET_TIMEOUT": "12",
        }
    )
    options = client_options(settings, "orchestratex-test")
    assert options["maxPoolSize"] == 7 and options["minPoolSize"] == 2
    assert options["serverSelectionTimeoutMS"] == options["connectTimeoutMS"] == 1500
    assert options["socketTimeoutMS"] == 12000
    assert options["appname"] == "orchestratex-test"


async def test_unreachable_server_fails_fast_without_revealing_the_uri(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            # a Unix socket nobody listens on: the real driver fails at once and retries until the timeout
            # (a refused TCP port would do too, but pymongo 4.20 then leaks a monitor socket at close)
            "ORX_MONGODB_URI": f"mongodb://orx:{password}@{quote(str(tmp_path / 'no-mongo.sock'), safe='')}/",
            "ORX_MONGODB_TIMEOUT": "0.3",
        }
    )
    caplog.set_level(logging.DEBUG, logger="orchestratex")
    with pytest.raises(ConnectionError) as info:
        await connect(settings, "orchestratex-test")
    text = str(info.value)
    assert "ORX_MONGODB_URI" in text and password not in text and "no-mongo.sock" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert password not in caplog.text


async def test_open_uses_the_real_driver_path(target: MongoTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """``MongoSessionStore.open`` builds its client through :func:`connect` and closes it on close()."""
    if target.settings is not None:
        store = await MongoSessionStore.open(target.settings)
        await store.close()
        return
    client = target.client

    async def fake_connect(settings: Settings, appname: str) -> Any:
        await client.admin.command("ping")
        return client

    monkeypatch.setattr(mongo, "connect", fake_connect)
    settings = Settings.from_env({"ORX_MONGODB_URI": "mongodb://x:27017", "ORX_MONGODB_DATABASE": target.name})
    store = await MongoSessionStore.open(settings)
    await store.close()
    assert client.closed


async def test_a_slow_batch_never_lets_the_outbox_skip_it(target: MongoTarget) -> None:
    """Batch A reserves positions and is slow to land; batch B comes later. The outbox must not pass
    A's positions before A's events are there, or it would never deliver them."""
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    real_events = store._events
    release = asyncio.Event()
    entered = asyncio.Event()

    class SlowFirstInsert(Through):
        first = True

        async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
            if self.first:
                self.first = False
                entered.set()
                await release.wait()
            return await self.real.insert_many(docs, **kwargs)

    store._events = SlowFirstInsert(real_events)  # type: ignore[assignment]
    slow = asyncio.create_task(store.append_events([event(rec.session_id, 1), event(rec.session_id, 2)]))
    await entered.wait()
    fast = asyncio.create_task(store.append_events([event(rec.session_id, 3)]))
    delivered: list[int] = []
    cursor = 0
    for _ in range(20):  # the outbox polls while A is stuck
        page = await store.events_after(cursor, 10)
        delivered += [r.position for r in page]
        cursor = page[-1].position if page else cursor
        await asyncio.sleep(0)
    assert delivered == []
    release.set()
    await asyncio.gather(slow, fast)
    while page := await store.events_after(cursor, 10):
        delivered += [r.position for r in page]
        cursor = page[-1].position
    assert delivered == [1, 2, 3]
    store._events = real_events
    await store.close()


async def test_sessions_stored_before_prompt_search_are_indexed_by_the_migration(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    a = tenant()
    rec = session(prompt="An earlier question about Raft")
    await store.create_session(a, rec)
    # as the previous release stored it: no search text, and the schema one version back
    await target.db["sessions"].update_one({"_id": rec.session_id}, {"$unset": {"search": ""}})
    await target.db[SCHEMA_COLLECTION].update_one({"_id": "sessions"}, {"$set": {"version": 1}})
    assert (await store.list_sessions(SessionQuery(tenant=a, prompt_contains="raft"))).sessions == []
    again = await MongoSessionStore.attach(target.db)
    found = await again.list_sessions(SessionQuery(tenant=a, prompt_contains="raft"))
    assert [s.session_id for s in found.sessions] == [rec.session_id]
    await store.close()
    await again.close()


async def test_a_lone_writers_batch_costs_two_counter_updates_as_before_the_horizon(target: MongoTarget) -> None:
    """Reserve (with its place in ``open``) and pop into ``base``: the same three round trips per batch, with the
    insert, as the single-writer counter had; a reader's horizon is one read."""
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    real = store._counters
    calls: list[str] = []

    class Counting(Through):
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return super().__getattr__(name)

    store._counters = Counting(real)  # type: ignore[assignment]
    await store.append_events([event(rec.session_id, 1), event(rec.session_id, 2)])
    assert calls == ["find_one_and_update", "find_one_and_update"]
    calls.clear()
    assert await store.committed_position() == 2
    assert calls == ["find_one"]
    store._counters = real
    await store.close()


async def test_a_batch_whose_mark_fails_is_marked_by_its_retry(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    real = store._counters
    failures = iter([AutoReconnect("connection closed")])

    class MarkFailsOnce(Through):
        async def find_one_and_update(self, query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if "open.0.token" in query and (error := next(failures, None)) is not None:
                raise error
            return await self.real.find_one_and_update(query, *args, **kwargs)

    store._counters = MarkFailsOnce(real)  # type: ignore[assignment]
    with pytest.raises(AutoReconnect):
        await store.append_events([event(rec.session_id, 1)])
    assert await drain(store, 0) == ([], 0)  # stored, not yet visible
    await store.append_events([event(rec.session_id, 1), event(rec.session_id, 2)])
    assert await drain(store, 0) == ([1, 3], 3)  # no 30 s wait: the retry marked the first reservation
    store._counters = real
    await store.close()


async def test_a_reservation_whose_reply_is_lost_is_marked_done_at_once(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    real = store._counters

    class ReplyLost(Through):
        async def find_one_and_update(self, query: dict[str, Any], update: Any, **kwargs: Any) -> Any:
            result = await self.real.find_one_and_update(query, update, **kwargs)
            if "$push" in update:
                raise AutoReconnect("connection closed")  # applied on the server, the reply lost
            return result

    store._counters = ReplyLost(real)  # type: ignore[assignment]
    with pytest.raises(AutoReconnect):
        await store.append_events([event(rec.session_id, 1)])
    store._counters = real
    await store.append_events([event(rec.session_id, 1)])
    assert await drain(store, 0) == ([2], 2)  # position 1 was never written, and holds nothing back
    await store.close()


async def test_a_failed_fold_never_fails_the_batch_that_was_written(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    other = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    first = await store._reserve(1)  # heads the list
    await other.append_events([event(rec.session_id, 2)])  # flagged done behind it
    real = store._counters

    class FoldFails(Through):
        async def find_one_and_update(self, query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if query.get("open.0.done") is True:
                raise AutoReconnect("connection closed")
            return await self.real.find_one_and_update(query, *args, **kwargs)

    store._counters = FoldFails(real)  # type: ignore[assignment]
    await store._finish(first)  # its own pop succeeded: done, whatever the fold did
    store._counters = real
    assert await drain(store, 0) == ([2], 2)
    await store.close()
    await other.close()


@pytest.mark.parametrize("seed", range(3))
async def test_writers_stalling_past_the_hole_timeout_lose_nothing(
    target: MongoTarget, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Writers stall at random points while the reader's clock jumps past the hole timeout: reservations are
    skipped under live writers, who move their events. Every stored event is still read at least once, and
    the counter's invariant holds after every step."""
    rng = random.Random(seed)
    clock = Clock()
    await (await MongoSessionStore.attach(target.db)).close()
    writers = [MongoSessionStore(target.db, hole_timeout=30, clock=clock) for _ in range(3)]
    reader = MongoSessionStore(target.db, hole_timeout=30, clock=clock)
    rec = session()
    await reader.create_session(tenant(), rec)
    for store in writers:
        pause_inserts(store, lambda: rng.choice((0, 1, 5, 40)))
    sequences = iter(range(1, 10_000))

    async def write(store: MongoSessionStore) -> None:
        for _ in range(10):
            await store.append_events([event(rec.session_id, next(sequences)) for _ in range(rng.randint(1, 4))])

    delivered: set[int] = set()
    cursor = 0
    done = asyncio.Event()

    async def read() -> None:
        nonlocal cursor
        while not done.is_set():
            while page := await reader.events_after(cursor, 5):
                delivered.update(pb.OrchestrationEvent.FromString(r.payload).sequence for r in page)
                cursor = page[-1].position
            counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
            assert counter["base"] + sum(r["count"] for r in counter["open"]) == counter["allocated"]
            if rng.random() < 0.3:
                clock.now += 31
            await asyncio.sleep(0)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(w) for w in writers))
    done.set()
    await reading
    clock.now += 31
    while page := await reader.events_after(cursor, 5):
        delivered.update(pb.OrchestrationEvent.FromString(r.payload).sequence for r in page)
        cursor = page[-1].position
    stored = await target.db[EVENTS].find({"session_id": rec.session_id}).to_list(None)
    assert delivered == {d["sequence"] for d in stored}
    assert sorted(d["sequence"] for d in stored) == list(range(1, len(stored) + 1))  # each stored once, none lost
    assert not reader._unfinished and not any(w._unfinished for w in writers)
    assert "moving" in caplog.text  # live writers were skipped, and moved their events
    for store in [*writers, reader]:
        await store.close()


async def test_the_v4_migration_waits_for_a_live_orchestrator_of_the_release_before_replicas(
    target: MongoTarget,
) -> None:
    await target.db[SCHEMA_COLLECTION].insert_one({"_id": "sessions", "version": 3, "migrations": []})
    await target.db[COUNTERS].insert_one({"_id": EVENT_POSITIONS, "allocated": 5, "committed": 5})
    now_us = time.time_ns() // 1000
    await target.db["leases"].insert_one({"_id": "orchestrator", "holder": "old", "expires_us": now_us + 60_000_000})
    with pytest.raises(RuntimeError, match="release before replicas still holds this MongoDB database"):
        await MongoSessionStore.attach(target.db)
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert counter["committed"] == 5 and "base" not in counter  # untouched
    await target.db["leases"].update_one({"_id": "orchestrator"}, {"$set": {"expires_us": now_us - 1}})
    store = await MongoSessionStore.attach(target.db)  # the old one is gone: converted
    counter = await target.db[COUNTERS].find_one({"_id": EVENT_POSITIONS})
    assert (counter["base"], counter["open"], counter["allocated"]) == (5, [], 5)
    await store.close()
