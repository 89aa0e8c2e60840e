"""Tenancy through the real services: two API keys on the gateway, each a tenant that sees only its own data.

Every service is built in this process on port 0 (simulated models, fast), the gateway in front of them
with two keys whose hashes are made by the gateway's own helper. Tenant A runs a session over REST;
tenant B must not be able to read, follow, cancel or rate it, nor see it (or its cost) in analytics.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway.live_stack import Stack, poll, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, sim_speed=1000) as running:
        yield running


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json(content_type=None)


async def test_a_tenant_sees_only_its_own_sessions_events_and_costs(stack: Stack) -> None:
    a, b = stack.auth(stack.key_a), stack.auth(stack.key_b)
    prompt = f"Write a Python function that merges two sorted lists ({uuid.uuid4()})"
    async with aiohttp.ClientSession(base_url=stack.base) as http:
        async with http.post("/v1/orchestrations", json={"prompt": prompt, "maxRounds": 1}, headers=a) as resp:
            assert resp.status == 201, await resp.text()
            session_id = (await _json(resp))["session_id"]

        async def finished() -> bool:
            async with http.get(f"/v1/orchestrations/{session_id}", headers=a) as resp:
                assert resp.status == 200, await resp.text()
                status = (await _json(resp))["session"]["status"]
                assert status in ("SESSION_STATUS_RUNNING", "SESSION_STATUS_COMPLETED"), status
                return bool(status == "SESSION_STATUS_COMPLETED")

        await poll(finished, "tenant A's session completes")

        # Tenant B: the session does not exist for it, whichever way it asks.
        forbidden: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/v1/orchestrations/{session_id}", None),
            ("GET", f"/v1/orchestrations/{session_id}/events", None),
            ("POST", f"/v1/orchestrations/{session_id}:cancel", {"reason": "not mine"}),
            ("POST", f"/v1/orchestrations/{session_id}/feedback", {"rating": 1, "comment": "not mine"}),
        ]
        unknown = uuid.uuid4().hex
        for method, path, body in forbidden:
            async with http.request(method, path, json=body, headers=b) as resp:
                payload = await _json(resp)
                assert resp.status == 404, (method, path, resp.status, payload)
                assert payload["error"]["code"] == "NOT_FOUND", (path, payload)
            # Indistinguishable from a session that does not exist at all: no existence oracle.
            async with http.request(method, path.replace(session_id, unknown), json=body, headers=b) as resp:
                assert resp.status == 404
                other = await _json(resp)
            assert str(other).replace(unknown, session_id) == str(payload), (path, other, payload)

        async with http.get("/v1/orchestrations", headers=b) as resp:
            assert resp.status == 200
            assert (await _json(resp)).get("sessions", []) == []

        # Tenant A still sees its session (B's attempts changed nothing) and can follow its events.
        async with http.get("/v1/orchestrations", headers=a) as resp:
            sessions = (await _json(resp)).get("sessions", [])
            assert [s["session_id"] for s in sessions] == [session_id]
            assert sessions[0]["status"] == "SESSION_STATUS_COMPLETED"
        async with http.get(f"/v1/orchestrations/{session_id}/events", headers=a) as resp:
            assert resp.status == 200
            text = await resp.text()
            assert "session_completed" in text

        cost_a: dict[str, Any] = {}

        async def a_has_cost() -> bool:
            async with http.get("/v1/analytics/costs", headers=a) as resp:
                assert resp.status == 200, await resp.text()
                report = await _json(resp)
            cost_a.update(report)
            return any(s.get("session_id") == session_id for s in report.get("sessions", []))

        await poll(a_has_cost, "tenant A's session reaches analytics")
        assert cost_a["total_cost_usd"] > 0
        assert int(cost_a["session_count"]) == 1
        (mine,) = [s for s in cost_a["sessions"] if s["session_id"] == session_id]
        assert mine.get("cost_usd", 0) > 0, mine

        async with http.get("/v1/analytics/costs", headers=b) as resp:
            assert resp.status == 200
            report_b = await _json(resp)
        assert report_b.get("sessions", []) == []
        assert report_b.get("total_cost_usd", 0) == 0
        assert int(report_b.get("session_count", "0")) == 0
        assert int(report_b.get("calls", "0")) == 0

        # No key at all is refused outright.
        async with http.get(f"/v1/orchestrations/{session_id}") as resp:
            assert resp.status == 401
