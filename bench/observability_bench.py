"""The cost of watching (issue 17): CPU per provider call and per orchestration with metrics and tracing on.

    .venv/bin/python -m bench.observability_bench [--blocks 6] [--calls 1000] [--sessions 40]
        [--out bench/results/observability.json]

Four copies of the suite run side by side as real subprocesses (`orchestratex serve`), identical except for
what is watched:

- **off**: no metrics endpoint, no tracing (the default);
- **metrics**: every service serves `/metrics` (`ORX_<SERVICE>_METRICS_LISTEN`), scraped by this script
  every second as Prometheus would (the scrape's cost is counted: it is part of watching);
- **trace 100%**: metrics on and OpenTelemetry tracing with `OTEL_TRACES_SAMPLER=parentbased_traceidratio`,
  ratio 1.0, exported over OTLP/gRPC to a sink in this process (a real `TraceService/Export` server that
  counts spans and drops them);
- **trace 1%**: the same at ratio 0.01.

Simulated models with fixed latency (no jitter) and `ORX_SIM_SPEED=20`. The workload alternates between the four
copies in blocks (A B C D, B C D A, ...) after one unrecorded warm-up pass: per block, `--calls` unary `Generate`
calls to the providers service (16 at a time), then `--sessions` orchestrations (8 at a time). CPU is user + system
time of each service process read from `/proc/<pid>/stat` before and after the block; the client (this process) is
the same for every copy and its CPU is reported beside the results to show it is never the bottleneck. Reported:
medians over blocks of CPU per call (providers process) and per orchestration (all four services), the ratios to
**off**, and the median wall time per call / per session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench._suite import Cluster, cluster, free_port
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, providers_pb2, providers_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """
seed = 11
latency_jitter = false
[defaults]
ttft_ms = 200
tokens_per_second = 200
"""
SERVICES = ("analytics", "selector", "providers", "orchestrator")


class SpanSink:
    """An OTLP/gRPC trace receiver that counts spans and drops them (sync gRPC server in a thread pool)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        sink = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                with sink.lock:
                    sink.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.lock = threading.Lock()
        self.spans = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def configs(sink_port: int) -> dict[str, dict[str, str]]:
    trace = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    }
    return {
        "off": {},
        "metrics": {"metrics": "1"},
        "trace 100%": {"metrics": "1", **trace, "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        "trace 1%": {"metrics": "1", **trace, "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    }


async def provider_calls(addr: str, n: int) -> list[float]:
    request = providers_pb2.GenerateRequest(
        model="openai/gpt-oss-120b",
        messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="Name three prime numbers.")],
        max_tokens=64,
        context=providers_pb2.CallContext(purpose=common_pb2.CALL_PURPOSE_ANSWER),
    )
    gate = asyncio.Semaphore(16)
    walls: list[float] = []
    async with open_channel(addr) as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                await stub.Generate(request, timeout=60)
                walls.append(time.perf_counter() - started)

        await asyncio.gather(*(one() for _ in range(n)))
    return walls


async def sessions(addr: str, n: int) -> list[float]:
    gate = asyncio.Semaphore(8)
    walls: list[float] = []
    async with open_channel(addr) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                request = orchestrator_pb2.OrchestrateRequest(
                    prompt=f"Explain idempotency in HTTP APIs with an example ({i})", max_rounds=2, critic_count=2
                )
                async for _ in stub.Orchestrate(request, timeout=300):
                    pass
                walls.append(time.perf_counter() - started)

        await asyncio.gather(*(one(i) for i in range(n)))
    return walls


class Scraper:
    """Scrapes every metrics endpoint of the watched copies once a second, as Prometheus would."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes = 0

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(1.0):
                for url in self.urls:
                    if client.get(url).status_code == 200:
                        self.scrapes += 1

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "observability.json")
    args = parser.parse_args()
    sink = SpanSink()
    names = list(configs(sink.port))
    samples: dict[str, dict[str, list[float]]] = {
        n: {"call_cpu_ms": [], "session_cpu_ms": [], "call_wall_ms": [], "session_wall_ms": [], "client_cpu_ms": []}
        for n in names
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        profile = Path(tmp) / "profile.toml"
        profile.write_text(PROFILE, encoding="utf-8")
        clusters: dict[str, Cluster] = {}
        metric_urls: list[str] = []
        for name, env in configs(sink.port).items():
            extra = {
                # The simulator is no vendor: its per-model limits are raised so the limiter never queues.
                "ORX_PROVIDER_RPM": "1000000",
                "ORX_PROVIDER_CONCURRENCY": "512",
                "ORX_PROVIDER_QUEUE": "4096",
                "ORX_SIM_PROFILE": str(profile),
                "ORX_SIM_SPEED": "20",
                "ORX_SHADOW_SAMPLE_RATE": "0",
                **{k: v for k, v in env.items() if k != "metrics"},
            }
            if env.get("metrics"):
                for service in SERVICES:
                    port = free_port()
                    extra[f"ORX_{service.upper()}_METRICS_LISTEN"] = f"127.0.0.1:{port}"
                    metric_urls.append(f"http://127.0.0.1:{port}/metrics")
            c = stack.enter_context(cluster(Path(tmp) / name.replace(" ", "-").replace("%", ""), extra))
            for service in SERVICES:
                c.start(service)
            clusters[name] = c
        stack.enter_context(Scraper(metric_urls))
        for block in range(args.blocks):
            order = names[block % len(names) :] + names[: block % len(names)]
            for name in order:
                c = clusters[name]
                pids = {s: p.pid for s, p in c.procs.items()}
                before = {s: cpu_seconds(pid) for s, pid in pids.items()}
                client_before = self_cpu()
                walls = asyncio.run(provider_calls(c.addr["providers"], args.calls))
                mid = {s: cpu_seconds(pid) for s, pid in pids.items()}
                client_mid = self_cpu()
                swalls = asyncio.run(sessions(c.addr["orchestrator"], args.sessions))
                after = {s: cpu_seconds(pid) for s, pid in pids.items()}
                if block < 0:
                    continue
                s = samples[name]
                s["call_cpu_ms"].append((mid["providers"] - before["providers"]) * 1000 / args.calls)
                s["session_cpu_ms"].append(sum(after[k] - mid[k] for k in pids) * 1000 / args.sessions)
                s["call_wall_ms"].append(statistics.median(walls) * 1000)
                s["session_wall_ms"].append(statistics.median(swalls) * 1000)
                s["client_cpu_ms"].append((client_mid - client_before) * 1000 / args.calls)
            print(f"block {block + 1}/{args.blocks} done" if block >= 0 else "warm-up done", flush=True)
    sink.stop()
    base = {k: statistics.median(v) for k, v in samples["off"].items()}
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "blocks": args.blocks,
        "calls_per_block": args.calls,
        "sessions_per_block": args.sessions,
        "spans_exported": sink.spans,
        "configs": {},
    }
    for name, s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        result["configs"][name] = {
            **{k: round(v, 4) for k, v in med.items()},
            "call_cpu_ratio": round(med["call_cpu_ms"] / base["call_cpu_ms"], 4),
            "session_cpu_ratio": round(med["session_cpu_ms"] / base["session_cpu_ms"], 4),
            "call_wall_added_ms": round(med["call_wall_ms"] - base["call_wall_ms"], 3),
            "session_wall_added_ms": round(med["session_wall_ms"] - base["session_wall_ms"], 3),
            "raw": s,
        }
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    for name, r in result["configs"].items():
        print(
            f"{name:11s} call CPU {r['call_cpu_ms']:.3f} ms (x{r['call_cpu_ratio']:.3f}), session CPU "
            f"{r['session_cpu_ms']:.1f} ms (x{r['session_cpu_ratio']:.3f}), "
            f"call wall +{r['call_wall_added_ms']:.2f} ms, "
            f"session wall +{r['session_wall_added_ms']:.1f} ms; client {r['client_cpu_ms']:.3f} ms/call"
        )
    print(f"spans exported: {sink.spans}; wrote {args.out}")


if __name__ == "__main__":
    main()
