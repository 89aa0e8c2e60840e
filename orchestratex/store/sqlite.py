"""Shared SQLite plumbing: WAL mode, one writer connection, a reader connection, versioned migrations.

Each service owns its own database file under the data directory (``orchestrator.db``,
``analytics.db``): one writer per file, as SQLite wants, and no service reads another's tables.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from orchestratex.aio import uncancellable
from orchestratex.errors import Unavailable

log = logging.getLogger(__name__)

# Primary result codes that mean "the storage cannot take writes now" rather than a bug in a statement:
# the caller gets UNAVAILABLE (retry later) and the service reports NOT_SERVING until a write succeeds.
#: File names under ``settings.common.data_dir`` of the SQLite backend (the services' stores and backup use them).
SESSIONS_FILE = "orchestrator.db"
ANALYTICS_FILE = "analytics.db"

_STORAGE_CODES = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "an I/O error",
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_BUSY: "the database is locked by another process",
    sqlite3.SQLITE_CORRUPT: "the database file is damaged",
    sqlite3.SQLITE_NOTADB: "the file is not a database",
}


class StorageUnavailable(Unavailable):
    """The store cannot write now (disk full, I/O error, read-only...); retrying later may work."""


def storage_problem(exc: BaseException) -> str | None:
    """What stops the store from writing, when ``exc`` is such a condition (None for other errors)."""
    if isinstance(exc, StorageUnavailable):
        return exc.message
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _STORAGE_CODES:
            return _STORAGE_CODES[code & 0xFF]
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return None


class SqliteDatabase:
    """Two aiosqlite connections to one file: ``writer`` (all writes, serialised) and ``reader``.

    aiosqlite runs each connection on its own thread, so queries never block the event loop; in WAL
    mode the reader sees committed data while the writer works.
    """

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self.writer = writer
        self.reader = reader
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Serialise writers and wrap the block in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error).

        Every write goes through here: statements of concurrent coroutines never interleave inside
        another's transaction. A cancellation can interrupt the block, but never a ``COMMIT`` or
        ``ROLLBACK`` half way: both run to their end, so the connection is never left inside a
        transaction (the next writer would fail with "cannot start a transaction within a
        transaction"). A storage condition (disk full, I/O error) is raised as
        :class:`StorageUnavailable`.
        """
        async with self._write_lock:
            if self.writer.in_transaction:
                # Only reachable if a transaction was abandoned by code outside this method.
                log.error("the writer connection was left inside a transaction; rolling it back")
                await uncancellable(self._rollback())
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
                yield self.writer
                await uncancellable(self.writer.execute("COMMIT"))
            except BaseException as exc:
                await uncancellable(self._rollback())
                problem = storage_problem(exc)
                if problem is not None and not isinstance(exc, StorageUnavailable):
                    raise StorageUnavailable(f"storage: cannot write {self.path.name}: {problem}") from exc
                raise

    async def _rollback(self) -> None:
        # aiosqlite runs statements in order on one thread, so a BEGIN whose await was cancelled has
        # run by the time this ROLLBACK does; when nothing is open (BEGIN itself failed) it is a no-op.
        try:
            await self.writer.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):
                raise

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[str]) -> SqliteDatabase:
        """Open (creating if needed) and migrate. ``migrations[i]`` brings the schema to version i+1.

        Processes opening one new file at once (replicas) can meet SQLite's "database is locked" without its busy
        handler (switching the journal to WAL, where waiting could deadlock): the set-up is tried again, a few
        times, after a short pause."""
        for attempt in range(1, 21):
            try:
                return await cls._open(path, migrations)
            except sqlite3.OperationalError as exc:
                if "database is locked" not in str(exc) or attempt == 20:
                    raise
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    @classmethod
    async def _open(cls, path: Path, migrations: Sequence[str]) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            # The busy timeout first: switching a new file to WAL takes a lock that another process opening it at
            # the same moment (a replica) may hold, and without a timeout that is "database is locked" at once.
            await writer.execute("PRAGMA busy_timeout=5000")
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=NORMAL")
            await writer.execute("PRAGMA foreign_keys=ON")
            await _migrate(writer, migrations)
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("PRAGMA busy_timeout=5000")
            await reader.execute("PRAGMA query_only=ON")
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Close both connections."""
        await self.reader.close()
        await self.writer.close()


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise RuntimeError(f"database schema version {current} is newer than this code ({len(migrations)})")
    for version in range(current, len(migrations)):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process opening the same file (a replica starting at
            # the same moment) may have applied this migration since.
            async with conn.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            if row is not None and int(row[0]) > version:
                await conn.execute("COMMIT")
                continue
            for statement in _split(migrations[version]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version={version + 1}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("migrated schema to version %d", version + 1)


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
