"""The real services (providers on the simulator, analytics, selector, orchestrator) built in this process on
port 0 and wired to each other, for tests that need the whole pipeline rather than the fakes of conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import orchestrator_pb2_grpc


@asynccontextmanager
async def real_services(
    env: dict[str, str], backend: Any = None
) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceStub]:
    """Start every service with settings from ``env`` (each peer's address added as it starts); yields a stub for
    the orchestrator and stops them all, last first. ``backend`` replaces the providers' model source (the
    benchmarks use it too)."""
    from services.analytics import server as analytics_server
    from services.orchestrator import server as orchestrator_server
    from services.providers import server as providers_server
    from services.selector import server as selector_server

    env = dict(env)
    servers: list[GrpcServer] = []
    try:
        for name, build in (
            ("providers", lambda s: providers_server.build(s, "127.0.0.1:0", backend=backend)),
            ("analytics", lambda s: analytics_server.build(s, "127.0.0.1:0")),
            ("selector", lambda s: selector_server.build(s, "127.0.0.1:0")),
            ("orchestrator", lambda s: orchestrator_server.build(s, "127.0.0.1:0")),
        ):
            srv = await build(Settings.from_env(env))
            await srv.start()
            servers.append(srv)
            env[f"ORX_{name.upper()}_ADDR"] = f"127.0.0.1:{srv.port}"
        async with grpc.aio.insecure_channel(env["ORX_ORCHESTRATOR_ADDR"]) as channel:
            yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    finally:
        for srv in reversed(servers):
            await srv.stop(0)
