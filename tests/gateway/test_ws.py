"""WebSocket /v1/ws against fake peers: events, watch, cancellation propagation, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from google.protobuf import json_format

from gateway.state import GatewayOptions
from orchestratex.v1 import orchestrator_pb2 as pb

from .conftest import GatewayFactory, Peers, make_settings, wait_connections_closed, wait_until

Client = TestClient[Any, Any]


async def recv(ws: Any, within: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=within)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r} {msg.extra!r}"
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def recv_until(ws: Any, done: Callable[[dict[str, Any]], bool], limit: int = 100) -> list[dict[str, Any]]:
    messages = []
    for _ in range(limit):
        message = await recv(ws)
        messages.append(message)
        if done(message):
            return messages
    raise AssertionError(f"no final message in {messages}")


def orchestrate(prompt: str, ref: Any = None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "orchestrate", "request": {"prompt": prompt, **fields}}
    if ref is not None:
        message["ref"] = ref
    return message


async def start_blocking(ws: Any, peers: Peers, **fields: Any) -> str:
    """Start a session that stays running; returns its id after its two first events."""
    await ws.send_json(orchestrate("block until cancelled", ref="b1", **fields))
    ack = await recv(ws)
    assert ack == {"type": "ack", "action": "orchestrate", "session_id": ack["session_id"], "ref": "b1"}
    session_id: str = ack["session_id"]
    first, second = await recv(ws), await recv(ws)
    assert "session_started" in first["event"] and "model_selected" in second["event"]
    assert session_id in peers.orchestrator.sessions
    return session_id


# ---- orchestrate ---------------------------------------------------------------------------------


async def test_orchestrate_streams_every_event_in_order_as_canonical_json(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("complete write add()", ref=7, maxRounds=2, qualityThreshold=7.5))
        messages = await recv_until(ws, lambda m: m["type"] == "end")
    ack, *event_messages, end = messages
    session_id = ack["session_id"]
    assert ack == {"type": "ack", "action": "orchestrate", "session_id": session_id, "ref": 7}
    assert end == {"type": "end", "session_id": session_id, "ref": 7}
    expected = [
        json_format.MessageToDict(e, preserving_proto_field_name=True)
        for e in peers.orchestrator.sessions[session_id].events
    ]
    assert [m["type"] for m in event_messages] == ["event"] * len(expected)
    assert [m["event"] for m in event_messages] == expected
    assert [int(m["event"]["sequence"]) for m in event_messages] == list(range(1, len(expected) + 1))
    # The gateway always starts sessions detached upstream, and passes the client's fields on.
    upstream = peers.orchestrator.orchestrate_requests[-1]
    assert upstream.detached is True
    assert upstream.max_rounds == 2 and upstream.quality_threshold == 7.5
    await wait_connections_closed(client)
    assert peers.orchestrator.cancel_requests == []  # it finished: nothing to cancel


async def test_closing_the_socket_cancels_the_stream_and_the_session(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        session_id = await start_blocking(ws, peers)
        assert not peers.orchestrator.orchestrate_stream_cancelled.is_set()
    await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 5)
    await wait_connections_closed(client)
    assert [(r.session_id, r.reason) for r in peers.orchestrator.cancel_requests] == [
        (session_id, "client disconnected")
    ]
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_CANCELLED


async def test_detach_keeps_the_session_running_after_close(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        session_id = await start_blocking(ws, peers)
        await ws.send_json({"type": "detach", "session_id": session_id, "ref": "d"})
        assert await recv(ws) == {"type": "ack", "action": "detach", "session_id": session_id, "ref": "d"}
    await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 5)
    await wait_connections_closed(client)
    assert peers.orchestrator.cancel_requests == []
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING


async def test_detached_in_the_request_means_detached_from_the_start(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        session_id = await start_blocking(ws, peers, detached=True)
    await wait_connections_closed(client)
    await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 5)
    assert peers.orchestrator.cancel_requests == []
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING


async def test_cancel_message_cancels_the_session(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        session_id = await start_blocking(ws, peers)
        await ws.send_json({"type": "cancel", "session_id": session_id, "ref": 3})
        # The ack answers the cancel call and the end closes the session's stream: two tasks, either may be
        # first (the protocol does not order them).
        seen: set[str] = set()

        def both(message: dict[str, Any]) -> bool:
            seen.add(message["type"])
            return {"ack", "end"} <= seen

        messages = await recv_until(ws, both)
        kinds = [m["type"] for m in messages]
        assert sorted(kinds) == ["ack", "end", "event"]
        ack = next(m for m in messages if m["type"] == "ack")
        assert ack == {
            "type": "ack",
            "action": "cancel",
            "session_id": session_id,
            "status": "SESSION_STATUS_CANCELLED",
            "ref": 3,
        }
        failed = next(m for m in messages if m["type"] == "event")["event"]["session_failed"]
        assert failed["status"] == "SESSION_STATUS_CANCELLED"
    await wait_connections_closed(client)
    # Exactly the client's cancel: the session had ended when the socket closed.
    assert [r.reason for r in peers.orchestrator.cancel_requests] == ["cancelled by the client"]


async def test_upstream_error_before_first_event(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("invalid request", ref="x"))
        assert await recv(ws) == {
            "type": "error",
            "code": "INVALID_ARGUMENT",
            "status": 400,
            "field": "max_rounds",
            "message": "max_rounds: must be in [1, 10], got 99",
            "ref": "x",
        }


async def test_upstream_error_mid_stream_names_the_session(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("midfail please"))
        ack = await recv(ws)
        event = await recv(ws)
        error = await recv(ws)
    assert event["type"] == "event"
    assert error == {
        "type": "error",
        "code": "UNAVAILABLE",
        "status": 503,
        "message": "providers are unavailable: every model's circuit is open",
        "session_id": ack["session_id"],
    }


async def test_orchestrator_down_gives_a_clean_unavailable_error(
    gateway_factory: GatewayFactory, tmp_path: Any
) -> None:
    settings = make_settings(tmp_path, ORX_ORCHESTRATOR_ADDR="127.0.0.1:1", ORX_PROVIDERS_ADDR="127.0.0.1:1")
    client = await gateway_factory(settings_=settings)
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("hello"))
        error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "UNAVAILABLE"
    assert error["message"] == "the orchestrator service is unavailable; try again later"


# ---- watch ---------------------------------------------------------------------------------------


async def test_watch_replays_after_sequence_then_ends(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("complete"))
        first = await recv_until(ws, lambda m: m["type"] == "end")
        session_id = first[0]["session_id"]
        await ws.send_json({"type": "watch", "session_id": session_id, "after_sequence": "3", "ref": "w"})
        messages = await recv_until(ws, lambda m: m["type"] == "end")
    assert messages[0] == {"type": "ack", "action": "watch", "session_id": session_id, "ref": "w"}
    assert messages[-1] == {"type": "end", "session_id": session_id, "ref": "w"}
    expected = [
        json_format.MessageToDict(e, preserving_proto_field_name=True)
        for e in peers.orchestrator.sessions[session_id].events[3:]
    ]
    assert [m["event"] for m in messages[1:-1]] == expected
    assert peers.orchestrator.watch_requests[-1].after_sequence == 3


async def test_envelopes_are_snake_case_and_camel_case_input_is_accepted(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("complete"))
        session_id = (await recv_until(ws, lambda m: m["type"] == "end"))[0]["session_id"]
        await ws.send_json({"type": "watch", "sessionId": session_id, "afterSequence": 3, "ref": "w"})
        messages = await recv_until(ws, lambda m: m["type"] == "end")
        assert messages[0] == {"type": "ack", "action": "watch", "session_id": session_id, "ref": "w"}
        assert messages[-1] == {"type": "end", "session_id": session_id, "ref": "w"}
        assert peers.orchestrator.watch_requests[-1].after_sequence == 3
        await ws.send_json({"type": "cancel", "sessionId": session_id, "ref": "c"})
        ack = await recv(ws)
        assert ack["action"] == "cancel" and ack["session_id"] == session_id and "sessionId" not in ack
        await ws.send_json({"type": "detach", "sessionId": "sess-other", "ref": "d"})
        refused = await recv(ws)
        assert refused["field"] == "sessionId" and refused["session_id"] == "sess-other"


async def test_closing_a_watch_only_cancels_the_stream(client: Client, peers: Peers) -> None:
    started = await client.post("/v1/orchestrations", json={"prompt": "block"})
    assert started.status == 201
    session_id = (await started.json())["session_id"]
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "watch", "session_id": session_id})
        assert (await recv(ws))["action"] == "watch"
        replayed = [await recv(ws), await recv(ws)]
        assert [m["event"]["sequence"] for m in replayed] == ["1", "2"]
        # A second stream of the same session on one socket is refused.
        await ws.send_json({"type": "watch", "session_id": session_id})
        refused = await recv(ws)
        assert refused["code"] == "FAILED_PRECONDITION" and refused["session_id"] == session_id
    await asyncio.wait_for(peers.orchestrator.watch_stream_cancelled.wait(), 5)
    await wait_connections_closed(client)
    assert peers.orchestrator.cancel_requests == []
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING


async def test_watch_unknown_session_is_not_found(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "watch", "session_id": "sess-nope"})
        assert (await recv(ws))["type"] == "ack"
        error = await recv(ws)
    assert error == {
        "type": "error",
        "code": "NOT_FOUND",
        "status": 404,
        "message": "session 'sess-nope' not found",
        "session_id": "sess-nope",
    }


# ---- bad input -----------------------------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, str]] = [
    ("{not json", "message: malformed JSON"),
    ("[1, 2]", "message: expected a JSON object, got an array"),
    ('"text"', "message: expected a JSON object, got a string"),
    ("{}", "type: is required"),
    ('{"type": 5}', "type: unknown message type '5'"),
    ('{"type": "launch"}', "type: unknown message type 'launch'"),
    ('{"type": "orchestrate"}', "request: is required"),
    ('{"type": "orchestrate", "request": "hi"}', "request: expected an OrchestrateRequest object, got a string"),
    ('{"type": "orchestrate", "request": {}}', "request.prompt: is required"),
    ('{"type": "orchestrate", "request": {"prompt": "  "}}', "request.prompt: is required"),
    (
        '{"type": "orchestrate", "request": {"prompt": "x", "maxRounds": "many"}}',
        "request.maxRounds: expected an integer",
    ),
    ('{"type": "orchestrate", "request": {"prompt": "x", "colour": 1}}', "request.colour: unknown field"),
    ('{"type": "orchestrate", "request": {"prompt": "x", "timeLimit": "5"}}', "request.timeLimit: expected a duration"),
    ('{"type": "watch"}', "session_id: is required"),
    ('{"type": "watch", "session_id": 12}', "session_id: expected a string, got a number"),
    ('{"type": "watch", "session_id": ""}', "session_id: must not be blank"),
    ('{"type": "watch", "session_id": "s", "after_sequence": "soon"}', "after_sequence: expected an integer"),
    ('{"type": "watch", "session_id": "s", "after_sequence": -1}', "after_sequence: must be between 0 and"),
    ('{"type": "cancel"}', "session_id: is required"),
    ('{"type": "detach"}', "session_id: is required"),
    ('{"type": "cancel", "session_id": "s", "ref": [1]}', "ref: expected a string or an integer"),
    # lowerCamelCase input is accepted, and errors name the field as the client spelt it
    ('{"type": "watch", "sessionId": 12}', "sessionId: expected a string, got a number"),
    ('{"type": "watch", "sessionId": "s", "afterSequence": -1}', "afterSequence: must be between 0 and"),
    ('{"type": "cancel", "sessionId": "s", "session_id": "s"}', "sessionId: is given twice"),
    ('{"type": "watch", "session_id": "s", "after_sequence": 1, "afterSequence": 1}', "afterSequence: is given twice"),
]


async def test_bad_messages_get_clear_errors_and_the_socket_survives(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        for raw, expected in BAD_MESSAGES:
            await ws.send_str(raw)
            error = await recv(ws)
            assert error["type"] == "error", raw
            assert error["code"] == "INVALID_ARGUMENT", raw
            assert expected in error["message"], (raw, error["message"])
            assert "Traceback" not in error["message"]
        # The ref is echoed on errors once the message is an object.
        await ws.send_json({"type": "watch", "ref": "r-1"})
        assert (await recv(ws))["ref"] == "r-1"
        # Detaching a session this socket did not start is refused with the id.
        await ws.send_json({"type": "detach", "session_id": "sess-other"})
        detach = await recv(ws)
        assert detach["code"] == "NOT_FOUND" and detach["session_id"] == "sess-other"
        assert "session_id" in detach["message"]
        # Still usable.
        await ws.send_json(orchestrate("complete"))
        messages = await recv_until(ws, lambda m: m["type"] == "end")
        assert messages[-2]["event"]["session_completed"]["final_score"] == 8.5
    # None of the bad messages reached the orchestrator.
    assert len(peers.orchestrator.orchestrate_requests) == 1


async def test_too_long_prompt_is_refused_at_the_gateway(
    gateway_factory: GatewayFactory, tmp_path: Any, peers: Peers
) -> None:
    settings = make_settings(
        tmp_path,
        ORX_ORCHESTRATOR_ADDR=f"127.0.0.1:{peers.orchestrator_server.port}",
        ORX_PROVIDERS_ADDR=f"127.0.0.1:{peers.providers_server.port}",
        ORX_MAX_PROMPT_CHARS="10",
    )
    client = await gateway_factory(settings_=settings)
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(orchestrate("x" * 11))
        error = await recv(ws)
    assert error["message"] == "request.prompt: is 11 characters; the limit is 10"
    assert peers.orchestrator.orchestrate_requests == []


async def test_binary_frame_closes_with_1003(client: Client) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_bytes(b'{"type": "watch"}')
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1003
        assert "binary frames are not supported" in (msg.extra or "")


async def test_oversized_frame_closes_with_1009(client: Client, peers: Peers) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_str(json.dumps(orchestrate("x" * (1024 * 1024 + 1))))
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1009
    assert peers.orchestrator.orchestrate_requests == []


async def test_slow_consumer_is_disconnected_with_1008(gateway_factory: GatewayFactory, peers: Peers) -> None:
    client = await gateway_factory(GatewayOptions(send_queue_size=8))
    async with client.ws_connect("/v1/ws") as ws:
        # 400 deltas of 64 KiB (25 MiB) while the client reads nothing: more than any socket
        # buffer holds, so the gateway's 8-message queue must overflow.
        await ws.send_json(orchestrate(f"flood {400} {64 * 1024}"))
        await asyncio.wait_for(peers.orchestrator.orchestrate_stream_cancelled.wait(), 20)
        close = None
        for _ in range(1000):
            msg = await ws.receive(timeout=10)
            if msg.type is not WSMsgType.TEXT:
                close = msg
                break
        assert close is not None and close.type is WSMsgType.CLOSE
        assert close.data == 1008
        assert close.extra == "consumer too slow: send queue full"
    await wait_connections_closed(client)
    session_id = next(iter(peers.orchestrator.sessions))
    assert [r.session_id for r in peers.orchestrator.cancel_requests] == [session_id]


async def test_too_many_streams_per_socket(gateway_factory: GatewayFactory, peers: Peers) -> None:
    client = await gateway_factory(GatewayOptions(max_streams_per_socket=1))
    async with client.ws_connect("/v1/ws") as ws:
        await start_blocking(ws, peers)
        await ws.send_json(orchestrate("block again", ref=2))
        error = await recv(ws)
    assert error == {
        "type": "error",
        "code": "RESOURCE_EXHAUSTED",
        "status": 429,
        "message": "too many concurrent streams on this socket (limit 1)",
        "ref": 2,
    }
    await wait_until(lambda: len(peers.orchestrator.cancel_requests) == 1, what="the first session's cancel")


async def test_plain_get_on_the_socket_endpoint_is_refused(client: Client) -> None:
    response = await client.get("/v1/ws")
    assert response.status == 426
    body = await response.json()
    assert body["error"]["code"] == "FAILED_PRECONDITION"
    assert "WebSocket" in body["error"]["message"]


# ---- resume after a cut connection ---------------------------------------------------------------


async def test_reconnect_resumes_with_no_gap_and_no_duplicate(client: Client, peers: Peers) -> None:
    """Cut the TCP connection mid-session (no close frame), reconnect, watch from the last sequence."""
    received: list[int] = []
    ws = await client.ws_connect("/v1/ws")
    await ws.send_json(orchestrate("flood 40 10", detached=True))
    session_id = (await recv(ws))["session_id"]
    while len(received) < 15:
        message = await recv(ws)
        if message["type"] == "event":
            received.append(int(message["event"]["sequence"]))
    assert ws._conn is not None and ws._conn.transport is not None
    ws._conn.transport.abort()  # a network cut, not a polite close
    await wait_connections_closed(client)
    assert peers.orchestrator.sessions[session_id].status == pb.SESSION_STATUS_RUNNING  # detached: still running
    async with client.ws_connect("/v1/ws") as again:
        await again.send_json({"type": "watch", "session_id": session_id, "after_sequence": received[-1]})
        assert (await recv(again))["action"] == "watch"
        total = len(peers.orchestrator.sessions[session_id].events)  # 42: started, selected, 40 deltas
        while received[-1] < total:
            message = await recv(again)
            assert message["type"] == "event", message
            received.append(int(message["event"]["sequence"]))
        await again.send_json({"type": "cancel", "session_id": session_id})
        rest = await recv_until(again, lambda m: m["type"] == "end")
    received += [int(m["event"]["sequence"]) for m in rest if m["type"] == "event"]
    assert received == list(range(1, total + 2))  # every event exactly once, the terminal one included
