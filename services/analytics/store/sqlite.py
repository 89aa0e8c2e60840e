"""The SQLite implementation of the analytics store: :class:`SqliteAnalyticsStore`.

The model, the rules every implementation follows and the helpers shared with the MongoDB store live in
:mod:`services.analytics.store.model`; this module holds only what is particular to SQLite: the schema
and its migrations, the SQL, and the counter resolutions.

Counters are kept at four resolutions — hours, UTC days, 8-day and 64-day blocks aligned to the epoch,
see :data:`LEVELS` — plus narrow per-day totals for the per-day breakdowns, and also summed over every
tenant (:data:`ALL_TENANTS`). A query covers the whole hours inside its range with the fewest aligned
counter blocks and answers the partial hours at either end from the raw facts of the sessions created in
them, so its results are identical to aggregating every raw row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from orchestratex.aio import uncancellable
from orchestratex.store.sqlite import SqliteDatabase
from services.analytics.store.model import (
    I_ATTEMPTS,
    I_FAIL,
    I_GIVEN_MILLI,
    I_GIVEN_N,
    I_LAT,
    I_RECV_MILLI,
    I_RECV_N,
    I_SUCCESSES,
    I_TTFT,
    I_USAGE,
    MODEL_COLUMNS,
    MODEL_WIDTH,
    NANOS_PER_DAY,
    NANOS_PER_HOUR,
    SESSION_COLUMNS,
    SESSION_WIDTH,
    USAGE_NAMES,
    AccuracySummary,
    AnalyticsStore,
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
    failure_slot,
    feedback_may_join,
    histogram_bucket,
    merge_into,
    model_vector,
    perf_row,
    score_milli,
    session_vector,
    settle_shadows,
    shadow_int,
    shadow_outcome,
    usage_values,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_USAGE_COLUMNS = ", ".join(USAGE_NAMES)

# Per-day totals (narrow, for the per-day breakdowns): calls, cost and ratings.
_DAY_COLUMNS: tuple[str, ...] = ("calls", "cost_nanos", "r_1", "r_2", "r_3", "r_4", "r_5")
_DAY_WIDTH = len(_DAY_COLUMNS)

# Counters are rebuilt from the raw facts when the stored version differs from this one.
COUNTERS_VERSION = 1

# Counter resolutions, in hours: a session's figures are added to the aligned block of each size that
# holds its creation hour (blocks are aligned to the Unix epoch, so 24-hour blocks are UTC days). A time
# range is answered from at most two runs of blocks per size, plus the raw facts of the partial hours at
# its edges: about 80 blocks for a 366-day range, whatever the volume.
LEVELS: tuple[int, ...] = (1, 24, 8 * 24, 64 * 24)
DAY_LEVELS: tuple[int, ...] = (1, 24)
# Counters are also kept summed over every tenant under this name, which no tenant can have (gRPC
# metadata values cannot hold a NUL character), so that queries for all tenants read one row per key.
ALL_TENANTS = "\x00all"

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
    # Version 2: pre-aggregated daily counters. The new columns are filled and the counters built from
    # the raw facts by _rebuild_counters when the database is opened (meta.counters != COUNTERS_VERSION).
    f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    ALTER TABLE sessions ADD COLUMN shadow_state INTEGER;
    ALTER TABLE calls ADD COLUMN lat_bucket INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE calls ADD COLUMN ttft_bucket INTEGER;
    ALTER TABLE critiques ADD COLUMN score_milli INTEGER NOT NULL DEFAULT 0;
    DROP TABLE session_models;
    CREATE TABLE model_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        model TEXT NOT NULL,
        domain INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in MODEL_COLUMNS)},
        PRIMARY KEY (level, unit, tenant, model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE session_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        primary_model TEXT NOT NULL,
        domain INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in SESSION_COLUMNS)},
        PRIMARY KEY (level, unit, tenant, primary_model, domain)
    ) WITHOUT ROWID;
    CREATE TABLE day_counters (
        level INTEGER NOT NULL,
        unit INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _DAY_COLUMNS)},
        PRIMARY KEY (level, unit, tenant)
    ) WITHOUT ROWID;
    DROP INDEX sessions_by_time;
    CREATE INDEX sessions_by_time_cost ON sessions (create_time_ns, cost_nanos, session_id, calls);
    CREATE INDEX sessions_by_tenant_cost ON sessions (tenant, create_time_ns, cost_nanos, session_id, calls)
    """,
    # Version 3: ratings given before their session is known, with the caller's tenant. Not in
    # ``feedback``, whose rows must name a known session; joined (moved there) by the batch that
    # creates the session.
    """
    CREATE TABLE pending_feedback (
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        rating INTEGER NOT NULL,
        comment TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (session_id, user_id)
    ) WITHOUT ROWID
    """,
)


def _upsert(table: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    names = [*keys, *columns]
    return f"""
INSERT INTO {table} ({", ".join(names)}) VALUES ({", ".join("?" for _ in names)})
ON CONFLICT ({", ".join(keys)}) DO UPDATE SET {", ".join(f"{c} = {c} + excluded.{c}" for c in columns)}
"""


_UPSERT_MODEL = _upsert("model_counters", ("level", "unit", "tenant", "model", "domain"), MODEL_COLUMNS)
_UPSERT_SESSION_COUNTERS = _upsert(
    "session_counters", ("level", "unit", "tenant", "primary_model", "domain"), SESSION_COLUMNS
)
_UPSERT_DAY = _upsert("day_counters", ("level", "unit", "tenant"), _DAY_COLUMNS)

_SESSION_STATE_COLUMNS = (
    "session_id, tenant, status, create_time_ns, started, primary_model, primary_domain, end_time_ns, "
    f"final_score, best_model, calls, failures, {_USAGE_COLUMNS}, shadow_state"
)

_UPSERT_SESSION = f"""
INSERT INTO sessions ({_SESSION_STATE_COLUMNS}) VALUES ({", ".join("?" for _ in range(19))})
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

_IN_CHUNK = 500


def _usage_from(row: Sequence[Any], start: int) -> TokenUsage:
    """Six usage columns (nullable sums) starting at ``row[start]``."""
    return TokenUsage(*(int(row[start + i] or 0) for i in range(6)))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" for _ in items)


async def _flush(conn: aiosqlite.Connection, models: Vectors, sessions: Vectors) -> None:
    """Add the per-hour delta vectors to the counters of every resolution, and to the per-day totals."""
    model_rows: dict[tuple[int, int, str, str, int], list[int]] = {}
    session_rows: dict[tuple[int, int, str, str, int], list[int]] = {}
    day_rows: dict[tuple[int, int, str], list[int]] = {}

    def add(into: dict[Any, list[int]], key: Any, vector: Sequence[int], width: int) -> None:
        row = into.get(key)
        if row is None:
            row = into[key] = [0] * width
        for i, value in enumerate(vector):
            row[i] += value

    for (tenant, hour, model, domain), vec in models.items():
        if not any(vec):
            continue
        for owner in (tenant, ALL_TENANTS):
            for size in LEVELS:
                add(model_rows, (size, hour // size * size, owner, model, domain), vec, MODEL_WIDTH)
            for size in DAY_LEVELS:
                day_vec = (vec[I_ATTEMPTS], vec[I_USAGE + 5])
                add(day_rows, (size, hour // size * size, owner), day_vec, _DAY_WIDTH)
    for (tenant, hour, primary_model, domain), vec in sessions.items():
        if not any(vec):
            continue
        for owner in (tenant, ALL_TENANTS):
            for size in LEVELS:
                add(session_rows, (size, hour // size * size, owner, primary_model, domain), vec, SESSION_WIDTH)
            for size in DAY_LEVELS:
                add(day_rows, (size, hour // size * size, owner), (0, 0, *vec[4:9]), _DAY_WIDTH)
    for sql, rows in ((_UPSERT_MODEL, model_rows), (_UPSERT_SESSION_COUNTERS, session_rows), (_UPSERT_DAY, day_rows)):
        values = [(*key, *vec) for key, vec in rows.items() if any(vec)]
        if values:
            await conn.executemany(sql, values)


def _key_sql(model_expr: str) -> str:
    return f"s.tenant, s.create_time_ns / {NANOS_PER_HOUR}, {model_expr}, s.primary_domain"


async def _raw_model_vectors(
    conn: aiosqlite.Connection, where: str, params: Sequence[Any], model: str = "", *, full: bool = True
) -> Vectors:
    """Model counter vectors computed from the raw facts of the sessions (alias ``s``) matching ``where``.

    ``full=False`` computes only attempts and usage (what the cost report needs).
    """
    out: Vectors = {}

    async def rows(sql: str, column: str) -> Iterable[Any]:
        extra = f" AND {column} = ?" if model else ""
        return await conn.execute_fetchall(sql.format(extra=extra), [*params, model] if model else list(params))

    calls = f"FROM sessions s JOIN calls c ON c.session_id = s.session_id WHERE {where}{{extra}}"
    usage_sums = ", ".join(f"SUM(c.{c})" for c in USAGE_NAMES)
    for row in await rows(
        f"SELECT {_key_sql('c.model')}, COUNT(*), SUM(c.success), {usage_sums} {calls} GROUP BY 1, 2, 3, 4", "c.model"
    ):
        vector = model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
        vector[I_ATTEMPTS] += int(row[4])
        vector[I_SUCCESSES] += int(row[5])
        for i in range(6):
            vector[I_USAGE + i] += int(row[6 + i])
    if not full:
        return out
    # (extra column, condition, where in the vector the count goes)
    breakdowns: tuple[tuple[str, str, Callable[[int], int]], ...] = (
        ("c.failure_kind", "c.success = 0", lambda kind: I_FAIL + failure_slot(kind)),
        ("c.lat_bucket", "c.success = 1", lambda bucket: I_LAT + bucket),
        ("c.ttft_bucket", "c.success = 1 AND c.ttft_bucket IS NOT NULL", lambda bucket: I_TTFT + bucket),
    )
    for column, condition, slot in breakdowns:
        sql = f"SELECT {_key_sql('c.model')}, {column}, COUNT(*) {calls} AND {condition} GROUP BY 1, 2, 3, 4, 5"
        for row in await rows(sql, "c.model"):
            model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))[slot(int(row[4]))] += int(row[5])
    critiques = f"FROM sessions s JOIN critiques k ON k.session_id = s.session_id WHERE {where}{{extra}}"
    for column, n_index in (("k.author_model", I_RECV_N), ("k.critic_model", I_GIVEN_N)):
        sql = f"SELECT {_key_sql(column)}, COUNT(*), SUM(k.score_milli) {critiques} GROUP BY 1, 2, 3, 4"
        for row in await rows(sql, column):
            vector = model_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
            vector[n_index] += int(row[4])
            vector[n_index + 1] += int(row[5])
    return out


async def _raw_session_vectors(conn: aiosqlite.Connection, where: str, params: Sequence[Any]) -> Vectors:
    """Session counter vectors computed from the sessions (alias ``s``) matching ``where`` and their ratings."""
    out: Vectors = {}
    key = f"s.tenant, s.create_time_ns / {NANOS_PER_HOUR}, s.primary_model, s.primary_domain"
    shadow = await conn.execute_fetchall(
        f"""SELECT {key}, COUNT(*), SUM(s.shadow_state) FROM sessions s
            WHERE {where} AND s.shadow_state IS NOT NULL GROUP BY 1, 2, 3, 4""",
        params,
    )
    for row in shadow:
        vector = session_vector(out, (row[0], int(row[1]), row[2], int(row[3])))
        vector[0] += int(row[4])
        vector[1] += int(row[5])
    rated = await conn.execute_fetchall(
        f"""SELECT {key}, f.session_id, f.rating FROM sessions s JOIN feedback f ON f.session_id = s.session_id
            WHERE {where} ORDER BY f.session_id""",
        params,
    )
    per_session: dict[str, tuple[Key, list[int]]] = {}
    for row in rated:
        entry = per_session.setdefault(row[4], ((row[0], int(row[1]), row[2], int(row[3])), []))
        entry[1].append(int(row[5]))
    for session_key, ratings in per_session.values():
        add_ratings(session_vector(out, session_key), ratings, 1)
    return out


def _state_row(state: SessionState) -> tuple[Any, ...]:
    """The ``sessions`` row of a session, in the order of ``_SESSION_STATE_COLUMNS``."""
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
        *state.usage,
        state.shadow_state,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to answer a time range: runs of counter blocks ``(size, first_unit, end_unit)`` and raw edges."""

    runs: list[tuple[int, int, int]]
    edges: list[tuple[int, int]]


def _plan(start_ns: int, end_ns: int, sizes: Sequence[int] = LEVELS) -> _Plan:
    """Cover ``[start_ns, end_ns)`` with the fewest aligned blocks of ``sizes`` (hours) and raw partial hours."""
    if start_ns >= end_ns:
        return _Plan([], [])
    first = -(-start_ns // NANOS_PER_HOUR)
    end = end_ns // NANOS_PER_HOUR
    if first >= end:
        return _Plan([], [(start_ns, end_ns)])
    edges = [(start_ns, first * NANOS_PER_HOUR), (end * NANOS_PER_HOUR, end_ns)]
    runs: list[tuple[int, int, int]] = []
    hour = first
    while hour < end:
        size = next(z for z in sorted(sizes, reverse=True) if hour % z == 0 and hour + z <= end)
        if runs and runs[-1][0] == size and runs[-1][2] == hour:
            runs[-1] = (size, runs[-1][1], hour + size)
        else:
            runs.append((size, hour, hour + size))
        hour += size
    return _Plan(runs, [(a, b) for a, b in edges if a < b])


def _runs_where(scope: Scope, runs: Sequence[tuple[int, int, int]]) -> tuple[str, list[Any]]:
    """SQL condition on a counter table selecting the blocks of ``runs`` of the scope's tenant."""
    terms = " OR ".join("(level = ? AND unit >= ? AND unit < ?)" for _ in runs)
    params: list[Any] = [value for run in runs for value in run]
    # Every-tenant queries read the ALL_TENANTS rows: a third of the rows with three tenants.
    params.append(scope.tenant or ALL_TENANTS)
    return f"({terms}) AND tenant = ?", params


def _session_where(scope: Scope, start_ns: int, end_ns: int, *, with_domain: bool = False) -> tuple[str, list[Any]]:
    """SQL condition on sessions (alias ``s``) created in ``[start_ns, end_ns)`` within ``scope``."""
    clauses = ["s.create_time_ns >= ?", "s.create_time_ns < ?"]
    params: list[Any] = [start_ns, end_ns]
    if scope.tenant:
        clauses.append("s.tenant = ?")
        params.append(scope.tenant)
    if with_domain and scope.domain:
        clauses.append("s.primary_domain = ?")
        params.append(scope.domain)
    return " AND ".join(clauses), params


_SUM_MODEL_COLUMNS = ", ".join(f"SUM({c})" for c in MODEL_COLUMNS)
_SUM_SESSION_COLUMNS = ", ".join(f"SUM({c})" for c in SESSION_COLUMNS)
_SUM_DAY_COLUMNS = ", ".join(f"SUM({c})" for c in _DAY_COLUMNS)


class SqliteAnalyticsStore(AnalyticsStore):
    """:class:`AnalyticsStore` on one SQLite file (WAL; every write in one serialised transaction)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, path: Path) -> SqliteAnalyticsStore:
        """Open (creating and migrating if needed) the database at ``path``; rebuild stale counters."""
        db = await SqliteDatabase.open(path, _MIGRATIONS)
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
            return await _ingest(conn, tenant, events)

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
        self, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, *, tenant: str = ""
    ) -> tuple[FeedbackRecord, bool]:
        """See :meth:`AnalyticsStore.put_feedback`."""

        async def work(conn: aiosqlite.Connection) -> tuple[FeedbackRecord, bool]:
            sessions = list(
                await conn.execute_fetchall(
                    "SELECT tenant, create_time_ns, primary_model, primary_domain FROM sessions WHERE session_id = ?",
                    (session_id,),
                )
            )
            if not sessions:
                return await _put_pending(conn, session_id, user_id, rating, comment, now_ns, tenant)
            owner, create_ns, primary_model, domain = sessions[0]
            if tenant and owner != tenant:
                raise LookupError(f"no session {session_id!r}")
            rows = list(
                await conn.execute_fetchall(
                    "SELECT user_id, rating, create_time_ns FROM feedback WHERE session_id = ?", (session_id,)
                )
            )
            before = {row[0]: int(row[1]) for row in rows}
            created = next((int(row[2]) for row in rows if row[0] == user_id), now_ns)
            await conn.execute(
                """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (session_id, user_id) DO UPDATE SET
                       rating = excluded.rating, comment = excluded.comment,
                       update_time_ns = excluded.update_time_ns""",
                (session_id, user_id, rating, comment, created, now_ns),
            )
            after = {**before, user_id: rating}
            deltas: Vectors = {}
            vector = session_vector(deltas, (owner, int(create_ns) // NANOS_PER_HOUR, primary_model, int(domain)))
            add_ratings(vector, list(before.values()), -1)
            add_ratings(vector, list(after.values()), 1)
            await _flush(conn, {}, deltas)
            return FeedbackRecord(session_id, user_id, rating, comment, created, now_ns), user_id in before

        return await self._transaction(work)

    async def performance(self, scope: Scope, model: str = "") -> list[PerfRow]:
        """See :meth:`AnalyticsStore.performance`."""
        plan = _plan(scope.start_ns, scope.end_ns)
        totals: dict[tuple[str, int], list[int]] = {}

        def add(key: tuple[str, int], vector: Sequence[int]) -> None:
            into = totals.get(key)
            if into is None:
                totals[key] = list(vector)
            else:
                for i, value in enumerate(vector):
                    into[i] += value

        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            if model:
                where += " AND model = ?"
                params.append(model)
            if scope.domain:
                where += " AND domain = ?"
                params.append(scope.domain)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT model, domain, {_SUM_MODEL_COLUMNS} FROM model_counters WHERE {where} GROUP BY model, domain",
                params,
            )
            for row in rows:
                add((row[0], int(row[1])), [int(v) for v in row[2:]])
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns, with_domain=True)
            raw = await _raw_model_vectors(self._db.reader, where, params, model)
            for (_, _, name, domain), vector in raw.items():
                add((name, domain), vector)
        return [perf_row(name, domain, vector) for (name, domain), vector in sorted(totals.items()) if any(vector)]

    async def cost_summary(self, scope: Scope, session_limit: int) -> CostSummary:
        """See :meth:`AnalyticsStore.cost_summary`."""
        reader = self._db.reader
        where, params = _session_where(scope, scope.start_ns, scope.end_ns)
        count_rows = await reader.execute_fetchall(f"SELECT COUNT(*) FROM sessions s WHERE {where}", params)
        session_count = int(next(iter(count_rows))[0])
        sessions = await reader.execute_fetchall(
            f"""SELECT s.session_id, s.calls, s.cost_nanos, s.create_time_ns FROM sessions s WHERE {where}
                ORDER BY s.cost_nanos DESC, s.session_id LIMIT ?""",
            [*params, session_limit],
        )
        per_model: dict[str, list[int]] = {}
        plan = _plan(scope.start_ns, scope.end_ns)
        if plan.runs:
            runs_where, runs_params = _runs_where(scope, plan.runs)
            usage_sums = ", ".join(f"SUM({c})" for c in USAGE_NAMES)
            rows = await reader.execute_fetchall(
                f"SELECT model, SUM(attempts), {usage_sums} FROM model_counters WHERE {runs_where} GROUP BY model",
                runs_params,
            )
            for row in rows:
                cell = per_model.setdefault(row[0], [0] * 7)
                for i in range(7):
                    cell[i] += int(row[1 + i])
        for start_ns, end_ns in plan.edges:
            edge_where, edge_params = _session_where(scope, start_ns, end_ns)
            raw = await _raw_model_vectors(reader, edge_where, edge_params, full=False)
            for (_, _, model, _), vector in raw.items():
                cell = per_model.setdefault(model, [0] * 7)
                cell[0] += vector[I_ATTEMPTS]
                for i in range(6):
                    cell[1 + i] += vector[I_USAGE + i]
        per_day = await self._per_day(scope)
        total = [sum(cell[i] for cell in per_model.values()) for i in range(7)]
        models = sorted(per_model.items(), key=lambda item: (-item[1][6], item[0]))
        return CostSummary(
            session_count=session_count,
            calls=total[0],
            usage=TokenUsage(*total[1:]),
            sessions=[SessionCostRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in sessions],
            models=[ModelCostRow(name, cell[0], TokenUsage(*cell[1:])) for name, cell in models if cell[0] or cell[6]],
            days=[DayCostRow(day_name(day), v[0], v[1]) for day, v in sorted(per_day.items()) if v[0]],
        )

    async def _per_day(self, scope: Scope) -> dict[int, list[int]]:
        """Per UTC day of creation: the ``_DAY_COLUMNS`` totals of the sessions in scope."""
        out: dict[int, list[int]] = {}

        def add(day: int, values: Sequence[int]) -> None:
            cell = out.setdefault(day, [0] * _DAY_WIDTH)
            for i, value in enumerate(values):
                cell[i] += value

        plan = _plan(scope.start_ns, scope.end_ns, DAY_LEVELS)
        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT unit, {_SUM_DAY_COLUMNS} FROM day_counters WHERE {where} GROUP BY unit", params
            )
            for row in rows:
                add(int(row[0]) // 24, [int(v) for v in row[1:]])
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns)
            rows = await self._db.reader.execute_fetchall(
                f"""SELECT s.create_time_ns / {NANOS_PER_DAY}, SUM(s.calls), SUM(s.cost_nanos) FROM sessions s
                    WHERE {where} GROUP BY 1""",
                params,
            )
            for row in rows:
                add(int(row[0]), (int(row[1]), int(row[2])))
            rows = await self._db.reader.execute_fetchall(
                f"""SELECT s.create_time_ns / {NANOS_PER_DAY}, f.rating, COUNT(*)
                    FROM sessions s JOIN feedback f ON f.session_id = s.session_id WHERE {where} GROUP BY 1, 2""",
                params,
            )
            for row in rows:
                ratings = [0] * 5
                ratings[int(row[1]) - 1] = int(row[2])
                add(int(row[0]), (0, 0, *ratings))
        return out

    async def _session_counters(self, scope: Scope, group: str) -> list[tuple[Key, list[int]]]:
        """Session counter vectors of the scope, grouped by ``group`` (a primary-model and a domain
        expression) from the counters, and per raw key at the edges."""
        out: list[tuple[Key, list[int]]] = []
        plan = _plan(scope.start_ns, scope.end_ns)
        if plan.runs:
            where, params = _runs_where(scope, plan.runs)
            rows = await self._db.reader.execute_fetchall(
                f"SELECT {group}, {_SUM_SESSION_COLUMNS} FROM session_counters WHERE {where} GROUP BY 1, 2",
                params,
            )
            for row in rows:
                out.append((("", 0, row[0], int(row[1])), [int(v) for v in row[2:]]))
        for start_ns, end_ns in plan.edges:
            where, params = _session_where(scope, start_ns, end_ns)
            raw = await _raw_session_vectors(self._db.reader, where, params)
            out.extend(raw.items())
        return out

    async def selection_accuracy(self, scope: Scope) -> AccuracySummary:
        """See :meth:`AnalyticsStore.selection_accuracy`."""
        vectors = await self._session_counters(scope, "'', domain")
        shadow = [0, 0]
        feedback = [0, 0]
        by_domain: dict[int, list[int]] = {}
        for (_, _, _, domain), v in vectors:
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
        vectors = await self._session_counters(scope, "primary_model, domain")
        overall = RatingCounts()
        by_model: dict[str, RatingCounts] = {}
        by_domain: dict[int, RatingCounts] = {}
        for (_, _, primary_model, domain), v in vectors:
            counts = RatingCounts((v[4], v[5], v[6], v[7], v[8]))
            if not counts.total:
                continue
            overall += counts
            if primary_model:
                by_model[primary_model] = by_model.get(primary_model, RatingCounts()) + counts
            if domain:
                by_domain[domain] = by_domain.get(domain, RatingCounts()) + counts
        by_day = {
            day_name(day): RatingCounts((v[2], v[3], v[4], v[5], v[6]))
            for day, v in sorted((await self._per_day(scope)).items())
            if any(v[2:])
        }
        return SatisfactionData(
            overall=overall,
            by_model=dict(sorted(by_model.items())),
            by_domain=dict(sorted(by_domain.items())),
            by_day=by_day,
        )


async def _put_pending(
    conn: aiosqlite.Connection, session_id: str, user_id: str, rating: int, comment: str, now_ns: int, tenant: str
) -> tuple[FeedbackRecord, bool]:
    """Keep a rating of a session not known yet (see :meth:`AnalyticsStore.put_feedback`).

    One per ``(session_id, user_id)``, the latest wins; it keeps its creation time only when the rating
    it replaces came from the same tenant (another tenant's is none of this caller's business).
    """
    rows = list(
        await conn.execute_fetchall(
            "SELECT tenant, create_time_ns FROM pending_feedback WHERE session_id = ? AND user_id = ?",
            (session_id, user_id),
        )
    )
    replaced = bool(rows) and rows[0][0] == tenant
    created = int(rows[0][1]) if replaced else now_ns
    await conn.execute(
        """INSERT INTO pending_feedback (session_id, user_id, tenant, rating, comment, create_time_ns, update_time_ns)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (session_id, user_id) DO UPDATE SET
               tenant = excluded.tenant, rating = excluded.rating, comment = excluded.comment,
               create_time_ns = excluded.create_time_ns, update_time_ns = excluded.update_time_ns""",
        (session_id, user_id, tenant, rating, comment, created, now_ns),
    )
    return FeedbackRecord(session_id, user_id, rating, comment, created, now_ns, pending=True), replaced


async def _join_pending(conn: aiosqlite.Connection, states: dict[str, SessionState], created: Sequence[str]) -> Vectors:
    """Move the pending ratings of the sessions this batch ``created`` to ``feedback`` (or drop those of
    another tenant); returns their session counter deltas."""
    deltas: Vectors = {}
    ratings: dict[str, list[int]] = {}
    joined: list[tuple[Any, ...]] = []
    for chunk in _chunks(created):
        rows = await conn.execute_fetchall(
            f"""SELECT session_id, user_id, tenant, rating, comment, create_time_ns, update_time_ns
                FROM pending_feedback WHERE session_id IN ({_marks(chunk)})""",
            chunk,
        )
        for sid, user, tenant, rating, comment, create_ns, update_ns in rows:
            owner = states[sid].tenant
            if feedback_may_join(owner, tenant):
                joined.append((sid, user, int(rating), comment, int(create_ns), int(update_ns)))
                ratings.setdefault(sid, []).append(int(rating))
            else:
                log.warning(
                    "dropped a rating of session %s by tenant %r given before the session arrived: it belongs to %r",
                    sid,
                    tenant,
                    owner,
                )
        if rows:
            await conn.execute(f"DELETE FROM pending_feedback WHERE session_id IN ({_marks(chunk)})", chunk)
    if joined:
        await conn.executemany(
            """INSERT INTO feedback (session_id, user_id, rating, comment, create_time_ns, update_time_ns)
               VALUES (?, ?, ?, ?, ?, ?)""",
            joined,
        )
    for sid, values in ratings.items():
        add_ratings(session_vector(deltas, states[sid].hour_key), values, 1)
    return deltas


async def _ingest(conn: aiosqlite.Connection, tenant: str, events: Sequence[EventFacts]) -> IngestResult:
    """Record the new events of a batch and update the counters (inside the batch's transaction)."""
    unique: dict[tuple[str, int], EventFacts] = {}
    for event in events:
        unique.setdefault((event.session_id, event.sequence), event)
    session_ids = sorted({sid for sid, _ in unique})
    seen: set[tuple[str, int]] = set()
    states: dict[str, SessionState] = {}
    for chunk in _chunks(session_ids):
        rows = await conn.execute_fetchall(
            f"SELECT session_id, sequence FROM events WHERE session_id IN ({_marks(chunk)})", chunk
        )
        seen.update((row[0], int(row[1])) for row in rows)
        rows = await conn.execute_fetchall(
            f"SELECT {_SESSION_STATE_COLUMNS} FROM sessions WHERE session_id IN ({_marks(chunk)})", chunk
        )
        for row in rows:
            states[row[0]] = SessionState(
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
                usage=[int(v) for v in row[12:18]],
                shadow_state=row[18],
            )
    new = sorted((e for k, e in unique.items() if k not in seen), key=lambda e: (e.session_id, e.sequence))
    if not new:
        return IngestResult(0, len(events))

    before = {sid: (state.hour_key, state.shadow_state) for sid, state in states.items()}
    for event in new:
        state = states.get(event.session_id)
        if state is None:
            state = states[event.session_id] = SessionState(event.session_id, tenant, event.time_ns)
        state.advance(event)
    touched = sorted({e.session_id for e in new})
    moved = [sid for sid in touched if sid in before and states[sid].hour_key != before[sid][0]]

    model_deltas: Vectors = {}
    session_deltas: Vectors = {}
    if moved:
        # The session's day, domain or primary model changed: take its figures out of the old keys now
        # (the session rows still hold the old keys) and put them all back under the new keys below.
        for chunk in _chunks(moved):
            where = f"s.session_id IN ({_marks(chunk)})"
            merge_into(model_deltas, await _raw_model_vectors(conn, where, chunk), -1, MODEL_WIDTH)
            merge_into(session_deltas, await _raw_session_vectors(conn, where, chunk), -1, SESSION_WIDTH)

    # Shadow outcomes of sessions with new round-1 critiques: the stored ones plus the new ones.
    judged = sorted({e.session_id for e in new if e.critique is not None and e.critique.round == 1})
    round1: dict[str, list[tuple[str, str, bool, int]]] = {sid: [] for sid in judged}
    for chunk in _chunks(judged):
        rows = await conn.execute_fetchall(
            f"""SELECT session_id, critic_model, author_model, shadow, score_milli FROM critiques
                WHERE round = 1 AND session_id IN ({_marks(chunk)})""",
            chunk,
        )
        for row in rows:
            round1[row[0]].append((row[1], row[2], bool(row[3]), int(row[4])))
    settle_shadows(states, round1, new)

    await conn.executemany(_UPSERT_SESSION, [_state_row(states[sid]) for sid in touched])
    # Sessions this batch creates take in the ratings given before they were known.
    merge_into(
        session_deltas, await _join_pending(conn, states, [s for s in touched if s not in before]), 1, SESSION_WIDTH
    )
    await conn.executemany(
        "INSERT INTO events (session_id, sequence, kind, time_ns) VALUES (?, ?, ?, ?)",
        [(e.session_id, e.sequence, e.kind, e.time_ns) for e in new],
    )
    call_rows = []
    critique_rows = []
    moved_set = set(moved)
    for event in new:
        state = states[event.session_id]
        tenant_, hour, _, domain = state.hour_key
        call = event.call
        if call is not None:
            call_rows.append(
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
                    *usage_values(call.usage),
                    call.latency_ns,
                    call.ttft_ns,
                    histogram_bucket(call.latency_ns),
                    None if call.ttft_ns is None else histogram_bucket(call.ttft_ns),
                )
            )
            if event.session_id not in moved_set:
                add_call(model_vector(model_deltas, (tenant_, hour, call.model, domain)), call)
        k = event.critique
        if k is not None:
            milli = score_milli(k.score)
            critique_rows.append(
                (
                    event.session_id,
                    event.sequence,
                    k.round,
                    k.critic_model,
                    k.author_model,
                    k.score,
                    int(k.shadow),
                    milli,
                )
            )
            if event.session_id not in moved_set:
                received = model_vector(model_deltas, (tenant_, hour, k.author_model, domain))
                received[I_RECV_N] += 1
                received[I_RECV_MILLI] += milli
                given = model_vector(model_deltas, (tenant_, hour, k.critic_model, domain))
                given[I_GIVEN_N] += 1
                given[I_GIVEN_MILLI] += milli
    if call_rows:
        await conn.executemany(_INSERT_CALL, call_rows)
    if critique_rows:
        await conn.executemany(_INSERT_CRITIQUE, critique_rows)
    for sid in judged:
        if sid in moved_set:
            continue
        old = before[sid][1] if sid in before else None
        vector = session_vector(session_deltas, states[sid].hour_key)
        add_shadow(vector, old, -1)
        add_shadow(vector, states[sid].shadow_state, 1)
    if moved:
        for chunk in _chunks(moved):
            where = f"s.session_id IN ({_marks(chunk)})"
            merge_into(model_deltas, await _raw_model_vectors(conn, where, chunk), 1, MODEL_WIDTH)
            merge_into(session_deltas, await _raw_session_vectors(conn, where, chunk), 1, SESSION_WIDTH)
    await _flush(conn, model_deltas, session_deltas)
    return IngestResult(len(new), len(events) - len(new))


async def _rebuild_counters_if_stale(db: SqliteDatabase) -> None:
    """Fill the derived columns and rebuild every counter from the raw facts when they are stale.

    Runs after the migration to version 2 (and whenever COUNTERS_VERSION changes), in one transaction.
    """
    rows = list(await db.writer.execute_fetchall("SELECT value FROM meta WHERE key = 'counters'"))
    if rows and int(rows[0][0]) == COUNTERS_VERSION:
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
        round1: dict[str, list[tuple[str, str, bool, int]]] = {}
        for row in await conn.execute_fetchall(
            "SELECT session_id, critic_model, author_model, shadow, score_milli FROM critiques WHERE round = 1"
        ):
            round1.setdefault(row[0], []).append((row[1], row[2], bool(row[3]), int(row[4])))
        await conn.execute("UPDATE sessions SET shadow_state = NULL")
        await conn.executemany(
            "UPDATE sessions SET shadow_state = ? WHERE session_id = ?",
            [(shadow_int(shadow_outcome(scores)), sid) for sid, scores in round1.items()],
        )
        for table in ("model_counters", "session_counters", "day_counters"):
            await conn.execute(f"DELETE FROM {table}")
        await _flush(conn, await _raw_model_vectors(conn, "1 = 1", []), await _raw_session_vectors(conn, "1 = 1", []))
        await conn.execute(
            """INSERT INTO meta (key, value) VALUES ('counters', ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (COUNTERS_VERSION,),
        )
    log.info("analytics counters rebuilt from the raw facts (version %d)", COUNTERS_VERSION)
