"""Migrations are frozen: a migration that has run on someone's database never changes.

Each SQLite migration's text and each MongoDB migration's source is pinned by its SHA-256. A failure here
means a migration was edited: put the change in a **new** migration instead (and pin it here), which
converts the existing data; see ``services/analytics/store/sqlite_migrations.py`` and docs/storage.md.
``tests/store/test_analytics_store_contract.py::test_a_previous_release_database_upgrades`` then checks
that a database the previous release made still opens and answers the same.
"""

from __future__ import annotations

import hashlib
import inspect
import sqlite3
from pathlib import Path

from services.analytics.store.counters import DAY_COLUMNS, MODEL_COLUMNS, SESSION_COLUMNS, DayKey, ModelKey, SessionKey
from services.analytics.store.mongo import ANALYTICS_MIGRATIONS
from services.analytics.store.sqlite_migrations import MIGRATIONS

# SHA-256 of MIGRATIONS[i] (the SQL text, UTF-8). Versions 1-3: the text release e6a485f generated.
SQLITE_PINS = (
    "7cade2f11e4fb2ef5ae5911407c7759198ab80900297a6f8c0249d802155ef5b",
    "aa0812aff0f35a5e9c03b3b7c378d6f22e39b8e870a4f65499e1d838167e43a1",
    "b2baca61c87198c5ac3334e6d608274c89eae90d9beacaf126f9b1c12feb9c47",
)
# (name, SHA-256 of the function's source) of ANALYTICS_MIGRATIONS[i] (the MongoDB ``analytics`` schema).
MONGO_PINS = (
    ("raw facts and daily counters", "7dbe2abdf39b354169e857d8034e1cbf9f8fde488551c6ca07b7409d1038b187"),
    ("ratings before their session", "5ed412755635974ca4eb61b05669e83d140c02bda0988a65abe4742fbe8002bb"),
    ("counters in blocks of every level", "1eb88cad89987f4751173e3a6511b5073b0db917efaf26bcec76019efd7d5fd7"),
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_sqlite_migrations_never_change() -> None:
    assert [sha256(sql) for sql in MIGRATIONS] == list(SQLITE_PINS)


def test_mongo_migrations_never_change() -> None:
    assert [(name, sha256(inspect.getsource(apply))) for name, apply in ANALYTICS_MIGRATIONS] == list(MONGO_PINS)


def test_the_counters_written_are_the_columns_the_migrations_made(tmp_path: Path) -> None:
    # The counters' storage names come from live constants (histogram buckets, failure kinds); the tables
    # from frozen SQL. Changing one of those constants needs a new migration: this says so.
    with sqlite3.connect(tmp_path / "analytics.db") as conn:
        for sql in MIGRATIONS:
            conn.executescript(sql)
        for table, key, columns in (
            ("model_counters", ModelKey._fields, MODEL_COLUMNS),
            ("session_counters", SessionKey._fields, SESSION_COLUMNS),
            ("day_counters", DayKey._fields, DAY_COLUMNS),
        ):
            names = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
            assert names == (*key, *columns), table
    conn.close()
