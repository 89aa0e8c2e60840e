"""The orchestrator's lease, and a start-up that cannot damage a live orchestrator's sessions.

Before the lease, ``build`` ran recovery (which fails every RUNNING session) before binding its port:
a start that then failed with "cannot listen", or a second orchestrator on the same database, marked the
live one's sessions failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestratex.config import Settings
from orchestratex.grpc_server import ListenError
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import server as orchestrator_server
from services.orchestrator.lease import LEASE_NAME, Holder, LeaseHeld, OrchestratorLease, provably_dead
from services.orchestrator.store.base import LeaseRecord, SessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import Stack, start_stack, stop_stack, wait_until

REMOTE = Holder("elsewhere", "boot-x", 4242, 77, "remote")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SessionStore]:
    opened = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    yield opened
    await opened.close()


# ------------------------------------------------------------------------------ identity


def test_a_holder_is_dead_only_when_provably_so() -> None:
    me = Holder.this_process()
    twin = Holder.this_process()  # another lease object in this very process: alive
    assert not provably_dead(twin, me)
    assert provably_dead(dataclasses.replace(twin, pid=_dead_pid()), me)
    # our pid, recorded with another start time: a previous process whose pid we reuse (container restart)
    assert provably_dead(dataclasses.replace(twin, started=twin.started + 1), me)
    # another machine, or this machine before its last boot: cannot tell, so never
    assert not provably_dead(dataclasses.replace(twin, pid=_dead_pid(), host="other"), me)
    assert not provably_dead(dataclasses.replace(twin, pid=_dead_pid(), boot="older"), me)
    assert Holder.decode(me.encode()) == me
    assert Holder.decode("not json") is None


# ------------------------------------------------------------------------------ the lease


async def test_a_second_orchestrator_is_refused_and_named(store: SessionStore) -> None:
    first = OrchestratorLease(store, 10)
    await first.acquire()
    second = OrchestratorLease(store, 10)
    with pytest.raises(LeaseHeld, match=rf"pid {first.holder.pid} on host {first.holder.host}.* until 20\d\d-"):
        await second.acquire()
    await first.release()
    await second.acquire()  # released: free at once
    await second.release()


async def test_a_crashed_remote_holder_blocks_until_its_lease_expires(store: SessionStore) -> None:
    clock = Clock()
    await store.claim_lease(LEASE_NAME, REMOTE.encode(), int(clock.now * 1e6), int((clock.now + 10) * 1e6))
    lease = OrchestratorLease(store, 10, clock=clock)
    clock.now += 9.9
    with pytest.raises(LeaseHeld, match="pid 4242 on host elsewhere"):
        await lease.acquire()
    clock.now += 0.1
    await lease.acquire()
    assert (await store.claim_lease(LEASE_NAME, "probe", int(clock.now * 1e6), 0)).holder == lease.holder.encode()


async def test_a_dead_holder_on_this_machine_is_taken_over_at_once(store: SessionStore) -> None:
    dead = dataclasses.replace(Holder.this_process(), pid=_dead_pid())
    clock = Clock()
    await store.claim_lease(LEASE_NAME, dead.encode(), int(clock.now * 1e6), int((clock.now + 600) * 1e6))
    lease = OrchestratorLease(store, 10, clock=clock)
    await lease.acquire()


async def test_a_holder_that_loses_its_lease_says_so(store: SessionStore) -> None:
    lease = OrchestratorLease(store, 0.3)
    await lease.acquire()
    lease.start()
    thief = Holder.this_process().encode()
    now = int(lease.clock() * 1e6)
    assert (await store.claim_lease(LEASE_NAME, thief, now, now + 60_000_000, steal_from=lease._me)).holder == thief
    await asyncio.wait_for(lease.lost.wait(), 10)
    await lease.release()
    # a lost lease is not released: the thief still holds it
    assert (await store.claim_lease(LEASE_NAME, "probe", now, now)).holder == thief


class FailingClaims(SqliteSessionStore):
    """A store whose lease writes fail (disk full, network partition)."""

    failing = False

    async def claim_lease(
        self, name: str, holder: str, now_us: int, until_us: int, *, steal_from: str | None = None
    ) -> LeaseRecord:
        if self.failing:
            raise OSError("cannot write")
        return await super().claim_lease(name, holder, now_us, until_us, steal_from=steal_from)


@pytest.mark.parametrize("shared", [False, True])
async def test_renewals_that_fail_lose_the_lease_only_on_a_shared_store(tmp_path: Path, shared: bool) -> None:
    store = FailingClaims((await SqliteSessionStore.open(tmp_path / "orchestrator.db")).db)
    store.shared = shared
    clock = Clock()
    lease = OrchestratorLease(store, 0.3, clock=clock)
    await lease.acquire()
    store.failing = True
    attempts = 0
    original = store.claim_lease

    async def counted(*args: object, **kwargs: object) -> LeaseRecord:
        nonlocal attempts
        attempts += 1
        clock.now += 0.2  # each failed renewal is a period later
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    store.claim_lease = counted  # type: ignore[method-assign]
    lease.start()
    if shared:
        await asyncio.wait_for(lease.lost.wait(), 10)
    else:
        await wait_until(lambda: attempts >= 6)  # well past the time to live: still ours
        assert not lease.lost.is_set()
    await lease.release()
    await store.close()


# ------------------------------------------------------------------------------ start-up cannot damage data


async def _running_session(stack: Stack) -> str:
    """A session whose author never answers (until cancelled): RUNNING for as long as the test wants."""
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="hold on", detached=True), timeout=30)
    first = await call.read()
    assert isinstance(first, pb.OrchestrateResponse)
    await wait_until(stack.providers.started.is_set)
    call.cancel()
    return first.event.session_id


async def _state(settings: Settings, session_id: str) -> tuple[int, list[str]]:
    store = await SqliteSessionStore.open(settings.common.data_dir / "orchestrator.db")
    try:
        record = await store.get_session(session_id, "")
        assert record is not None
        kinds = [
            str(pb.OrchestrationEvent.FromString(e).WhichOneof("kind")) for e in await store.read_events(session_id, 0)
        ]
        return record.status, kinds
    finally:
        await store.close()


async def test_a_start_that_cannot_listen_leaves_live_sessions_alone(tmp_path: Path) -> None:
    stack = await start_stack(tmp_path)
    try:
        session_id = await _running_session(stack)
        threads = threading.active_count()
        with pytest.raises(ListenError):
            await orchestrator_server.build(stack.settings, f"127.0.0.1:{stack.orchestrator.port}")
        status, kinds = await _state(stack.settings, session_id)
        assert status == pb.SESSION_STATUS_RUNNING
        assert "session_failed" not in kinds
        # everything the failed start acquired was released (the store's thread, channels)
        await wait_until(lambda: threading.active_count() <= threads)
        # and the live orchestrator carries on: its session is still its own to end, and new ones run
        await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id), timeout=30)
        assert (await stack.watch(session_id))[-1].session_failed.status == pb.SESSION_STATUS_CANCELLED
        stack.providers.block.clear()
        assert (await stack.run(prompt="quality=9 next"))[-1].WhichOneof("kind") == "session_completed"
    finally:
        await stop_stack(stack)


async def test_a_second_orchestrator_joins_as_a_replica_and_leaves_live_sessions_alone(tmp_path: Path) -> None:
    """SQLite takes several writers (WAL): a second orchestrator on the database is a replica. Its start-up sweep
    ends only the sessions of instances that are gone, so the first one's running session is untouched, and
    stopping the second one does not end it either."""
    stack = await start_stack(tmp_path)
    try:
        session_id = await _running_session(stack)
        second = await orchestrator_server.build(stack.settings, "127.0.0.1:0")
        await second.start()
        assert (await _state(stack.settings, session_id)) == (
            pb.SESSION_STATUS_RUNNING,
            ["session_started", "model_selected"],
        )
        await second.stop(0)
        status, kinds = await _state(stack.settings, session_id)
        assert status == pb.SESSION_STATUS_RUNNING and "session_failed" not in kinds
        await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id), timeout=30)
        assert (await stack.watch(session_id))[-1].session_failed.status == pb.SESSION_STATUS_CANCELLED
    finally:
        await stop_stack(stack)


async def test_sessions_without_an_owner_are_recovered_by_the_leader_once_the_old_lease_expires(
    tmp_path: Path,
) -> None:
    """A session of a release without replicas has no owner: only the holder of the database lease (which such a
    release held exclusively) may end it, so none does while the old orchestrator's lease runs."""
    settings = Settings.from_env(
        {"ORX_DATA_DIR": str(tmp_path), "ORX_OUTBOX_INTERVAL": "3600", "ORX_ORCHESTRATOR_LEASE_TTL": "0.6"}
    )
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    record = pb.Session(session_id="s-crashed", status=pb.SESSION_STATUS_RUNNING)
    await store.create_session("t", record)
    now = int(time.time() * 1e6)
    # a holder on another machine, killed without releasing: its lease still runs for a minute
    await store.claim_lease(LEASE_NAME, REMOTE.encode(), now, now + 60_000_000)
    srv = await orchestrator_server.build(settings, "127.0.0.1:0")
    try:
        assert (await _state(settings, "s-crashed")) == (pb.SESSION_STATUS_RUNNING, [])
        # ... and once it has expired, the orchestrator leads and recovers its session
        await store.claim_lease(LEASE_NAME, REMOTE.encode(), now, now)
        for _ in range(400):
            if (await _state(settings, "s-crashed"))[0] != pb.SESSION_STATUS_RUNNING:
                break
            await asyncio.sleep(0.025)  # polling the store's state, with a bound
        assert (await _state(settings, "s-crashed")) == (pb.SESSION_STATUS_FAILED, ["session_failed"])
    finally:
        await srv.stop(0)
        await store.close()
