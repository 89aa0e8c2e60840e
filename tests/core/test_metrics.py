"""Prometheus metrics: the METRICS_LISTEN variables, the /metrics endpoint, and the gRPC server and client
metrics of real calls over the wire (scraped over HTTP and parsed with Prometheus' text parser).

The registry is the process's: other tests add to the same series, so every check compares a scrape taken
after the calls with one taken before.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from orchestratex.config import Address, Settings
from orchestratex.errors import ConfigError, InvalidArgument
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.metrics import MetricsListenError, MetricsServer, start_metrics_server
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from tests.ports import free_port

PROVIDERS = "orchestratex.v1.ProviderService"
BIN = Path(sys.executable).parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------------------------------- config


def test_metrics_endpoints_are_off_by_default() -> None:
    settings = Settings.from_env({})
    assert dict(settings.common.metrics_listen) == dict.fromkeys(
        ("selector", "providers", "orchestrator", "analytics", "gateway")
    )
    assert Settings.from_env({"ORX_GATEWAY_METRICS_LISTEN": "  "}).common.metrics_listen["gateway"] is None


def test_each_service_has_its_metrics_variable() -> None:
    env = {
        f"ORX_{name.upper()}_METRICS_LISTEN": f"127.0.0.1:{9100 + i}"
        for i, name in enumerate(("selector", "providers", "orchestrator", "analytics", "gateway"))
    }
    listen = Settings.from_env(env).common.metrics_listen
    assert {name: str(address) for name, address in listen.items()} == {
        "selector": "127.0.0.1:9100",
        "providers": "127.0.0.1:9101",
        "orchestrator": "127.0.0.1:9102",
        "analytics": "127.0.0.1:9103",
        "gateway": "127.0.0.1:9104",
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9100", "expected host:port"),
        ("localhost:http", "port must be a number"),
        ("127.0.0.1:70000", "port must be 0-65535"),
        ("127.0.0.1:50053", "is also ORX_ORCHESTRATOR_LISTEN's address"),
    ],
)
def test_a_bad_metrics_address_names_its_variable(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_ORCHESTRATOR_METRICS_LISTEN": value})
    assert str(err.value).startswith("ORX_ORCHESTRATOR_METRICS_LISTEN: ")
    assert problem in str(err.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "[::]", "metrics.internal"])
def test_a_metrics_endpoint_beyond_loopback_needs_its_opt_in(host: str) -> None:
    env = {"ORX_ANALYTICS_METRICS_LISTEN": f"{host}:9464"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env).common.check_metrics_exposure("analytics")
    assert str(err.value).startswith("ORX_ANALYTICS_METRICS_LISTEN: ")
    assert "ORX_METRICS_ALLOW_NON_LOOPBACK=1" in str(err.value)
    # the gRPC opt-in is another decision (who may act as any tenant); it does not expose metrics
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "ORX_GRPC_ALLOW_NON_LOOPBACK": "1"}).common.check_metrics_exposure("analytics")
    Settings.from_env({**env, "ORX_METRICS_ALLOW_NON_LOOPBACK": "1"}).common.check_metrics_exposure("analytics")
    for loopback in ("127.0.0.1", "localhost", "[::1]"):
        settings = Settings.from_env({"ORX_ANALYTICS_METRICS_LISTEN": f"{loopback}:9464"})
        settings.common.check_metrics_exposure("analytics")


def test_serve_refuses_an_exposed_metrics_endpoint_before_starting(tmp_path: Path) -> None:
    env = {**os.environ, "ORX_DATA_DIR": str(tmp_path), "ORX_ANALYTICS_METRICS_LISTEN": "0.0.0.0:9464"}
    run = subprocess.run(
        [str(BIN / "orchestratex"), "serve", "analytics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "configuration error: ORX_ANALYTICS_METRICS_LISTEN:" in run.stderr


def test_up_refuses_two_endpoints_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_SELECTOR_METRICS_LISTEN": f"127.0.0.1:{port}",
        "ORX_GATEWAY_METRICS_LISTEN": f"127.0.0.1:{port}",
    }
    run = subprocess.run(
        [str(BIN / "orchestratex"), "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2, run.stderr
    assert f"ORX_GATEWAY_METRICS_LISTEN: 127.0.0.1:{port} is also ORX_SELECTOR_METRICS_LISTEN's address" in run.stderr


# ---------------------------------------------------------------------------------- scraping helpers


async def scrape(port: int) -> Samples:
    """``GET /metrics``, parsed with Prometheus' text parser: (sample name, labels) -> value."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def until(check: Callable[[], Any], what: str, within: float = 10.0) -> None:
    """Poll ``check`` (a coroutine function) until it returns true."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------ a real server


class Providers(providers_pb2_grpc.ProviderServiceServicer):
    """ListModels answers; Generate fails in two ways; StreamGenerate streams, or blocks until cancelled."""

    def __init__(self) -> None:
        self.blocked = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def ListModels(self, request: Any, ctx: Any) -> providers_pb2.ListModelsResponse:
        return providers_pb2.ListModelsResponse(models=[common_pb2.ModelInfo(id="m")])

    async def Generate(self, request: Any, ctx: Any) -> providers_pb2.GenerateResponse:
        if request.model == "abort":
            await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
        raise InvalidArgument("model", "unknown model")

    async def StreamGenerate(self, request: Any, ctx: Any) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        yield providers_pb2.StreamGenerateResponse(sequence=1)
        if request.request.model == "block":
            self.blocked.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        yield providers_pb2.StreamGenerateResponse(sequence=2)


@dataclass
class Running:
    srv: GrpcServer
    metrics: MetricsServer
    servicer: Providers


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    servicer = Providers()
    srv = create_server(
        [ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, servicer, PROVIDERS)],
        "127.0.0.1:0",
    )
    await srv.start()
    metrics = await start_metrics_server(Address("127.0.0.1", 0))
    try:
        yield Running(srv, metrics, servicer)
    finally:
        await metrics.stop()
        await srv.stop(0)


def stream_request(model: str) -> providers_pb2.StreamGenerateRequest:
    return providers_pb2.StreamGenerateRequest(request=providers_pb2.GenerateRequest(model=model))


SERVER = "orx_grpc_server_requests_total"
CLIENT = "orx_grpc_client_requests_total"


async def test_server_and_client_count_every_outcome(running: Running) -> None:
    before = await scrape(running.metrics.port)
    async with open_channel(f"127.0.0.1:{running.srv.port}") as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        await stub.ListModels(providers_pb2.ListModelsRequest())
        await stub.ListModels(providers_pb2.ListModelsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(providers_pb2.GenerateRequest(model="x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(providers_pb2.GenerateRequest(model="abort"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        streamed = [r.sequence async for r in stub.StreamGenerate(stream_request("m"))]
        assert streamed == [1, 2]

        call = stub.StreamGenerate(stream_request("block"))
        async for first in call:
            assert first.sequence == 1
            break
        await running.servicer.blocked.wait()
        during = await scrape(running.metrics.port)
        call.cancel()
        await running.servicer.cancelled.wait()

    async def counted() -> bool:
        after = await scrape(running.metrics.port)
        return grown(before, after, SERVER, service=PROVIDERS, method="StreamGenerate", code="CANCELLED") == 1

    await until(counted, "the cancelled stream counted by the server")
    after = await scrape(running.metrics.port)
    method = {"service": PROVIDERS}
    assert grown(before, after, SERVER, **method, method="ListModels", code="OK") == 2
    assert grown(before, after, SERVER, **method, method="Generate", code="INVALID_ARGUMENT") == 1
    assert grown(before, after, SERVER, **method, method="Generate", code="FAILED_PRECONDITION") == 1
    assert grown(before, after, SERVER, **method, method="StreamGenerate", code="OK") == 1
    assert grown(before, after, SERVER, **method, method="StreamGenerate", code="CANCELLED") == 1
    assert grown(before, after, CLIENT, **method, method="ListModels", code="OK") == 2
    assert grown(before, after, CLIENT, **method, method="Generate", code="INVALID_ARGUMENT") == 1
    assert grown(before, after, CLIENT, **method, method="Generate", code="FAILED_PRECONDITION") == 1
    assert grown(before, after, CLIENT, **method, method="StreamGenerate", code="OK") == 1
    assert grown(before, after, CLIENT, **method, method="StreamGenerate", code="CANCELLED") == 1

    for side in ("server", "client"):
        durations = f"orx_grpc_{side}_request_duration_seconds_count"
        assert grown(before, after, durations, **method, method="ListModels") == 2
        assert grown(before, after, durations, **method, method="Generate") == 2
        assert grown(before, after, durations, **method, method="StreamGenerate") == 2
        assert grown(before, after, durations.replace("_count", "_sum"), **method, method="ListModels") > 0

    # the blocked stream was in flight while it waited; nothing is once it ended
    in_flight = "orx_grpc_server_in_flight"
    assert value(during, in_flight, **method, method="StreamGenerate") == 1
    assert value(after, in_flight, **method, method="StreamGenerate") == 0
    assert value(after, in_flight, **method, method="ListModels") == 0
    assert value(after, in_flight, **method, method="Generate") == 0


async def test_health_checks_are_not_counted(running: Running) -> None:
    before = await scrape(running.metrics.port)
    async with open_channel(f"127.0.0.1:{running.srv.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=PROVIDERS))
        await providers_pb2_grpc.ProviderServiceStub(channel).ListModels(providers_pb2.ListModelsRequest())
    after = await scrape(running.metrics.port)
    services = {dict(labels).get("service") for (name, labels) in after if name == SERVER}
    assert "grpc.health.v1.Health" not in services
    assert grown(before, after, SERVER, service=PROVIDERS, method="ListModels", code="OK") == 1


async def test_the_endpoint_has_loop_lag_and_process_metrics(running: Running) -> None:
    async def sampled() -> bool:
        return value(await scrape(running.metrics.port), "orx_event_loop_lag_seconds_count") > 0

    await until(sampled, "a loop lag sample")
    samples = await scrape(running.metrics.port)
    assert value(samples, "orx_event_loop_lag_seconds_bucket", le="+Inf") > 0
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert value(samples, name) > 0, name


async def test_the_endpoint_serves_only_metrics(running: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{running.metrics.port}/") as resp:
            assert resp.status == 404
        async with http.post(f"http://127.0.0.1:{running.metrics.port}/metrics") as resp:
            assert resp.status == 405


async def test_an_address_in_use_is_a_metrics_listen_error(running: Running) -> None:
    with pytest.raises(MetricsListenError) as err:
        await start_metrics_server(Address("127.0.0.1", running.metrics.port))
    assert f"cannot serve metrics on 127.0.0.1:{running.metrics.port}" in str(err.value)


def test_serve_exposes_metrics_and_stops_them(tmp_path: Path) -> None:
    """``orchestratex serve analytics`` with a metrics endpoint: it answers while the service runs."""
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_LOG_FORMAT": "json",
        "ORX_ANALYTICS_LISTEN": f"127.0.0.1:{grpc_port}",
        "ORX_ANALYTICS_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    proc = subprocess.Popen(
        [str(BIN / "orchestratex"), "serve", "analytics"], env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if '"msg":"serving orchestratex.v1.' in line:
                break
        assert any(f"serving metrics on http://127.0.0.1:{metrics_port}/metrics" in line for line in lines), lines
        samples = asyncio.run(scrape(metrics_port))
        assert value(samples, "process_resident_memory_bytes") > 0
        assert any(name == "orx_event_loop_lag_seconds_count" for name, _ in samples)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0, lines


def test_serve_stops_at_once_when_its_metrics_address_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_ANALYTICS_LISTEN": f"127.0.0.1:{free_port()}",
            "ORX_ANALYTICS_METRICS_LISTEN": f"127.0.0.1:{port}",
        }
        run = subprocess.run(
            [str(BIN / "orchestratex"), "serve", "analytics"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 1, run.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in run.stderr
    assert "(set ORX_ANALYTICS_METRICS_LISTEN to another address)" in run.stderr
