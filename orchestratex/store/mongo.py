"""MongoDB storage through PyMongo's native async API (``pymongo.AsyncMongoClient``).

Not Motor: Motor reached end of life on 2026-05-14 (critical fixes only until 2027) and MongoDB tells
its users to migrate to PyMongo's async API, which talks to the server directly on the event loop.

This module holds the shared plumbing (client options from :class:`~orchestratex.config.Settings`,
start-up index creation, the ``schema_meta`` document and migrations) and
:class:`MongoSessionStore`, the orchestrator's :class:`~orchestratex.store.sessions.SessionStore`.
``docs/storage.md`` lists every collection and index with the query it serves.

The connection string is a secret: it is never logged and never put in an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orchestratex.aio import uncancellable
from orchestratex.config import Settings
from orchestratex.store.sessions import (
    SessionPage,
    SessionQuery,
    SessionStore,
    StoredEvent,
    decode_page_token,
    encode_page_token,
)
from orchestratex.v1 import orchestrator_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
Document = dict[str, Any]
MongoDb = AsyncDatabase[Document]
Migration = tuple[str, Callable[[MongoDb], Awaitable[None]]]

DUPLICATE_KEY = 11000
SCHEMA_COLLECTION = "schema_meta"


@dataclass(frozen=True)
class IndexSpec:
    """One index: its collection, name, keys, options and the query it serves (for the docs)."""

    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    serves: str
    unique: bool = False


def client_options(settings: Settings, appname: str) -> dict[str, Any]:
    """Keyword arguments for :class:`pymongo.AsyncMongoClient` from the settings (everything but the URI).

    Options written in the URI itself (``w=majority``, ``replicaSet``, TLS...) still apply; these keyword
    arguments override the same options in the URI.
    """
    return {
        "appname": appname,
        "maxPoolSize": settings.mongodb_max_pool_size,
        "minPoolSize": settings.mongodb_min_pool_size,
        "serverSelectionTimeoutMS": int(settings.mongodb_timeout * 1000),
        "connectTimeoutMS": int(settings.mongodb_timeout * 1000),
        "socketTimeoutMS": int(settings.mongodb_socket_timeout * 1000),
        # Stored times are integers; keep the driver from guessing time zones anywhere.
        "tz_aware": True,
    }


async def connect(settings: Settings, appname: str) -> AsyncMongoClient[Document]:
    """A connected client for ``settings.mongodb_uri``; fails within ``mongodb_timeout`` when unreachable.

    Raises :class:`ConnectionError` with a message that names the variable, never the URI.
    """
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongodb_uri.get(), **client_options(settings, appname)
    )
    try:
        await client.admin.command("ping")
    except Exception as exc:
        await client.close()
        # The driver's message names hosts, not credentials; still keep it out of our own text.
        raise ConnectionError(
            f"MongoDB at ORX_MONGODB_URI is not reachable within {settings.mongodb_timeout:g}s ({type(exc).__name__})"
        ) from None
    return client


async def ensure_schema(db: MongoDb, component: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations ``component`` has not applied yet to ``db``; returns the schema version.

    The ``schema_meta`` document ``{_id: component, version, migrations: [{name, applied_ns}]}`` records
    what was applied, in order. Every migration is idempotent, and recording it is a conditional update
    (``version`` must still be the one it started from), so two processes starting at once may both run
    a migration but only one records it and neither fails.
    """
    meta = db[SCHEMA_COLLECTION]
    with contextlib.suppress(DuplicateKeyError):
        await meta.insert_one({"_id": component, "version": 0, "migrations": []})
    while True:
        doc = await meta.find_one({"_id": component})
        current = int(doc["version"]) if doc else 0
        if current > len(migrations):
            raise RuntimeError(
                f"MongoDB schema of {component} is at version {current}, newer than this code ({len(migrations)})"
            )
        if current == len(migrations):
            return current
        name, apply = migrations[current]
        await apply(db)
        result = await meta.update_one(
            {"_id": component, "version": current},
            {
                "$set": {"version": current + 1},
                "$push": {"migrations": {"name": name, "applied_ns": time.time_ns()}},
            },
        )
        if result.modified_count:
            log.info("migrated %s MongoDB schema to version %d (%s)", component, current + 1, name)


async def ensure_indexes(db: MongoDb, indexes: Sequence[IndexSpec]) -> None:
    """Create every index (idempotent: an existing identical index is left alone)."""
    for spec in indexes:
        await db[spec.collection].create_index(list(spec.keys), name=spec.name, unique=spec.unique)


def duplicate_indexes(exc: BulkWriteError) -> list[int] | None:
    """Indexes (in the batch) of the documents rejected as duplicates, or None when any other error occurred."""
    details: Mapping[str, Any] = exc.details
    if details.get("writeConcernErrors"):
        return None
    errors = details.get("writeErrors", [])
    if not errors or any(int(e.get("code", 0)) != DUPLICATE_KEY for e in errors):
        return None
    return [int(e["index"]) for e in errors]


# ------------------------------------------------------------------------------------------- sessions

SESSIONS = "sessions"
EVENTS = "events"
COUNTERS = "counters"
CURSORS = "cursors"
EVENT_POSITIONS = "event_positions"

SESSION_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        SESSIONS,
        "tenant_time",
        (("tenant", ASCENDING), ("create_us", DESCENDING), ("_id", DESCENDING)),
        "list_sessions of one tenant, newest first, keyset-paged (also with status or time filters)",
    ),
    IndexSpec(
        SESSIONS,
        "time",
        (("create_us", DESCENDING), ("_id", DESCENDING)),
        "list_sessions across tenants (tenant ''), newest first, keyset-paged",
    ),
    IndexSpec(
        SESSIONS,
        "tenant_thread_time",
        (("tenant", ASCENDING), ("thread_id", ASCENDING), ("create_us", DESCENDING)),
        "thread_sessions (a thread's turns) and list_sessions filtered by thread",
    ),
    IndexSpec(SESSIONS, "status", (("status", ASCENDING),), "running_sessions (crash recovery at start-up)"),
    IndexSpec(
        EVENTS,
        "session_sequence",
        (("session_id", ASCENDING), ("sequence", ASCENDING)),
        "read_events and last_sequence; uniqueness makes re-appending an event a no-op",
        unique=True,
    ),
    IndexSpec(
        EVENTS,
        "position",
        (("position", ASCENDING),),
        "events_after (the outbox cursor), in position order",
        unique=True,
    ),
)


async def _sessions_v1(db: MongoDb) -> None:
    """Version 1: the position counter document."""
    await db[COUNTERS].update_one(
        {"_id": EVENT_POSITIONS},
        {"$setOnInsert": {"allocated": 0, "committed": 0}},
        upsert=True,
    )


SESSION_MIGRATIONS: tuple[Migration, ...] = (("positions counter", _sessions_v1),)


class MongoStoreBase:
    """What the MongoDB stores share: the database, the client they may own, and shielded writes.

    Subclasses define ``attach(db, client)`` (indexes, migrations, recovery); :meth:`open` connects
    and attaches, closing the client again if attaching fails.
    """

    #: The client's ``appname`` (shows in the server's logs and ``currentOp``).
    APPNAME = "orchestratex"

    def __init__(self, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> None:
        self.db = db
        self._client = client
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def attach(cls, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> Self:
        """A store on an already open database (closing the store closes ``client`` when given)."""
        raise NotImplementedError

    @classmethod
    async def open(cls, settings: Settings, appname: str | None = None) -> Self:
        """Connect with ``settings``, then :meth:`attach` (indexes, migrations, recovery)."""
        client = await connect(settings, appname or cls.APPNAME)
        try:
            return await cls.attach(client[settings.mongodb_database], client)
        except BaseException:
            await client.close()
            raise

    async def close(self) -> None:
        """Wait for writes in progress, then close the client (when this store owns it)."""
        if self._writes:
            await asyncio.wait(self._writes)
        if self._client is not None:
            await self._client.close()

    async def _shielded(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a write to completion even if the caller is cancelled (no half-written batch); the
        caller's cancellation is raised once the write has ended."""
        task = asyncio.ensure_future(work())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await uncancellable(task)


class MongoSessionStore(MongoStoreBase, SessionStore):
    """:class:`SessionStore` on MongoDB.

    Collections: ``sessions`` (``_id`` = session id, the serialised ``Session`` in ``record``),
    ``events`` (one document per event, ``payload`` the serialised ``OrchestrationEvent``), ``cursors``
    and ``counters``.

    Store positions (the outbox cursor): each :meth:`append_events` batch reserves a contiguous range
    with one ``$inc`` of ``counters.event_positions.allocated``, inserts the batch (unordered
    ``insert_many``), and only then raises ``committed`` to the end of its range. :meth:`events_after`
    reads positions up to ``committed`` only, so a reader never passes a position whose event could
    still appear later. Batches are written one at a time (an ``asyncio.Lock``: the orchestrator is the
    single writer of its database, as with SQLite), so ``committed`` rises in allocation order. A failed
    batch does not raise ``committed``; the caller retries it (the :class:`EventWriter` does) and the
    events that did land are recognised as duplicates, under the old range, which the retry's commit
    then covers. Positions of duplicates are never used: the sequence has gaps, never reorderings.
    """

    def __init__(self, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> None:
        super().__init__(db, client)
        self._sessions: AsyncCollection[Document] = db[SESSIONS]
        self._events: AsyncCollection[Document] = db[EVENTS]
        self._counters: AsyncCollection[Document] = db[COUNTERS]
        self._cursors: AsyncCollection[Document] = db[CURSORS]
        self._write_lock = asyncio.Lock()

    APPNAME = "orchestratex-orchestrator"

    @classmethod
    async def attach(cls, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> Self:
        """A store on an already open database (closing the store closes ``client`` when given)."""
        await ensure_indexes(db, SESSION_INDEXES)
        await ensure_schema(db, "sessions", SESSION_MIGRATIONS)
        store = cls(db, client)
        await store._take_over_positions()
        return store

    async def _take_over_positions(self) -> None:
        """At start-up, positions a previous process reserved but never committed are committed now.

        Whatever of those batches landed is then visible to the outbox; nothing else can land there,
        because the previous writer is gone (one orchestrator per database).
        """
        doc = await self._counters.find_one({"_id": EVENT_POSITIONS})
        allocated, committed = (int(doc["allocated"]), int(doc["committed"])) if doc else (0, 0)
        if allocated > committed:
            await self._counters.update_one({"_id": EVENT_POSITIONS}, {"$max": {"committed": allocated}})
            log.info("committed %d event positions left by a previous run", allocated - committed)

    async def create_session(self, tenant: str, session: orchestrator_pb2.Session) -> None:
        create_us = session.create_time.seconds * 1_000_000 + session.create_time.nanos // 1000
        document: Document = {
            "_id": session.session_id,
            "tenant": tenant,
            "status": int(session.status),
            "thread_id": session.thread_id,
            "create_us": create_us,
            "record": session.SerializeToString(),
        }
        await self._shielded(lambda: self._sessions.insert_one(document))

    async def save_session(self, session: orchestrator_pb2.Session) -> None:
        update = {"$set": {"status": int(session.status), "record": session.SerializeToString()}}
        await self._shielded(lambda: self._sessions.update_one({"_id": session.session_id}, update))

    async def get_session(self, session_id: str, tenant: str) -> orchestrator_pb2.Session | None:
        query: Document = {"_id": session_id}
        if tenant:
            query["tenant"] = tenant
        doc = await self._sessions.find_one(query, {"record": 1})
        return None if doc is None else orchestrator_pb2.Session.FromString(bytes(doc["record"]))

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        conditions: list[Document] = []
        if query.tenant:
            conditions.append({"tenant": query.tenant})
        if query.status:
            conditions.append({"status": int(query.status)})
        if query.thread_id:
            conditions.append({"thread_id": query.thread_id})
        if query.start_us is not None:
            conditions.append({"create_us": {"$gte": query.start_us}})
        if query.end_us is not None:
            conditions.append({"create_us": {"$lt": query.end_us}})
        if query.page_token:
            created, sid = decode_page_token(query.page_token)
            conditions.append({"$or": [{"create_us": {"$lt": created}}, {"create_us": created, "_id": {"$lt": sid}}]})
        filter_: Document = {"$and": conditions} if conditions else {}
        cursor = (
            self._sessions.find(filter_, {"create_us": 1, "record": 1})
            .sort([("create_us", DESCENDING), ("_id", DESCENDING)])
            .limit(query.page_size + 1)
        )
        docs = await cursor.to_list(None)
        next_token = ""
        if len(docs) > query.page_size:
            docs = docs[: query.page_size]
            next_token = encode_page_token(int(docs[-1]["create_us"]), str(docs[-1]["_id"]))
        return SessionPage([orchestrator_pb2.Session.FromString(bytes(d["record"])) for d in docs], next_token)

    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        if not events:
            return
        await self._shielded(lambda: self._append(events))

    async def _append(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        async with self._write_lock:
            counter = await self._counters.find_one_and_update(
                {"_id": EVENT_POSITIONS},
                {"$inc": {"allocated": len(events)}, "$setOnInsert": {"committed": 0}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            if counter is None:  # cannot happen with upsert and ReturnDocument.AFTER
                raise RuntimeError("event position counter missing")
            end = int(counter["allocated"])
            start = end - len(events) + 1
            docs = [
                {"position": start + i, "session_id": sid, "sequence": seq, "payload": payload}
                for i, (sid, seq, payload) in enumerate(events)
            ]
            try:
                await self._events.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                duplicates = duplicate_indexes(exc)
                if duplicates is None:
                    raise
                await self._check_duplicates([docs[i] for i in duplicates])
            await self._counters.update_one({"_id": EVENT_POSITIONS}, {"$max": {"committed": end}})

    async def _check_duplicates(self, docs: list[Document]) -> None:
        """Every rejected event must already be stored under its (session_id, sequence).

        A duplicate key on ``position`` instead would mean the counter went backwards (a restore into a
        live database, say): that is corruption, not a replay, and is raised.
        """
        keys = [{"session_id": d["session_id"], "sequence": d["sequence"]} for d in docs]
        found = await self._events.count_documents({"$or": keys})
        if found != len(keys):
            raise RuntimeError(f"{len(keys) - found} events collided on store position, not on (session_id, sequence)")

    async def read_events(self, session_id: str, after_sequence: int, limit: int = 1000) -> list[bytes]:
        cursor = (
            self._events.find({"session_id": session_id, "sequence": {"$gt": after_sequence}}, {"payload": 1})
            .sort("sequence", ASCENDING)
            .limit(limit)
        )
        return [bytes(d["payload"]) for d in await cursor.to_list(None)]

    async def last_sequence(self, session_id: str) -> int:
        doc = await self._events.find_one({"session_id": session_id}, {"sequence": 1}, sort=[("sequence", DESCENDING)])
        return int(doc["sequence"]) if doc else 0

    async def running_sessions(self) -> list[orchestrator_pb2.Session]:
        cursor = self._sessions.find({"status": int(orchestrator_pb2.SESSION_STATUS_RUNNING)}, {"record": 1})
        return [orchestrator_pb2.Session.FromString(bytes(d["record"])) for d in await cursor.to_list(None)]

    async def thread_sessions(self, tenant: str, thread_id: str, limit: int) -> list[orchestrator_pb2.Session]:
        cursor = (
            self._sessions.find(
                {
                    "tenant": tenant,
                    "thread_id": thread_id,
                    "status": int(orchestrator_pb2.SESSION_STATUS_COMPLETED),
                },
                {"record": 1},
            )
            .sort("create_us", DESCENDING)
            .limit(limit)
        )
        docs = await cursor.to_list(None)
        return [orchestrator_pb2.Session.FromString(bytes(d["record"])) for d in reversed(docs)]

    async def committed_position(self) -> int:
        """The highest position readers may see (every batch up to it is fully written)."""
        doc = await self._counters.find_one({"_id": EVENT_POSITIONS})
        return int(doc["committed"]) if doc else 0

    async def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        committed = await self.committed_position()
        out: list[StoredEvent] = []
        tenants: dict[str, str | None] = {}
        # Like the SQLite join, events of unknown sessions are left out; keep reading until ``limit``
        # known ones are found so such events can never stall the outbox.
        while len(out) < limit and position < committed:
            cursor = (
                self._events.find({"position": {"$gt": position, "$lte": committed}})
                .sort("position", ASCENDING)
                .limit(limit - len(out))
            )
            docs = await cursor.to_list(None)
            if not docs:
                break
            unknown = sorted({d["session_id"] for d in docs} - tenants.keys())
            if unknown:
                found = self._sessions.find({"_id": {"$in": unknown}}, {"tenant": 1})
                known = {str(d["_id"]): str(d["tenant"]) for d in await found.to_list(None)}
                tenants.update({sid: known.get(sid) for sid in unknown})
            for d in docs:
                tenant = tenants[d["session_id"]]
                if tenant is not None:
                    out.append(StoredEvent(int(d["position"]), tenant, str(d["session_id"]), bytes(d["payload"])))
            position = int(docs[-1]["position"])
        return out

    async def get_cursor(self, name: str) -> int:
        doc = await self._cursors.find_one({"_id": name})
        return int(doc["position"]) if doc else 0

    async def set_cursor(self, name: str, position: int) -> None:
        await self._shielded(
            lambda: self._cursors.update_one({"_id": name}, {"$max": {"position": position}}, upsert=True)
        )
