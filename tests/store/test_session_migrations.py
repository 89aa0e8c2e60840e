"""The session store's SQLite migrations are frozen: one that has run on someone's database never
changes (a change is a new migration, appended). Pinned by hash; migration 1 is the one released before
the lease existed (checked against its text at commit 18e4dd6)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SessionQuery
from services.orchestrator.store.sqlite import _MIGRATIONS, SqliteSessionStore

FROZEN = [
    "6f32bacac8c994b2b4c18bcc6c5edc44cc8e81a4d5d388d6c38bb9fc7c1735ec",  # sessions, events, cursors
    "f8e85f2eee0c92d5f146f528901bcf7e3fefdc3d7114016b674ea1e6ba1a69e7",  # leases
    "a27c3f5829145dfd31924031446ac1714fce29a51ccd150ad582b447f1f2407d",  # prompt search
    "f2e7d7c5c9ebb92a938f6b98a12a087956dac1ae3b4f8df9680f73de3af1e714",  # session owners and cancel requests (replicas)
]


def test_released_migrations_never_change() -> None:
    assert [hashlib.sha256(m.encode()).hexdigest() for m in _MIGRATIONS[: len(FROZEN)]] == FROZEN


async def test_a_database_of_the_previous_release_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"
    with sqlite3.connect(path) as conn:  # what the previous release made: migration 1 only
        conn.executescript(_MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        record = pb.Session(
            session_id="s1", status=pb.SESSION_STATUS_RUNNING, request=pb.OrchestrateRequest(prompt="Tell me about WAL")
        )
        conn.execute(
            "INSERT INTO sessions (session_id, tenant, status, thread_id, create_us, record) VALUES (?,?,?,?,?,?)",
            ("s1", "t", record.status, "", 5, record.SerializeToString()),
        )
    conn.close()
    store = await SqliteSessionStore.open(path)
    try:
        assert (await store.claim_lease("orchestrator", "me", 0, 10)).holder == "me"
        assert [s.session_id for s in await store.running_sessions()] == ["s1"]
        # the earlier session's prompt was indexed for search on opening
        found = await store.list_sessions(SessionQuery(prompt_contains="wal"))
        assert [s.session_id for s in found.sessions] == ["s1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(_MIGRATIONS),)
    conn.close()


async def test_replicas_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"
    stores = await asyncio.gather(*(SqliteSessionStore.open(path) for _ in range(4)))
    for store in stores:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(_MIGRATIONS),)
    conn.close()
