"""The orchestrator's session store on embedded SQLite (WAL, one writer, batched transactions)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from orchestratex.aio import uncancellable
from orchestratex.store.sqlite import SqliteDatabase
from orchestratex.v1 import orchestrator_pb2
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

_MIGRATIONS = [
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status INTEGER NOT NULL,
        thread_id TEXT NOT NULL,
        create_us INTEGER NOT NULL,
        record BLOB NOT NULL
    );
    CREATE INDEX sessions_by_tenant_time ON sessions (tenant, create_us DESC, session_id DESC);
    CREATE INDEX sessions_by_status ON sessions (status);
    CREATE INDEX sessions_by_thread ON sessions (tenant, thread_id, create_us);
    CREATE TABLE events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        payload BLOB NOT NULL,
        UNIQUE (session_id, sequence)
    );
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_us INTEGER NOT NULL
    )
    """,
    # Prompt search (ListSessions.prompt_contains). NULL marks a row written before this version: open()
    # fills those in from the record, which SQL cannot read.
    """
    ALTER TABLE sessions ADD COLUMN search TEXT
    """,
    # Replicas: the instance that runs a session, and a cancel asked for through another replica.
    """
    ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN cancel_reason TEXT;
    CREATE INDEX sessions_by_owner ON sessions (owner, status)
    """,
]
_BACKFILL_BATCH = 500


class SqliteSessionStore(SessionStore):
    """Embedded implementation on one SQLite file (WAL, one writer)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> SqliteSessionStore:
        """Open and migrate ``path``."""
        store = cls(await SqliteDatabase.open(path, _MIGRATIONS))
        try:
            await store._fill_search_text()
        except BaseException:
            await store.close()
            raise
        return store

    async def _fill_search_text(self) -> None:
        """Give sessions stored before prompt search their search text, a batch per transaction."""
        filled = 0
        while True:
            async with self.db.transaction() as writer:
                async with writer.execute(
                    "SELECT session_id, record FROM sessions WHERE search IS NULL LIMIT ?", (_BACKFILL_BATCH,)
                ) as cur:
                    rows = list(await cur.fetchall())
                await writer.executemany(
                    "UPDATE sessions SET search = ? WHERE session_id = ?",
                    [(search_text(orchestrator_pb2.Session.FromString(r[1])), r[0]) for r in rows],
                )
            filled += len(rows)
            if len(rows) < _BACKFILL_BATCH:
                break
        if filled:
            log.info("indexed the prompts of %d earlier sessions for search", filled)

    async def close(self) -> None:
        await self.db.close()

    async def claim_lease(
        self, name: str, holder: str, now_us: int, until_us: int, *, steal_from: str | None = None
    ) -> LeaseRecord:
        return await uncancellable(self._claim_lease(name, holder, now_us, until_us, steal_from))

    async def _claim_lease(
        self, name: str, holder: str, now_us: int, until_us: int, steal_from: str | None
    ) -> LeaseRecord:
        # BEGIN IMMEDIATE (the transaction) makes read-then-write atomic across processes sharing the file.
        async with self.db.transaction() as writer:
            async with writer.execute("SELECT holder, expires_us FROM leases WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[1] > now_us and row[0] not in (holder, steal_from):
                return LeaseRecord(str(row[0]), int(row[1]))
            await writer.execute(
                "INSERT INTO leases (name, holder, expires_us) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_us = excluded.expires_us",
                (name, holder, until_us),
            )
        return LeaseRecord(holder, until_us)

    async def release_lease(self, name: str, holder: str) -> None:
        async with self.db.transaction() as writer:
            await writer.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    # Every write runs to its end even when its caller is cancelled (the cancellation is re-raised
    # afterwards), so a cancelled session can never leave a write half done.

    async def get_lease(self, name: str) -> LeaseRecord | None:
        async with self.db.reader.execute("SELECT holder, expires_us FROM leases WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return None if row is None else LeaseRecord(str(row[0]), int(row[1]))

    async def create_session(self, tenant: str, session: orchestrator_pb2.Session, owner: str = "") -> None:
        await uncancellable(self._create_session(tenant, session, owner))

    async def _create_session(self, tenant: str, session: orchestrator_pb2.Session, owner: str) -> None:
        create_us = session.create_time.seconds * 1_000_000 + session.create_time.nanos // 1000
        async with self.db.transaction() as writer:
            await writer.execute(
                "INSERT INTO sessions (session_id, tenant, status, thread_id, create_us, record, search, owner) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    session.session_id,
                    tenant,
                    session.status,
                    session.thread_id,
                    create_us,
                    session.SerializeToString(),
                    search_text(session),
                    owner,
                ),
            )

    async def save_session(self, session: orchestrator_pb2.Session) -> None:
        await uncancellable(self._save_session(session))

    async def _save_session(self, session: orchestrator_pb2.Session) -> None:
        async with self.db.transaction() as writer:
            await writer.execute(
                "UPDATE sessions SET status = ?, record = ? WHERE session_id = ?",
                (session.status, session.SerializeToString(), session.session_id),
            )

    async def get_session(self, session_id: str, tenant: str) -> orchestrator_pb2.Session | None:
        sql = "SELECT record FROM sessions WHERE session_id = ?"
        args: tuple[str, ...] = (session_id,)
        if tenant:
            sql += " AND tenant = ?"
            args = (session_id, tenant)
        async with self.db.reader.execute(sql, args) as cur:
            row = await cur.fetchone()
        return None if row is None else orchestrator_pb2.Session.FromString(row[0])

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        tenant, status, thread_id = query.tenant, query.status, query.thread_id
        start_us, end_us, page_token, page_size = query.start_us, query.end_us, query.page_token, query.page_size
        where: list[str] = []
        args: list[object] = []
        if tenant:
            where.append("tenant = ?")
            args.append(tenant)
        if status:
            where.append("status = ?")
            args.append(status)
        if thread_id:
            where.append("thread_id = ?")
            args.append(thread_id)
        if query.prompt_contains:
            # instr, not LIKE: the text is matched literally, with no wildcard to escape.
            where.append("instr(search, ?) > 0")
            args.append(query.prompt_contains)
        if start_us is not None:
            where.append("create_us >= ?")
            args.append(start_us)
        if end_us is not None:
            where.append("create_us < ?")
            args.append(end_us)
        if page_token:
            created, sid = decode_page_token(page_token)
            where.append("(create_us < ? OR (create_us = ? AND session_id < ?))")
            args.extend([created, created, sid])
        sql = "SELECT create_us, session_id, record FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY create_us DESC, session_id DESC LIMIT ?"
        args.append(page_size + 1)
        async with self.db.reader.execute(sql, args) as cur:
            rows = list(await cur.fetchall())
        next_token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            next_token = encode_page_token(int(rows[-1][0]), str(rows[-1][1]))
        return SessionPage([orchestrator_pb2.Session.FromString(r[2]) for r in rows], next_token)

    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        if events:
            await uncancellable(self._append_events(events))

    async def _append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        async with self.db.transaction() as writer:
            await writer.executemany(
                "INSERT OR IGNORE INTO events (session_id, sequence, payload) VALUES (?,?,?)", events
            )

    async def read_events(self, session_id: str, after_sequence: int, limit: int = 1000) -> list[bytes]:
        async with self.db.reader.execute(
            "SELECT payload FROM events WHERE session_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (session_id, after_sequence, limit),
        ) as cur:
            return [bytes(r[0]) for r in await cur.fetchall()]

    async def last_sequence(self, session_id: str) -> int:
        async with self.db.reader.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE session_id = ?", (session_id,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def running_sessions(self) -> list[orchestrator_pb2.Session]:
        async with self.db.reader.execute(
            "SELECT record FROM sessions WHERE status = ?", (orchestrator_pb2.SESSION_STATUS_RUNNING,)
        ) as cur:
            return [orchestrator_pb2.Session.FromString(r[0]) for r in await cur.fetchall()]

    async def running_owners(self) -> list[RunningSession]:
        async with self.db.reader.execute(
            "SELECT session_id, owner, cancel_reason FROM sessions WHERE status = ?",
            (orchestrator_pb2.SESSION_STATUS_RUNNING,),
        ) as cur:
            return [RunningSession(str(r[0]), str(r[1]), r[2]) for r in await cur.fetchall()]

    async def adopt_session(self, session_id: str, owner: str, new_owner: str) -> bool:
        return await uncancellable(
            self._update_running(
                "UPDATE sessions SET owner = ? WHERE session_id = ? AND owner = ? AND status = ?",
                (new_owner, session_id, owner, orchestrator_pb2.SESSION_STATUS_RUNNING),
            )
        )

    async def request_cancel(self, session_id: str, reason: str) -> bool:
        return await uncancellable(
            self._update_running(
                "UPDATE sessions SET cancel_reason = COALESCE(cancel_reason, ?) WHERE session_id = ? AND status = ?",
                (reason, session_id, orchestrator_pb2.SESSION_STATUS_RUNNING),
            )
        )

    async def _update_running(self, sql: str, args: tuple[object, ...]) -> bool:
        async with self.db.transaction() as writer:
            cur = await writer.execute(sql, args)
            return cur.rowcount == 1

    async def cancel_requests(self, owner: str) -> list[RunningSession]:
        async with self.db.reader.execute(
            "SELECT session_id, owner, cancel_reason FROM sessions "
            "WHERE owner = ? AND status = ? AND cancel_reason IS NOT NULL",
            (owner, orchestrator_pb2.SESSION_STATUS_RUNNING),
        ) as cur:
            return [RunningSession(str(r[0]), str(r[1]), r[2]) for r in await cur.fetchall()]

    async def thread_sessions(self, tenant: str, thread_id: str, limit: int) -> list[orchestrator_pb2.Session]:
        async with self.db.reader.execute(
            "SELECT record FROM sessions WHERE tenant = ? AND thread_id = ? AND status = ? "
            "ORDER BY create_us DESC LIMIT ?",
            (tenant, thread_id, orchestrator_pb2.SESSION_STATUS_COMPLETED, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [orchestrator_pb2.Session.FromString(r[0]) for r in reversed(list(rows))]

    async def newest_position(self) -> int:
        async with self.db.reader.execute("SELECT COALESCE(MAX(position), 0) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        async with self.db.reader.execute(
            "SELECT e.position, s.tenant, e.session_id, e.payload FROM events e "
            "JOIN sessions s ON s.session_id = e.session_id WHERE e.position > ? ORDER BY e.position LIMIT ?",
            (position, limit),
        ) as cur:
            return [StoredEvent(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in await cur.fetchall()]

    async def get_cursor(self, name: str) -> int:
        async with self.db.reader.execute("SELECT position FROM cursors WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def set_cursor(self, name: str, position: int) -> None:
        await uncancellable(self._set_cursor(name, position))

    async def _set_cursor(self, name: str, position: int) -> None:
        async with self.db.transaction() as writer:
            await writer.execute(
                "INSERT INTO cursors (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = MAX(position, excluded.position)",
                (name, position),
            )
