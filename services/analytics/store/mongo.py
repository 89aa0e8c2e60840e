"""The analytics store on MongoDB: :class:`MongoAnalyticsStore`.

Same model as the SQLite store (see :mod:`services.analytics.store.model`, whose rules this follows
and whose pure helpers it shares with the SQLite store so both give identical numbers): raw facts
(events ledger, calls, critiques, feedback, one document per session) plus daily counter documents
updated with ``$inc``:

* ``analytics_model_daily`` keyed ``(tenant, day, model, domain)``, one field per counter
  (``attempts``, ``fail_3``, ``lat_17``...);
* ``analytics_session_daily`` keyed ``(tenant, day, primary_model, domain)``.

Reports read the counter documents of the whole UTC days inside a range and compute the partial days
at its edges from the raw facts, exactly like the SQLite store.

Atomic, idempotent batches without multi-document transactions (the compose file runs a standalone
server, which has none): each write is first computed in full, then recorded as one **journal**
document (``analytics_journal``: a single-document write, so atomic), then applied, then the journal
document is deleted. Every applied operation is idempotent — raw facts are inserted under unique keys
(a duplicate key means "already there"), session documents are replaced whole, and each counter update
is conditional on the document's ``last_batch`` differing from the batch id (it is set in the same
update) — so a journal left by a crash or a failed write is simply applied again before anything else,
at start-up and before the next write. Writes are serialised by one lock: one analytics process per
database, as with SQLite. A reader can see a batch half-applied for the moment it takes; nothing is
ever lost or counted twice. A batch whose journal document would pass :data:`JOURNAL_MAX_BYTES` (MongoDB
refuses documents over 16 MiB; 10,000 events with long ids come to about 40 MB) is recorded in parts,
each journalled on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar

import bson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

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
from services.analytics.store.model import (
    I_ATTEMPTS,
    I_GIVEN_MILLI,
    I_GIVEN_N,
    I_RECV_MILLI,
    I_RECV_N,
    I_USAGE,
    MODEL_COLUMNS,
    MODEL_WIDTH,
    NANOS_PER_DAY,
    SESSION_COLUMNS,
    SESSION_WIDTH,
    USAGE_NAMES,
    AccuracySummary,
    AnalyticsStore,
    CallFact,
    CostSummary,
    DayCostRow,
    EventFacts,
    FeedbackRecord,
    IngestResult,
    Key,
    ModelCostRow,
    PerfRow,
    Proportion,
    RatingCounts,
    SatisfactionData,
    Scope,
    SessionCostRow,
    SessionInfo,
    SessionState,
    TokenUsage,
    Vectors,
    add_call,
    add_ratings,
    add_shadow,
    day_name,
    feedback_may_join,
    merge_into,
    model_vector,
    perf_row,
    score_milli,
    session_vector,
    settle_shadows,
    usage_values,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSIONS = "analytics_sessions"
EVENTS = "analytics_events"
CALLS = "analytics_calls"
CRITIQUES = "analytics_critiques"
FEEDBACK = "analytics_feedback"
MODEL_DAILY = "analytics_model_daily"
SESSION_DAILY = "analytics_session_daily"
JOURNAL = "analytics_journal"

_MODEL_KEY = ("tenant", "day", "model", "domain")
_SESSION_KEY = ("tenant", "day", "primary_model", "domain")
_IN_CHUNK = 1000
# The largest journal document written: MongoDB's limit is 16 MiB (``maxBsonObjectSize``); the rest is
# headroom for the write command around it. A batch whose journal would be larger is split.
JOURNAL_MAX_BYTES = 12 * 1024 * 1024

ANALYTICS_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        EVENTS,
        "session_sequence",
        (("session_id", ASCENDING), ("sequence", ASCENDING)),
        "ingest: which events of a batch's sessions are already recorded; uniqueness makes replays no-ops",
        unique=True,
    ),
    IndexSpec(
        CALLS,
        "session_sequence",
        (("session_id", ASCENDING), ("sequence", ASCENDING)),
        "raw calls of given sessions (edge days of a report, re-keying a session); idempotent insert",
        unique=True,
    ),
    IndexSpec(
        CRITIQUES,
        "session_sequence",
        (("session_id", ASCENDING), ("sequence", ASCENDING)),
        "raw critiques of given sessions (edges, re-keying, round-1 shadow outcome); idempotent insert",
        unique=True,
    ),
    IndexSpec(
        FEEDBACK,
        "session_user",
        (("session_id", ASCENDING), ("user_id", ASCENDING)),
        "put_feedback (one rating per session and user) and the ratings of given sessions",
        unique=True,
    ),
    IndexSpec(
        SESSIONS,
        "tenant_time",
        (("tenant", ASCENDING), ("create_time_ns", ASCENDING)),
        "sessions of one tenant created in a range (edge days, cost report's session count and top list)",
    ),
    IndexSpec(
        SESSIONS,
        "time",
        (("create_time_ns", ASCENDING),),
        "sessions of every tenant created in a range",
    ),
    IndexSpec(
        SESSIONS,
        "cost",
        (("cost_nanos", DESCENDING), ("_id", ASCENDING)),
        "cost report: the most expensive sessions first",
    ),
    IndexSpec(
        MODEL_DAILY,
        "key",
        (("tenant", ASCENDING), ("day", ASCENDING), ("model", ASCENDING), ("domain", ASCENDING)),
        "$inc of one model counter document; reports of one tenant over whole days",
        unique=True,
    ),
    IndexSpec(MODEL_DAILY, "day", (("day", ASCENDING),), "reports across tenants over whole days"),
    IndexSpec(
        SESSION_DAILY,
        "key",
        (("tenant", ASCENDING), ("day", ASCENDING), ("primary_model", ASCENDING), ("domain", ASCENDING)),
        "$inc of one session counter document; accuracy and satisfaction of one tenant over whole days",
        unique=True,
    ),
    IndexSpec(SESSION_DAILY, "day", (("day", ASCENDING),), "accuracy and satisfaction across tenants"),
)


async def _analytics_v1(db: MongoDb) -> None:
    """Version 1: raw facts and daily counters (collections appear on first write; indexes at start-up)."""


async def _analytics_v2(db: MongoDb) -> None:
    """Version 2: ratings may wait for their session.

    A rating given before its session is known is an ``analytics_feedback`` document with
    ``pending: true`` and the caller's ``tenant``; the batch that creates the session joins it
    (``pending: false``) or deletes it. Documents without ``pending`` are joined ones, so nothing is
    rewritten; the version is recorded so that older code, which would count waiting ratings, refuses
    the database.
    """


ANALYTICS_MIGRATIONS: tuple[Migration, ...] = (
    ("raw facts and daily counters", _analytics_v1),
    ("ratings before their session", _analytics_v2),
)
# Ratings that count: joined to a known session (documents written before version 2 have no ``pending``).
_JOINED: Document = {"pending": {"$ne": True}}
_DROPPED = "feedback_dropped"


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _day_split(scope: Scope) -> tuple[int, int, list[tuple[int, int]]]:
    """Whole UTC days ``[day_lo, day_hi)`` inside the scope (read from the daily counters) and the partial
    edges ``[a, b)`` outside them (computed from the raw facts)."""
    day_lo = -(-scope.start_ns // NANOS_PER_DAY)
    day_hi = scope.end_ns // NANOS_PER_DAY
    if day_lo >= day_hi:
        return 0, 0, [(scope.start_ns, scope.end_ns)] if scope.start_ns < scope.end_ns else []
    edges = [(scope.start_ns, day_lo * NANOS_PER_DAY), (day_hi * NANOS_PER_DAY, scope.end_ns)]
    return day_lo, day_hi, [(a, b) for a, b in edges if a < b]


def _state_doc(state: SessionState) -> Document:
    doc: Document = {
        "_id": state.session_id,
        "tenant": state.tenant,
        "status": state.status,
        "create_time_ns": state.create_time_ns,
        "started": state.started,
        "primary_model": state.primary_model,
        "primary_domain": state.primary_domain,
        "end_time_ns": state.end_time_ns,
        "final_score": state.final_score,
        "best_model": state.best_model,
        "calls": state.calls,
        "failures": state.failures,
        "shadow_state": state.shadow_state,
    }
    doc.update(zip(USAGE_NAMES, state.usage, strict=True))
    return doc


def _state_from(doc: Mapping[str, Any]) -> SessionState:
    return SessionState(
        session_id=str(doc["_id"]),
        tenant=str(doc["tenant"]),
        create_time_ns=int(doc["create_time_ns"]),
        status=int(doc["status"]),
        started=bool(doc["started"]),
        primary_model=str(doc["primary_model"]),
        primary_domain=int(doc["primary_domain"]),
        end_time_ns=None if doc.get("end_time_ns") is None else int(doc["end_time_ns"]),
        final_score=None if doc.get("final_score") is None else float(doc["final_score"]),
        best_model=str(doc["best_model"]),
        calls=int(doc["calls"]),
        failures=int(doc["failures"]),
        usage=[int(doc[name]) for name in USAGE_NAMES],
        shadow_state=None if doc.get("shadow_state") is None else int(doc["shadow_state"]),
    )


def _call_doc(event: EventFacts, call: CallFact) -> Document:
    doc: Document = {
        "session_id": event.session_id,
        "sequence": event.sequence,
        "time_ns": event.time_ns,
        "model": call.model,
        "purpose": call.purpose,
        "shadow": call.shadow,
        "round": call.round,
        "success": call.success,
        "failure_kind": call.failure_kind,
        "latency_ns": call.latency_ns,
        "ttft_ns": call.ttft_ns,
    }
    doc.update(zip(USAGE_NAMES, usage_values(call.usage), strict=True))
    return doc


def _call_from(doc: Mapping[str, Any]) -> CallFact:
    return CallFact(
        model=str(doc["model"]),
        purpose=int(doc["purpose"]),
        shadow=bool(doc["shadow"]),
        round=int(doc["round"]),
        success=bool(doc["success"]),
        failure_kind=int(doc["failure_kind"]),
        usage=TokenUsage(*(int(doc[name]) for name in USAGE_NAMES)),
        latency_ns=int(doc["latency_ns"]),
        ttft_ns=None if doc.get("ttft_ns") is None else int(doc["ttft_ns"]),
    )


def _counter_ops(columns: Sequence[str], vectors: Vectors) -> list[Any]:
    """Journal entries ``[key values, {column: delta}]`` for the non-zero delta vectors."""
    out: list[Any] = []
    for key, vector in sorted(vectors.items()):
        deltas = {columns[i]: v for i, v in enumerate(vector) if v}
        if deltas:
            out.append([list(key), deltas])
    return out


class MongoAnalyticsStore(MongoStoreBase, AnalyticsStore):
    """:class:`AnalyticsStore` on MongoDB (see the module docstring for the write protocol)."""

    def __init__(self, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> None:
        super().__init__(db, client)
        self._c: dict[str, AsyncCollection[Document]] = {
            name: db[name] for name in (SESSIONS, EVENTS, CALLS, CRITIQUES, FEEDBACK, MODEL_DAILY, SESSION_DAILY)
        }
        self._journal: AsyncCollection[Document] = db[JOURNAL]
        self._lock = asyncio.Lock()

    APPNAME = "orchestratex-analytics"

    @classmethod
    async def attach(cls, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> Self:
        """A store on an already open database (closing the store closes ``client`` when given)."""
        await ensure_indexes(db, ANALYTICS_INDEXES)
        await ensure_schema(db, "analytics", ANALYTICS_MIGRATIONS)
        store = cls(db, client)
        async with store._lock:
            await store._replay_journal()
        return store

    # ------------------------------------------------------------------------------------ writing

    async def _write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` under the writer lock, after any unfinished journal, shielded from cancellation."""

        async def run() -> T:
            async with self._lock:
                await self._replay_journal()
                return await work()

        return await self._shielded(run)

    async def _replay_journal(self) -> None:
        pending = await self._journal.find({}).sort("created_ns", ASCENDING).to_list(None)
        for entry in pending:
            log.warning("finishing an interrupted analytics write (%s)", entry["_id"])
            await self._apply(entry)

    async def _commit(self, entry: Document) -> None:
        """Journal then apply one write (see the module docstring)."""
        entry["_id"] = uuid.uuid4().hex
        entry["created_ns"] = time.time_ns()
        await self._journal.insert_one(entry)
        await self._apply(entry)

    async def _apply(self, entry: Mapping[str, Any]) -> None:
        batch = str(entry["_id"])
        sessions = entry.get("sessions", [])
        if sessions:
            await self._c[SESSIONS].bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in sessions])
        for name in (EVENTS, CALLS, CRITIQUES):
            docs = entry.get(name, [])
            if docs:
                await _insert_idempotent(self._c[name], docs)
        for doc in entry.get(FEEDBACK, []):
            await self._c[FEEDBACK].replace_one(
                {"session_id": doc["session_id"], "user_id": doc["user_id"]}, doc, upsert=True
            )
        for session_id, user_id in entry.get(_DROPPED, []):
            await self._c[FEEDBACK].delete_one({"session_id": session_id, "user_id": user_id, "pending": True})
        for name, key_names in ((MODEL_DAILY, _MODEL_KEY), (SESSION_DAILY, _SESSION_KEY)):
            ops = [
                UpdateOne(
                    {**dict(zip(key_names, key, strict=True)), "last_batch": {"$ne": batch}},
                    {"$inc": deltas, "$set": {"last_batch": batch}},
                    upsert=True,
                )
                for key, deltas in entry.get(name, [])
            ]
            if ops:
                try:
                    await self._c[name].bulk_write(ops, ordered=False)
                except BulkWriteError as exc:
                    # A duplicate key here means the document already carries this batch: applied before.
                    if duplicate_indexes(exc) is None:
                        raise
        await self._journal.delete_one({"_id": batch})

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """See :meth:`AnalyticsStore.ingest`."""
        if not events:
            return IngestResult(0, 0)
        result = await self._write(lambda: self._ingest(tenant, events))
        log.debug("ingested %d events (%d duplicates)", result.accepted, result.duplicates)
        return result

    async def _ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        unique: dict[tuple[str, int], EventFacts] = {}
        for event in events:
            unique.setdefault((event.session_id, event.sequence), event)
        session_ids = sorted({sid for sid, _ in unique})
        seen: set[tuple[str, int]] = set()
        states: dict[str, SessionState] = {}
        for chunk in _chunks(session_ids):
            found = self._c[EVENTS].find({"session_id": {"$in": list(chunk)}}, {"session_id": 1, "sequence": 1})
            seen.update((str(d["session_id"]), int(d["sequence"])) for d in await found.to_list(None))
            for doc in await self._c[SESSIONS].find({"_id": {"$in": list(chunk)}}).to_list(None):
                states[str(doc["_id"])] = _state_from(doc)
        new = sorted((e for k, e in unique.items() if k not in seen), key=lambda e: (e.session_id, e.sequence))
        if not new:
            return IngestResult(0, len(events))

        before = {sid: (state.key, state.shadow_state) for sid, state in states.items()}
        old_states = {sid: dataclasses.replace(s, usage=list(s.usage)) for sid, s in states.items()}
        for event in new:
            state = states.get(event.session_id)
            if state is None:
                state = states[event.session_id] = SessionState(event.session_id, tenant, event.time_ns)
            state.advance(event)
        touched = sorted({e.session_id for e in new})
        moved = [sid for sid in touched if sid in before and states[sid].key != before[sid][0]]
        moved_set = set(moved)

        model_deltas: Vectors = {}
        session_deltas: Vectors = {}
        if moved:
            # The session's day, domain or primary model changed: its stored figures leave the old keys.
            old_models, old_sessions = await self._raw_vectors({sid: old_states[sid] for sid in moved})
            merge_into(model_deltas, old_models, -1, MODEL_WIDTH)
            merge_into(session_deltas, old_sessions, -1, SESSION_WIDTH)

        judged = sorted({e.session_id for e in new if e.critique is not None and e.critique.round == 1})
        round1: dict[str, list[tuple[str, str, bool, int]]] = {sid: [] for sid in judged}
        for chunk in _chunks(judged):
            found = self._c[CRITIQUES].find({"round": 1, "session_id": {"$in": list(chunk)}})
            for d in await found.to_list(None):
                round1[str(d["session_id"])].append(
                    (str(d["critic_model"]), str(d["author_model"]), bool(d["shadow"]), int(d["score_milli"]))
                )
        settle_shadows(states, round1, new)

        calls: list[Document] = []
        critiques: list[Document] = []
        for event in new:
            state = states[event.session_id]
            tenant_, day, _, domain = state.key
            if event.call is not None:
                calls.append(_call_doc(event, event.call))
                if event.session_id not in moved_set:
                    add_call(model_vector(model_deltas, (tenant_, day, event.call.model, domain)), event.call)
            k = event.critique
            if k is not None:
                milli = score_milli(k.score)
                critiques.append(
                    {
                        "session_id": event.session_id,
                        "sequence": event.sequence,
                        "round": k.round,
                        "critic_model": k.critic_model,
                        "author_model": k.author_model,
                        "score": k.score,
                        "shadow": k.shadow,
                        "score_milli": milli,
                    }
                )
                if event.session_id not in moved_set:
                    received = model_vector(model_deltas, (tenant_, day, k.author_model, domain))
                    received[I_RECV_N] += 1
                    received[I_RECV_MILLI] += milli
                    given = model_vector(model_deltas, (tenant_, day, k.critic_model, domain))
                    given[I_GIVEN_N] += 1
                    given[I_GIVEN_MILLI] += milli
        for sid in judged:
            if sid in moved_set:
                continue
            vector = session_vector(session_deltas, states[sid].key)
            add_shadow(vector, before[sid][1] if sid in before else None, -1)
            add_shadow(vector, states[sid].shadow_state, 1)
        if moved:
            # ... and all of them, the new events' included, arrive under the new keys.
            new_models, new_sessions = await self._raw_vectors(
                {sid: states[sid] for sid in moved},
                extra_calls=[d for d in calls if d["session_id"] in moved_set],
                extra_critiques=[d for d in critiques if d["session_id"] in moved_set],
            )
            merge_into(model_deltas, new_models, 1, MODEL_WIDTH)
            merge_into(session_deltas, new_sessions, 1, SESSION_WIDTH)
        # Sessions this batch creates take in the ratings given before they were known.
        joined, dropped = await self._pending_for(states, [sid for sid in touched if sid not in before])
        joined_ratings: dict[str, list[int]] = {}
        for doc in joined:
            joined_ratings.setdefault(str(doc["session_id"]), []).append(int(doc["rating"]))
        for sid, values in joined_ratings.items():
            add_ratings(session_vector(session_deltas, states[sid].key), values, 1)

        entry: Document = {
            "sessions": [_state_doc(states[sid]) for sid in touched],
            FEEDBACK: joined,
            _DROPPED: dropped,
            EVENTS: [
                {"session_id": e.session_id, "sequence": e.sequence, "kind": e.kind, "time_ns": e.time_ns} for e in new
            ],
            CALLS: calls,
            CRITIQUES: critiques,
            MODEL_DAILY: _counter_ops(MODEL_COLUMNS, model_deltas),
            SESSION_DAILY: _counter_ops(SESSION_COLUMNS, session_deltas),
        }
        if len(new) > 1 and len(bson.encode(entry)) > JOURNAL_MAX_BYTES:
            # Too big for one journal document (MongoDB refuses documents over 16 MiB): record the batch
            # in two halves, one after the other. Each half is atomic and idempotent; should the second
            # fail, a redelivery of the batch finds the first half's events already recorded.
            half = len(new) // 2
            first = await self._ingest(tenant, new[:half])
            second = await self._ingest(tenant, new[half:])
            accepted = first.accepted + second.accepted
            return IngestResult(accepted, len(events) - accepted)
        await self._commit(entry)
        return IngestResult(len(new), len(events) - len(new))

    async def _pending_for(
        self, states: Mapping[str, SessionState], created: Sequence[str]
    ) -> tuple[list[Document], list[list[str]]]:
        """The waiting ratings of the sessions a batch ``created``: those that join (as joined documents)
        and the ``[session_id, user_id]`` of those dropped, another tenant's."""
        joined: list[Document] = []
        dropped: list[list[str]] = []
        for chunk in _chunks(created):
            found = self._c[FEEDBACK].find({"session_id": {"$in": list(chunk)}, "pending": True})
            for doc in await found.to_list(None):
                sid, tenant = str(doc["session_id"]), str(doc.get("tenant", ""))
                owner = states[sid].tenant
                if feedback_may_join(owner, tenant):
                    joined.append({**{k: v for k, v in doc.items() if k != "_id"}, "pending": False})
                else:
                    log.warning(
                        "dropped a rating of session %s by tenant %r given before the session arrived: "
                        "it belongs to %r",
                        sid,
                        tenant,
                        owner,
                    )
                    dropped.append([sid, str(doc["user_id"])])
        return joined, dropped

    async def _raw_vectors(
        self,
        states: Mapping[str, SessionState],
        model: str = "",
        *,
        extra_calls: Sequence[Document] = (),
        extra_critiques: Sequence[Document] = (),
        full: bool = True,
    ) -> tuple[Vectors, Vectors]:
        """Model and session counter vectors computed from the raw facts of ``states``' sessions.

        The same figures the SQLite store's ``_raw_model_vectors``/``_raw_session_vectors`` compute;
        ``model`` keeps only that model's vectors, ``full=False`` skips the session vectors.
        """
        models: Vectors = {}
        sessions: Vectors = {}
        ids = sorted(states)
        calls: list[Document] = list(extra_calls)
        critiques: list[Document] = list(extra_critiques)
        ratings: dict[str, list[int]] = {}
        for chunk in _chunks(ids):
            query = {"session_id": {"$in": list(chunk)}}
            calls += await self._c[CALLS].find(query).to_list(None)
            critiques += await self._c[CRITIQUES].find(query).to_list(None)
            if full:
                found = self._c[FEEDBACK].find({**query, **_JOINED}, {"session_id": 1, "rating": 1})
                for d in await found.to_list(None):
                    ratings.setdefault(str(d["session_id"]), []).append(int(d["rating"]))
        for d in calls:
            tenant, day, _, domain = states[str(d["session_id"])].key
            add_call(model_vector(models, (tenant, day, str(d["model"]), domain)), _call_from(d))
        for d in critiques:
            tenant, day, _, domain = states[str(d["session_id"])].key
            milli = int(d["score_milli"])
            received = model_vector(models, (tenant, day, str(d["author_model"]), domain))
            received[I_RECV_N] += 1
            received[I_RECV_MILLI] += milli
            given = model_vector(models, (tenant, day, str(d["critic_model"]), domain))
            given[I_GIVEN_N] += 1
            given[I_GIVEN_MILLI] += milli
        if model:
            # A vector's model is the call's model, the critique's author (received) or critic (given):
            # the same rows the SQLite store selects with its model filter.
            models = {key: vector for key, vector in models.items() if key[2] == model}
        if full:
            for sid, state in states.items():
                vector = session_vector(sessions, state.key)
                add_shadow(vector, state.shadow_state, 1)
                add_ratings(vector, ratings.get(sid, []), 1)
        return models, sessions

    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, *, tenant: str = ""
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work() -> tuple[FeedbackRecord, bool]:
            session = await self._c[SESSIONS].find_one({"_id": session_id})
            if session is None:
                return await self._put_pending(session_id, user_id, rating, comment, now_ns, tenant)
            state = _state_from(session)
            if tenant and state.tenant != tenant:
                raise LookupError(f"no session {session_id!r}")
            rows = await self._c[FEEDBACK].find({"session_id": session_id, **_JOINED}).to_list(None)
            before = {str(r["user_id"]): int(r["rating"]) for r in rows}
            created = next((int(r["create_time_ns"]) for r in rows if r["user_id"] == user_id), now_ns)
            after = {**before, user_id: rating}
            deltas: Vectors = {}
            vector = session_vector(deltas, state.key)
            add_ratings(vector, list(before.values()), -1)
            add_ratings(vector, list(after.values()), 1)
            record = FeedbackRecord(session_id, user_id, rating, comment, created, now_ns)
            await self._commit(
                {
                    FEEDBACK: [
                        {
                            "session_id": session_id,
                            "user_id": user_id,
                            "rating": rating,
                            "comment": comment,
                            "create_time_ns": created,
                            "update_time_ns": now_ns,
                        }
                    ],
                    SESSION_DAILY: _counter_ops(SESSION_COLUMNS, deltas),
                }
            )
            return record, user_id in before

        return await self._write(work)

    async def _put_pending(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, tenant: str
    ) -> tuple[FeedbackRecord, bool]:
        """Keep a rating of a session not known yet (under the writer lock); as the SQLite store's
        ``_put_pending``: the latest wins, and keeps its creation time only over the same tenant's."""
        earlier = await self._c[FEEDBACK].find_one({"session_id": session_id, "user_id": user_id, "pending": True})
        replaced = earlier is not None and str(earlier.get("tenant", "")) == tenant
        created = int(earlier["create_time_ns"]) if earlier is not None and replaced else now_ns
        doc: Document = {
            "session_id": session_id,
            "user_id": user_id,
            "rating": rating,
            "comment": comment,
            "create_time_ns": created,
            "update_time_ns": now_ns,
            "tenant": tenant,
            "pending": True,
        }
        await self._commit({FEEDBACK: [doc]})
        return FeedbackRecord(session_id, user_id, rating, comment, created, now_ns, pending=True), replaced

    # ------------------------------------------------------------------------------------ reading

    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """See :meth:`AnalyticsStore.get_session`."""
        query: Document = {"_id": session_id}
        if tenant:
            query["tenant"] = tenant
        doc = await self._c[SESSIONS].find_one(query)
        if doc is None:
            return None
        return SessionInfo(
            session_id=str(doc["_id"]),
            tenant=str(doc["tenant"]),
            status=int(doc["status"]),
            create_time_ns=int(doc["create_time_ns"]),
            primary_model=str(doc["primary_model"]),
            primary_domain=int(doc["primary_domain"]),
            calls=int(doc["calls"]),
            usage=TokenUsage(*(int(doc[name]) for name in USAGE_NAMES)),
        )

    def _session_filter(self, scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False) -> Document:
        query: Document = {"create_time_ns": {"$gte": start_ns, "$lt": end_ns}}
        if scope.tenant:
            query["tenant"] = scope.tenant
        if with_domain and scope.domain:
            query["primary_domain"] = scope.domain
        return query

    async def _edge_states(
        self, scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False
    ) -> dict[str, SessionState]:
        found = self._c[SESSIONS].find(self._session_filter(scope, start_ns, end_ns, with_domain=with_domain))
        return {str(d["_id"]): _state_from(d) for d in await found.to_list(None)}

    async def _daily(self, collection: str, scope: Scope, day_lo: int, day_hi: int, **match: Any) -> list[Document]:
        query: Document = {"day": {"$gte": day_lo, "$lt": day_hi}, **match}
        if scope.tenant:
            query["tenant"] = scope.tenant
        return await self._c[collection].find(query).to_list(None)

    async def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        """See :meth:`AnalyticsStore.performance`."""
        day_lo, day_hi, edges = _day_split(scope)
        totals: dict[tuple[str, int], list[int]] = {}

        def add(key: tuple[str, int], vector: Sequence[int]) -> None:
            into = totals.setdefault(key, [0] * MODEL_WIDTH)
            for i, value in enumerate(vector):
                into[i] += value

        if day_lo < day_hi:
            match: Document = {}
            if model:
                match["model"] = model
            if scope.domain:
                match["domain"] = scope.domain
            for doc in await self._daily(MODEL_DAILY, scope, day_lo, day_hi, **match):
                add((str(doc["model"]), int(doc["domain"])), [int(doc.get(c, 0)) for c in MODEL_COLUMNS])
        for start_ns, end_ns in edges:
            states = await self._edge_states(scope, start_ns, end_ns, with_domain=True)
            models, _ = await self._raw_vectors(states, model)
            for (_, _, name, domain), vector in models.items():
                add((name, domain), vector)
        return [
            perf_row(name, domain, totals[(name, domain)])
            for name, domain in sorted(totals)
            if any(totals[(name, domain)])
        ]

    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """See :meth:`AnalyticsStore.cost_summary`."""
        query = self._session_filter(scope, scope.start_ns, scope.end_ns)
        session_count = await self._c[SESSIONS].count_documents(query)
        top = (
            await self._c[SESSIONS]
            .find(query, {"calls": 1, "cost_nanos": 1, "create_time_ns": 1})
            .sort([("cost_nanos", DESCENDING), ("_id", ASCENDING)])
            .limit(session_limit)
            .to_list(None)
            if session_limit > 0
            else []
        )
        cells: dict[tuple[int, str], list[int]] = {}

        def add(day: int, model: str, calls: int, usage: Sequence[int]) -> None:
            cell = cells.setdefault((day, model), [0] * 7)
            cell[0] += calls
            for i, value in enumerate(usage):
                cell[1 + i] += value

        day_lo, day_hi, edges = _day_split(scope)
        if day_lo < day_hi:
            for doc in await self._daily(MODEL_DAILY, scope, day_lo, day_hi):
                add(
                    int(doc["day"]),
                    str(doc["model"]),
                    int(doc.get("attempts", 0)),
                    [int(doc.get(n, 0)) for n in USAGE_NAMES],
                )
        for start_ns, end_ns in edges:
            states = await self._edge_states(scope, start_ns, end_ns)
            models, _ = await self._raw_vectors(states, full=False)
            for (_, day, name, _), vector in models.items():
                add(day, name, vector[I_ATTEMPTS], vector[I_USAGE : I_USAGE + 6])
        per_model: dict[str, list[int]] = {}
        per_day: dict[int, list[int]] = {}
        for (day, name), cell in cells.items():
            for into in (per_model.setdefault(name, [0] * 7), per_day.setdefault(day, [0] * 7)):
                for i, value in enumerate(cell):
                    into[i] += value
        total = [sum(cell[i] for cell in per_day.values()) for i in range(7)]
        models_sorted = sorted(per_model.items(), key=lambda item: (-item[1][6], item[0]))
        return CostSummary(
            session_count=session_count,
            calls=total[0],
            usage=TokenUsage(*total[1:]),
            sessions=[
                SessionCostRow(str(d["_id"]), int(d["calls"]), int(d["cost_nanos"]), int(d["create_time_ns"]))
                for d in top
            ],
            models=[
                ModelCostRow(name, cell[0], TokenUsage(*cell[1:])) for name, cell in models_sorted if cell[0] or cell[6]
            ],
            days=[DayCostRow(day_name(day), cell[0], cell[6]) for day, cell in sorted(per_day.items()) if cell[0]],
        )

    async def _session_counters(self, scope: Scope) -> list[tuple[Key, list[int]]]:
        out: list[tuple[Key, list[int]]] = []
        day_lo, day_hi, edges = _day_split(scope)
        if day_lo < day_hi:
            for doc in await self._daily(SESSION_DAILY, scope, day_lo, day_hi):
                key = (str(doc["tenant"]), int(doc["day"]), str(doc["primary_model"]), int(doc["domain"]))
                out.append((key, [int(doc.get(c, 0)) for c in SESSION_COLUMNS]))
        for start_ns, end_ns in edges:
            states = await self._edge_states(scope, start_ns, end_ns)
            _, sessions = await self._raw_vectors(states)
            out.extend(sessions.items())
        return out

    async def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        """See :meth:`AnalyticsStore.selection_accuracy`."""
        shadow = [0, 0]
        feedback = [0, 0]
        by_domain: dict[int, list[int]] = {}
        for (_, _, _, domain), v in await self._session_counters(scope):
            shadow[0] += v[0]
            shadow[1] += v[1]
            feedback[0] += v[2]
            feedback[1] += v[3]
            if domain:
                cell = by_domain.setdefault(domain, [0, 0])
                cell[0] += v[0]
                cell[1] += v[1]
        return AccuracySummary(
            shadow=Proportion(shadow[0], shadow[1]),
            feedback=Proportion(feedback[0], feedback[1]),
            shadow_by_domain={d: Proportion(n, hits) for d, (n, hits) in sorted(by_domain.items()) if n},
        )

    async def satisfaction(self, scope: Scope) -> SatisfactionData:
        """See :meth:`AnalyticsStore.satisfaction`."""
        overall = RatingCounts()
        by_model: dict[str, RatingCounts] = {}
        by_domain: dict[int, RatingCounts] = {}
        by_day: dict[int, RatingCounts] = {}
        for (_, day, primary_model, domain), v in await self._session_counters(scope):
            counts = RatingCounts((v[4], v[5], v[6], v[7], v[8]))
            if not counts.total:
                continue
            overall += counts
            if primary_model:
                by_model[primary_model] = by_model.get(primary_model, RatingCounts()) + counts
            if domain:
                by_domain[domain] = by_domain.get(domain, RatingCounts()) + counts
            by_day[day] = by_day.get(day, RatingCounts()) + counts
        return SatisfactionData(
            overall=overall,
            by_model=dict(sorted(by_model.items())),
            by_domain=dict(sorted(by_domain.items())),
            by_day={day_name(day): counts for day, counts in sorted(by_day.items())},
        )


async def _insert_idempotent(collection: AsyncCollection[Document], docs: Sequence[Document]) -> None:
    """Insert ``docs`` (unordered); documents already there (duplicate key) are fine, anything else raises."""
    try:
        await collection.bulk_write([InsertOne(dict(d)) for d in docs], ordered=False)
    except BulkWriteError as exc:
        if duplicate_indexes(exc) is None:
            raise
