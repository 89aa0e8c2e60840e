"""Concurrent cancels of one session, through REST, WebSocket and gRPC at once, against the whole suite.

Before issue 12's fixes, two cancels landing together left sessions RUNNING forever, ended some with
"internal error", and could leave SQLite inside a transaction so that no session could start again.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import aiohttp
import grpc
import pytest

from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from tests.e2e.conftest import Suite

pytestmark = pytest.mark.e2e

REPETITIONS = int(os.environ.get("ORX_STORM_REPETITIONS", "100"))
TERMINAL = ("session_completed", "session_failed")


async def _ws_cancels(ws: aiohttp.ClientWebSocketResponse, acks: dict[str, list[dict[str, Any]]]) -> None:
    async for message in ws:
        data = message.json()
        if data.get("type") in ("ack", "error") and data.get("session_id"):
            acks.setdefault(data["session_id"], []).append(data)


async def test_concurrent_cancels_through_every_surface(suite: Suite) -> None:
    rng = random.Random(1212)
    base = f"http://{suite.addr['gateway']}"
    acks: dict[str, list[dict[str, Any]]] = {}
    sent_ws: dict[str, int] = {}
    session_ids: list[str] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/v1/ws") as ws,
        grpc.aio.insecure_channel(suite.addr["orchestrator"]) as channel,
    ):
        reader = asyncio.ensure_future(_ws_cancels(ws, acks))
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        for i in range(REPETITIONS):
            async with http.post(
                f"{base}/v1/orchestrations", json={"prompt": f"Cancel me, number {i}", "maxRounds": 3}
            ) as created:
                assert created.status == 201, await created.text()
                session_id = (await created.json())["session_id"]
            session_ids.append(session_id)
            cancels: list[Any] = []
            for _ in range(rng.randint(2, 5)):
                surface = rng.choice(("rest", "ws", "grpc"))
                if surface == "rest":
                    cancels.append(http.post(f"{base}/v1/orchestrations/{session_id}:cancel", json={"reason": "storm"}))
                elif surface == "grpc":
                    cancels.append(stub.CancelSession(pb.CancelSessionRequest(session_id=session_id), timeout=30))
                else:
                    sent_ws[session_id] = sent_ws.get(session_id, 0) + 1
                    cancels.append(ws.send_json({"type": "cancel", "session_id": session_id}))
            for result in await asyncio.gather(*(_settle(c) for c in cancels)):
                assert result in ("ok", "sent"), result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while any(len(acks.get(sid, [])) < n for sid, n in sent_ws.items()):
            assert loop.time() < deadline, "WebSocket cancels were not all answered"
            await asyncio.sleep(0.02)
        for sid in sent_ws:
            assert all(a["type"] == "ack" for a in acks[sid]), acks[sid]
        reader.cancel()

        # every session ended, with exactly one terminal event at the end of a gap-free log
        for session_id in session_ids:
            watch = stub.WatchSession(pb.WatchSessionRequest(session_id=session_id), timeout=30)
            events = [r.event async for r in watch]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            terminal = [e for e in events if e.WhichOneof("kind") in TERMINAL]
            assert terminal == [events[-1]], [e.WhichOneof("kind") for e in events]
            assert "internal error" not in events[-1].session_failed.reason
            record = (await stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=10)).session
            assert record.status != pb.SESSION_STATUS_RUNNING

        # and the suite still starts and finishes sessions
        request = pb.OrchestrateRequest(prompt="Still alive?", max_rounds=1)
        after = [r.event async for r in stub.Orchestrate(request, timeout=60)]
        assert after[-1].HasField("session_completed")
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200


async def _settle(call: Any) -> str:
    result = await call
    if isinstance(result, aiohttp.ClientResponse):
        async with result:
            return "ok" if result.status == 200 else f"HTTP {result.status}: {await result.text()}"
    if isinstance(result, pb.CancelSessionResponse):
        return "ok"
    return "sent"
