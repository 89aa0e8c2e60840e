"""Fan-out: clients watching one session share one upstream call, each event is encoded once, and what is
queued for a socket goes out in one write — without letting a slow client hold the others back or one
tenant's call serve another tenant.

The orchestrator here is a small live fake: the test emits a session's events and every ``WatchSession`` call
follows them (the conftest fake only replays), recording each call's ``after_sequence``, tenant and end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.message import Message

from gateway.app import init_app
from gateway.events_json import (
    EncodedEvent,
    event_frame,
    event_json,
    fast_to_dict,
    set_converter,
    websocket_text_frame,
)
from gateway.security import hash_key
from gateway.state import GatewayOptions
from gateway.upstream import WATCH_BACKLOG
from gateway.ws import CONNECTIONS, Connection
from orchestratex import context as orx_context
from orchestratex.errors import NotFound
from orchestratex.grpc_server import ServiceBinding, create_server
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc

from .conftest import make_settings, scripted_events, wait_connections_closed

Client = TestClient[Any, Any]
KEY_A = "orx_fanout-key-of-tenant-a_0123"
KEY_A2 = "orx_fanout-second-key-of-tenant-a"
KEY_B = "orx_fanout-key-of-tenant-b_4567"


# ---- a live fake orchestrator -----------------------------------------------------------------------


@dataclass
class WatchCall:
    """One ``WatchSession`` call the fake served."""

    session_id: str
    after: int
    tenant: str
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    ended_normally: bool = False


@dataclass
class LiveSession:
    session_id: str
    tenant: str
    events: list[pb.OrchestrationEvent] = field(default_factory=list)
    waker: asyncio.Event = field(default_factory=asyncio.Event)


class LiveOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Sessions whose events the test emits; every watch follows them live until the terminal event."""

    def __init__(self) -> None:
        self.sessions: dict[str, LiveSession] = {}
        self.watch_calls: list[WatchCall] = []
        self.port = 0

    def create(self, tenant: str = "") -> str:
        session_id = f"live-{uuid.uuid4().hex}"
        self.sessions[session_id] = LiveSession(session_id, tenant)
        return session_id

    def emit(self, session_id: str, **kind: Any) -> pb.OrchestrationEvent:
        session = self.sessions[session_id]
        event = pb.OrchestrationEvent(session_id=session_id, sequence=len(session.events) + 1, **kind)
        event.time.GetCurrentTime()
        session.events.append(event)
        waker, session.waker = session.waker, asyncio.Event()
        waker.set()
        return event

    def delta(self, session_id: str, text: str = "text") -> pb.OrchestrationEvent:
        return self.emit(session_id, response_delta=pb.ResponseDelta(round=1, model="m", text=text))

    def finish(self, session_id: str) -> pb.OrchestrationEvent:
        return self.emit(session_id, session_completed=pb.SessionCompleted(final_text="done", rounds_used=1))

    def _visible(self, session_id: str) -> LiveSession | None:
        session = self.sessions.get(session_id)
        caller = orx_context.tenant.get()
        if session is None or (caller and session.tenant != caller):
            return None
        return session

    async def WatchSession(
        self, request: pb.WatchSessionRequest, context: Any
    ) -> AsyncIterator[pb.WatchSessionResponse]:
        call = WatchCall(request.session_id, request.after_sequence, orx_context.tenant.get())
        self.watch_calls.append(call)
        try:
            session = self._visible(request.session_id)
            if session is None:
                raise NotFound(f"session {request.session_id!r} not found")
            sent = request.after_sequence
            while True:
                waker = session.waker
                while sent < len(session.events):
                    event = session.events[sent]
                    sent += 1
                    yield pb.WatchSessionResponse(event=event)
                    if event.WhichOneof("kind") in ("session_completed", "session_failed"):
                        call.ended_normally = True
                        return
                await waker.wait()
        finally:
            call.closed.set()

    async def GetSession(self, request: pb.GetSessionRequest, context: Any) -> pb.GetSessionResponse:
        session = self._visible(request.session_id)
        if session is None:
            raise NotFound(f"session {request.session_id!r} not found")
        ended = bool(session.events) and session.events[-1].HasField("session_completed")
        status = pb.SESSION_STATUS_COMPLETED if ended else pb.SESSION_STATUS_RUNNING
        return pb.GetSessionResponse(
            session=pb.Session(session_id=session.session_id, status=status, last_sequence=len(session.events))
        )


@pytest.fixture
async def live() -> AsyncIterator[LiveOrchestrator]:
    servicer = LiveOrchestrator()
    binding = ServiceBinding(
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, servicer, "orchestratex.v1.OrchestratorService"
    )
    server = create_server([binding], "127.0.0.1:0")
    await server.start()
    servicer.port = server.port
    try:
        yield servicer
    finally:
        await server.stop(0)


Gateway = Callable[..., Awaitable[Client]]


@pytest.fixture
async def gateway(tmp_path: Path, live: LiveOrchestrator) -> AsyncIterator[Gateway]:
    """``await gateway(options=None, **env)``: a started gateway in front of the live fake."""
    clients: list[Client] = []

    async def factory(options: GatewayOptions | None = None, **env: str) -> Client:
        settings = make_settings(tmp_path, ORX_ORCHESTRATOR_ADDR=f"127.0.0.1:{live.port}", **env)
        client: Client = TestClient(TestServer(init_app(settings, options), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for client in clients:
            await client.close()


async def recv(ws: Any, within: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=within)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r} {msg.extra!r}"
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def watch(ws: Any, session_id: str, after: int = 0) -> None:
    await ws.send_json({"type": "watch", "session_id": session_id, "after_sequence": after})
    ack = await recv(ws)
    assert ack == {"type": "ack", "action": "watch", "session_id": session_id}, ack


async def sequences_until_end(ws: Any) -> list[int]:
    """The sequences of the events received until the stream's ``end``."""
    seen: list[int] = []
    while True:
        message = await recv(ws)
        if message["type"] == "end":
            return seen
        assert message["type"] == "event", message
        seen.append(int(message["event"]["sequence"]))


async def serving(ws: Any) -> None:
    """Return once the socket's connection is registered and answering (a refused detach proves it)."""
    await ws.send_json({"type": "detach", "session_id": "none-such"})
    assert (await recv(ws))["code"] == "NOT_FOUND"


def count_writes(connection: Connection, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every write of the socket's frames to its transport."""
    transport = connection._transport
    assert transport is not None
    real = transport.write
    writes: list[bytes] = []

    def write(data: Any) -> None:
        writes.append(bytes(data))
        real(data)

    monkeypatch.setattr(transport, "write", write)
    return writes


def keyed_env() -> dict[str, str]:
    keys = f"tenant-a:{hash_key(KEY_A)},tenant-a:{hash_key(KEY_A2)},tenant-b:{hash_key(KEY_B)}"
    return {"ORX_GATEWAY_API_KEYS": keys}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- encode once, share the call -------------------------------------------------------------------------


async def test_watchers_of_one_session_share_one_call_and_each_event_is_encoded_once(
    gateway: Gateway, live: LiveOrchestrator
) -> None:
    client = await gateway()
    session_id = live.create()
    converted: list[str] = []

    def counting(message: Message) -> dict[str, Any]:
        converted.append(message.DESCRIPTOR.full_name)
        return fast_to_dict(message)

    previous = set_converter(counting)
    try:
        sockets = [await client.ws_connect("/v1/ws") for _ in range(4)]
        for ws in sockets:
            await watch(ws, session_id)
        for n in range(5):
            live.delta(session_id, f"piece {n}")
        live.finish(session_id)
        for ws in sockets:
            assert await sequences_until_end(ws) == [1, 2, 3, 4, 5, 6]
            await ws.close()
    finally:
        set_converter(previous)
    assert [(c.session_id, c.after) for c in live.watch_calls] == [(session_id, 0)]
    # Six events, four sockets: six conversions, not twenty-four.
    assert converted.count("orchestratex.v1.OrchestrationEvent") == 6


async def test_a_client_resuming_within_the_backlog_joins_and_its_replay_goes_out_in_one_write_in_order(
    gateway: Gateway, live: LiveOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await gateway()
    session_id = live.create()
    first = await client.ws_connect("/v1/ws")
    await watch(first, session_id)
    for n in range(10):
        live.delta(session_id, f"piece {n}")
    for expected in range(1, 11):
        assert int((await recv(first))["event"]["sequence"]) == expected
    second = await client.ws_connect("/v1/ws")
    await serving(second)
    (connection,) = [c for c in client.app[CONNECTIONS] if len(c._streams) == 0]
    writes = count_writes(connection, monkeypatch)
    await second.send_json({"type": "watch", "session_id": session_id, "after_sequence": 3})
    assert (await recv(second))["action"] == "watch"
    assert [int((await recv(second))["event"]["sequence"]) for _ in range(7)] == list(range(4, 11))
    # The ack and the seven events from the shared call's backlog were queued together: one write.
    assert len(writes) == 1 and writes[0].count(b'"type":"event"') == 7
    live.finish(session_id)
    assert await sequences_until_end(first) == [11]
    assert await sequences_until_end(second) == [11]
    assert len(live.watch_calls) == 1
    await first.close()
    await second.close()


async def test_messages_queued_in_one_loop_iteration_are_written_together_in_order(
    gateway: Gateway, live: LiveOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await gateway()
    async with client.ws_connect("/v1/ws") as ws:
        await serving(ws)
        (connection,) = client.app[CONNECTIONS]
        writes = count_writes(connection, monkeypatch)
        for n in range(50):
            connection._send({"type": "ack", "action": "probe", "n": n}, ref=None)
        assert [(await recv(ws))["n"] for _ in range(50)] == list(range(50))
        assert len(writes) == 1


async def test_a_client_too_far_behind_the_shared_call_gets_its_own(gateway: Gateway, live: LiveOrchestrator) -> None:
    client = await gateway()
    session_id = live.create()
    first = await client.ws_connect("/v1/ws")
    await watch(first, session_id)
    total = WATCH_BACKLOG + 6
    for n in range(total):
        live.delta(session_id, f"piece {n}")
    for expected in range(1, total + 1):
        assert int((await recv(first))["event"]["sequence"]) == expected
    late = await client.ws_connect("/v1/ws")
    await watch(late, session_id, after=0)  # the backlog no longer holds event 1
    live.finish(session_id)
    assert await sequences_until_end(late) == list(range(1, total + 2))
    assert await sequences_until_end(first) == [total + 1]
    assert [c.after for c in live.watch_calls] == [0, 0]
    await first.close()
    await late.close()


async def test_the_call_lives_while_one_watcher_is_left_and_the_last_to_leave_cancels_it(
    gateway: Gateway, live: LiveOrchestrator
) -> None:
    client = await gateway()
    session_id = live.create()
    leaving, staying = await client.ws_connect("/v1/ws"), await client.ws_connect("/v1/ws")
    await watch(leaving, session_id)
    await watch(staying, session_id)
    live.delta(session_id)
    assert int((await recv(leaving))["event"]["sequence"]) == 1
    await leaving.close()
    live.delta(session_id)
    assert [int((await recv(staying))["event"]["sequence"]) for _ in range(2)] == [1, 2]
    (call,) = live.watch_calls
    assert not call.closed.is_set()
    await staying.close()
    await asyncio.wait_for(call.closed.wait(), 10)
    assert not call.ended_normally  # cancelled by the gateway; the session itself runs on
    await wait_connections_closed(client)


async def test_a_slow_watcher_of_a_shared_session_does_not_stall_the_others(
    gateway: Gateway, live: LiveOrchestrator
) -> None:
    client = await gateway(GatewayOptions(send_queue_size=8))
    session_id = live.create()
    slow, reader = await client.ws_connect("/v1/ws"), await client.ws_connect("/v1/ws")
    await watch(slow, session_id)
    await watch(reader, session_id)
    # 400 events of 64 KiB (25 MiB): far more than the socket buffers hold while `slow` reads nothing.
    count = 400
    for n in range(count):
        live.delta(session_id, chr(ord("a") + n % 26) * (64 * 1024))
    live.finish(session_id)
    assert await sequences_until_end(reader) == list(range(1, count + 2))
    (call,) = live.watch_calls
    assert call.ended_normally  # the reader got the whole session from the one shared call
    close = None
    for _ in range(count + 2):
        msg = await slow.receive(timeout=10)
        if msg.type is not WSMsgType.TEXT:
            close = msg
            break
    assert close is not None and close.type is WSMsgType.CLOSE
    assert (close.data, close.extra) == (1008, "consumer too slow: send queue full")
    await reader.close()
    await wait_connections_closed(client)


async def test_a_shared_call_never_serves_another_tenant(gateway: Gateway, live: LiveOrchestrator) -> None:
    client = await gateway(**keyed_env())
    session_id = live.create(tenant="tenant-a")
    owner = await client.ws_connect("/v1/ws", headers=bearer(KEY_A))
    await watch(owner, session_id)
    stranger = await client.ws_connect("/v1/ws", headers=bearer(KEY_B))
    await watch(stranger, session_id)
    error = await recv(stranger)
    assert (error["type"], error["code"], error["session_id"]) == ("error", "NOT_FOUND", session_id)
    colleague = await client.ws_connect("/v1/ws", headers=bearer(KEY_A2))  # another key of tenant-a
    await watch(colleague, session_id)
    live.delta(session_id)
    live.finish(session_id)
    assert await sequences_until_end(owner) == [1, 2]
    assert await sequences_until_end(colleague) == [1, 2]
    # tenant-a's call served both of its sockets; tenant-b got a call of its own, refused upstream.
    assert sorted(c.tenant for c in live.watch_calls) == ["tenant-a", "tenant-b"]
    # Nothing reached the stranger: had it been served by tenant-a's call, the events would precede this reply.
    await serving(stranger)
    for ws in (owner, stranger, colleague):
        await ws.close()


async def test_the_same_session_id_under_two_tenants_keeps_two_calls(gateway: Gateway, live: LiveOrchestrator) -> None:
    client = await gateway(**keyed_env())
    session_id = live.create(tenant="tenant-b")
    mine = await client.ws_connect("/v1/ws", headers=bearer(KEY_B))
    await watch(mine, session_id)
    theirs = await client.ws_connect("/v1/ws", headers=bearer(KEY_A))
    await watch(theirs, session_id)
    assert (await recv(theirs))["code"] == "NOT_FOUND"
    # tenant-a's refused call must not have replaced tenant-b's shared one: a second tenant-b socket joins it.
    again = await client.ws_connect("/v1/ws", headers=bearer(KEY_B))
    await watch(again, session_id)
    live.finish(session_id)
    assert await sequences_until_end(mine) == [1]
    assert await sequences_until_end(again) == [1]
    assert sorted(c.tenant for c in live.watch_calls) == ["tenant-a", "tenant-b"]
    for ws in (mine, theirs, again):
        await ws.close()


# ---- Server-Sent Events on the shared calls ---------------------------------------------------------


def sse_ids(raw: bytes) -> list[int]:
    ids = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("id: "):
                ids.append(int(line.removeprefix("id: ")))
    return ids


async def test_sse_and_websocket_watchers_share_one_call(gateway: Gateway, live: LiveOrchestrator) -> None:
    client = await gateway()
    session_id = live.create()
    live.delta(session_id)
    ws = await client.ws_connect("/v1/ws")
    await watch(ws, session_id)
    assert int((await recv(ws))["event"]["sequence"]) == 1
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    assert response.status == 200
    live.delta(session_id)
    live.finish(session_id)
    assert sse_ids(await response.content.read()) == [1, 2, 3]
    assert await sequences_until_end(ws) == [2, 3]
    assert len(live.watch_calls) == 1
    await ws.close()


async def test_an_sse_client_too_slow_for_a_shared_call_continues_on_its_own_without_gap(
    gateway: Gateway, live: LiveOrchestrator
) -> None:
    client = await gateway(GatewayOptions(send_queue_size=4))
    session_id = live.create()
    ws = await client.ws_connect("/v1/ws")
    await watch(ws, session_id)
    response = await client.get(f"/v1/orchestrations/{session_id}/events")
    assert await response.content.readuntil(b"\n\n") == b"retry: 2000\n\n"
    # 200 events of 64 KiB while the SSE client reads nothing: its writes stall, its queue of 4 overflows.
    count = 200
    for n in range(count):
        live.delta(session_id, chr(ord("a") + n % 26) * (64 * 1024))
    live.finish(session_id)
    # The WebSocket watcher is not held back by the stalled SSE client.
    assert await sequences_until_end(ws) == list(range(1, count + 2))
    raw = await response.content.read()
    assert sse_ids(raw) == list(range(1, count + 2))
    shared, own = live.watch_calls
    assert shared.after == 0 and 0 < own.after < count
    await ws.close()


# ---- encodings ----------------------------------------------------------------------------------------


def test_an_encoded_event_is_byte_for_byte_what_each_client_got_before() -> None:
    for event in scripted_events("sess-1", pb.OrchestrateRequest(prompt="ünïcødé ✓")):
        encoded = EncodedEvent(event)
        assert encoded.ws_message == event_frame(event)
        assert encoded.json == event_json(event)
        assert encoded.sse_frame == b"id: %d\ndata: %s\n\n" % (event.sequence, event_json(event))
        assert encoded.sequence == event.sequence and encoded.session_id == "sess-1"
        assert encoded.terminal == (event.WhichOneof("kind") == "session_completed")
        assert encoded.ws_frame is encoded.ws_frame  # built once


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_a_websocket_text_frame_has_the_rfc_6455_header(size: int) -> None:
    payload = b"x" * size
    frame = websocket_text_frame(payload)
    assert frame[0] == 0x81  # FIN, text
    length, offset = frame[1], 2
    assert length & 0x80 == 0  # servers never mask
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    assert (length, frame[offset:]) == (size, payload)
    assert offset == (2 if size < 126 else 4 if size < 65536 else 10)


def test_encoding_is_lazy_and_json_only_once() -> None:
    calls: list[str] = []

    def counting(message: Message) -> dict[str, Any]:
        calls.append(message.DESCRIPTOR.full_name)
        return fast_to_dict(message)

    previous = set_converter(counting)
    try:
        encoded = EncodedEvent(pb.OrchestrationEvent(session_id="s", sequence=1))
        assert calls == []
        frames = (encoded.ws_frame, encoded.sse_frame, encoded.json, encoded.ws_frame)
    finally:
        set_converter(previous)
    assert calls == ["orchestratex.v1.OrchestrationEvent"]
    assert orjson.loads(frames[2]) == {"session_id": "s", "sequence": "1"}
