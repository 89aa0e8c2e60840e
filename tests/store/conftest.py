"""Backends for the storage contract suites.

Every contract test runs once per backend id:

* ``sqlite``: the embedded implementation on a temporary file (always);
* ``mongo-double``: the MongoDB implementation against mongomock in this process (always), imitating a
  replica set's change streams. A double, not MongoDB: see ``mongo_double.py`` for what it does not prove;
* ``mongodb``: the MongoDB implementation against the real server at ``ORX_TEST_MONGODB_URI`` (only
  when that is set; a fresh database per test, dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from orchestratex.config import Settings
from orchestratex.store.mongo import MongoStoreBase

StoreT = TypeVar("StoreT", bound=MongoStoreBase)

MONGODB_URI = os.environ.get("ORX_TEST_MONGODB_URI", "").strip()

BACKENDS = [
    "sqlite",
    "mongo-double",
    pytest.param(
        "mongodb",
        marks=pytest.mark.skipif(not MONGODB_URI, reason="ORX_TEST_MONGODB_URI is not set (docs/storage.md)"),
    ),
]


@dataclass
class MongoTarget:
    """A database for one test: the (real or double) client, its name, and settings pointing at it."""

    client: Any
    name: str
    settings: Settings | None

    @property
    def db(self) -> Any:
        return self.client[self.name]

    async def open(self, store: type[StoreT]) -> StoreT:
        """``store`` on this database: connected from the settings (real server) or attached (double)."""
        if self.settings is not None:
            return await store.open(self.settings)
        return await store.attach(self.db)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def mongo_target(backend: str, tmp_path: Any) -> AsyncIterator[MongoTarget | None]:
    """The Mongo database of this test (None for SQLite)."""
    if backend == "sqlite":
        yield None
        return
    name = f"orx_test_{uuid.uuid4().hex[:16]}"
    if backend == "mongo-double":
        from tests.store.mongo_double import AsyncClientDouble

        yield MongoTarget(AsyncClientDouble(replica_set=True), name, None)
        return
    from pymongo import AsyncMongoClient

    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path / "data"), "ORX_MONGODB_URI": MONGODB_URI, "ORX_MONGODB_DATABASE": name}
    )
    client: Any = AsyncMongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
    try:
        yield MongoTarget(client, name, settings)
    finally:
        await client.drop_database(name)
        await client.close()
