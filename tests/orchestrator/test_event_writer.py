"""The event log's group commit: batches, the linger for company, flush cutting it short, no loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.hub import EventWriter
from services.orchestrator.store.sqlite import SqliteSessionStore


class CountingStore(SqliteSessionStore):
    """The real SQLite store, recording the size of every batch it is asked to write."""

    sizes: list[int]

    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        self.sizes.append(len(events))
        await super().append_events(events)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = await CountingStore.open(tmp_path / "events.db")
    assert isinstance(opened, CountingStore)
    opened.sizes = []
    yield opened
    await opened.close()


def event(session: str, sequence: int) -> pb.OrchestrationEvent:
    return pb.OrchestrationEvent(
        session_id=session, sequence=sequence, warning=pb.SessionWarning(message=f"event {sequence}")
    )


async def test_a_trickle_of_events_is_written_in_batches_of_at_least_min_batch(store: CountingStore) -> None:
    writer = EventWriter(store, min_batch=50, linger=5.0)
    writer.start()
    try:
        for seq in range(1, 201):
            writer.append(event("s1", seq))
            await asyncio.sleep(0)  # one event per loop turn: the writer wakes between them
        await writer.flush()
    finally:
        await writer.close()
    assert sum(store.sizes) == 200
    # Every batch but the one the flush cut short waited for company.
    assert all(size >= 50 for size in store.sizes[:-1]), store.sizes
    assert len(await store.read_events("s1", 0, 1000)) == 200


async def test_flush_does_not_wait_for_the_linger(store: CountingStore) -> None:
    writer = EventWriter(store, min_batch=1000, linger=3600.0)
    writer.start()
    try:
        writer.append(event("s2", 1))
        # With an hour of linger, only the flush can get this written; the test timeout guards it.
        await asyncio.wait_for(writer.flush(), timeout=30)
        assert store.sizes == [1]
        assert await store.last_sequence("s2") == 1
    finally:
        await writer.close()


async def test_close_writes_everything_pending(store: CountingStore) -> None:
    writer = EventWriter(store, min_batch=1000, linger=3600.0)
    writer.start()
    for seq in range(1, 11):
        writer.append(event("s3", seq))
    await writer.close()
    assert await store.last_sequence("s3") == 10
