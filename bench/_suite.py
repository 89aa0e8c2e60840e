"""Benchmark helpers: start OrchestrateX services as real subprocesses on free ports, and read what they cost
(CPU and resident memory from /proc, Prometheus metrics from their ``/metrics`` endpoints)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def memory_kib(pid: int) -> dict[str, int]:
    """Resident memory of ``pid`` from /proc/<pid>/status: ``VmRSS`` and its parts ``RssAnon`` (heap, stacks: what a
    leak grows), ``RssFile`` (mapped files and libraries) and ``RssShmem``, in KiB."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            out[name] = int(value.split()[0])
    return out


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3, the state, is index 0)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (a service's worker processes, if it forks any)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU time of ``pid`` (and, with ``tree``, its live descendants), from /proc/<pid>/stat.

    The kernel counts in clock ticks (``SC_CLK_TCK``, 10 ms here), so read it around runs of seconds.
    """
    total = 0
    for each in [pid, *(descendants(pid) if tree else ())]:
        try:
            fields = _stat_fields(each)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus text endpoint's samples: ``(name, labels) -> value``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample_sum(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of every sample named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@dataclass
class Cluster:
    """Running services and their addresses."""

    addr: dict[str, str]
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, extra_env: dict[str, str] | None = None, command: Sequence[str] = ()) -> None:
        """Start service ``name``; ``command`` replaces the ``orchestratex`` executable (e.g. a profiler that
        runs ``-m services.cli``), and ``serve <name>`` follows it."""
        env = {**self.env, **(extra_env or {})}
        self.procs[name] = subprocess.Popen(
            [*(command or [str(BIN / "orchestratex")]), "serve", name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(_wait_healthy(self.addr[name], SERVICE_NAMES[name], self.procs[name]))

    def start_gateway(self, extra_env: dict[str, str] | None = None) -> str:
        """Start the gateway (``orchestratex serve gateway``, rate limit off, no API keys) in front of the
        services; returns its ``host:port`` once ``/healthz`` answers."""
        addr = f"127.0.0.1:{free_port()}"
        env = {**self.env, "ORX_GATEWAY_LISTEN": addr, "ORX_GATEWAY_RATE_LIMIT": "0", **(extra_env or {})}
        env.pop("ORX_GATEWAY_API_KEYS", None)
        env.pop("ORX_GATEWAY_API_KEYS_FILE", None)
        self.procs["gateway"] = proc = subprocess.Popen(
            [str(BIN / "orchestratex"), "serve", "gateway"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(_wait_http(f"http://{addr}/healthz", proc))
        self.addr["gateway"] = addr
        return addr

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


async def _wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy")


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
