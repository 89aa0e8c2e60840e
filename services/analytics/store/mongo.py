"""The MongoDB adapter of the analytics store: :class:`MongoAnalyticsStore`.

Everything that is not MongoDB lives elsewhere, shared with the SQLite adapter: the model and its rules in
:mod:`.model`, the time-bucketing scheme in :mod:`.buckets`, the counters and the reports made from them in
:mod:`.counters`, the write plans in :mod:`.planner`. This module loads the documents a plan needs
(:class:`_Docs` implements the planner's and the reports' reading protocols), applies plans through the
journal below, and sums counter documents (in Python, not with server-side aggregation).

Collections: the raw facts (``analytics_sessions``, the ``analytics_events`` ledger, ``analytics_calls``,
``analytics_critiques``, ``analytics_feedback``, where a rating waiting for its session has
``pending: true``), the counters (``analytics_model_counters``, ``analytics_session_counters``,
``analytics_day_counters``: one document per block, tenant and key, with the fields of the SQLite tables'
columns, ``level``, ``unit``, ``tenant``, ``model``, ``attempts``, ``lat_17``...), ``analytics_meta`` (the
counters version) and ``analytics_journal``.

Atomic, idempotent batches without multi-document transactions (the compose file runs a standalone
server, which has none): each write's plan is recorded as one **journal** document (``analytics_journal``:
a single-document write, so atomic), then applied, then the journal document is deleted. Every applied
operation is idempotent — raw facts are inserted under unique keys (a duplicate key means "already
there"), session documents are replaced whole, and each counter update is conditional on the document's
``last_batch`` differing from the batch id (it is set in the same update) — so a journal left by a crash
or a failed write is simply applied again before anything else, at start-up and before the next write.
Writes are serialised by one lock: one analytics process per database, as with SQLite. A reader can see a
batch half-applied for the moment it takes; nothing is ever lost or counted twice. A batch whose journal
document would pass :data:`JOURNAL_MAX_BYTES` (MongoDB refuses documents over 16 MiB; 10,000 events with
long ids come to about 40 MB) is recorded in parts, each journalled on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
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
from services.analytics.store import counters, planner
from services.analytics.store.buckets import Run, counter_tenant
from services.analytics.store.model import (
    USAGE_NAMES,
    CallFact,
    CritiqueFact,
    EventFacts,
    FeedbackRecord,
    IngestResult,
    Scope,
    SessionCostRow,
    SessionFacts,
    SessionState,
    TokenUsage,
    score_milli,
    usage_values,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSIONS = "analytics_sessions"
EVENTS = "analytics_events"
CALLS = "analytics_calls"
CRITIQUES = "analytics_critiques"
FEEDBACK = "analytics_feedback"
MODEL_COUNTERS = "analytics_model_counters"
SESSION_COUNTERS = "analytics_session_counters"
DAY_COUNTERS = "analytics_day_counters"
META = "analytics_meta"
JOURNAL = "analytics_journal"

# Each counter collection and the fields of its key (those of the SQLite table's key columns).
_COUNTERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (MODEL_COUNTERS, counters.ModelKey._fields),
    (SESSION_COUNTERS, counters.SessionKey._fields),
    (DAY_COUNTERS, counters.DayKey._fields),
)
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
        "raw calls of given sessions (edge hours of a report, re-keying a session); idempotent insert",
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
        "sessions of one tenant created in a range (edge hours, cost report's session count and top list)",
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
        MODEL_COUNTERS,
        "key",
        (("tenant", ASCENDING), ("level", ASCENDING), ("unit", ASCENDING), ("model", ASCENDING), ("domain", ASCENDING)),
        "$inc of one model counter document; performance and cost reports: the blocks of one tenant "
        "(or of the all-tenants rows)",
        unique=True,
    ),
    IndexSpec(
        SESSION_COUNTERS,
        "key",
        (
            ("tenant", ASCENDING),
            ("level", ASCENDING),
            ("unit", ASCENDING),
            ("primary_model", ASCENDING),
            ("domain", ASCENDING),
        ),
        "$inc of one session counter document; accuracy and satisfaction: the blocks of one tenant",
        unique=True,
    ),
    IndexSpec(
        DAY_COUNTERS,
        "key",
        (("tenant", ASCENDING), ("level", ASCENDING), ("unit", ASCENDING)),
        "$inc of one day counter document; per-day breakdowns: the hour and day blocks of one tenant",
        unique=True,
    ),
)


# Migrations are frozen like the SQLite ones (``tests/analytics/test_migrations.py`` pins their source):
# they name collections literally, never through the constants above, and a change is a new migration.


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


async def _analytics_v3(db: MongoDb) -> None:
    """Version 3: the counters in the layout of every backend (``services.analytics.store.buckets``).

    Blocks of 1 hour, 1 UTC day, 8 and 64 days, under each tenant and all tenants, in
    ``analytics_model_counters``, ``analytics_session_counters`` and ``analytics_day_counters``, instead of
    the per-day ``analytics_model_daily`` and ``analytics_session_daily``, which are dropped. Unsetting the
    counters version in ``analytics_meta`` makes the start-up that follows rebuild the new counters from
    the raw facts, after finishing any journal the previous release left (whose counter updates name the
    dropped collections and are skipped).
    """
    await db.drop_collection("analytics_model_daily")
    await db.drop_collection("analytics_session_daily")
    await db["analytics_meta"].delete_one({"_id": "counters"})


ANALYTICS_MIGRATIONS: tuple[Migration, ...] = (
    ("raw facts and daily counters", _analytics_v1),
    ("ratings before their session", _analytics_v2),
    ("counters in blocks of every level", _analytics_v3),
)
# Ratings that count: joined to a known session (documents written before version 2 have no ``pending``).
_JOINED: Document = {"pending": {"$ne": True}}
_DROPPED = "feedback_dropped"


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


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
    doc.update(zip(USAGE_NAMES, usage_values(state.usage), strict=True))
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
        usage=TokenUsage(*(int(doc[name]) for name in USAGE_NAMES)),
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


def _critique_doc(event: EventFacts, critique: CritiqueFact) -> Document:
    return {
        "session_id": event.session_id,
        "sequence": event.sequence,
        "round": critique.round,
        "critic_model": critique.critic_model,
        "author_model": critique.author_model,
        "score": critique.score,
        "shadow": critique.shadow,
        "score_milli": score_milli(critique.score),
    }


def _critique_from(doc: Mapping[str, Any]) -> CritiqueFact:
    return CritiqueFact(
        round=int(doc["round"]),
        critic_model=str(doc["critic_model"]),
        author_model=str(doc["author_model"]),
        score=float(doc["score"]),
        shadow=bool(doc["shadow"]),
    )


def _pending_from(doc: Mapping[str, Any]) -> planner.PendingRating:
    return planner.PendingRating(
        session_id=str(doc["session_id"]),
        user_id=str(doc["user_id"]),
        tenant=str(doc.get("tenant", "")),
        rating=int(doc["rating"]),
        comment=str(doc["comment"]),
        create_time_ns=int(doc["create_time_ns"]),
        update_time_ns=int(doc["update_time_ns"]),
    )


def _rating_doc(rating: planner.PendingRating, *, pending: bool) -> Document:
    return {
        "session_id": rating.session_id,
        "user_id": rating.user_id,
        "rating": rating.rating,
        "comment": rating.comment,
        "create_time_ns": rating.create_time_ns,
        "update_time_ns": rating.update_time_ns,
        "tenant": rating.tenant,
        "pending": pending,
    }


def _counter_ops(rows: counters.CounterRows) -> Document:
    """Journal entries per counter collection: ``[key values, {field: delta}]`` of the non-zero deltas."""
    tables: tuple[Iterable[tuple[tuple[Any, ...], dict[str, int]]], ...] = (
        ((k, v.columns()) for k, v in rows.models.items()),
        ((k, v.columns()) for k, v in rows.sessions.items()),
        ((k, v.columns()) for k, v in rows.days.items()),
    )
    out: Document = {}
    for (name, _), items in zip(_COUNTERS, tables, strict=True):
        out[name] = [[list(key), {c: n for c, n in named.items() if n}] for key, named in sorted(items)]
    return out


def _runs_filter(scope: Scope, runs: Sequence[Run]) -> Document:
    """Counter documents of the blocks of ``runs`` of the scope's counter tenant."""
    return {
        "tenant": counter_tenant(scope.tenant),
        "$or": [{"level": run.level, "unit": {"$gte": run.first, "$lt": run.end}} for run in runs],
    }


def _session_filter(scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False) -> Document:
    query: Document = {"create_time_ns": {"$gte": start_ns, "$lt": end_ns}}
    if scope.tenant:
        query["tenant"] = scope.tenant
    if with_domain and scope.domain:
        query["primary_domain"] = scope.domain
    return query


class _Docs:
    """The documents plans and reports read.

    Implements :class:`~.planner.StoredState`, :class:`~.planner.FeedbackState` and
    :class:`~.counters.CounterReader`.
    """

    def __init__(self, c: Mapping[str, AsyncCollection[Document]]) -> None:
        self._c = c

    async def _find_in(self, name: str, field: str, ids: Sequence[str], **query: Any) -> list[Document]:
        out: list[Document] = []
        for chunk in _chunks(ids):
            out += await self._c[name].find({field: {"$in": list(chunk)}, **query}).to_list(None)
        return out

    # ------------------------------------------------------------------------------ planner.StoredState

    async def seen_events(self, session_ids: Sequence[str]) -> set[tuple[str, int]]:
        return {
            (str(d["session_id"]), int(d["sequence"])) for d in await self._find_in(EVENTS, "session_id", session_ids)
        }

    async def sessions(self, session_ids: Sequence[str]) -> dict[str, SessionState]:
        return {str(d["_id"]): _state_from(d) for d in await self._find_in(SESSIONS, "_id", session_ids)}

    async def session_facts(self, session_ids: Sequence[str], *, with_calls: bool = True) -> dict[str, SessionFacts]:
        calls: dict[str, list[CallFact]] = {}
        critiques: dict[str, list[CritiqueFact]] = {}
        ratings: dict[str, list[int]] = {}
        if with_calls:
            for d in await self._find_in(CALLS, "session_id", session_ids):
                calls.setdefault(str(d["session_id"]), []).append(_call_from(d))
            for d in await self._find_in(CRITIQUES, "session_id", session_ids):
                critiques.setdefault(str(d["session_id"]), []).append(_critique_from(d))
        for d in await self._find_in(FEEDBACK, "session_id", session_ids, **_JOINED):
            ratings.setdefault(str(d["session_id"]), []).append(int(d["rating"]))
        return {
            sid: SessionFacts(calls.get(sid, ()), critiques.get(sid, ()), ratings.get(sid, ())) for sid in session_ids
        }

    async def round1_critiques(self, session_ids: Sequence[str]) -> dict[str, list[CritiqueFact]]:
        out: dict[str, list[CritiqueFact]] = {}
        for d in await self._find_in(CRITIQUES, "session_id", session_ids, round=1):
            out.setdefault(str(d["session_id"]), []).append(_critique_from(d))
        return out

    async def pending_ratings(self, session_ids: Sequence[str]) -> list[planner.PendingRating]:
        return [_pending_from(d) for d in await self._find_in(FEEDBACK, "session_id", session_ids, pending=True)]

    # --------------------------------------------------------------------------- planner.FeedbackState

    async def session(self, session_id: str) -> SessionState | None:
        doc = await self._c[SESSIONS].find_one({"_id": session_id})
        return None if doc is None else _state_from(doc)

    async def ratings(self, session_id: str) -> list[planner.StoredRating]:
        docs = await self._c[FEEDBACK].find({"session_id": session_id, **_JOINED}).to_list(None)
        return [planner.StoredRating(str(d["user_id"]), int(d["rating"]), int(d["create_time_ns"])) for d in docs]

    async def pending_rating(self, session_id: str, user_id: str) -> planner.PendingRating | None:
        doc = await self._c[FEEDBACK].find_one({"session_id": session_id, "user_id": user_id, "pending": True})
        return None if doc is None else _pending_from(doc)

    # ------------------------------------------------------------------------------ counters.CounterReader

    async def model_totals(
        self, scope: Scope, runs: Sequence[Run], model: str = "", columns: Sequence[str] = counters.MODEL_COLUMNS
    ) -> list[tuple[str, int, counters.ModelCounters]]:
        query = _runs_filter(scope, runs)
        if model:
            query["model"] = model
        if scope.domain:
            query["domain"] = scope.domain
        projection = {name: 1 for name in ("model", "domain", *columns)}
        totals: dict[tuple[str, int], counters.ModelCounters] = {}
        for doc in await self._c[MODEL_COUNTERS].find(query, projection).to_list(None):
            key = (str(doc["model"]), int(doc["domain"]))
            totals[key] = totals.get(key, counters.ModelCounters()) + counters.ModelCounters.from_columns(doc)
        return [(name, domain, value) for (name, domain), value in totals.items()]

    async def session_totals(
        self, scope: Scope, runs: Sequence[Run]
    ) -> list[tuple[str, int, counters.SessionCounters]]:
        totals: dict[tuple[str, int], counters.SessionCounters] = {}
        for doc in await self._c[SESSION_COUNTERS].find(_runs_filter(scope, runs)).to_list(None):
            key = (str(doc["primary_model"]), int(doc["domain"]))
            totals[key] = totals.get(key, counters.SessionCounters()) + counters.SessionCounters.from_columns(doc)
        return [(name, domain, value) for (name, domain), value in totals.items()]

    async def day_totals(self, scope: Scope, runs: Sequence[Run]) -> list[tuple[int, counters.DayCounters]]:
        docs = await self._c[DAY_COUNTERS].find(_runs_filter(scope, runs)).to_list(None)
        return [(int(doc["unit"]), counters.DayCounters.from_columns(doc)) for doc in docs]

    async def sessions_in(
        self, scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False, with_calls: bool = True
    ) -> list[tuple[SessionState, SessionFacts]]:
        found = self._c[SESSIONS].find(_session_filter(scope, start_ns, end_ns, with_domain=with_domain))
        states = [_state_from(d) for d in await found.to_list(None)]
        facts = await self.session_facts([state.session_id for state in states], with_calls=with_calls)
        return [(state, facts[state.session_id]) for state in states]

    async def costliest(self, scope: Scope, limit: int) -> tuple[int, list[SessionCostRow]]:
        query = _session_filter(scope, scope.start_ns, scope.end_ns)
        count = await self._c[SESSIONS].count_documents(query)
        top = (
            await self._c[SESSIONS]
            .find(query, {"calls": 1, "cost_nanos": 1, "create_time_ns": 1})
            .sort([("cost_nanos", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list(None)
            if limit > 0
            else []
        )
        return count, [
            SessionCostRow(str(d["_id"]), int(d["calls"]), int(d["cost_nanos"]), int(d["create_time_ns"])) for d in top
        ]

    # ----------------------------------------------------------------------------------------- rebuild

    async def every_session(self) -> AsyncIterator[list[tuple[SessionState, SessionFacts]]]:
        """Every stored session with its raw facts, in chunks."""
        after = ""
        while True:
            found = self._c[SESSIONS].find({"_id": {"$gt": after}}).sort("_id", ASCENDING).limit(_IN_CHUNK)
            states = [_state_from(d) for d in await found.to_list(None)]
            if not states:
                return
            facts = await self.session_facts([state.session_id for state in states])
            yield [(state, facts[state.session_id]) for state in states]
            after = states[-1].session_id


def _plan_entry(plan: planner.WritePlan) -> Document:
    """The journal document of a batch's plan."""
    return {
        "sessions": [_state_doc(state) for state in plan.sessions],
        FEEDBACK: [_rating_doc(rating, pending=False) for rating in plan.joined],
        _DROPPED: [[rating.session_id, rating.user_id] for rating in plan.dropped],
        EVENTS: [
            {"session_id": e.session_id, "sequence": e.sequence, "kind": e.kind, "time_ns": e.time_ns}
            for e in plan.events
        ],
        CALLS: [_call_doc(e, e.call) for e in plan.events if e.call is not None],
        CRITIQUES: [_critique_doc(e, e.critique) for e in plan.events if e.critique is not None],
        **_counter_ops(plan.counters),
    }


def _feedback_entry(plan: planner.FeedbackPlan) -> Document:
    """The journal document of a rating's plan."""
    if plan.pending is not None:
        return {FEEDBACK: [_rating_doc(plan.pending, pending=True)]}
    r = plan.record
    doc: Document = {
        "session_id": r.session_id,
        "user_id": r.user_id,
        "rating": r.rating,
        "comment": r.comment,
        "create_time_ns": r.create_time_ns,
        "update_time_ns": r.update_time_ns,
    }
    return {FEEDBACK: [doc], **_counter_ops(plan.counters)}


class MongoAnalyticsStore(MongoStoreBase, counters.CounterReports):
    """:class:`AnalyticsStore` on MongoDB (see the module docstring for the write protocol)."""

    def __init__(self, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> None:
        super().__init__(db, client)
        self._c: dict[str, AsyncCollection[Document]] = {
            name: db[name]
            for name in (SESSIONS, EVENTS, CALLS, CRITIQUES, FEEDBACK, MODEL_COUNTERS, SESSION_COUNTERS, DAY_COUNTERS)
        }
        self._journal: AsyncCollection[Document] = db[JOURNAL]
        self._meta: AsyncCollection[Document] = db[META]
        self._docs = self._counters = _Docs(self._c)
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
            await store._rebuild_counters_if_stale()
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
        for name, key_names in _COUNTERS:
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

    async def _rebuild_counters_if_stale(self) -> None:
        """Rebuild every counter from the raw facts when the recorded counters version is not
        ``counters.COUNTERS_VERSION`` (under the writer lock). Interrupted, it starts again at the next start-up."""
        meta = await self._meta.find_one({"_id": "counters"})
        if meta is not None and int(meta["value"]) == counters.COUNTERS_VERSION:
            return
        plan = await planner.plan_rebuild(self._docs.every_session())
        if plan.sessions:
            await self._c[SESSIONS].bulk_write(
                [ReplaceOne({"_id": s.session_id}, _state_doc(s)) for s in plan.sessions]
            )
        for name, key_names in _COUNTERS:
            await self._c[name].delete_many({})
            docs = [
                {**dict(zip(key_names, key, strict=True)), **deltas}
                for key, deltas in _counter_ops(plan.counters)[name]
            ]
            for chunk in _chunks(docs):
                await _insert_idempotent(self._c[name], chunk)
        await self._meta.replace_one({"_id": "counters"}, {"value": counters.COUNTERS_VERSION}, upsert=True)
        log.info("analytics counters rebuilt from the raw facts (version %d)", counters.COUNTERS_VERSION)

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """See :meth:`AnalyticsStore.ingest`."""
        if not events:
            return IngestResult(0, 0)
        result = await self._write(lambda: self._ingest(tenant, events))
        log.debug("ingested %d events (%d duplicates)", result.accepted, result.duplicates)
        return result

    async def _ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        plan = await planner.plan_ingest(tenant, events, self._docs)
        if not plan.events:
            return plan.result
        entry = _plan_entry(plan)
        if len(plan.events) > 1 and len(bson.encode(entry)) > JOURNAL_MAX_BYTES:
            # Too big for one journal document (MongoDB refuses documents over 16 MiB): record the batch
            # in two halves, one after the other. Each half is atomic and idempotent; should the second
            # fail, a redelivery of the batch finds the first half's events already recorded.
            half = len(plan.events) // 2
            first = await self._ingest(tenant, plan.events[:half])
            second = await self._ingest(tenant, plan.events[half:])
            accepted = first.accepted + second.accepted
            return IngestResult(accepted, len(events) - accepted)
        await self._commit(entry)
        return plan.result

    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, *, tenant: str = ""
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work() -> tuple[FeedbackRecord, bool]:
            plan = await planner.plan_feedback(self._docs, session_id, user_id, rating, comment, now_ns, tenant)
            await self._commit(_feedback_entry(plan))
            return plan.record, plan.replaced

        return await self._write(work)


async def _insert_idempotent(collection: AsyncCollection[Document], docs: Sequence[Document]) -> None:
    """Insert ``docs`` (unordered); documents already there (duplicate key) are fine, anything else raises."""
    try:
        await collection.bulk_write([InsertOne(dict(d)) for d in docs], ordered=False)
    except BulkWriteError as exc:
        if duplicate_indexes(exc) is None:
            raise
