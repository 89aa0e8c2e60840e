"""Benchmark helpers: start OrchestrateX services as real subprocesses on free ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import orchestrator_pb2_grpc

BIN = Path(sys.executable).parent
SERVICE_NAMES = {
    "selector": "orchestratex.v1.SelectorService",
    "providers": "orchestratex.v1.ProviderService",
    "orchestrator": "orchestratex.v1.OrchestratorService",
    "analytics": "orchestratex.v1.AnalyticsService",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Cluster:
    """Running services and their addresses."""

    addr: dict[str, str]
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, **(extra_env or {})}
        self.procs[name] = subprocess.Popen(
            [str(BIN / "orchestratex"), "serve", name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(_wait_healthy(self.addr[name], SERVICE_NAMES[name], self.procs[name]))

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def _wait_healthy(addr: str, service: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{service} exited with {proc.returncode}")
        async with grpc.aio.insecure_channel(addr) as ch:
            try:
                resp = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{service} did not become healthy")


@contextmanager
def cluster(data_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Ports and environment for a full suite; services are started on demand with ``start``."""
    ports = {name: free_port() for name in SERVICE_NAMES}
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(data_dir),
        "ORX_LOG_LEVEL": "WARNING",
        **{f"ORX_{n.upper()}_LISTEN": f"127.0.0.1:{p}" for n, p in ports.items()},
        **(extra_env or {}),
    }
    env.pop("OPENROUTER_API_KEY", None)
    c = Cluster({n: f"127.0.0.1:{p}" for n, p in ports.items()}, env)
    try:
        yield c
    finally:
        for name in list(c.procs)[::-1]:
            c.stop(name)


@asynccontextmanager
async def in_process_stack(
    env: dict[str, str], backend: Any = None
) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceStub]:
    """Providers, analytics, selector and orchestrator built in this process on port 0 and wired to each
    other; yields a stub for the orchestrator. ``backend`` replaces the providers' model source."""
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
