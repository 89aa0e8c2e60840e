"""Cancellation, storage failures and recovery: the faults an adversarial run found (issue 12).

Each test reproduces a failure the old code had: a cancellation landing on ``BEGIN IMMEDIATE`` left
the write transaction open for good, a cancel landing on a session's final flush left it RUNNING
with its watchers hung, recovery appended a second terminal event, a store that could not write kept
reporting SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.aio import uncancellable
from orchestratex.store.sqlite import StorageUnavailable
from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.hub import EventWriter, Hub, now_timestamp
from services.orchestrator.server import SERVICE_NAME
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import Stack, kinds, start_stack, stop_stack, wait_until


def _record(session_id: str) -> pb.Session:
    now = now_timestamp()
    return pb.Session(session_id=session_id, status=pb.SESSION_STATUS_RUNNING, create_time=now, update_time=now)


# ---------------------------------------------------------------- uncancellable


async def test_uncancellable_finishes_the_work_then_raises_the_cancellation() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def work() -> str:
        await release.wait()
        done.append("work")
        return "result"

    caller = asyncio.ensure_future(uncancellable(work()))
    await asyncio.sleep(0)
    caller.cancel()
    caller.cancel()  # a second cancellation changes nothing either
    await asyncio.sleep(0)
    assert not caller.done() and done == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["work"]


async def test_uncancellable_returns_the_result_and_raises_the_error_when_not_cancelled() -> None:
    async def ok() -> int:
        return 7

    async def boom() -> int:
        raise ValueError("no")

    assert await uncancellable(ok()) == 7
    with pytest.raises(ValueError, match="no"):
        await uncancellable(boom())


# ---------------------------------------------------------------- SQLite transactions


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteSessionStore]:
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        yield store
    finally:
        await store.close()


def _cancel_after(store: SqliteSessionStore, statement: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the writer's next ``statement`` run, then deliver a cancellation to whoever awaited it."""
    real = store.db.writer.execute
    armed = [statement]

    def execute(sql: str, *args: Any) -> Any:
        if armed and sql == armed[0]:
            armed.clear()

            async def ran_then_cancelled() -> Any:
                await real(sql, *args)
                raise asyncio.CancelledError

            return ran_then_cancelled()
        return real(sql, *args)

    monkeypatch.setattr(store.db.writer, "execute", execute)
    return armed


async def test_a_cancellation_landing_on_begin_never_leaves_the_transaction_open(
    sqlite_store: SqliteSessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = _cancel_after(sqlite_store, "BEGIN IMMEDIATE", monkeypatch)
    with pytest.raises(asyncio.CancelledError):
        async with sqlite_store.db.transaction() as writer:
            await writer.execute("INSERT INTO cursors (name, position) VALUES ('x', 1)")
    assert armed == []
    assert not sqlite_store.db.writer.in_transaction
    # the next writer starts its own transaction (before the fix: "cannot start a transaction within
    # a transaction", for every write from then on)
    await sqlite_store.create_session("", _record("s1"))
    assert await sqlite_store.get_session("s1", "") is not None
    assert await sqlite_store.get_cursor("x") == 0  # the cancelled block was rolled back


async def test_store_writes_run_to_their_end_when_their_caller_is_cancelled(
    sqlite_store: SqliteSessionStore,
) -> None:
    for attempt in range(40):
        task = asyncio.ensure_future(sqlite_store.create_session("", _record(f"s{attempt}")))
        for _ in range(attempt % 8):
            await asyncio.sleep(0)  # walk the cancellation point through the write
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not sqlite_store.db.writer.in_transaction
    # each write either happened whole or not at all, and the store still takes writes
    await sqlite_store.create_session("", _record("after"))
    page = await sqlite_store.db.reader.execute_fetchall("SELECT COUNT(*) FROM sessions")
    assert 1 <= next(iter(page))[0] <= 41


async def test_a_full_disk_is_reported_as_storage_unavailable(
    sqlite_store: SqliteSessionStore,
) -> None:
    # SQLite's own page cap gives the same SQLITE_FULL as a full disk
    await sqlite_store.db.writer.execute("PRAGMA max_page_count = 1")
    with pytest.raises(StorageUnavailable, match="disk is full"):
        await sqlite_store.create_session("", _record("big" + "x" * 10_000))
    assert not sqlite_store.db.writer.in_transaction


# ---------------------------------------------------------------- the hub's last write


class _GatedStore:
    """A store whose writes wait until the test opens the gate (enough of SessionStore for the writer)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.rows: list[tuple[str, int, bytes]] = []

    async def append_events(self, events: Sequence[tuple[str, int, bytes]]) -> None:
        self.writing.set()
        await self.gate.wait()
        self.rows.extend(events)

    async def set_cursor(self, name: str, position: int) -> None:
        return None


async def test_a_cancel_landing_on_the_final_flush_still_ends_the_session() -> None:
    store = _GatedStore()
    writer = EventWriter(store)  # type: ignore[arg-type]
    writer.start()
    hub = Hub(writer)
    live = hub.open("s", "")
    hub.emit(live, pb.OrchestrationEvent(session_started=pb.SessionStarted()))
    saved: list[int] = []

    async def save(event: pb.OrchestrationEvent) -> None:
        saved.append(event.sequence)

    ending = asyncio.ensure_future(
        hub.finish(live, pb.OrchestrationEvent(session_failed=pb.SessionFailed(reason="cancelled")), save)
    )
    await store.writing.wait()
    ending.cancel()  # a second cancel, landing while the terminal event is being made durable
    store.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await ending
    seen = [e async for e in live.follow(0)]
    assert kinds(seen) == ["session_started", "session_failed"]
    assert saved == [2] and live.done and hub.get("s") is None
    await writer.close()


async def test_watchers_see_only_durable_events() -> None:
    store = _GatedStore()
    writer = EventWriter(store)  # type: ignore[arg-type]
    writer.start()
    hub = Hub(writer)
    live = hub.open("s", "")
    hub.emit(live, pb.OrchestrationEvent(session_started=pb.SessionStarted()))
    await store.writing.wait()
    assert live.last_sequence == 0  # emitted, not yet committed: nobody may see it
    seen: list[pb.OrchestrationEvent] = []

    async def watch() -> None:
        async for event in live.follow(0):
            seen.append(event)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)
    assert seen == []
    store.gate.set()
    await wait_until(lambda: len(seen) == 1)
    assert [r[1] for r in store.rows] == [1]
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await writer.close()


# ---------------------------------------------------------------- concurrent cancels over gRPC


async def _cancel_storm(stack: Stack, rng: random.Random, repetitions: int) -> list[str]:
    stack.providers.block.add("m/alpha")
    ids: list[str] = []
    for _ in range(repetitions):
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1, detached=True), timeout=30)
        first = (await call.read()).event
        ids.append(first.session_id)
        cancels: list[Awaitable[Any]] = [
            stack.stub.CancelSession(pb.CancelSessionRequest(session_id=first.session_id, reason=f"c{i}"), timeout=30)
            for i in range(rng.randint(2, 5))
        ]
        if rng.random() < 0.5:
            call.cancel()  # and the client drops its stream at the same moment
        results = await asyncio.gather(*cancels, return_exceptions=True)
        for result in results:
            assert isinstance(result, pb.CancelSessionResponse), result
        call.cancel()
    return ids


async def test_concurrent_cancels_end_every_session_once_and_the_service_goes_on(stack: Stack) -> None:
    rng = random.Random(12)
    ids = await _cancel_storm(stack, rng, 100)
    for session_id in ids:
        record = (await stack.stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=10)).session
        assert record.status == pb.SESSION_STATUS_CANCELLED, (session_id, record.status, record.failure.reason)
        events = await asyncio.wait_for(stack.watch(session_id), 10)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        terminal = [e for e in events if e.WhichOneof("kind") in ("session_completed", "session_failed")]
        assert terminal == [events[-1]], kinds(events)
        assert events[-1].session_failed.status == pb.SESSION_STATUS_CANCELLED
    # the service still starts and finishes sessions
    stack.providers.block.clear()
    stack.providers.answers["m/alpha"] = ["fine quality=9"]
    events = await stack.run(prompt="after the storm", max_rounds=1)
    assert events[-1].HasField("session_completed")
    health = health_pb2_grpc.HealthStub(stack.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------- recovery


async def test_recovery_never_appends_a_second_terminal_event(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path)
    try:
        stack.providers.answers["m/alpha"] = ["done quality=9"]
        events = await stack.run(prompt="finish me", max_rounds=1)
        session_id = events[0].session_id
    finally:
        await stop_stack(stack)
    # the process died after the terminal event was stored but before the record was saved
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    record = await store.get_session(session_id, "")
    assert record is not None
    record.status = pb.SESSION_STATUS_RUNNING
    record.ClearField("result")
    await store.save_session(record)
    await store.close()
    again = await start_stack(tmp_path)
    try:
        got = (await again.stub.GetSession(pb.GetSessionRequest(session_id=session_id))).session
        assert got.status == pb.SESSION_STATUS_COMPLETED
        assert got.result.final_text == events[-1].session_completed.final_text
        replay = await again.watch(session_id)
        assert replay == events
    finally:
        await stop_stack(again)


# ---------------------------------------------------------------- critics


async def test_a_model_that_failed_as_author_is_not_asked_to_critique(stack: Stack) -> None:
    stack.providers.fail_before["m/alpha"] = grpc.StatusCode.UNAVAILABLE
    stack.providers.answers["m/beta"] = ["beta's answer quality=9"]
    events = await stack.run(prompt="hello", max_rounds=1, critic_count=3)
    assert events[-1].HasField("session_completed")
    critics = [e.critique_completed.critic_model for e in events if e.HasField("critique_completed")]
    assert critics and "m/alpha" not in critics and "m/beta" not in critics
    assert [c.model for c in stack.providers.calls].count("m/alpha") == 1


@pytest.mark.parametrize(
    ("code", "trailer", "expected"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "", common_pb2.FAILURE_KIND_AUTH),
        (grpc.StatusCode.FAILED_PRECONDITION, "", common_pb2.FAILURE_KIND_CREDITS),
        (grpc.StatusCode.UNAVAILABLE, "FAILURE_KIND_AUTH", common_pb2.FAILURE_KIND_AUTH),
        (grpc.StatusCode.UNAVAILABLE, "FAILURE_KIND_NO_SUCH_THING", common_pb2.FAILURE_KIND_UPSTREAM_ERROR),
    ],
)
async def test_a_rejected_key_and_missing_credits_have_their_own_failure_kinds(
    stack: Stack, code: grpc.StatusCode, trailer: str, expected: int
) -> None:
    stack.providers.fail_before["m/alpha"] = code
    if trailer:
        stack.providers.fail_kind["m/alpha"] = trailer
    stack.providers.answers["m/beta"] = ["beta's answer quality=9"]
    events = await stack.run(prompt="hello", max_rounds=1)
    fallback = next(e.provider_fallback for e in events if e.HasField("provider_fallback"))
    assert fallback.failed_model == "m/alpha" and fallback.failure_kind == expected


# ---------------------------------------------------------------- a full disk


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("needs root to mount a small tmpfs (CI and the dev machines run as root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    # Unbuffered, and the suppression outside the file: closing a buffered file on a full disk raises too.
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 65536)
    return filler


async def _health(stack: Stack) -> int:
    stub = health_pb2_grpc.HealthStub(stack.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    return int(reply.status)


async def _poll(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_a_full_disk_gives_unavailable_flips_health_and_recovers(small_disk: Path) -> None:
    stack = await start_stack(small_disk)
    try:
        words = " ".join(f"w{i}" for i in range(40))
        stack.providers.answers["m/alpha"] = ["before quality=9", f"during {words} quality=9", "after quality=9"]
        assert (await stack.run(prompt="before", max_rounds=1))[-1].HasField("session_completed")
        # a session in flight (streaming slowly) when the disk fills up
        stack.providers.chunk_pause = 0.02
        call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="during", max_rounds=1), timeout=60)
        first = (await call.read()).event
        filler = _fill(small_disk)
        # nothing can be written now: the service says NOT_SERVING and refuses new sessions
        serving = health_pb2.HealthCheckResponse.SERVING
        await _poll(lambda: _ok(_health(stack), lambda status: status != serving))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.run(prompt="refused", max_rounds=1)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "storage" in (refused.value.details() or "")
        # space returns: health comes back by itself, and nothing of the session in flight was lost
        filler.unlink()
        await _poll(lambda: _ok(_health(stack), lambda status: status == serving))
        seen = [first, *[r.event async for r in call]]
        assert seen[-1].HasField("session_completed")
        assert await stack.watch(first.session_id) == seen
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        stack.providers.chunk_pause = 0.0
        assert (await stack.run(prompt="after", max_rounds=1))[-1].HasField("session_completed")
    finally:
        await stop_stack(stack)


async def _ok(value: Awaitable[int], test: Callable[[int], bool]) -> bool:
    return test(await value)
