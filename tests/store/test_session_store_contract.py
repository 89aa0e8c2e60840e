"""One contract for every SessionStore: SQLite, the MongoDB implementation on the in-process double
(``mongo-double``) and, when ``ORX_TEST_MONGODB_URI`` is set, on a real MongoDB (``mongodb``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SEARCH_CHARS, LeaseRecord, RunningSession, SessionQuery, SessionStore
from services.orchestrator.store.mongo import MongoSessionStore
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.store.conftest import MongoTarget

Opener = Callable[[], Awaitable[SessionStore]]

RUNNING = pb.SESSION_STATUS_RUNNING
COMPLETED = pb.SESSION_STATUS_COMPLETED
FAILED = pb.SESSION_STATUS_FAILED
BASE_US = 1_780_000_000_000_000


@pytest.fixture
async def open_store(backend: str, tmp_path: Path, mongo_target: MongoTarget | None) -> AsyncIterator[Opener]:
    """Opens the backend's store on this test's data; may be called again to simulate a restart."""
    opened: list[SessionStore] = []

    async def opener() -> SessionStore:
        store: SessionStore
        if mongo_target is None:
            store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
        else:
            store = await mongo_target.open(MongoSessionStore)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Opener) -> SessionStore:
    return await open_store()


def session(
    sid: str | None = None, *, us: int = 0, status: int = RUNNING, thread: str = "", prompt: str = "hello"
) -> pb.Session:
    record = pb.Session(
        session_id=sid or f"s-{uuid.uuid4().hex[:12]}",
        status=status,  # type: ignore[arg-type]
        thread_id=thread,
        request=pb.OrchestrateRequest(prompt=prompt),
    )
    record.create_time.FromMicroseconds(BASE_US + us)
    return record


def event(sid: str, seq: int, text: str = "") -> tuple[str, int, bytes]:
    ev = pb.OrchestrationEvent(session_id=sid, sequence=seq)
    ev.response_delta.text = text or f"{sid}#{seq}"
    return (sid, seq, ev.SerializeToString())


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def all_pages(store: SessionStore, query: SessionQuery) -> list[str]:
    ids: list[str] = []
    token = ""
    for _ in range(100):
        page = await store.list_sessions(
            SessionQuery(
                tenant=query.tenant,
                page_size=query.page_size,
                page_token=token,
                status=query.status,
                thread_id=query.thread_id,
                start_us=query.start_us,
                end_us=query.end_us,
                prompt_contains=query.prompt_contains,
            )
        )
        assert len(page.sessions) <= query.page_size
        ids += [s.session_id for s in page.sessions]
        token = page.next_token
        if not token:
            return ids
    raise AssertionError("paging did not end")


# ----------------------------------------------------------------------------------------- sessions


async def test_create_get_and_tenant_isolation(store: SessionStore) -> None:
    a, b = tenant(), tenant()
    rec = session(prompt="what is WAL?")
    await store.create_session(a, rec)
    got = await store.get_session(rec.session_id, a)
    assert got == rec
    assert await store.get_session(rec.session_id, b) is None
    assert await store.get_session(rec.session_id, "") == rec
    assert await store.get_session("nope-" + uuid.uuid4().hex, "") is None


async def test_create_twice_fails_and_keeps_the_first(store: SessionStore) -> None:
    a = tenant()
    rec = session(prompt="first")
    await store.create_session(a, rec)
    again = pb.Session()
    again.CopyFrom(rec)
    again.request.prompt = "second"
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own integrity error
        await store.create_session(a, again)
    got = await store.get_session(rec.session_id, a)
    assert got is not None and got.request.prompt == "first"


async def test_save_session_replaces_status_and_record(store: SessionStore) -> None:
    a = tenant()
    rec = session()
    await store.create_session(a, rec)
    rec.status = COMPLETED
    rec.primary_model = "model-x"
    rec.result.final_text = "42"
    await store.save_session(rec)
    got = await store.get_session(rec.session_id, a)
    assert got is not None
    assert got.status == COMPLETED and got.primary_model == "model-x" and got.result.final_text == "42"
    # the status index follows the record
    assert rec.session_id not in {s.session_id for s in await store.running_sessions()}


async def test_list_newest_first_with_ties_and_paging(store: SessionStore) -> None:
    a = tenant()
    created = []
    for i in range(11):
        # pairs share a creation time: the session id breaks the tie, descending
        rec = session(f"s-{i:02d}-{uuid.uuid4().hex[:6]}", us=(i // 2) * 1000)
        await store.create_session(a, rec)
        created.append(rec)
    expected = [r.session_id for r in sorted(created, key=lambda r: (r.create_time.ToMicroseconds(), r.session_id))]
    expected.reverse()
    for size in (1, 3, 5, 11, 20):
        assert await all_pages(store, SessionQuery(tenant=a, page_size=size)) == expected
    first = await store.list_sessions(SessionQuery(tenant=a, page_size=11))
    assert first.next_token == ""
    assert [s.session_id for s in first.sessions] == expected


async def test_list_searches_prompts_literally_and_ignoring_case(store: SessionStore) -> None:
    a, b = tenant(), tenant()
    haiku = session(us=1_000, prompt="Write a HAIKU about write-ahead logging")
    percent = session(us=2_000, prompt="Why is 100% of_the cost in (a.*b)?", status=COMPLETED)
    german = session(us=3_000, prompt="Wie lang ist die Straße?")
    chat = session(us=4_000, prompt="")
    chat.request.messages.add(role=common_pb2.ROLE_USER, content="first question about kafka")
    chat.request.messages.add(role=common_pb2.ROLE_ASSISTANT, content="an answer about haiku")
    chat.request.messages.add(role=common_pb2.ROLE_USER, content="And what about Haiku?")
    for rec in (haiku, percent, german, chat):
        await store.create_session(a, rec)
    await store.create_session(b, session(us=5_000, prompt="another tenant's haiku"))

    async def found(text: str, **kw: object) -> list[str]:
        return await all_pages(store, SessionQuery(tenant=a, page_size=1, prompt_contains=text.casefold(), **kw))  # type: ignore[arg-type]

    assert await found("haiku") == [chat.session_id, haiku.session_id]  # newest first, paged one by one
    assert await found("WRITE-AHEAD") == [haiku.session_id]
    # No wildcard or pattern syntax: %, _, ., *, ( and ) are plain characters.
    assert await found("100% of_the") == [percent.session_id]
    assert await found("(a.*b)") == [percent.session_id]
    assert await found("a%b") == await found("a_b") == await found("a.b") == await found(".+") == []
    assert await found("STRASSE") == [german.session_id]  # Unicode case folding: ß is ss
    assert await found("kafka") == []  # only the last user message of a chat counts
    assert await found("haiku", status=COMPLETED) == []
    assert await found("cost", status=COMPLETED) == [percent.session_id]


async def test_search_covers_the_head_of_a_long_prompt(store: SessionStore) -> None:
    a = tenant()
    rec = session(prompt="needle-start " + "x" * SEARCH_CHARS + " needle-end")
    await store.create_session(a, rec)
    assert await all_pages(store, SessionQuery(tenant=a, prompt_contains="needle-start")) == [rec.session_id]
    assert await all_pages(store, SessionQuery(tenant=a, prompt_contains="needle-end")) == []


async def test_list_filters(store: SessionStore) -> None:
    a, b = tenant(), tenant()
    r1 = session(us=1_000, status=RUNNING, thread="th-1")
    r2 = session(us=2_000, status=COMPLETED, thread="th-1")
    r3 = session(us=3_000, status=COMPLETED, thread="th-2")
    r4 = session(us=4_000, status=FAILED)
    other = session(us=2_500, status=COMPLETED, thread="th-1")
    for rec in (r1, r2, r3, r4):
        await store.create_session(a, rec)
    await store.create_session(b, other)

    async def ids(**kw: object) -> list[str]:
        return await all_pages(store, SessionQuery(page_size=2, **kw))  # type: ignore[arg-type]

    assert await ids(tenant=a) == [r4.session_id, r3.session_id, r2.session_id, r1.session_id]
    assert await ids(tenant=a, status=COMPLETED) == [r3.session_id, r2.session_id]
    assert await ids(tenant=a, thread_id="th-1") == [r2.session_id, r1.session_id]
    assert await ids(tenant=a, start_us=BASE_US + 2_000, end_us=BASE_US + 4_000) == [r3.session_id, r2.session_id]
    assert await ids(tenant=b) == [other.session_id]
    everyone = await ids(start_us=BASE_US + 1_000, end_us=BASE_US + 4_001)
    assert set(everyone) >= {r1.session_id, r2.session_id, r3.session_id, r4.session_id, other.session_id}
    assert await ids(tenant=a, status=COMPLETED, thread_id="th-1", start_us=BASE_US + 1) == [r2.session_id]


async def test_thread_sessions_completed_oldest_first_most_recent(store: SessionStore) -> None:
    a, b = tenant(), tenant()
    thread = f"th-{uuid.uuid4().hex[:6]}"
    done = [session(us=i * 10, status=COMPLETED, thread=thread) for i in range(5)]
    for rec in done:
        await store.create_session(a, rec)
    await store.create_session(a, session(us=100, status=RUNNING, thread=thread))
    await store.create_session(a, session(us=101, status=FAILED, thread=thread))
    await store.create_session(b, session(us=102, status=COMPLETED, thread=thread))
    got = await store.thread_sessions(a, thread, 3)
    assert [s.session_id for s in got] == [r.session_id for r in done[2:]]
    assert await store.thread_sessions(a, "other-thread", 3) == []


async def test_running_sessions_survive_a_restart(open_store: Opener) -> None:
    first = await open_store()
    a = tenant()
    running = [session(status=RUNNING) for _ in range(3)]
    finished = session(status=COMPLETED)
    for rec in [*running, finished]:
        await first.create_session(a, rec)
    await first.append_events([event(running[0].session_id, 1), event(running[0].session_id, 2)])
    await first.close()
    second = await open_store()
    assert {s.session_id for s in await second.running_sessions()} == {r.session_id for r in running}
    assert await second.last_sequence(running[0].session_id) == 2
    # recovery appends the closing event after the last stored one
    await second.append_events([event(running[0].session_id, 3, "recovered")])
    assert len(await second.read_events(running[0].session_id, 0)) == 3


# ------------------------------------------------------------------------------------------- events


async def test_append_read_and_last_sequence(store: SessionStore) -> None:
    a = tenant()
    s1, s2 = session(), session()
    await store.create_session(a, s1)
    await store.create_session(a, s2)
    assert await store.last_sequence(s1.session_id) == 0
    assert await store.read_events(s1.session_id, 0) == []
    await store.append_events([event(s1.session_id, 1), event(s2.session_id, 1), event(s1.session_id, 2)])
    await store.append_events([event(s1.session_id, 3), event(s1.session_id, 4)])
    assert await store.last_sequence(s1.session_id) == 4
    assert await store.last_sequence(s2.session_id) == 1
    payloads = await store.read_events(s1.session_id, 0)
    assert [pb.OrchestrationEvent.FromString(p).sequence for p in payloads] == [1, 2, 3, 4]
    assert payloads[0] == event(s1.session_id, 1)[2]
    assert [pb.OrchestrationEvent.FromString(p).sequence for p in await store.read_events(s1.session_id, 2)] == [3, 4]
    limited = await store.read_events(s1.session_id, 1, limit=2)
    assert [pb.OrchestrationEvent.FromString(p).sequence for p in limited] == [2, 3]
    await store.append_events([])


async def test_reappend_is_idempotent_and_keeps_the_first_payload(store: SessionStore) -> None:
    a = tenant()
    s1 = session()
    await store.create_session(a, s1)
    sid = s1.session_id
    await store.append_events([event(sid, 1), event(sid, 2)])
    before = await store.events_after(0, 1000)
    # the same batch again, then one overlapping it (a retry after a partial failure)
    await store.append_events([event(sid, 1, "changed"), event(sid, 2)])
    await store.append_events([event(sid, 2), event(sid, 3), event(sid, 1)])
    payloads = await store.read_events(sid, 0)
    assert [pb.OrchestrationEvent.FromString(p).sequence for p in payloads] == [1, 2, 3]
    assert pb.OrchestrationEvent.FromString(payloads[0]).response_delta.text == f"{sid}#1"
    after = await store.events_after(0, 1000)
    assert [e.session_id for e in after].count(sid) == 3
    # the events already there keep their positions; the new one comes after them
    assert after[:2] == before
    assert after[2].position > before[-1].position


async def test_events_after_is_the_outbox_cursor(store: SessionStore) -> None:
    a, b = tenant(), tenant()
    s1, s2 = session(), session()
    await store.create_session(a, s1)
    await store.create_session(b, s2)
    batches = [
        [event(s1.session_id, 1), event(s2.session_id, 1)],
        [event(s1.session_id, 2)],
        [event(s2.session_id, 2), event(s1.session_id, 3), event(s2.session_id, 3)],
    ]
    for batch in batches:
        await store.append_events(batch)
    appended = [(sid, seq) for batch in batches for sid, seq, _ in batch]
    rows = await store.events_after(0, 1000)
    assert [(r.session_id, pb.OrchestrationEvent.FromString(r.payload).sequence) for r in rows] == appended
    positions = [r.position for r in rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {r.session_id: r.tenant for r in rows} == {s1.session_id: a, s2.session_id: b}
    # paging by position, as the outbox does, yields each event exactly once
    seen: list[int] = []
    cursor = 0
    while page := await store.events_after(cursor, 2):
        assert len(page) <= 2
        seen += [r.position for r in page]
        cursor = page[-1].position
    assert seen == positions
    assert await store.events_after(positions[-1], 10) == []
    assert [r.position for r in await store.events_after(positions[2], 2)] == positions[3:5]


async def test_events_of_unknown_sessions_are_left_out_without_stalling(store: SessionStore) -> None:
    a = tenant()
    known = session()
    await store.create_session(a, known)
    await store.append_events([event(f"ghost-{i}", 1) for i in range(5)])
    await store.append_events([event(known.session_id, 1)])
    rows = await store.events_after(0, 2)
    assert [r.session_id for r in rows] == [known.session_id]


async def test_cursors(store: SessionStore) -> None:
    name = f"c-{uuid.uuid4().hex[:6]}"
    assert await store.get_cursor(name) == 0
    await store.set_cursor(name, 10)
    assert await store.get_cursor(name) == 10
    await store.set_cursor(name, 25)
    await store.set_cursor(name, 20)  # never backwards
    assert await store.get_cursor(name) == 25
    assert await store.get_cursor(name + "-other") == 0


async def test_large_batch_in_one_call(store: SessionStore) -> None:
    a = tenant()
    sessions = [session() for _ in range(3)]
    for rec in sessions:
        await store.create_session(a, rec)
    batch = [event(rec.session_id, seq, "x" * 200) for seq in range(1, 335) for rec in sessions]
    assert len(batch) == 1002
    await store.append_events(batch)
    for rec in sessions:
        assert await store.last_sequence(rec.session_id) == 334
        got = await store.read_events(rec.session_id, 0, limit=1000)
        assert [pb.OrchestrationEvent.FromString(p).sequence for p in got] == list(range(1, 335))
    delivered = 0
    cursor = 0
    while page := await store.events_after(cursor, 500):
        delivered += len(page)
        cursor = page[-1].position
    assert delivered == 1002


async def test_concurrent_writers_and_an_outbox_reader_miss_nothing(store: SessionStore) -> None:
    """Appends from many coroutines while a reader follows the cursor: every event exactly once."""
    a = tenant()
    sessions = [session() for _ in range(8)]
    for rec in sessions:
        await store.create_session(a, rec)
    done = asyncio.Event()

    async def writer(rec: pb.Session) -> None:
        for start in range(1, 61, 6):
            await store.append_events([event(rec.session_id, seq) for seq in range(start, start + 6)])
            await asyncio.sleep(0)

    delivered: list[tuple[str, int]] = []

    async def reader() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            page = await store.events_after(cursor, 25)
            delivered.extend((r.session_id, pb.OrchestrationEvent.FromString(r.payload).sequence) for r in page)
            if page:
                cursor = page[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(rec) for rec in sessions))
    done.set()
    await asyncio.wait_for(reading, timeout=30)
    assert len(delivered) == len(set(delivered)) == 8 * 60
    for rec in sessions:
        own = [seq for sid, seq in delivered if sid == rec.session_id]
        assert own == list(range(1, 61))


# ------------------------------------------------------------------------------------------- leases


async def test_a_lease_has_one_holder_until_it_expires(store: SessionStore) -> None:
    name, now = f"lease-{uuid.uuid4().hex[:6]}", BASE_US
    assert await store.claim_lease(name, "a", now, now + 10) == LeaseRecord("a", now + 10)
    # another claimer is refused and told who holds it until when
    assert await store.claim_lease(name, "b", now + 5, now + 15) == LeaseRecord("a", now + 10)
    # the holder renews
    assert await store.claim_lease(name, "a", now + 6, now + 16) == LeaseRecord("a", now + 16)
    assert await store.claim_lease(name, "b", now + 12, now + 22) == LeaseRecord("a", now + 16)
    # once expired, anyone may take it; the old holder is then refused
    assert await store.claim_lease(name, "b", now + 16, now + 26) == LeaseRecord("b", now + 26)
    assert await store.claim_lease(name, "a", now + 17, now + 27) == LeaseRecord("b", now + 26)


async def test_a_lease_is_stolen_only_from_the_holder_named_dead(store: SessionStore) -> None:
    name, now = f"lease-{uuid.uuid4().hex[:6]}", BASE_US
    await store.claim_lease(name, "a", now, now + 10)
    assert await store.claim_lease(name, "c", now, now + 10, steal_from="b") == LeaseRecord("a", now + 10)
    assert await store.claim_lease(name, "c", now, now + 10, steal_from="a") == LeaseRecord("c", now + 10)


async def test_only_the_holder_releases_a_lease(store: SessionStore) -> None:
    name, now = f"lease-{uuid.uuid4().hex[:6]}", BASE_US
    await store.claim_lease(name, "a", now, now + 10)
    await store.release_lease(name, "b")
    assert (await store.claim_lease(name, "b", now, now + 10)).holder == "a"
    await store.release_lease(name, "a")
    assert (await store.claim_lease(name, "b", now, now + 10)).holder == "b"


async def test_concurrent_claims_from_separate_connections_have_one_winner(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(4)]
    name, now = f"lease-{uuid.uuid4().hex[:6]}", BASE_US
    claims = await asyncio.gather(
        *(s.claim_lease(name, f"holder-{i}", now, now + 10) for i, s in enumerate(stores) for _ in range(3))
    )
    winners = {c.holder for c in claims}
    assert len(winners) == 1
    assert sum(c == LeaseRecord(next(iter(winners)), now + 10) for c in claims) == len(claims)


# ----------------------------------------------------------------------------------------- replicas


async def test_running_sessions_carry_their_owner_and_one_adopter_wins(store: SessionStore) -> None:
    a = tenant()
    mine, legacy, done = session(us=1), session(us=2), session(us=3)
    await store.create_session(a, mine, owner="inst-a")
    await store.create_session(a, legacy)
    await store.create_session(a, done, owner="inst-a")
    done.status = COMPLETED
    await store.save_session(done)
    running = {r.session_id: r for r in await store.running_owners()}
    assert running[mine.session_id] == RunningSession(mine.session_id, "inst-a", None)
    assert running[legacy.session_id].owner == ""
    assert done.session_id not in running
    # Two replicas race to adopt the session of a dead instance: exactly one wins.
    wins = await asyncio.gather(
        store.adopt_session(mine.session_id, "inst-a", "inst-b"),
        store.adopt_session(mine.session_id, "inst-a", "inst-c"),
    )
    assert sorted(wins) == [False, True]
    winner = "inst-b" if wins[0] else "inst-c"
    assert {r.session_id: r.owner for r in await store.running_owners()}[mine.session_id] == winner
    assert await store.adopt_session(legacy.session_id, "", "inst-b")
    assert not await store.adopt_session(done.session_id, "inst-a", "inst-b")  # finished: nothing to adopt
    # saving the record keeps its owner
    await store.save_session(mine)
    assert {r.session_id: r.owner for r in await store.running_owners()}[mine.session_id] == winner


async def test_a_cancel_asked_for_reaches_the_owner_once_with_the_first_reason(store: SessionStore) -> None:
    a = tenant()
    owner = f"inst-{uuid.uuid4().hex[:6]}"
    rec, other, done = session(us=1), session(us=2), session(us=3)
    for r in (rec, other, done):
        await store.create_session(a, r, owner=owner)
    done.status = COMPLETED
    await store.save_session(done)
    assert await store.cancel_requests(owner) == []
    assert await store.request_cancel(rec.session_id, "cancelled: first")
    assert await store.request_cancel(rec.session_id, "cancelled: second")  # still running: asked again
    assert not await store.request_cancel(done.session_id, "too late")
    assert not await store.request_cancel("nope-" + uuid.uuid4().hex, "unknown")
    assert await store.cancel_requests(owner) == [RunningSession(rec.session_id, owner, "cancelled: first")]
    assert await store.cancel_requests("someone-else") == []
    rec.status = COMPLETED
    await store.save_session(rec)
    assert await store.cancel_requests(owner) == []  # ended: nothing left to cancel


async def test_get_lease_reads_what_claim_wrote(store: SessionStore) -> None:
    name = f"instance:{uuid.uuid4().hex[:8]}"
    assert await store.get_lease(name) is None
    await store.claim_lease(name, "me", 0, 1_000)
    assert await store.get_lease(name) == LeaseRecord("me", 1_000)
    await store.release_lease(name, "me")
    assert await store.get_lease(name) is None
