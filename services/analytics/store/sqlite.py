"""The SQLite adapter of the analytics store: :class:`SqliteAnalyticsStore`.

Everything that is not SQL lives elsewhere, shared with the MongoDB adapter: the model and its rules in
:mod:`.model`, the time-bucketing scheme in :mod:`.buckets`, the counters and the reports made from them in
:mod:`.counters`, the write plans in :mod:`.planner`. This module loads the rows a plan needs (:class:`_Rows`
implements the planner's and the reports' reading protocols), applies plans in one transaction, and sums
counter rows with SQL. The schema is :data:`.sqlite_migrations.MIGRATIONS` (frozen literal SQL).

Tables: ``sessions``, the ``events`` ledger, ``calls``, ``critiques``, ``feedback``, ``pending_feedback`` (raw
facts), ``model_counters``, ``session_counters``, ``day_counters`` (one row per block, tenant and key; a
column per counter) and ``meta`` (the counters version). ``calls.lat_bucket``/``ttft_bucket`` and
``critiques.score_milli`` are derived columns, kept filled for whoever reads the tables with SQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from orchestratex.aio import uncancellable
from orchestratex.store.sqlite import SqliteDatabase
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
    histogram_bucket,
    score_milli,
    usage_values,
)
from services.analytics.store.sqlite_migrations import MIGRATIONS

log = logging.getLogger(__name__)

T = TypeVar("T")

_IN_CHUNK = 500
_USAGE_COLUMNS = ", ".join(USAGE_NAMES)
_SESSION_COLUMNS = (
    "session_id, tenant, status, create_time_ns, started, primary_model, primary_domain, end_time_ns, "
    f"final_score, best_model, calls, failures, {_USAGE_COLUMNS}, shadow_state"
)
_UPSERT_SESSION = f"""
INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({", ".join("?" for _ in range(19))})
ON CONFLICT (session_id) DO UPDATE SET
    status = excluded.status, create_time_ns = excluded.create_time_ns, started = excluded.started,
    primary_model = excluded.primary_model, primary_domain = excluded.primary_domain,
    end_time_ns = excluded.end_time_ns, final_score = excluded.final_score, best_model = excluded.best_model,
    calls = excluded.calls, failures = excluded.failures,
    {", ".join(f"{c} = excluded.{c}" for c in USAGE_NAMES)},
    shadow_state = excluded.shadow_state
"""
_INSERT_CALL = f"""
INSERT INTO calls (session_id, sequence, time_ns, model, purpose, shadow, round, success, failure_kind,
                   {_USAGE_COLUMNS}, latency_ns, ttft_ns, lat_bucket, ttft_bucket)
VALUES ({", ".join("?" for _ in range(19))})
"""
_INSERT_CRITIQUE = """
INSERT INTO critiques (session_id, sequence, round, critic_model, author_model, score, shadow, score_milli)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_CALL_COLUMNS = (
    f"session_id, model, purpose, shadow, round, success, failure_kind, {_USAGE_COLUMNS}, latency_ns, ttft_ns"
)
_CRITIQUE_COLUMNS = "session_id, round, critic_model, author_model, score, shadow"
_PENDING_COLUMNS = "session_id, user_id, tenant, rating, comment, create_time_ns, update_time_ns"


def _add_to(table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    names = [*keys, *columns]
    return f"""
INSERT INTO {table} ({", ".join(names)}) VALUES ({", ".join("?" for _ in names)})
ON CONFLICT ({", ".join(keys)}) DO UPDATE SET {", ".join(f"{c} = {c} + excluded.{c}" for c in columns)}
"""


_ADD_MODEL = _add_to("model_counters", counters.ModelKey._fields, counters.MODEL_COLUMNS)
_ADD_SESSION = _add_to("session_counters", counters.SessionKey._fields, counters.SESSION_COLUMNS)
_ADD_DAY = _add_to("day_counters", counters.DayKey._fields, counters.DAY_COLUMNS)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" for _ in items)


def _sums(columns: Sequence[str]) -> str:
    return ", ".join(f"SUM({c})" for c in columns)


def _session_row(state: SessionState) -> tuple[Any, ...]:
    """The ``sessions`` row of a session, in the order of ``_SESSION_COLUMNS``."""
    return (
        state.session_id,
        state.tenant,
        state.status,
        state.create_time_ns,
        int(state.started),
        state.primary_model,
        state.primary_domain,
        state.end_time_ns,
        state.final_score,
        state.best_model,
        state.calls,
        state.failures,
        *usage_values(state.usage),
        state.shadow_state,
    )


def _session_from(row: Sequence[Any]) -> SessionState:
    """The session of a ``sessions`` row read as ``_SESSION_COLUMNS``."""
    return SessionState(
        session_id=row[0],
        tenant=row[1],
        status=int(row[2]),
        create_time_ns=int(row[3]),
        started=bool(row[4]),
        primary_model=row[5],
        primary_domain=int(row[6]),
        end_time_ns=row[7],
        final_score=row[8],
        best_model=row[9],
        calls=int(row[10]),
        failures=int(row[11]),
        usage=TokenUsage(*(int(v) for v in row[12:18])),
        shadow_state=row[18],
    )


def _runs_where(scope: Scope, runs: Sequence[Run]) -> tuple[str, list[Any]]:
    """SQL condition on a counter table selecting the blocks of ``runs`` of the scope's counter tenant."""
    terms = " OR ".join("(level = ? AND unit >= ? AND unit < ?)" for _ in runs)
    params: list[Any] = [value for run in runs for value in (run.level, run.first, run.end)]
    params.append(counter_tenant(scope.tenant))
    return f"({terms}) AND tenant = ?", params


def _session_where(scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False) -> tuple[str, list[Any]]:
    """SQL condition on ``sessions`` created in ``[start_ns, end_ns)`` within ``scope``."""
    clauses = ["create_time_ns >= ?", "create_time_ns < ?"]
    params: list[Any] = [start_ns, end_ns]
    if scope.tenant:
        clauses.append("tenant = ?")
        params.append(scope.tenant)
    if with_domain and scope.domain:
        clauses.append("primary_domain = ?")
        params.append(scope.domain)
    return " AND ".join(clauses), params


class _Rows:
    """The rows plans and reports read, on one connection (the writer inside a transaction, or the reader).

    Implements :class:`~.planner.StoredState`, :class:`~.planner.FeedbackState` and
    :class:`~.counters.CounterReader`.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def _rows_in(self, sql: str, ids: Sequence[str]) -> list[Any]:
        """``sql`` with ``{ids}`` standing for the placeholders of a chunk of ``ids``, over every chunk."""
        out: list[Any] = []
        for chunk in _chunks(ids):
            out += await self._rows(sql.format(ids=_marks(chunk)), chunk)
        return out

    # ------------------------------------------------------------------------------ planner.StoredState

    async def seen_events(self, session_ids: Sequence[str]) -> set[tuple[str, int]]:
        rows = await self._rows_in("SELECT session_id, sequence FROM events WHERE session_id IN ({ids})", session_ids)
        return {(row[0], int(row[1])) for row in rows}

    async def sessions(self, session_ids: Sequence[str]) -> dict[str, SessionState]:
        rows = await self._rows_in(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id IN ({{ids}})", session_ids
        )
        return {row[0]: _session_from(row) for row in rows}

    async def session_facts(self, session_ids: Sequence[str], *, with_calls: bool = True) -> dict[str, SessionFacts]:
        calls: dict[str, list[CallFact]] = {}
        critiques: dict[str, list[CritiqueFact]] = {}
        ratings: dict[str, list[int]] = {}
        if with_calls:
            sql = f"SELECT {_CALL_COLUMNS} FROM calls WHERE session_id IN ({{ids}})"
            for row in await self._rows_in(sql, session_ids):
                calls.setdefault(row[0], []).append(_call_from(row))
            sql = f"SELECT {_CRITIQUE_COLUMNS} FROM critiques WHERE session_id IN ({{ids}})"
            for row in await self._rows_in(sql, session_ids):
                critiques.setdefault(row[0], []).append(_critique_from(row))
        for row in await self._rows_in(
            "SELECT session_id, rating FROM feedback WHERE session_id IN ({ids})", session_ids
        ):
            ratings.setdefault(row[0], []).append(int(row[1]))
        return {
            sid: SessionFacts(calls.get(sid, ()), critiques.get(sid, ()), ratings.get(sid, ())) for sid in session_ids
        }

    async def round1_critiques(self, session_ids: Sequence[str]) -> dict[str, list[CritiqueFact]]:
        out: dict[str, list[CritiqueFact]] = {}
        sql = f"SELECT {_CRITIQUE_COLUMNS} FROM critiques WHERE round = 1 AND session_id IN ({{ids}})"
        for row in await self._rows_in(sql, session_ids):
            out.setdefault(row[0], []).append(_critique_from(row))
        return out

    async def pending_ratings(self, session_ids: Sequence[str]) -> list[planner.PendingRating]:
        sql = f"SELECT {_PENDING_COLUMNS} FROM pending_feedback WHERE session_id IN ({{ids}})"
        return [_pending_from(row) for row in await self._rows_in(sql, session_ids)]

    # --------------------------------------------------------------------------- planner.FeedbackState

    async def session(self, session_id: str) -> SessionState | None:
        return (await self.sessions([session_id])).get(session_id)

    async def ratings(self, session_id: str) -> list[planner.StoredRating]:
        rows = await self._rows(
            "SELECT user_id, rating, create_time_ns FROM feedback WHERE session_id = ?", [session_id]
        )
        return [planner.StoredRating(row[0], int(row[1]), int(row[2])) for row in rows]

    async def pending_rating(self, session_id: str, user_id: str) -> planner.PendingRating | None:
        rows = await self._rows(
            f"SELECT {_PENDING_COLUMNS} FROM pending_feedback WHERE session_id = ? AND user_id = ?",
            [session_id, user_id],
        )
        return _pending_from(rows[0]) if rows else None

    # ------------------------------------------------------------------------------ counters.CounterReader

    async def model_totals(
        self, scope: Scope, runs: Sequence[Run], model: str = "", columns: Sequence[str] = counters.MODEL_COLUMNS
    ) -> list[tuple[str, int, counters.ModelCounters]]:
        where, params = _runs_where(scope, runs)
        if model:
            where += " AND model = ?"
            params.append(model)
        if scope.domain:
            where += " AND domain = ?"
            params.append(scope.domain)
        sql = f"SELECT model, domain, {_sums(columns)} FROM model_counters WHERE {where} GROUP BY model, domain"
        return [
            (row[0], int(row[1]), counters.ModelCounters.from_columns(dict(zip(columns, row[2:], strict=True))))
            for row in await self._rows(sql, params)
        ]

    async def session_totals(
        self, scope: Scope, runs: Sequence[Run]
    ) -> list[tuple[str, int, counters.SessionCounters]]:
        where, params = _runs_where(scope, runs)
        sql = f"""SELECT primary_model, domain, {_sums(counters.SESSION_COLUMNS)} FROM session_counters WHERE {where}
                  GROUP BY primary_model, domain"""
        return [
            (
                row[0],
                int(row[1]),
                counters.SessionCounters.from_columns(dict(zip(counters.SESSION_COLUMNS, row[2:], strict=True))),
            )
            for row in await self._rows(sql, params)
        ]

    async def day_totals(self, scope: Scope, runs: Sequence[Run]) -> list[tuple[int, counters.DayCounters]]:
        where, params = _runs_where(scope, runs)
        sql = f"SELECT unit, {_sums(counters.DAY_COLUMNS)} FROM day_counters WHERE {where} GROUP BY unit"
        return [
            (int(row[0]), counters.DayCounters.from_columns(dict(zip(counters.DAY_COLUMNS, row[1:], strict=True))))
            for row in await self._rows(sql, params)
        ]

    async def sessions_in(
        self, scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False, with_calls: bool = True
    ) -> list[tuple[SessionState, SessionFacts]]:
        where, params = _session_where(scope, start_ns, end_ns, with_domain=with_domain)
        states = [
            _session_from(row)
            for row in await self._rows(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {where}", params)
        ]
        facts = await self.session_facts([state.session_id for state in states], with_calls=with_calls)
        return [(state, facts[state.session_id]) for state in states]

    async def costliest(self, scope: Scope, limit: int) -> tuple[int, list[SessionCostRow]]:
        where, params = _session_where(scope, scope.start_ns, scope.end_ns)
        count = await self._rows(f"SELECT COUNT(*) FROM sessions WHERE {where}", params)
        top = await self._rows(
            f"""SELECT session_id, calls, cost_nanos, create_time_ns FROM sessions WHERE {where}
                ORDER BY cost_nanos DESC, session_id LIMIT ?""",
            [*params, limit],
        )
        return int(count[0][0]), [SessionCostRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in top]

    # ----------------------------------------------------------------------------------------- rebuild

    async def every_session(self) -> AsyncIterator[list[tuple[SessionState, SessionFacts]]]:
        """Every stored session with its raw facts, in chunks."""
        after = ""
        while True:
            rows = await self._rows(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id > ? ORDER BY session_id LIMIT ?",
                [after, _IN_CHUNK],
            )
            if not rows:
                return
            states = [_session_from(row) for row in rows]
            facts = await self.session_facts([state.session_id for state in states])
            yield [(state, facts[state.session_id]) for state in states]
            after = states[-1].session_id


def _pending_from(row: Sequence[Any]) -> planner.PendingRating:
    return planner.PendingRating(row[0], row[1], row[2], int(row[3]), row[4], int(row[5]), int(row[6]))


def _call_from(row: Sequence[Any]) -> CallFact:
    """A call read as ``_CALL_COLUMNS``."""
    return CallFact(
        model=row[1],
        purpose=int(row[2]),
        shadow=bool(row[3]),
        round=int(row[4]),
        success=bool(row[5]),
        failure_kind=int(row[6]),
        usage=TokenUsage(*(int(v) for v in row[7:13])),
        latency_ns=int(row[13]),
        ttft_ns=None if row[14] is None else int(row[14]),
    )


def _critique_from(row: Sequence[Any]) -> CritiqueFact:
    """A critique read as ``_CRITIQUE_COLUMNS``."""
    return CritiqueFact(
        round=int(row[1]), critic_model=row[2], author_model=row[3], score=float(row[4]), shadow=bool(row[5])
    )


def _call_row(event: EventFacts, call: CallFact) -> tuple[Any, ...]:
    return (
        event.session_id,
        event.sequence,
        event.time_ns,
        call.model,
        call.purpose,
        int(call.shadow),
        call.round,
        int(call.success),
        call.failure_kind,
        *usage_values(call.usage),
        call.latency_ns,
        call.ttft_ns,
        histogram_bucket(call.latency_ns),
        None if call.ttft_ns is None else histogram_bucket(call.ttft_ns),
    )


def _critique_row(event: EventFacts, critique: CritiqueFact) -> tuple[Any, ...]:
    return (
        event.session_id,
        event.sequence,
        critique.round,
        critique.critic_model,
        critique.author_model,
        critique.score,
        int(critique.shadow),
        score_milli(critique.score),
    )


async def _add_counters(conn: aiosqlite.Connection, rows: counters.CounterRows) -> None:
    """Add counter rows (deltas) to the counter tables."""
    for sql, values in (
        (_ADD_MODEL, [(*k, *v.values()) for k, v in rows.models.items()]),
        (_ADD_SESSION, [(*k, *v.values()) for k, v in rows.sessions.items()]),
        (_ADD_DAY, [(*k, *v.values()) for k, v in rows.days.items()]),
    ):
        if values:
            await conn.executemany(sql, values)


async def _apply_plan(conn: aiosqlite.Connection, plan: planner.WritePlan) -> None:
    """Write a batch's plan (inside its transaction)."""
    await conn.executemany(_UPSERT_SESSION, [_session_row(state) for state in plan.sessions])
    if plan.joined:
        await conn.executemany(
            """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [(p.session_id, p.user_id, p.rating, p.comment, p.create_time_ns, p.update_time_ns) for p in plan.joined],
        )
    settled = [*plan.joined, *plan.dropped]
    if settled:
        await conn.executemany(
            "DELETE FROM pending_feedback WHERE session_id = ? AND user_id = ?",
            [(p.session_id, p.user_id) for p in settled],
        )
    await conn.executemany(
        "INSERT INTO events (session_id, sequence, kind, time_ns) VALUES (?, ?, ?, ?)",
        [(e.session_id, e.sequence, e.kind, e.time_ns) for e in plan.events],
    )
    calls = [_call_row(e, e.call) for e in plan.events if e.call is not None]
    if calls:
        await conn.executemany(_INSERT_CALL, calls)
    critiques = [_critique_row(e, e.critique) for e in plan.events if e.critique is not None]
    if critiques:
        await conn.executemany(_INSERT_CRITIQUE, critiques)
    await _add_counters(conn, plan.counters)


async def _apply_feedback(conn: aiosqlite.Connection, plan: planner.FeedbackPlan) -> None:
    """Write a rating's plan (inside its transaction)."""
    if plan.pending is not None:
        p = plan.pending
        await conn.execute(
            f"""INSERT INTO pending_feedback ({_PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (session_id, user_id) DO UPDATE SET
                   tenant = excluded.tenant, rating = excluded.rating, comment = excluded.comment,
                   create_time_ns = excluded.create_time_ns, update_time_ns = excluded.update_time_ns""",
            (p.session_id, p.user_id, p.tenant, p.rating, p.comment, p.create_time_ns, p.update_time_ns),
        )
        return
    r = plan.record
    await conn.execute(
        """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (session_id, user_id) DO UPDATE SET
               rating = excluded.rating, comment = excluded.comment, update_time_ns = excluded.update_time_ns""",
        (r.session_id, r.user_id, r.rating, r.comment, r.create_time_ns, r.update_time_ns),
    )
    await _add_counters(conn, plan.counters)


class SqliteAnalyticsStore(counters.CounterReports):
    """:class:`AnalyticsStore` on one SQLite file (WAL; every write in one serialised transaction; reports
    read by :class:`~.counters.CounterReports` through the reader connection)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._writes: set[asyncio.Task[Any]] = set()
        self._counters = _Rows(db.reader)

    @classmethod
    async def open(cls, path: Path) -> SqliteAnalyticsStore:
        """Open (creating and migrating if needed) the database at ``path``; rebuild stale counters."""
        db = await SqliteDatabase.open(path, MIGRATIONS)
        try:
            await _rebuild_counters_if_stale(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Wait for the writes in progress, then close the connections."""
        if self._writes:
            await asyncio.wait(self._writes)
        await self._db.close()

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, to its end even if the caller is cancelled meanwhile.

        A batch whose caller went away still commits (or rolls back) as a whole; the outbox redelivers
        it and the duplicates are recognised. The caller's cancellation is raised once the write has
        ended, and the write's own error, if any, is then retrieved rather than left for asyncio to log.
        """

        async def run() -> T:
            async with self._db.transaction() as conn:
                return await work(conn)

        task = asyncio.ensure_future(run())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await uncancellable(task)

    async def ingest(self, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
        """Record a batch in one transaction; see :meth:`AnalyticsStore.ingest`."""
        if not events:
            return IngestResult(0, 0)

        async def work(conn: aiosqlite.Connection) -> IngestResult:
            plan = await planner.plan_ingest(tenant, events, _Rows(conn))
            if plan.events:
                await _apply_plan(conn, plan)
            return plan.result

        result = await self._transaction(work)
        log.debug("ingested %d events (%d duplicates)", result.accepted, result.duplicates)
        return result

    async def put_feedback(
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, *, tenant: str = ""
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work(conn: aiosqlite.Connection) -> tuple[FeedbackRecord, bool]:
            plan = await planner.plan_feedback(_Rows(conn), session_id, user_id, rating, comment, now_ns, tenant)
            await _apply_feedback(conn, plan)
            return plan.record, plan.replaced

        return await self._transaction(work)


async def _rebuild_counters_if_stale(db: SqliteDatabase) -> None:
    """Fill the derived columns and rebuild every counter from the raw facts when they are stale
    (after migration 2, and whenever ``counters.COUNTERS_VERSION`` changes), in one transaction."""
    rows = list(await db.writer.execute_fetchall("SELECT value FROM meta WHERE key = 'counters'"))
    if rows and int(rows[0][0]) == counters.COUNTERS_VERSION:
        return
    async with db.transaction() as conn:
        calls = await conn.execute_fetchall("SELECT session_id, sequence, latency_ns, ttft_ns FROM calls")
        await conn.executemany(
            "UPDATE calls SET lat_bucket = ?, ttft_bucket = ? WHERE session_id = ? AND sequence = ?",
            [
                (histogram_bucket(int(r[2])), None if r[3] is None else histogram_bucket(int(r[3])), r[0], r[1])
                for r in calls
            ],
        )
        critiques = await conn.execute_fetchall("SELECT session_id, sequence, score FROM critiques")
        await conn.executemany(
            "UPDATE critiques SET score_milli = ? WHERE session_id = ? AND sequence = ?",
            [(score_milli(float(r[2])), r[0], r[1]) for r in critiques],
        )
        plan = await planner.plan_rebuild(_Rows(conn).every_session())
        await conn.executemany(
            "UPDATE sessions SET shadow_state = ? WHERE session_id = ?",
            [(state.shadow_state, state.session_id) for state in plan.sessions],
        )
        for table in ("model_counters", "session_counters", "day_counters"):
            await conn.execute(f"DELETE FROM {table}")
        await _add_counters(conn, plan.counters)
        await conn.execute(
            """INSERT INTO meta (key, value) VALUES ('counters', ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (counters.COUNTERS_VERSION,),
        )
    log.info("analytics counters rebuilt from the raw facts (version %d)", counters.COUNTERS_VERSION)
