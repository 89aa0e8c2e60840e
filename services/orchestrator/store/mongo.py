"""The orchestrator's session store on MongoDB, through PyMongo's async API.

``docs/storage.md`` lists every collection and index with the query it serves.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Self

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orchestratex.store.mongo import (
    Document,
    IndexSpec,
    Migration,
    MongoDb,
    MongoStoreBase,
    duplicate_indexes,
    ensure_indexes,
    ensure_schema,
)
from orchestratex.v1 import orchestrator_pb2
from services.orchestrator.lease import LEASE_NAME
from services.orchestrator.store.base import (
    LeaseRecord,
    RunningSession,
    SessionPage,
    SessionQuery,
    SessionStore,
    StoredEvent,
    decode_page_token,
    encode_page_token,
    search_text,
)

log = logging.getLogger(__name__)

AFTER = ReturnDocument.AFTER

SESSIONS = "sessions"
EVENTS = "events"
COUNTERS = "counters"
CURSORS = "cursors"
LEASES = "leases"
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
        SESSIONS,
        "owner_status",
        (("owner", ASCENDING), ("status", ASCENDING)),
        "cancel_requests: the running sessions of one orchestrator instance",
    ),
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


async def _sessions_v2(db: MongoDb) -> None:
    """Version 2: every session gets ``search``, the text ``list_sessions(prompt_contains=...)`` searches."""
    sessions = db[SESSIONS]
    async for doc in sessions.find({"search": {"$exists": False}}, {"record": 1}):
        text = search_text(orchestrator_pb2.Session.FromString(bytes(doc["record"])))
        await sessions.update_one({"_id": doc["_id"], "search": {"$exists": False}}, {"$set": {"search": text}})


async def _sessions_v3(db: MongoDb) -> None:
    """Version 3: every session has an ``owner`` (the instance running it; "" before replicas)."""
    await db[SESSIONS].update_many({"owner": {"$exists": False}}, {"$set": {"owner": ""}})


async def _sessions_v4(db: MongoDb) -> None:
    """Version 4: the position horizon several writers share. ``committed`` (one writer's high-water mark)
    becomes ``base`` plus a list of ``open`` reservations; positions an older release reserved but never
    committed are committed now, as that release did when its next process took the lease.

    Refused while an orchestrator of that release still holds the database (its exclusive lease is live): it
    neither speaks the horizon nor survives the conversion. Converts once, by compare-and-set on ``allocated``:
    a second process running this migration after writers started never wipes their reservations."""
    counters = db[COUNTERS]
    while True:
        doc = await counters.find_one({"_id": EVENT_POSITIONS})
        if doc is not None and "base" in doc:
            return
        if doc is not None and "committed" in doc:
            lease = await db[LEASES].find_one({"_id": LEASE_NAME})
            if lease is not None and int(lease["expires_us"]) > time.time_ns() // 1000:
                raise RuntimeError(
                    "an orchestrator of a release before replicas still holds this MongoDB database (lease "
                    f"{LEASE_NAME!r}); stop it before starting this release (docs/deployment.md, "
                    '"Upgrading to replicas on MongoDB")'
                )
        allocated = int(doc["allocated"]) if doc else 0
        unconverted: Document = {"_id": EVENT_POSITIONS, "base": {"$exists": False}}
        if doc is not None:
            unconverted["allocated"] = allocated
        update = {"$set": {"allocated": allocated, "base": allocated, "open": []}, "$unset": {"committed": ""}}
        try:
            result = await counters.update_one(unconverted, update, upsert=doc is None)
        except DuplicateKeyError:
            continue  # another process created it first: look again
        if result.matched_count or result.upserted_id is not None:
            return


SESSION_MIGRATIONS: tuple[Migration, ...] = (
    ("positions counter", _sessions_v1),
    ("prompt search", _sessions_v2),
    ("session owners", _sessions_v3),
    ("shared position horizon", _sessions_v4),
)

HOLE_TIMEOUT = 30.0
"""Seconds a reader watches the same reservation stay open at the head of the horizon before it skips it (its
writer is presumed dead). Measured on the reader's own clock, so the hosts' clocks never have to agree."""
WRITE_TIMEOUT = HOLE_TIMEOUT / 3
"""Seconds an insert or a move of a batch may take, retries included (PyMongo's client-side operation timeout,
which the server enforces too): no write of a batch can still land when readers skip its reservation."""
HEAD: Document = {"base": 1, "open": {"$slice": 1}}
"""What the horizon needs of the counter document: ``base`` and the first reservation (the list can be long
while a dead writer's reservation holds it)."""


@dataclass(frozen=True)
class _Reservation:
    """A range of store positions this process reserved for one batch."""

    token: str
    start: int
    count: int
    keys: frozenset[tuple[str, int]] = frozenset()
    """The events it holds, as ``(session_id, sequence)``."""
    reserved_at: float = 0.0
    """When it was reserved (``time.monotonic``)."""


class MongoSessionStore(MongoStoreBase, SessionStore):
    """:class:`SessionStore` on MongoDB.

    Collections: ``sessions`` (``_id`` = session id, the serialised ``Session`` in ``record``),
    ``events`` (one document per event, ``payload`` the serialised ``OrchestrationEvent``), ``cursors``
    and ``counters``.

    Store positions (the outbox cursor), shared by any number of writers. One counter document holds
    ``allocated`` (the last position handed out), ``base`` and ``open``, the reservations not yet folded
    into ``base``, in allocation order: ``base + sum(open[i].count) == allocated`` always. A batch

    1. reserves its range and appends its reservation ``{token, count, at_us, done: false}`` to ``open`` in
       one atomic update (so the list's order is the positions' order),
    2. inserts its events (unordered ``insert_many``; events already stored are duplicates and keep their
       first position, so positions have gaps, never reorderings),
    3. marks its reservation done: when it is the head of ``open`` it is popped into ``base``, else flagged.

    The **horizon**, the highest position readers may see, is ``base`` plus the counts of the leading done
    reservations: no position below it can still be written. :meth:`events_after` reads up to it only.

    A writer that dies between 1 and 3 leaves its reservation open, which holds the horizon until a reader has
    seen it at the head for :data:`HOLE_TIMEOUT` seconds on its own clock; then the reader flags it
    done-and-skipped. Inserts are bounded by :data:`WRITE_TIMEOUT`, so by then nothing of that batch can still
    land: what landed is read, the rest never will be. A writer still alive but slower than that (its process
    stalled) finds its reservation skipped when it tries to mark it (a compare-and-set decides between the two)
    and moves its events to a fresh reservation, beyond any reader's cursor: analytics may then see them twice,
    which it absorbs (ingestion is idempotent). A batch whose insert or mark failed leaves its reservation open
    too; the writer's retry (the :class:`EventWriter` resends the same events first) marks it done once all its
    events are stored. A reservation whose reply was lost is marked done at once (nothing was written into it).
    """

    def __init__(
        self,
        db: MongoDb,
        client: AsyncMongoClient[Document] | None = None,
        *,
        hole_timeout: float = HOLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(db, client)
        self._sessions: AsyncCollection[Document] = db[SESSIONS]
        self._events: AsyncCollection[Document] = db[EVENTS]
        self._counters: AsyncCollection[Document] = db[COUNTERS]
        self._cursors: AsyncCollection[Document] = db[CURSORS]
        self.hole_timeout = hole_timeout
        self._clock = clock
        #: Reservations of batches whose insert or mark failed: marked done once a later batch stored their events
        #: (given up after two hole timeouts: readers have skipped them by then).
        self._unfinished: list[_Reservation] = []
        #: The head reservation this reader is watching, and since when (its clock).
        self._head_seen: tuple[str, float] = ("", 0.0)

    APPNAME = "orchestratex-orchestrator"
    shared = True
    has_change_feed = True

    @classmethod
    async def attach(cls, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> Self:
        """A store on an already open database (closing the store closes ``client`` when given)."""
        await ensure_indexes(db, SESSION_INDEXES)
        await ensure_schema(db, "sessions", SESSION_MIGRATIONS)
        return cls(db, client)

    async def claim_lease(
        self, name: str, holder: str, now_us: int, until_us: int, *, steal_from: str | None = None
    ) -> LeaseRecord:
        holders = [holder] if steal_from is None else [holder, steal_from]
        free = {"_id": name, "$or": [{"expires_us": {"$lte": now_us}}, {"holder": {"$in": holders}}]}
        try:
            # Matches only a lease this holder may take; when none matches, the upsert inserts a
            # document with the same _id, which fails with a duplicate key if someone else holds it.
            await self._shielded(
                lambda: self.db[LEASES].update_one(
                    free, {"$set": {"holder": holder, "expires_us": until_us}}, upsert=True
                )
            )
        except DuplicateKeyError:
            doc = await self.db[LEASES].find_one({"_id": name})
            if doc is not None:
                return LeaseRecord(str(doc["holder"]), int(doc["expires_us"]))
            raise
        return LeaseRecord(holder, until_us)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._shielded(lambda: self.db[LEASES].delete_one({"_id": name, "holder": holder}))

    async def get_lease(self, name: str) -> LeaseRecord | None:
        doc = await self.db[LEASES].find_one({"_id": name})
        return None if doc is None else LeaseRecord(str(doc["holder"]), int(doc["expires_us"]))

    async def create_session(self, tenant: str, session: orchestrator_pb2.Session, owner: str = "") -> None:
        create_us = session.create_time.seconds * 1_000_000 + session.create_time.nanos // 1000
        document: Document = {
            "_id": session.session_id,
            "tenant": tenant,
            "status": int(session.status),
            "thread_id": session.thread_id,
            "create_us": create_us,
            "record": session.SerializeToString(),
            "search": search_text(session),
            "owner": owner,
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
        if query.prompt_contains:
            conditions.append({"search": {"$regex": re.escape(query.prompt_contains)}})
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
        # One deadline from the reservation to the end of the insert: past it the driver sends nothing more, so no
        # event of this batch can land after readers skip its reservation, even if this process froze meanwhile.
        with pymongo.timeout(WRITE_TIMEOUT):
            mine = await self._reserve(len(events), frozenset((sid, seq) for sid, seq, _ in events))
            docs = [
                {"position": mine.start + i, "session_id": sid, "sequence": seq, "payload": payload}
                for i, (sid, seq, payload) in enumerate(events)
            ]
            try:
                await self._insert(docs)
            except BaseException:
                self._unfinished.append(mine)
                raise
        try:
            await self._finish(mine)
        except BaseException:
            # Done once a retry has stored these events (a mark whose reply was lost looks skipped then, and its
            # events are moved past the readers: delivered twice at worst, never lost).
            self._unfinished.append(mine)
            raise
        if self._unfinished:
            await self._finish_retried(mine.keys)

    async def _finish_retried(self, stored: frozenset[tuple[str, int]]) -> None:
        """Mark the reservations of failed batches whose events are all stored now; a failure here waits for
        the next batch (the one just stored is durable and marked)."""
        for reservation in list(self._unfinished):
            if reservation.keys <= stored:
                try:
                    await self._finish(reservation)
                except Exception as exc:
                    log.warning("marking an earlier batch's positions failed (%s); the next batch tries again", exc)
                    return
                self._unfinished.remove(reservation)
            elif self._clock() - reservation.reserved_at > 2 * self.hole_timeout:
                self._unfinished.remove(reservation)  # never retried (its writer gave up); readers skipped it

    async def _reserve(self, count: int, keys: frozenset[tuple[str, int]] = frozenset()) -> _Reservation:
        """Reserve ``count`` positions: the range and its place in ``open`` in one atomic update."""
        token = secrets.token_hex(8)
        entry = {"token": token, "count": count, "at_us": time.time_ns() // 1000, "done": False}
        try:
            counter = await self._counters.find_one_and_update(
                {"_id": EVENT_POSITIONS},
                {"$inc": {"allocated": count}, "$push": {"open": entry}, "$setOnInsert": {"base": 0}},
                projection={"allocated": 1},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except Exception:
            # The reservation may have been made and its reply lost: nothing will be written into it, so it is
            # done (if this fails too, readers skip it once it has held the horizon for the hole timeout).
            with contextlib.suppress(Exception):
                await self._flag_done(token)
            raise
        if counter is None:  # cannot happen with upsert and ReturnDocument.AFTER
            raise RuntimeError("event position counter missing")
        return _Reservation(token, int(counter["allocated"]) - count + 1, count, keys, self._clock())

    async def _insert(self, docs: list[Document]) -> None:
        try:
            await self._events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            duplicates = duplicate_indexes(exc)
            if duplicates is None:
                raise
            await self._check_duplicates([docs[i] for i in duplicates])

    async def _finish(self, mine: _Reservation) -> None:
        """Mark a reservation done; when a reader skipped it first, move its events past the horizon."""
        while not await self._mark_done(mine):
            landed = await self._events.find(
                {"position": {"$gte": mine.start, "$lt": mine.start + mine.count}}, {"position": 1}
            ).to_list(None)
            log.warning(
                "a batch of %d event positions was skipped before it was marked written (its process stalled "
                "for over %.0f s?); moving its %d stored events to new positions",
                mine.count,
                self.hole_timeout,
                len(landed),
            )
            if not landed:
                return
            old = sorted(int(d["position"]) for d in landed)
            with pymongo.timeout(WRITE_TIMEOUT):
                moved = await self._reserve(len(old), mine.keys)
                try:
                    await self._events.bulk_write(
                        [
                            UpdateOne({"position": p}, {"$set": {"position": moved.start + i}})
                            for i, p in enumerate(old)
                        ],
                        ordered=True,
                    )
                except BaseException:
                    self._unfinished.append(moved)  # what did move is marked with the batch's retry
                    raise
            mine = moved

    async def _mark_done(self, mine: _Reservation) -> bool:
        """Pop the reservation into ``base`` when it heads ``open``, else flag it done; False when a reader
        skipped it first."""
        head = {"_id": EVENT_POSITIONS, "open.0.token": mine.token, "open.0.done": False}
        popped = await self._counters.find_one_and_update(
            head, {"$pop": {"open": -1}, "$inc": {"base": mine.count}}, projection=HEAD, return_document=AFTER
        )
        if popped is not None:
            # Batches behind it that finished first are folded in too (no extra round trip when there are none);
            # an error here is left to the readers, who fold as they go.
            with contextlib.suppress(Exception):
                while popped is not None and popped.get("open") and popped["open"][0]["done"]:
                    popped = await self._pop(popped["open"][0])
            return True
        return await self._flag_done(mine.token)

    async def _flag_done(self, token: str) -> bool:
        pending = {"_id": EVENT_POSITIONS, "open": {"$elemMatch": {"token": token, "done": False}}}
        flagged = await self._counters.update_one(pending, {"$set": {"open.$.done": True}})
        return bool(flagged.modified_count)

    async def _check_duplicates(self, docs: list[Document]) -> None:
        """Every rejected event must already be stored under its (session_id, sequence).

        A duplicate key on ``position`` instead would mean the counter went backwards (a restore into a
        live database, say): that is corruption, not a replay, and is raised.
        """
        keys = [{"session_id": d["session_id"], "sequence": d["sequence"]} for d in docs]
        found = await self._events.count_documents({"$or": keys})
        if found != len(keys):
            raise RuntimeError(f"{len(keys) - found} events collided on store position, not on (session_id, sequence)")

    def change_feed(self) -> AsyncGenerator[str, None]:
        """A change stream on ``events`` (inserts, session ids only). Needs a replica set or a sharded cluster:
        on a standalone server opening it raises ``OperationFailure`` (code 40573)."""
        return self._inserted_sessions()

    async def _inserted_sessions(self) -> AsyncGenerator[str, None]:
        pipeline: list[Document] = [
            {"$match": {"operationType": "insert"}},
            {"$project": {"fullDocument.session_id": 1}},
        ]
        async with await self._events.watch(pipeline) as stream:
            yield ""
            async for change in stream:
                yield str(change["fullDocument"]["session_id"])

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

    async def running_owners(self) -> list[RunningSession]:
        cursor = self._sessions.find(
            {"status": int(orchestrator_pb2.SESSION_STATUS_RUNNING)}, {"owner": 1, "cancel_reason": 1}
        )
        return [_running(d) for d in await cursor.to_list(None)]

    async def adopt_session(self, session_id: str, owner: str, new_owner: str) -> bool:
        running = {"_id": session_id, "owner": owner, "status": int(orchestrator_pb2.SESSION_STATUS_RUNNING)}
        result = await self._shielded(lambda: self._sessions.update_one(running, {"$set": {"owner": new_owner}}))
        return bool(result.modified_count)

    async def request_cancel(self, session_id: str, reason: str) -> bool:
        running = {"_id": session_id, "status": int(orchestrator_pb2.SESSION_STATUS_RUNNING)}
        # The first reason asked for is kept: only a session with none takes this one ({field: None} matches a
        # missing field too).
        first = {**running, "cancel_reason": None}
        result = await self._shielded(lambda: self._sessions.update_one(first, {"$set": {"cancel_reason": reason}}))
        return bool(result.matched_count) or await self._sessions.count_documents(running, limit=1) > 0

    async def cancel_requests(self, owner: str) -> list[RunningSession]:
        cursor = self._sessions.find(
            {
                "owner": owner,
                "status": int(orchestrator_pb2.SESSION_STATUS_RUNNING),
                "cancel_reason": {"$type": "string"},
            },
            {"owner": 1, "cancel_reason": 1},
        )
        return [_running(d) for d in await cursor.to_list(None)]

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
        """The horizon: the highest position readers may see (no batch below it can still be written).

        Folds leading done reservations into ``base``, and skips the head reservation once this reader has seen
        it there, not done, for :attr:`hole_timeout` seconds (its writer is presumed dead), both by
        compare-and-set, so any number of readers may do it at once.
        """
        doc = await self._counters.find_one({"_id": EVENT_POSITIONS}, HEAD)
        while doc is not None:
            horizon = int(doc["base"])
            reservations: list[Document] = doc.get("open", [])
            if not reservations:
                return horizon
            head = reservations[0]
            if head["done"]:
                doc = await self._pop(head)
                continue
            now = self._clock()
            token, since = self._head_seen
            if token != head["token"]:
                self._head_seen = (head["token"], now)
                return horizon
            if now - since <= self.hole_timeout:
                return horizon
            stale = {"_id": EVENT_POSITIONS, "open": {"$elemMatch": {"token": head["token"], "done": False}}}
            skipped = await self._counters.update_one(stale, {"$set": {"open.$.done": True, "open.$.skipped": True}})
            if skipped.modified_count:
                log.warning(
                    "skipped %d event positions (%d-%d): their writer reserved them and never marked them written "
                    "in %.0f s; whatever of them was stored is still delivered",
                    head["count"],
                    horizon + 1,
                    horizon + int(head["count"]),
                    now - since,
                )
            doc = await self._counters.find_one({"_id": EVENT_POSITIONS}, HEAD)
        return 0

    async def _pop(self, head: Document) -> Document | None:
        """Fold ``head`` (the first reservation, as last read) into ``base`` if it still heads ``open``; the
        counter document afterwards (``base`` and the new head)."""
        match = {"_id": EVENT_POSITIONS, "open.0.token": head["token"], "open.0.done": head["done"]}
        popped = await self._counters.find_one_and_update(
            match, {"$pop": {"open": -1}, "$inc": {"base": head["count"]}}, projection=HEAD, return_document=AFTER
        )
        return popped if popped is not None else await self._counters.find_one({"_id": EVENT_POSITIONS}, HEAD)

    async def newest_position(self) -> int:
        return await self.committed_position()

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


def _running(doc: Document) -> RunningSession:
    reason = doc.get("cancel_reason")
    return RunningSession(str(doc["_id"]), str(doc.get("owner", "")), reason if isinstance(reason, str) else None)
