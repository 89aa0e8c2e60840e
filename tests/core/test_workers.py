"""``ORX_<SERVICE>_WORKERS``: several worker processes of a stateless service on one port (``SO_REUSEPORT``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestratex.config import Address, ResilienceSettings, Settings
from orchestratex.errors import ConfigError
from orchestratex.grpc_client import ChannelPool, open_channel
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.launcher import up
from services.workers import metrics_addresses, reserve_port
from tests.core.test_supervision import alive, serving, wait_for
from tests.ports import free_port

BIN = Path(sys.executable).parent
PROVIDERS = "orchestratex.v1.ProviderService"


# ------------------------------------------------------------------ settings


def test_workers_are_parsed_for_the_stateless_services_and_refused_for_the_stateful_ones() -> None:
    common = Settings.from_env({"ORX_PROVIDERS_WORKERS": "3", "ORX_GATEWAY_WORKERS": "2"}).common
    assert (common.workers_of("providers"), common.workers_of("gateway"), common.workers_of("selector")) == (3, 2, 1)
    assert common.reuse_port("providers") and not common.reuse_port("selector")
    assert common.workers_of("orchestrator") == 1 and common.worker_index is None
    assert (common.connections_to("providers"), common.connections_to("selector")) == (12, 1)
    for bad in ({"ORX_PROVIDERS_WORKERS": "0"}, {"ORX_SELECTOR_WORKERS": "65"}, {"ORX_GATEWAY_WORKERS": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Settings.from_env(bad)
    with pytest.raises(ConfigError, match="ORX_ORCHESTRATOR_WORKERS: the orchestrator keeps state"):
        Settings.from_env({"ORX_ORCHESTRATOR_WORKERS": "2"})
    assert Settings.from_env({"ORX_ANALYTICS_WORKERS": "1"}).common.workers_of("analytics") == 1


def test_each_provider_worker_enforces_its_share_of_the_per_model_limits() -> None:
    limits = ResilienceSettings.from_env(
        {"ORX_PROVIDER_RPM": "601", "ORX_PROVIDER_CONCURRENCY": "3", "ORX_PROVIDER_QUEUE": "5",
         "ORX_PROVIDER_MODEL_LIMITS": "a/b=90/7,c/d=/1"}
    )  # fmt: skip
    assert limits.per_worker(1) is limits
    share = limits.per_worker(4)
    assert (share.rpm, share.free_rpm, share.concurrency, share.queue) == (150, 5, 1, 2)
    assert share.rpm * 4 <= limits.rpm and share.free_rpm * 4 <= limits.free_rpm
    assert share.model_limits["a/b"].rpm == 22 and share.model_limits["a/b"].concurrency == 1
    assert share.model_limits["c/d"].rpm is None and share.model_limits["c/d"].concurrency == 1
    assert (share.breaker_threshold, share.max_attempts) == (limits.breaker_threshold, limits.max_attempts)


def test_each_worker_gets_its_own_metrics_port_after_the_configured_one() -> None:
    settings = Settings.from_env({"ORX_GATEWAY_WORKERS": "3", "ORX_GATEWAY_METRICS_LISTEN": "127.0.0.1:9300"})
    assert metrics_addresses("gateway", settings) == [Address("127.0.0.1", 9300 + i) for i in range(3)]
    assert metrics_addresses("providers", settings) == []


def test_the_reserved_port_is_held_against_others_but_shared_with_workers() -> None:
    with reserve_port(Address("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
        with socket.socket() as intruder, pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()


# ------------------------------------------------------------------ a pool of connections


async def test_a_channel_pool_spreads_successive_calls_over_its_connections() -> None:
    peers: list[str] = []

    class Recorder(providers_pb2_grpc.ProviderServiceServicer):
        async def ListModels(
            self, request: providers_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> providers_pb2.ListModelsResponse:
            peers.append(context.peer())
            return providers_pb2.ListModelsResponse()

    server = grpc.aio.server()
    providers_pb2_grpc.add_ProviderServiceServicer_to_server(Recorder(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        pool = open_channel(f"127.0.0.1:{port}", connections=3)
        assert isinstance(pool, ChannelPool)
        stub = providers_pb2_grpc.ProviderServiceStub(pool)
        for _ in range(6):
            await stub.ListModels(providers_pb2.ListModelsRequest())
        await pool.channel_ready()
        assert pool.get_state() is grpc.ChannelConnectivity.READY
        await pool.close()
    finally:
        await server.stop(None)
    assert len(set(peers)) == 3  # three connections (distinct client ports) ...
    assert peers[:3] == peers[3:]  # ... used in turn


async def test_a_channel_spreads_calls_over_every_address_its_name_resolves_to() -> None:
    """What a Kubernetes headless Service gives a client: one name, an address per pod. gRPC's default policy
    (pick_first) would send every call to one of them."""
    served: list[int] = []

    class Recorder(providers_pb2_grpc.ProviderServiceServicer):
        def __init__(self, index: int) -> None:
            self.index = index

        async def ListModels(
            self, request: providers_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
        ) -> providers_pb2.ListModelsResponse:
            served.append(self.index)
            return providers_pb2.ListModelsResponse()

    servers, ports = [], []
    for index in range(2):
        server = grpc.aio.server()
        providers_pb2_grpc.add_ProviderServiceServicer_to_server(Recorder(index), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    try:
        channel = open_channel(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}")
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        # Until both connections are up, calls go to the one that is; pick_first would never use the second.
        for _ in range(200):
            await stub.ListModels(providers_pb2.ListModelsRequest(), wait_for_ready=True)
            if set(served) == {0, 1}:
                break
        assert set(served) == {0, 1}, "every call went to one address"
        served.clear()
        for _ in range(10):
            await stub.ListModels(providers_pb2.ListModelsRequest())
        await channel.close(None)
    finally:
        for server in servers:
            await server.stop(None)
    assert served.count(0) == served.count(1) == 5, served  # in turn, once both are up


# ------------------------------------------------------------------ real worker processes


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` listens on (its socket inodes matched against /proc/net/tcp{,6} in LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextmanager
def _serve(name: str, tmp_path: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    full = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_PROVIDER_MODE": "simulated",
        "ORX_SIM_SPEED": "1000",
        "ORX_LOG_FORMAT": "json",
        **env,
    }
    proc = subprocess.Popen([str(BIN / "orchestratex"), "serve", name], env=full, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)


def _scrape_generates(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("orx_grpc_server_requests_total{") and 'method="Generate"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_provider_workers_share_one_port_and_the_calls_of_a_pool(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    while metrics + 1 == port or not _free(metrics + 1):
        metrics = free_port()
    env = {
        "ORX_PROVIDERS_WORKERS": "2",
        "ORX_PROVIDERS_LISTEN": f"127.0.0.1:{port}",
        "ORX_PROVIDERS_METRICS_LISTEN": f"127.0.0.1:{metrics}",
    }
    with _serve("providers", tmp_path, **env) as parent:
        wait_for(lambda: len(_children(parent.pid)) == 2 and all(
            port in _listening_ports(child) for child in _children(parent.pid)
        ), within=60)  # fmt: skip
        workers = _children(parent.pid)
        assert port not in _listening_ports(parent.pid)  # the parent only holds the port
        wait_for(lambda: serving(f"127.0.0.1:{port}", PROVIDERS), within=30)
        # 16 connections: the chance that the kernel's hash gives every one to the same worker is 2 in 65,536
        async with open_channel(f"127.0.0.1:{port}", connections=16) as pool:
            stub = providers_pb2_grpc.ProviderServiceStub(pool)
            for _ in range(32):
                request = providers_pb2.GenerateRequest(
                    model="qwen/qwen3-coder",
                    messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="Sort a list in Python.")],
                )
                reply = await stub.Generate(request, timeout=30)
                assert reply.text
        per_worker = [_scrape_generates(metrics + i) for i in range(2)]
        assert sum(per_worker) == 32 and all(count > 0 for count in per_worker), per_worker
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in workers)


def test_a_worker_that_dies_stops_the_service_so_its_supervisor_restarts_it_whole(tmp_path: Path) -> None:
    port = free_port()
    with _serve("gateway", tmp_path, ORX_GATEWAY_WORKERS="2", ORX_GATEWAY_LISTEN=f"127.0.0.1:{port}") as parent:
        wait_for(lambda: len(_children(parent.pid)) == 2 and all(
            port in _listening_ports(child) for child in _children(parent.pid)
        ), within=60)  # fmt: skip
        first, second = _children(parent.pid)
        os.kill(first, signal.SIGKILL)
        assert parent.wait(timeout=30) == 1
        wait_for(lambda: not alive(second))
        assert parent.stderr is not None
        log = parent.stderr.read()
    assert "exited with -9; stopping the other workers" in log


def test_a_stateful_service_refuses_workers_with_a_configuration_error(tmp_path: Path) -> None:
    with _serve("orchestrator", tmp_path, ORX_ORCHESTRATOR_WORKERS="2") as proc:
        assert proc.wait(timeout=30) == 2
        assert proc.stderr is not None
        assert "ORX_ORCHESTRATOR_WORKERS" in proc.stderr.read()


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_refuses_a_worker_metrics_port_that_is_another_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_PROVIDERS_WORKERS": "2",
            "ORX_PROVIDERS_METRICS_LISTEN": "127.0.0.1:19452",
            "ORX_ORCHESTRATOR_METRICS_LISTEN": "127.0.0.1:19453",
        }
    )
    assert up(settings) == 2
    err = capsys.readouterr().err
    assert "ORX_ORCHESTRATOR_METRICS_LISTEN: 127.0.0.1:19453 is also ORX_PROVIDERS_METRICS_LISTEN (+1, worker 1)" in err
