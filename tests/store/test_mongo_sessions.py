"""MongoDB-only behaviour of the session store: schema metadata, migrations, indexes, store positions,
duplicate handling and connecting. Runs on ``mongo-double`` always and on ``mongodb`` when
``ORX_TEST_MONGODB_URI`` is set."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pymongo.errors import BulkWriteError

from orchestratex.config import Settings
from orchestratex.store import mongo
from orchestratex.store.mongo import SCHEMA_COLLECTION, client_options, connect, duplicate_indexes
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
    assert counter["allocated"] == counter["committed"] == 0
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


async def test_uncommitted_positions_stay_hidden_until_a_later_commit(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    a = tenant()
    rec = session()
    await store.create_session(a, rec)
    await store.append_events([event(rec.session_id, 1)])
    # a batch that reserved positions and landed but failed before committing (e.g. a lost reply)
    counters, events = target.db[COUNTERS], target.db[EVENTS]
    reserved = await counters.find_one_and_update({"_id": EVENT_POSITIONS}, {"$inc": {"allocated": 2}})
    start = reserved["allocated"] + 1
    await events.insert_one({"position": start, "session_id": rec.session_id, "sequence": 2, "payload": b"x"})
    assert [r.position for r in await store.events_after(0, 100)] == [1]
    # the retry finds event 2 already stored and commits past it, so the outbox sees it, in order
    await store.append_events([event(rec.session_id, 2), event(rec.session_id, 3)])
    rows = await store.events_after(0, 100)
    assert [r.position for r in rows] == [1, start, start + 3]
    assert await store.last_sequence(rec.session_id) == 3
    await store.close()


async def test_the_next_lease_holder_commits_positions_left_by_a_crashed_writer(target: MongoTarget) -> None:
    store = await MongoSessionStore.attach(target.db)
    rec = session()
    await store.create_session(tenant(), rec)
    await target.db[COUNTERS].update_one({"_id": EVENT_POSITIONS}, {"$inc": {"allocated": 1}})
    await target.db[EVENTS].insert_one({"position": 1, "session_id": rec.session_id, "sequence": 1, "payload": b"y"})
    assert await store.events_after(0, 10) == []
    await store.close()
    reopened = await MongoSessionStore.attach(target.db)
    # Opening alone changes nothing (the writer may be alive: a second orchestrator that is refused
    # its lease must not commit the live one's reservations); taking over after the lease does.
    assert await reopened.events_after(0, 10) == []
    await reopened.take_over()
    assert [r.position for r in await reopened.events_after(0, 10)] == [1]
    await reopened.close()


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

    class SlowFirstInsert:
        def __init__(self) -> None:
            self.first = True

        def __getattr__(self, name: str) -> Any:
            return getattr(real_events, name)

        async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
            if self.first:
                self.first = False
                entered.set()
                await release.wait()
            return await real_events.insert_many(docs, **kwargs)

    store._events = SlowFirstInsert()  # type: ignore[assignment]
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
