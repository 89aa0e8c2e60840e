"""The real services on the simulator, built in this process on port 0, with the real gateway in front of them
on a real port (the OpenAI SDKs need a URL): what tests/gateway/test_openai_*.py and tests/e2e/test_tenancy.py
talk to.

Two API keys, one per tenant (``tenant-a``, ``tenant-b``). The simulator runs ``sim_speed`` times faster than
its profile; shadow evaluation is off so every session makes the same calls.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import start_gateway
from gateway.security import hash_key
from gateway.state import GatewayOptions
from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer


@dataclass
class Stack:
    """The running services, the gateway's base URL and one key per tenant."""

    base: str
    key_a: str
    key_b: str
    env: dict[str, str]
    servers: dict[str, GrpcServer] = field(default_factory=dict)
    app: web.Application | None = None

    @property
    def openai_base(self) -> str:
        """What an OpenAI SDK takes as ``base_url``."""
        return self.base + "/openai/v1"

    def auth(self, key: str | None = None) -> dict[str, str]:
        """The ``Authorization`` header for ``key`` (tenant A's by default)."""
        return {"Authorization": f"Bearer {key or self.key_a}"}


@asynccontextmanager
async def running_stack(
    tmp_path: Path, *, sim_speed: float = 200, heartbeat: float = 0.2, **extra: str
) -> AsyncIterator[Stack]:
    """Start providers, analytics, selector, orchestrator and the gateway; stop them all at the end."""
    from services.analytics import server as analytics_server
    from services.orchestrator import server as orchestrator_server
    from services.providers import server as providers_server
    from services.selector import server as selector_server

    key_a, key_b = "orx_" + secrets.token_urlsafe(24), "orx_" + secrets.token_urlsafe(24)
    env = {
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_PROVIDER_MODE": "simulated",
        "ORX_SIM_SPEED": str(sim_speed),
        "ORX_SHADOW_SAMPLE_RATE": "0",
        "ORX_OUTBOX_INTERVAL": "0.05",
        "ORX_LOG_LEVEL": "WARNING",
        "ORX_GATEWAY_RATE_LIMIT": "0",
        "ORX_GATEWAY_API_KEYS": f"tenant-a:{hash_key(key_a)},tenant-b:{hash_key(key_b)}",
        **extra,
    }
    stack = Stack("", key_a, key_b, env)
    runner: web.AppRunner | None = None
    builders: list[tuple[str, Callable[[Settings], Awaitable[GrpcServer]]]] = [
        ("providers", lambda s: providers_server.build(s, "127.0.0.1:0")),
        ("analytics", lambda s: analytics_server.build(s, "127.0.0.1:0")),
        ("selector", lambda s: selector_server.build(s, "127.0.0.1:0")),
        ("orchestrator", lambda s: orchestrator_server.build(s, "127.0.0.1:0")),
    ]
    try:
        for name, build in builders:
            srv = await build(Settings.from_env(env))
            await srv.start()
            stack.servers[name] = srv
            env[f"ORX_{name.upper()}_ADDR"] = f"127.0.0.1:{srv.port}"
        settings = Settings.from_env(env)
        options = GatewayOptions.from_settings(settings, sse_heartbeat=heartbeat)
        runner, port = await start_gateway(settings, "127.0.0.1", 0, options)
        stack.base = f"http://127.0.0.1:{port}"
        stack.app = runner.app
        yield stack
    finally:
        if runner is not None:
            await runner.cleanup()
        for srv in reversed(stack.servers.values()):
            await srv.stop(0)


async def poll(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


async def session_of(stack: Stack, session_id: str, key: str | None = None) -> tuple[int, Any]:
    """``GET /v1/orchestrations/{id}`` as tenant A (or ``key``'s): the status and the JSON body."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/v1/orchestrations/{session_id}", headers=stack.auth(key)) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def sessions(stack: Stack, key: str | None = None) -> list[dict[str, Any]]:
    """The sessions tenant A (or ``key``'s tenant) sees over REST, newest first."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.base}/v1/orchestrations", headers=stack.auth(key)) as resp,
    ):
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = (await resp.json()).get("sessions", [])
        return found
