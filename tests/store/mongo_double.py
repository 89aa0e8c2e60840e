"""An in-process MongoDB double: mongomock behind the slice of PyMongo's async API the stores use.

This is NOT MongoDB. It runs the MongoDB implementations' code paths (queries, updates, unordered
``insert_many`` with duplicate keys, unique indexes, ``find_one_and_update``, sorting, the aggregation
stages mongomock implements) in this process, so they are exercised on machines where no MongoDB
server can run. It proves nothing about the wire protocol, the server's own aggregation semantics,
transactions or snapshot reads, write concerns, or real concurrency between clients (every call runs
synchronously, with one ``await asyncio.sleep(0)`` before it so coroutines still interleave). Change streams
are imitated for inserts only, and only when the client is made with ``replica_set=True`` (otherwise
``watch`` fails as a standalone server does): their pipeline is not applied, and the timing says nothing of
a real server's.
Run the contract suite with ``ORX_TEST_MONGODB_URI`` for the real thing (docs/storage.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import mongomock
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure


class AsyncCursorDouble:
    """``AsyncCursor``/``AsyncCommandCursor``: chainable ``sort``/``limit``/``skip``, ``to_list``, ``async for``."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, key: Any, direction: Any = None) -> AsyncCursorDouble:
        self._cursor = self._cursor.sort(key) if direction is None else self._cursor.sort(key, direction)
        return self

    def limit(self, n: int) -> AsyncCursorDouble:
        self._cursor = self._cursor.limit(n)
        return self

    def skip(self, n: int) -> AsyncCursorDouble:
        self._cursor = self._cursor.skip(n)
        return self

    def batch_size(self, n: int) -> AsyncCursorDouble:
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        docs = list(self._cursor)
        return docs if length is None else docs[:length]

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self._cursor:
            await asyncio.sleep(0)
            yield doc

    async def close(self) -> None:
        return None


class ChangeStreamDouble:
    """``AsyncChangeStream`` of one collection's inserts since it was opened (the pipeline is not applied)."""

    def __init__(self, streams: list[ChangeStreamDouble]) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._streams = streams
        streams.append(self)

    async def __aenter__(self) -> ChangeStreamDouble:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> ChangeStreamDouble:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        if self in self._streams:
            self._streams.remove(self)

    def publish(self, change: dict[str, Any] | BaseException) -> None:
        self._queue.put_nowait(change)


class AsyncCollectionDouble:
    """``AsyncCollection``: each coroutine method calls mongomock's synchronous one."""

    def __init__(self, collection: Any, client: AsyncClientDouble | None = None) -> None:
        self._c = collection
        self.name: str = collection.name
        self._client = client

    def _published(self, docs: list[dict[str, Any]]) -> None:
        if self._client is not None:
            for stream in list(self._client.streams.get(self._c.full_name, ())):
                for doc in docs:
                    stream.publish({"operationType": "insert", "fullDocument": dict(doc)})

    async def watch(self, pipeline: list[dict[str, Any]] | None = None, **kwargs: Any) -> ChangeStreamDouble:
        await asyncio.sleep(0)
        if self._client is None or not self._client.replica_set:
            raise OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)
        return ChangeStreamDouble(self._client.streams.setdefault(self._c.full_name, []))

    async def insert_one(self, doc: dict[str, Any], **kwargs: Any) -> Any:
        kwargs.pop("session", None)
        await asyncio.sleep(0)
        result = self._c.insert_one(doc, **kwargs)
        self._published([doc])
        return result

    async def insert_many(self, docs: list[dict[str, Any]], **kwargs: Any) -> Any:
        kwargs.pop("session", None)
        await asyncio.sleep(0)
        try:
            result = self._c.insert_many(docs, **kwargs)
        except BulkWriteError as exc:
            rejected = {e["index"] for e in exc.details.get("writeErrors", [])}
            self._published([d for i, d in enumerate(docs) if i not in rejected])
            raise
        self._published(docs)
        return result

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursorDouble:
        kwargs.pop("session", None)
        return AsyncCursorDouble(self._c.find(*args, **kwargs))

    async def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> AsyncCursorDouble:
        kwargs.pop("session", None)
        await asyncio.sleep(0)
        return AsyncCursorDouble(iter(list(self._c.aggregate(pipeline, **kwargs))))

    async def bulk_write(self, requests: list[Any], ordered: bool = True, **kwargs: Any) -> Any:
        """pymongo 4.20's operation objects no longer fit mongomock's bulk API: apply them one by one,
        collecting duplicate-key errors into a ``BulkWriteError`` as the server reports them."""
        await asyncio.sleep(0)
        errors: list[dict[str, Any]] = []
        for index, op in enumerate(requests):
            try:
                if isinstance(op, InsertOne):
                    self._c.insert_one(op._doc)
                    self._published([op._doc])
                elif isinstance(op, ReplaceOne):
                    self._c.replace_one(op._filter, op._doc, upsert=op._upsert)
                elif isinstance(op, UpdateOne):
                    self._c.update_one(op._filter, op._doc, upsert=op._upsert)
                else:
                    raise TypeError(f"the double does not support {type(op).__name__}")
            except DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": str(exc)})
                if ordered:
                    break
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": [], "nInserted": 0})
        return None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._c, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop("session", None)
            await asyncio.sleep(0)
            return method(*args, **kwargs)

        return call


class AsyncDatabaseDouble:
    """``AsyncDatabase``: collections by item or attribute, ``command``, ``list_collection_names``."""

    def __init__(self, database: Any, client: AsyncClientDouble) -> None:
        self._db = database
        self.name: str = database.name
        self.client = client

    def __getitem__(self, name: str) -> AsyncCollectionDouble:
        return AsyncCollectionDouble(self._db[name], self.client)

    def get_collection(self, name: str, **kwargs: Any) -> AsyncCollectionDouble:
        return AsyncCollectionDouble(self._db.get_collection(name), self.client)

    async def list_collection_names(self, **kwargs: Any) -> list[str]:
        kwargs.pop("session", None)
        await asyncio.sleep(0)
        return list(self._db.list_collection_names())

    async def create_collection(self, name: str, **kwargs: Any) -> AsyncCollectionDouble:
        await asyncio.sleep(0)
        return AsyncCollectionDouble(self._db.create_collection(name))

    async def drop_collection(self, name: str, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        self._db.drop_collection(name)

    async def command(self, command: str | dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        name = command if isinstance(command, str) else next(iter(command))
        if name == "ping":
            return {"ok": 1.0}
        if name == "hello":
            # A standalone server: no replica set, so no snapshot reads.
            return {"isWritablePrimary": True, "maxWireVersion": 13, "ok": 1.0}
        return dict(self._db.command(command))


class AsyncClientDouble:
    """``AsyncMongoClient``: databases by item, ``admin.command`` (a standalone server), ``close``.

    No ``start_session``: mongomock has no sessions, and a standalone server no snapshot reads.
    """

    def __init__(self, *, replica_set: bool = False) -> None:
        self._client: Any = mongomock.MongoClient()
        self.admin = AsyncDatabaseDouble(self._client["admin"], self)
        self.closed = False
        self.replica_set = replica_set
        #: Open change streams by collection full name ("db.collection").
        self.streams: dict[str, list[ChangeStreamDouble]] = {}

    def break_streams(self, error: BaseException) -> None:
        """Every open change stream raises ``error`` next (a failover, a dropped connection)."""
        for streams in self.streams.values():
            for stream in list(streams):
                stream.publish(error)

    def __getitem__(self, name: str) -> AsyncDatabaseDouble:
        return AsyncDatabaseDouble(self._client[name], self)

    async def drop_database(self, name: str) -> None:
        await asyncio.sleep(0)
        self._client.drop_database(name)

    async def close(self) -> None:
        self.closed = True
