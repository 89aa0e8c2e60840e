"""Analytics storage: the backend-neutral :class:`AnalyticsStore` interface and its SQLite implementation.

The analytics service turns orchestration events into :class:`EventFacts` (plain values, no protobuf)
and hands them to a store. A store keeps:

* an idempotency ledger keyed by ``(session_id, sequence)``: an event delivered twice counts once;
* one row per session (tenant, status, creation time, primary model and domain, final score) with
  pre-aggregated counters (calls, failures, tokens, cost) and the same counters per session and model;
* one row per provider call and one per critique, for percentiles and scores;
* one rating per session and user.

Rules every implementation follows (the MongoDB one included):

* A batch is applied atomically; counters change only for newly recorded events, in the same
  transaction that records them.
* Events may arrive before their session's ``session_started``: the session is created lazily with
  the earliest event time seen as its creation time, replaced by the ``session_started`` time when
  that arrives. Only terminal events change the status, so a late event never "reopens" a session.
* A session keeps the tenant of its first delivery.
* Money is integer nano-dollars, times are integer nanoseconds since the Unix epoch (UTC), durations
  integer nanoseconds, so sums are exact.
* Every query is scoped by :class:`Scope`: sessions of one tenant (or all when ``tenant`` is empty)
  created in ``[start_ns, end_ns)``; every figure covers the calls, critiques and ratings of those
  sessions. Attributing a session's spending to its creation time keeps the per-session, per-model
  and per-day breakdowns adding up to the same total.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from orchestratex.store.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

T = TypeVar("T")

# SessionStatus values (orchestrator.proto), repeated here so the store needs no protobuf import.
STATUS_RUNNING = 1
STATUS_COMPLETED = 2
STATUS_FAILED = 3
STATUS_CANCELLED = 4


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens and cost of one or more calls; cost in integer nano-dollars (USD * 1e9)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost_nanos: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cached_tokens + other.cached_tokens,
            self.total_tokens + other.total_tokens,
            self.cost_nanos + other.cost_nanos,
        )

    @property
    def cost_usd(self) -> float:
        """The cost in US dollars."""
        return self.cost_nanos / 1e9


@dataclass(frozen=True, slots=True)
class CallFact:
    """One provider call, successful or not.

    ``purpose`` is a ``CallPurpose`` value, ``failure_kind`` a ``FailureKind`` value (0 on success).
    ``ttft_ns`` is None when no token arrived or it was not reported.
    """

    model: str
    purpose: int
    shadow: bool
    round: int
    success: bool
    failure_kind: int
    usage: TokenUsage
    latency_ns: int
    ttft_ns: int | None


@dataclass(frozen=True, slots=True)
class CritiqueFact:
    """One critic's score (0-10) of one answer."""

    round: int
    critic_model: str
    author_model: str
    score: float
    shadow: bool


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A terminal event: ``status`` is COMPLETED, FAILED or CANCELLED (``SessionStatus`` values)."""

    status: int
    final_score: float | None = None
    best_model: str = ""


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What one orchestration event means for analytics.

    ``kind`` is the name of the event's oneof case. At most one of the optional parts is set, except
    that every event creates its session if needed.
    """

    session_id: str
    sequence: int
    time_ns: int
    kind: str
    started: bool = False
    primary_model: str | None = None
    primary_domain: int = 0
    call: CallFact | None = None
    critique: CritiqueFact | None = None
    end: SessionEnd | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Outcome of one batch: events newly recorded and events already recorded before."""

    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Scope:
    """Which sessions a query covers: one tenant's ("" = every tenant) created in ``[start_ns, end_ns)``.

    ``domain`` (a ``Domain`` value, 0 = any) further restricts to sessions of that primary domain.
    """

    tenant: str
    start_ns: int
    end_ns: int
    domain: int = 0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as analytics knows it."""

    session_id: str
    tenant: str
    status: int
    create_time_ns: int
    primary_model: str
    primary_domain: int
    calls: int
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A stored call with its session and the session's primary domain (0 when not known)."""

    session_id: str
    domain: int
    call: CallFact


@dataclass(frozen=True, slots=True)
class CritiqueRecord:
    """A stored critique with its session and the session's primary domain (0 when not known)."""

    session_id: str
    domain: int
    critique: CritiqueFact


@dataclass(frozen=True, slots=True)
class RatingRecord:
    """One user's rating with what the satisfaction report groups it by."""

    session_id: str
    user_id: str
    rating: int
    primary_model: str
    primary_domain: int
    session_time_ns: int


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A stored rating."""

    session_id: str
    user_id: str
    rating: int
    comment: str
    create_time_ns: int
    update_time_ns: int


@dataclass(frozen=True, slots=True)
class SessionCostRow:
    """One session's spending."""

    session_id: str
    calls: int
    cost_nanos: int
    create_time_ns: int


@dataclass(frozen=True, slots=True)
class ModelCostRow:
    """One model's spending."""

    model: str
    calls: int
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class DayCostRow:
    """One UTC day's spending; ``day`` is ``YYYY-MM-DD``."""

    day: str
    calls: int
    cost_nanos: int


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Spending of the sessions in a scope, from the pre-aggregated counters.

    ``sessions`` is the most expensive first (ties by session id), at most the requested limit;
    ``models`` the most expensive first (ties by model id); ``days`` oldest first.
    """

    session_count: int
    calls: int
    usage: TokenUsage
    sessions: list[SessionCostRow] = field(default_factory=list)
    models: list[ModelCostRow] = field(default_factory=list)
    days: list[DayCostRow] = field(default_factory=list)


class AnalyticsStore(ABC):
    """Everything the analytics service stores and reads. Implementations: SQLite and MongoDB."""

    @abstractmethod
    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """Record a batch atomically; events already recorded (also earlier in the batch) are duplicates."""

    @abstractmethod
    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """The session, or None when unknown or (``tenant`` non-empty) owned by another tenant."""

    @abstractmethod
    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int
    ) -> tuple[FeedbackRecord, bool]:
        """Insert or replace the rating of ``(session_id, user_id)``, keeping its creation time.

        Returns the stored feedback and True when an earlier rating was replaced.
        """

    @abstractmethod
    async def calls(self, scope: Scope, model: str = "") -> list[CallRecord]:
        """Calls of the sessions in scope (only ``model``'s when given)."""

    @abstractmethod
    async def critiques(self, scope: Scope, model: str = "", round_: int = 0) -> list[CritiqueRecord]:
        """Critiques of the sessions in scope; ``model`` matches critic or author; ``round_`` > 0 one round."""

    @abstractmethod
    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """Spending of the sessions in scope (``scope.domain`` is ignored)."""

    @abstractmethod
    async def ratings(self, scope: Scope) -> list[RatingRecord]:
        """Ratings of the sessions in scope (``scope.domain`` is ignored)."""

    @abstractmethod
    async def close(self) -> None:
        """Wait for writes in progress, then release the connections."""


_MIGRATIONS = (
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status INTEGER NOT NULL,
        create_time_ns INTEGER NOT NULL,
        started INTEGER NOT NULL DEFAULT 0,
        primary_model TEXT NOT NULL DEFAULT '',
        primary_domain INTEGER NOT NULL DEFAULT 0,
        end_time_ns INTEGER,
        final_score REAL,
        best_model TEXT NOT NULL DEFAULT '',
        calls INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        cost_nanos INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_by_time ON sessions (create_time_ns);
    CREATE INDEX sessions_by_tenant_time ON sessions (tenant, create_time_ns);
    CREATE TABLE events (
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        kind TEXT NOT NULL,
        time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE calls (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        time_ns INTEGER NOT NULL,
        model TEXT NOT NULL,
        purpose INTEGER NOT NULL,
        shadow INTEGER NOT NULL,
        round INTEGER NOT NULL,
        success INTEGER NOT NULL,
        failure_kind INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        latency_ns INTEGER NOT NULL,
        ttft_ns INTEGER,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE critiques (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        sequence INTEGER NOT NULL,
        round INTEGER NOT NULL,
        critic_model TEXT NOT NULL,
        author_model TEXT NOT NULL,
        score REAL NOT NULL,
        shadow INTEGER NOT NULL,
        PRIMARY KEY (session_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE session_models (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        model TEXT NOT NULL,
        calls INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_nanos INTEGER NOT NULL,
        PRIMARY KEY (session_id, model)
    ) WITHOUT ROWID;
    CREATE TABLE feedback (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        user_id TEXT NOT NULL,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, user_id)
    ) WITHOUT ROWID
    """,
)

_USAGE_COLUMNS = "prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, total_tokens, cost_nanos"

# Every event creates its session if needed. Before session_started arrives the creation time is the
# earliest event time seen; session_started then sets it for good.
_UPSERT_SESSION = """
INSERT INTO sessions (session_id, tenant, status, create_time_ns, started) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    create_time_ns = CASE
        WHEN excluded.started = 1 THEN excluded.create_time_ns
        WHEN sessions.started = 1 THEN sessions.create_time_ns
        ELSE MIN(sessions.create_time_ns, excluded.create_time_ns)
    END,
    started = MAX(sessions.started, excluded.started)
"""

_INSERT_CALL = f"""
INSERT INTO calls (session_id, sequence, time_ns, model, purpose, shadow, round, success, failure_kind,
                   {_USAGE_COLUMNS}, latency_ns, ttft_ns)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_COUNT_SESSION_CALL = """
UPDATE sessions SET calls = calls + 1, failures = failures + ?,
    prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,
    reasoning_tokens = reasoning_tokens + ?, cached_tokens = cached_tokens + ?,
    total_tokens = total_tokens + ?, cost_nanos = cost_nanos + ?
WHERE session_id = ?
"""

_COUNT_SESSION_MODEL_CALL = f"""
INSERT INTO session_models (session_id, model, calls, failures, {_USAGE_COLUMNS})
VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, model) DO UPDATE SET
    calls = calls + 1, failures = failures + excluded.failures,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    total_tokens = total_tokens + excluded.total_tokens,
    cost_nanos = cost_nanos + excluded.cost_nanos
"""


def _usage_values(usage: TokenUsage) -> tuple[int, int, int, int, int, int]:
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.cached_tokens,
        usage.total_tokens,
        usage.cost_nanos,
    )


def _usage_from(row: Sequence[Any], start: int) -> TokenUsage:
    """Six usage columns (nullable sums) starting at ``row[start]``."""
    return TokenUsage(*(int(row[start + i] or 0) for i in range(6)))


def _scope_filter(scope: Scope, alias: str = "s", *, with_domain: bool = True) -> tuple[str, list[Any]]:
    """SQL condition and parameters selecting the sessions (table alias ``alias``) in ``scope``."""
    clauses = [f"{alias}.create_time_ns >= ?", f"{alias}.create_time_ns < ?"]
    params: list[Any] = [scope.start_ns, scope.end_ns]
    if scope.tenant:
        clauses.append(f"{alias}.tenant = ?")
        params.append(scope.tenant)
    if with_domain and scope.domain:
        clauses.append(f"{alias}.primary_domain = ?")
        params.append(scope.domain)
    return " AND ".join(clauses), params


class SqliteAnalyticsStore(AnalyticsStore):
    """:class:`AnalyticsStore` on one SQLite file (WAL; every write in one serialised transaction)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, path: Path) -> SqliteAnalyticsStore:
        """Open (creating and migrating if needed) the database at ``path``."""
        return cls(await SqliteDatabase.open(path, _MIGRATIONS))

    async def close(self) -> None:
        """Wait for the writes in progress, then close the connections."""
        if self._writes:
            await asyncio.wait(self._writes)
        await self._db.close()

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, shielded so a cancelled RPC cannot cut it in half.

        A batch whose caller went away still commits (or rolls back) as a whole; the outbox redelivers
        it and the duplicates are recognised.
        """

        async def run() -> T:
            async with self._db.transaction() as conn:
                return await work(conn)

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """Record a batch in one transaction; see :meth:`AnalyticsStore.ingest`."""
        if not events:
            return IngestResult(0, 0)

        async def work(conn: aiosqlite.Connection) -> IngestResult:
            accepted = 0
            for event in events:
                cursor = await conn.execute(
                    "INSERT OR IGNORE INTO events (session_id, sequence, kind, time_ns) VALUES (?, ?, ?, ?)",
                    (event.session_id, event.sequence, event.kind, event.time_ns),
                )
                if cursor.rowcount == 1:
                    accepted += 1
                    await _apply(conn, tenant, event)
            return IngestResult(accepted, len(events) - accepted)

        result = await self._transaction(work)
        log.debug("ingested %d events (%d duplicates)", result.accepted, result.duplicates)
        return result

    async def get_session(self, session_id: str, tenant: str) -> SessionInfo | None:
        """See :meth:`AnalyticsStore.get_session`."""
        sql = f"""SELECT session_id, tenant, status, create_time_ns, primary_model, primary_domain, calls,
                         {_USAGE_COLUMNS}
                  FROM sessions WHERE session_id = ?"""
        params: list[Any] = [session_id]
        if tenant:
            sql += " AND tenant = ?"
            params.append(tenant)
        rows = list(await self._db.reader.execute_fetchall(sql, params))
        if not rows:
            return None
        row = rows[0]
        return SessionInfo(
            session_id=row[0],
            tenant=row[1],
            status=int(row[2]),
            create_time_ns=int(row[3]),
            primary_model=row[4],
            primary_domain=int(row[5]),
            calls=int(row[6]),
            usage=_usage_from(row, 7),
        )

    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work(conn: aiosqlite.Connection) -> tuple[FeedbackRecord, bool]:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT create_time_ns FROM feedback WHERE session_id = ? AND user_id = ?",
                    (session_id, user_id),
                )
            )
            created = int(rows[0][0]) if rows else now_ns
            await conn.execute(
                """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (session_id, user_id) DO UPDATE SET
                       rating = excluded.rating, comment = excluded.comment,
                       update_time_ns = excluded.update_time_ns""",
                (session_id, user_id, rating, comment, created, now_ns),
            )
            return FeedbackRecord(session_id, user_id, rating, comment, created, now_ns), bool(rows)

        return await self._transaction(work)

    async def calls(self, scope: Scope, model: str = "") -> list[CallRecord]:
        """See :meth:`AnalyticsStore.calls`."""
        where, params = _scope_filter(scope)
        if model:
            where += " AND c.model = ?"
            params.append(model)
        sql = f"""SELECT c.session_id, s.primary_domain, c.model, c.purpose, c.shadow, c.round, c.success,
                         c.failure_kind, c.latency_ns, c.ttft_ns,
                         c.prompt_tokens, c.completion_tokens, c.reasoning_tokens, c.cached_tokens,
                         c.total_tokens, c.cost_nanos
                  FROM sessions s JOIN calls c ON c.session_id = s.session_id
                  WHERE {where}
                  ORDER BY c.session_id, c.sequence"""
        rows = await self._db.reader.execute_fetchall(sql, params)
        return [
            CallRecord(
                session_id=row[0],
                domain=int(row[1]),
                call=CallFact(
                    model=row[2],
                    purpose=int(row[3]),
                    shadow=bool(row[4]),
                    round=int(row[5]),
                    success=bool(row[6]),
                    failure_kind=int(row[7]),
                    latency_ns=int(row[8]),
                    ttft_ns=None if row[9] is None else int(row[9]),
                    usage=_usage_from(row, 10),
                ),
            )
            for row in rows
        ]

    async def critiques(self, scope: Scope, model: str = "", round_: int = 0) -> list[CritiqueRecord]:
        """See :meth:`AnalyticsStore.critiques`."""
        where, params = _scope_filter(scope)
        if model:
            where += " AND (k.critic_model = ? OR k.author_model = ?)"
            params += [model, model]
        if round_:
            where += " AND k.round = ?"
            params.append(round_)
        sql = f"""SELECT k.session_id, s.primary_domain, k.round, k.critic_model, k.author_model, k.score,
                         k.shadow
                  FROM sessions s JOIN critiques k ON k.session_id = s.session_id
                  WHERE {where}
                  ORDER BY k.session_id, k.sequence"""
        rows = await self._db.reader.execute_fetchall(sql, params)
        return [
            CritiqueRecord(
                session_id=row[0],
                domain=int(row[1]),
                critique=CritiqueFact(
                    round=int(row[2]),
                    critic_model=row[3],
                    author_model=row[4],
                    score=float(row[5]),
                    shadow=bool(row[6]),
                ),
            )
            for row in rows
        ]

    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """See :meth:`AnalyticsStore.cost_summary`."""
        where, params = _scope_filter(scope, with_domain=False)
        reader = self._db.reader
        usage_sums = ", ".join(f"SUM(s.{c.strip()})" for c in _USAGE_COLUMNS.split(","))
        total_rows = await reader.execute_fetchall(
            f"SELECT COUNT(*), SUM(s.calls), {usage_sums} FROM sessions s WHERE {where}", params
        )
        totals = next(iter(total_rows))
        sessions = await reader.execute_fetchall(
            f"""SELECT s.session_id, s.calls, s.cost_nanos, s.create_time_ns FROM sessions s WHERE {where}
                ORDER BY s.cost_nanos DESC, s.session_id LIMIT ?""",
            [*params, session_limit],
        )
        model_sums = ", ".join(f"SUM(m.{c.strip()})" for c in _USAGE_COLUMNS.split(","))
        models = await reader.execute_fetchall(
            f"""SELECT m.model, SUM(m.calls), {model_sums}
                FROM sessions s JOIN session_models m ON m.session_id = s.session_id
                WHERE {where} GROUP BY m.model ORDER BY SUM(m.cost_nanos) DESC, m.model""",
            params,
        )
        days = await reader.execute_fetchall(
            f"""SELECT date(s.create_time_ns / 1000000000, 'unixepoch') AS day, SUM(s.calls), SUM(s.cost_nanos)
                FROM sessions s WHERE {where} GROUP BY day ORDER BY day""",
            params,
        )
        return CostSummary(
            session_count=int(totals[0]),
            calls=int(totals[1] or 0),
            usage=_usage_from(totals, 2),
            sessions=[SessionCostRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in sessions],
            models=[ModelCostRow(r[0], int(r[1]), _usage_from(r, 2)) for r in models],
            days=[DayCostRow(r[0], int(r[1]), int(r[2])) for r in days],
        )

    async def ratings(self, scope: Scope) -> list[RatingRecord]:
        """See :meth:`AnalyticsStore.ratings`."""
        where, params = _scope_filter(scope, with_domain=False)
        rows = await self._db.reader.execute_fetchall(
            f"""SELECT f.session_id, f.user_id, f.rating, s.primary_model, s.primary_domain, s.create_time_ns
                FROM sessions s JOIN feedback f ON f.session_id = s.session_id
                WHERE {where} ORDER BY s.create_time_ns, f.session_id, f.user_id""",
            params,
        )
        return [RatingRecord(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5])) for r in rows]


async def _apply(conn: aiosqlite.Connection, tenant: str, event: EventFacts) -> None:
    """Apply one newly recorded event (inside the batch's transaction)."""
    await conn.execute(
        _UPSERT_SESSION,
        (event.session_id, tenant, STATUS_RUNNING, event.time_ns, int(event.started)),
    )
    if event.primary_model is not None:
        await conn.execute(
            "UPDATE sessions SET primary_model = ?, primary_domain = ? WHERE session_id = ?",
            (event.primary_model, event.primary_domain, event.session_id),
        )
    if event.call is not None:
        call = event.call
        usage = _usage_values(call.usage)
        failed = 0 if call.success else 1
        await conn.execute(
            _INSERT_CALL,
            (
                event.session_id,
                event.sequence,
                event.time_ns,
                call.model,
                call.purpose,
                int(call.shadow),
                call.round,
                int(call.success),
                call.failure_kind,
                *usage,
                call.latency_ns,
                call.ttft_ns,
            ),
        )
        await conn.execute(_COUNT_SESSION_CALL, (failed, *usage, event.session_id))
        await conn.execute(_COUNT_SESSION_MODEL_CALL, (event.session_id, call.model, failed, *usage))
    if event.critique is not None:
        k = event.critique
        await conn.execute(
            """INSERT INTO critiques (session_id, sequence, round, critic_model, author_model, score, shadow)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (event.session_id, event.sequence, k.round, k.critic_model, k.author_model, k.score, int(k.shadow)),
        )
    if event.end is not None:
        await conn.execute(
            """UPDATE sessions SET status = ?, final_score = ?, best_model = ?, end_time_ns = ?
               WHERE session_id = ?""",
            (event.end.status, event.end.final_score, event.end.best_model, event.time_ns, event.session_id),
        )
