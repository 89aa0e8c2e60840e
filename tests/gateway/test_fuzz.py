"""Property-based: generated JSON values and raw bytes thrown at REST bodies and WebSocket frames.

Whatever arrives: no 5xx, every error is the documented JSON shape, sockets close only with the
documented codes, and no session is left running by a socket that went away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import orjson
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import init_app
from gateway.state import GatewayOptions
from gateway.ws import CONNECTIONS

from .conftest import Peers, wait_until

Client = TestClient[Any, Any]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "prompt",
    "maxRounds",
    "max_rounds",
    "qualityThreshold",
    "criticCount",
    "preferences",
    "budgetUsd",
    "timeLimit",
    "threadId",
    "thread_id",
    "detached",
    "patience",
    "rating",
    "comment",
    "userId",
    "user_id",
    "reason",
]
# Objects that look like real requests, with generated values in real fields.
plausible = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)
ws_messages = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["orchestrate", "watch", "cancel", "detach", "auth", "bogus"])},
        optional={
            "request": st.one_of(plausible, json_values),
            "session_id": json_values,
            "sessionId": json_values,
            "after_sequence": json_values,
            "afterSequence": json_values,
            "ref": json_values,
        },
    ),
)
REST_TARGETS = [
    ("POST", "/v1/orchestrations"),
    ("POST", "/v1/orchestrations/s-1:cancel"),
    ("POST", "/v1/orchestrations/s-1/feedback"),
]
ERROR_KEYS = {"code", "status", "message", "field", "retry_after"}
FUZZ_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


async def _start(settings_: Any) -> Client:
    # Rate limits are tested elsewhere; hundreds of generated requests would trip them here.
    settings_ = dataclasses.replace(settings_, gateway=dataclasses.replace(settings_.gateway, rate_limit=0))
    app = init_app(settings_, GatewayOptions.from_settings(settings_, max_ws_message_bytes=4096))
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def _check_error_body(body: Any, status: int) -> None:
    assert set(body) == {"error"}
    assert {"code", "status", "message"} <= set(body["error"]) <= ERROR_KEYS
    assert body["error"]["status"] == status


async def test_rest_bodies_never_5xx(settings: Any, peers: Peers) -> None:
    client = await _start(settings)
    try:

        @FUZZ_SETTINGS
        @given(target=st.sampled_from(REST_TARGETS), body=st.one_of(plausible, json_values), raw=st.binary(max_size=64))
        async def one(target: tuple[str, str], body: Any, raw: bytes) -> None:
            method, path = target
            for data in (json.dumps(body).encode(), raw):
                response = await client.request(method, path, data=data, headers={"Content-Type": "application/json"})
                assert response.status < 500, (path, data, await response.text())
                if response.status >= 400:
                    _check_error_body(await response.json(), response.status)

        await _drive(one)
    finally:
        await _cancel_everything(peers)
        await client.close()


async def test_ws_frames_never_crash_or_leak_sessions(settings: Any, peers: Peers) -> None:
    client = await _start(settings)
    try:

        @FUZZ_SETTINGS
        @given(messages=st.lists(ws_messages, min_size=1, max_size=4), raw=st.binary(max_size=64))
        async def one(messages: list[Any], raw: bytes) -> None:
            async with client.ws_connect("/v1/ws") as ws:
                for message in messages:
                    await ws.send_str(json.dumps(message))
                await ws.send_str(raw.decode("utf-8", "replace"))
                await ws.send_json({"type": "detach", "session_id": "probe", "ref": "probe"})
                while True:  # the socket still answers after everything above
                    reply = await ws.receive(timeout=10)
                    assert reply.type is WSMsgType.TEXT, reply
                    data = orjson.loads(reply.data)
                    if data["type"] == "error":
                        assert {"code", "status", "message"} <= set(data)
                        assert data["status"] < 500 or data["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), data
                    if data.get("ref") == "probe":
                        break
            # Closing released every session this socket started and did not detach.
            await wait_until(lambda: not client.app[CONNECTIONS], what="socket released")
            for session in peers.orchestrator.sessions.values():
                if not session.request.detached and session.status == 1:
                    raise AssertionError(f"session {session.session_id} left running")

        await _drive(one)
        # Raw binary and oversized frames: documented close codes, never a crash.
        async with client.ws_connect("/v1/ws") as ws:
            await ws.send_bytes(b"\x00\xff")
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1003
        async with client.ws_connect("/v1/ws") as ws:
            await ws.send_str("x" * 5000)
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    finally:
        await _cancel_everything(peers)
        await client.close()


async def _drive(test: Any) -> None:
    """Run an async Hypothesis test: Hypothesis runs in a worker thread and each example's coroutine runs
    on this loop (where the gateway lives), so failures are seen, shrunk and reported by Hypothesis."""
    loop = asyncio.get_running_loop()
    inner = test.hypothesis.inner_test

    def sync_inner(*args: Any, **kwargs: Any) -> None:
        asyncio.run_coroutine_threadsafe(inner(*args, **kwargs), loop).result(timeout=60)

    test.hypothesis.inner_test = sync_inner
    await asyncio.to_thread(test)


async def _cancel_everything(peers: Peers) -> None:
    for session in peers.orchestrator.sessions.values():
        session.cancelled.set()
