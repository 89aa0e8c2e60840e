"""Shared SQLite plumbing: WAL mode, one writer connection, a reader connection, versioned migrations.

Each service owns its own database file under the data directory (``orchestrator.db``,
``analytics.db``): one writer per file, as SQLite wants, and no service reads another's tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


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
        another's transaction.
        """
        async with self._write_lock:
            await self.writer.execute("BEGIN IMMEDIATE")
            try:
                yield self.writer
            except BaseException:
                await self.writer.execute("ROLLBACK")
                raise
            await self.writer.execute("COMMIT")

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[str]) -> SqliteDatabase:
        """Open (creating if needed) and migrate. ``migrations[i]`` brings the schema to version i+1."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=NORMAL")
            await writer.execute("PRAGMA busy_timeout=5000")
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
