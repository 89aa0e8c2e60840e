"""MongoDB storage through PyMongo's native async API (``pymongo.AsyncMongoClient``).

Not Motor: Motor reached end of life on 2026-05-14 (critical fixes only until 2027) and MongoDB tells
its users to migrate to PyMongo's async API, which talks to the server directly on the event loop.

This module holds the plumbing the services' stores share: client options from
:class:`~orchestratex.config.Settings`, start-up index creation, the ``schema_meta`` document and
migrations, and :class:`MongoStoreBase` (shielded writes). The stores themselves live with their
services (``services/orchestrator/store``, ``services/analytics/store``).

The connection string is a secret: it is never logged and never put in an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orchestratex.aio import uncancellable
from orchestratex.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Document = dict[str, Any]
MongoDb = AsyncDatabase[Document]
Migration = tuple[str, Callable[[MongoDb], Awaitable[None]]]

DUPLICATE_KEY = 11000
SCHEMA_COLLECTION = "schema_meta"


@dataclass(frozen=True)
class IndexSpec:
    """One index: its collection, name, keys, options and the query it serves (for the docs)."""

    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    serves: str
    unique: bool = False


def client_options(settings: Settings, appname: str) -> dict[str, Any]:
    """Keyword arguments for :class:`pymongo.AsyncMongoClient` from the settings (everything but the URI).

    Options written in the URI itself (``w=majority``, ``replicaSet``, TLS...) still apply; these keyword
    arguments override the same options in the URI.
    """
    mongodb = settings.common.mongodb
    return {
        "appname": appname,
        "maxPoolSize": mongodb.max_pool_size,
        "minPoolSize": mongodb.min_pool_size,
        "serverSelectionTimeoutMS": int(mongodb.timeout * 1000),
        "connectTimeoutMS": int(mongodb.timeout * 1000),
        "socketTimeoutMS": int(mongodb.socket_timeout * 1000),
        # Stored times are integers; keep the driver from guessing time zones anywhere.
        "tz_aware": True,
    }


async def connect(settings: Settings, appname: str) -> AsyncMongoClient[Document]:
    """A connected client for ``settings.common.mongodb.uri``; fails within its ``timeout`` when unreachable.

    Raises :class:`ConnectionError` with a message that names the variable, never the URI.
    """
    mongodb = settings.common.mongodb
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb.uri.get(), **client_options(settings, appname))
    try:
        await client.admin.command("ping")
    except Exception as exc:
        await client.close()
        # The driver's message names hosts, not credentials; still keep it out of our own text.
        raise ConnectionError(
            f"MongoDB at ORX_MONGODB_URI is not reachable within {mongodb.timeout:g}s ({type(exc).__name__})"
        ) from None
    return client


async def ensure_schema(db: MongoDb, component: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations ``component`` has not applied yet to ``db``; returns the schema version.

    The ``schema_meta`` document ``{_id: component, version, migrations: [{name, applied_ns}]}`` records
    what was applied, in order. Every migration is idempotent, and recording it is a conditional update
    (``version`` must still be the one it started from), so two processes starting at once may both run
    a migration but only one records it and neither fails.
    """
    meta = db[SCHEMA_COLLECTION]
    with contextlib.suppress(DuplicateKeyError):
        await meta.insert_one({"_id": component, "version": 0, "migrations": []})
    while True:
        doc = await meta.find_one({"_id": component})
        current = int(doc["version"]) if doc else 0
        if current > len(migrations):
            raise RuntimeError(
                f"MongoDB schema of {component} is at version {current}, newer than this code ({len(migrations)})"
            )
        if current == len(migrations):
            return current
        name, apply = migrations[current]
        await apply(db)
        result = await meta.update_one(
            {"_id": component, "version": current},
            {
                "$set": {"version": current + 1},
                "$push": {"migrations": {"name": name, "applied_ns": time.time_ns()}},
            },
        )
        if result.modified_count:
            log.info("migrated %s MongoDB schema to version %d (%s)", component, current + 1, name)


async def ensure_indexes(db: MongoDb, indexes: Sequence[IndexSpec]) -> None:
    """Create every index (idempotent: an existing identical index is left alone)."""
    for spec in indexes:
        await db[spec.collection].create_index(list(spec.keys), name=spec.name, unique=spec.unique)


def duplicate_indexes(exc: BulkWriteError) -> list[int] | None:
    """Indexes (in the batch) of the documents rejected as duplicates, or None when any other error occurred."""
    details: Mapping[str, Any] = exc.details
    if details.get("writeConcernErrors"):
        return None
    errors = details.get("writeErrors", [])
    if not errors or any(int(e.get("code", 0)) != DUPLICATE_KEY for e in errors):
        return None
    return [int(e["index"]) for e in errors]


class MongoStoreBase:
    """What the MongoDB stores share: the database, the client they may own, and shielded writes.

    Subclasses define ``attach(db, client)`` (indexes, migrations, recovery); :meth:`open` connects
    and attaches, closing the client again if attaching fails.
    """

    #: The client's ``appname`` (shows in the server's logs and ``currentOp``).
    APPNAME = "orchestratex"

    def __init__(self, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> None:
        self.db = db
        self._client = client
        self._writes: set[asyncio.Task[Any]] = set()

    @classmethod
    async def attach(cls, db: MongoDb, client: AsyncMongoClient[Document] | None = None) -> Self:
        """A store on an already open database (closing the store closes ``client`` when given)."""
        raise NotImplementedError

    @classmethod
    async def open(cls, settings: Settings, appname: str | None = None) -> Self:
        """Connect with ``settings``, then :meth:`attach` (indexes, migrations, recovery)."""
        client = await connect(settings, appname or cls.APPNAME)
        try:
            return await cls.attach(client[settings.common.mongodb.database], client)
        except BaseException:
            await client.close()
            raise

    async def close(self) -> None:
        """Wait for writes in progress, then close the client (when this store owns it)."""
        if self._writes:
            await asyncio.wait(self._writes)
        if self._client is not None:
            await self._client.close()

    async def _shielded(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a write to completion even if the caller is cancelled (no half-written batch); the
        caller's cancellation is raised once the write has ended."""
        task = asyncio.ensure_future(work())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await uncancellable(task)
