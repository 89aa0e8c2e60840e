"""OpenAI-compatible API benchmark (issue 15): what ``/openai/v1/chat/completions`` adds over the gRPC it serves.

    .venv/bin/python -m bench.openai_bench [--quick] [--part sessions|passthrough] [--skip-litellm]
    .venv/bin/python -m bench.openai_bench --show bench/results/openai.json     # the tables again

Every process runs on 127.0.0.1 as its own OS process, so each one's CPU is read from ``/proc/<pid>/stat``;
the clients run in this process (its CPU is ``time.process_time()``, gRPC's C-core threads included).

**Sessions** (model ``orchestratex``): the real suite on the simulator (``orchestratex serve`` providers,
analytics, selector, orchestrator) and the real gateway (``orchestratex serve gateway``, one API key, rate
limit off). The simulator runs a fixed fast profile: the packaged one with ``latency_jitter = false`` and
``ORX_SIM_SPEED=1000``; the selector is greedy on catalogue priors (``ORX_EXPLORATION=0``,
``ORX_SELECTOR_HISTORY=off``), shadow evaluation is off, and every session has the same messages and
settings, so every session makes the same calls with the same outputs. Three paths run the same session:

* ``grpc``: ``Orchestrate`` straight to the orchestrator (``grpc.aio``, the same ``OrchestrateRequest`` the
  gateway builds from the body, the same tenant) - the reference;
* ``openai``: ``POST /openai/v1/chat/completions`` through the gateway, non-streaming (aiohttp, orjson);
* ``openai_stream``: the same with ``stream: true`` and ``stream_options.include_usage``, read as SSE lines.

Per session: ``e2e`` = request sent -> end (gRPC: the stream's status; OpenAI: ``[DONE]``, or the whole
body parsed); ``ttfc`` (time to the first content token) = request sent -> the final answer available
(gRPC: the ``session_completed`` event, which carries it; OpenAI stream: the first non-empty ``content``
delta, which the gateway sends on that event); ``first`` = request sent -> first event (gRPC: the first
event; OpenAI stream: the first chunk, sent once the gateway has the session's first event).

**Pass-through** (a plain catalogue id, one call, no session): the OpenRouter stand-in
(``bench.providers_standin_proc``) in its own process, 50 content chunks, usage with the cost, ``[DONE]``.
Paths: ``direct`` (httpx + httpx-sse straight to the stand-in: the reference), ``orchestratex`` (the gateway,
over the providers service in live mode, ``ORX_OPENROUTER_BASE_URL`` = the stand-in), ``litellm``
(``litellm --config``, its proxy from ``bench/.litellm-venv``, the model mapped to the stand-in, offline:
``LITELLM_LOCAL_MODEL_COST_MAP=True``), and ``providers_grpc`` (``StreamGenerate`` on the same providers
service: what the gateway's HTTP hop adds on top of it). All HTTP paths use the same client and body
(``bench.providers_bench.http_caller``). Two scenarios with fresh processes: chunks 2 ms apart (streaming, as
from a real model) and burst (the stand-in writes all chunks at once; streaming and non-streaming calls).

Paths take turns in blocks of sequential calls, the order rotating every block, so drift on this shared
machine hits all of them alike. p50 = median of the block medians; added p50 = median over blocks of (path
block median - reference block median), neighbouring blocks; p99 pooled over all calls, added p99 a
difference of p99s (unpaired). A negative added p50 means the reference was slower than a path that
contains it: the reference is then broken (or the noise larger than the effect) and the target is not
judged. Failed calls are counted and reported, never dropped silently. CPU per call: user + system time of
each process during its own path's blocks, divided by the calls; the machine's other work is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from bench._suite import BIN, Cluster, cluster, free_port, percentile
from bench.providers_bench import CallError, chat_body, grpc_caller, http_caller, versions
from bench.providers_procs import (
    LITELLM_MASTER_KEY,
    MODEL,
    STANDIN_KEY,
    Load,
    Proc,
    _running,
    base_url,
    litellm_process,
    providers_process,
    standin_process,
    tree_cpu_seconds,
    wait_for_http,
)
from bench.providers_standin_proc import reply_chunks
from gateway.openai_request import orchestrate_request, parse_chat_request
from gateway.security import hash_key
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import orchestrator_pb2_grpc, providers_pb2_grpc

TARGET_ADDED_P50_MS = 2.0
GATEWAY_KEY = "orx_bench-openai-key-not-a-secret-0000000000"
TENANT = "bench"
SIM_SPEED = "1000"
# Session paths.
GRPC, OPENAI, OPENAI_STREAM = "grpc", "openai", "openai_stream"
# Pass-through paths.
DIRECT, GATEWAY, LITELLM, PROVIDERS_GRPC = "direct", "orchestratex", "litellm", "providers_grpc"
SESSION_BODY: dict[str, Any] = {
    "model": "orchestratex",
    "messages": [
        {"role": "system", "content": "Answer briefly, with code where it helps."},
        {"role": "user", "content": "Write a Python function that merges two sorted lists into one sorted list."},
    ],
    "temperature": 0.2,
    "max_completion_tokens": 800,
    # One round (an answer and two critiques): the same calls in every session, whatever the scores.
    "orchestratex": {"max_rounds": 1, "critic_count": 2},
}
SERVICES = ("providers", "analytics", "selector", "orchestrator")

Metrics = dict[str, float]
Call = Callable[[], Awaitable[Metrics]]


@dataclass(frozen=True)
class Mode:
    """How much to run."""

    session_warmup: int = 10
    session_blocks: int = 24
    sessions_per_block: int = 15
    call_warmup: int = 20
    call_blocks: int = 15
    calls_per_block: int = 20
    chunks: int = 50
    scenarios: tuple[str, ...] = ("paced", "burst")


QUICK = Mode(
    session_warmup=2,
    session_blocks=3,
    sessions_per_block=3,
    call_warmup=3,
    call_blocks=3,
    calls_per_block=4,
    scenarios=("burst",),
)


def say(text: str) -> None:
    """Progress, on stderr."""
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Collected:
    """One path's calls, block by block, and the CPU every process used during its blocks."""

    blocks: list[list[Metrics]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    @property
    def calls(self) -> int:
        """Successful calls."""
        return sum(len(b) for b in self.blocks)


async def run_blocks(
    calls: Mapping[str, Call], meters: Mapping[str, Callable[[], float]], *, blocks: int, per_block: int, settle: float
) -> dict[str, Collected]:
    """``blocks`` turns of every path, the order rotating; each turn makes ``per_block`` sequential calls.

    Every meter (a process's CPU seconds; ``client`` is this process) is read around every turn, so each path
    is charged what every process spent during its own turns. After each turn the machine is left idle for
    ``settle`` seconds, inside the turn, so work that follows a call (the orchestrator's outbox to analytics,
    a proxy's logging) is charged to the path that caused it.
    """
    names = list(calls)
    out = {name: Collected() for name in names}
    all_meters = {**meters, "client": time.process_time}
    for block in range(blocks):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:
            collected = out[name]
            before = {key: meter() for key, meter in all_meters.items()}
            wall = time.perf_counter()
            samples: list[Metrics] = []
            for _ in range(per_block):
                try:
                    samples.append(await calls[name]())
                except Exception as exc:
                    collected.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(settle)
            collected.wall += time.perf_counter() - wall
            for key, meter in all_meters.items():
                collected.cpu[key] = collected.cpu.get(key, 0.0) + meter() - before[key]
            collected.blocks.append(samples)
    return out


def distribution(collected: Collected, metric: str) -> dict[str, float]:
    """p50 (median of block medians), pooled p99, and the spread of block medians."""
    pooled = [s[metric] for block in collected.blocks for s in block]
    medians = [statistics.median(s[metric] for s in block) for block in collected.blocks if block]
    return {
        "p50": statistics.median(medians),
        "p99": percentile(pooled, 99),
        "pooled_p50": statistics.median(pooled),
        "block_p50_min": min(medians),
        "block_p50_max": max(medians),
    }


def added(path: Collected, reference: Collected, metric: str) -> dict[str, float]:
    """path - reference: median over blocks of the difference of block medians; difference of pooled p99s."""
    diffs = [
        statistics.median(s[metric] for s in mine) - statistics.median(s[metric] for s in theirs)
        for mine, theirs in zip(path.blocks, reference.blocks, strict=True)
        if mine and theirs
    ]
    p99 = percentile([s[metric] for b in path.blocks for s in b], 99)
    p99_reference = percentile([s[metric] for b in reference.blocks for s in b], 99)
    return {
        "p50": statistics.median(diffs),
        "p99": p99 - p99_reference,
        "block_min": min(diffs),
        "block_max": max(diffs),
    }


def summarize(
    results: Mapping[str, Collected], reference: str, metrics: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """Per path: distributions, added over ``reference``, CPU per call of every process, failures."""
    ref = results[reference]
    out: dict[str, dict[str, Any]] = {}
    for name, collected in results.items():
        entry: dict[str, Any] = {"calls": collected.calls, "failed": len(collected.errors)}
        if collected.errors:
            entry["first_errors"] = collected.errors[:3]
        if collected.calls and ref.calls:
            entry.update({metric: distribution(collected, metric) for metric in metrics[name]})
            entry["cpu_ms_per_call"] = {key: value * 1000 / collected.calls for key, value in collected.cpu.items()}
            entry["client_busy_share"] = collected.cpu["client"] / max(1e-9, collected.wall)
            if name != reference:
                shared = [m for m in metrics[name] if m in metrics[reference]]
                entry["added"] = {metric: added(collected, ref, metric) for metric in shared}
        out[name] = entry
    return out


def judged(value: float | None, target: float) -> bool | None:
    """Within ``target``; None when there is nothing to judge or the reference was the slower (negative)."""
    if value is None or value < 0:
        return None
    return value <= target


# ------------------------------------------------------------------------------------------ processes


def gateway_env(base: Mapping[str, str], port: int, providers_addr: str | None = None) -> dict[str, str]:
    """The gateway's environment: one key for the bench tenant, rate limit off, quiet logs."""
    env = {
        **base,
        "ORX_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "ORX_GATEWAY_API_KEYS": f"{TENANT}:{hash_key(GATEWAY_KEY)}",
        "ORX_GATEWAY_RATE_LIMIT": "0",
        "ORX_LOG_LEVEL": "WARNING",
    }
    if providers_addr is not None:
        env["ORX_PROVIDERS_ADDR"] = providers_addr
    return env


@contextmanager
def gateway_process(tmp: Path, env: Mapping[str, str], port: int, probe: str = "/healthz") -> Iterator[Proc]:
    """``orchestratex serve gateway`` until ``probe`` answers 200."""
    log = tmp / "gateway.log"
    argv = [str(BIN / "orchestratex"), "serve", "gateway"]
    with _running(argv, env, log, subprocess.DEVNULL) as proc:
        wait_for_http(proc, f"http://127.0.0.1:{port}{probe}", log, "the gateway", 60, 0.1)
        yield Proc("gateway", proc, port, log)


def fixed_profile(tmp: Path) -> Path:
    """The packaged simulator profile with latency jitter off."""
    from services.providers.sim_profile import DEFAULT_PROFILE

    text = DEFAULT_PROFILE.read_text()
    if "latency_jitter = true" not in text:
        raise RuntimeError(f"{DEFAULT_PROFILE}: no 'latency_jitter = true' to turn off")
    path = tmp / "sim_profile.toml"
    path.write_text(text.replace("latency_jitter = true", "latency_jitter = false"))
    return path


def cpu_meter(pid: int) -> Callable[[], float]:
    """CPU seconds of ``pid`` (and its descendants) so far."""
    return lambda: tree_cpu_seconds(pid)


# ------------------------------------------------------------------------------------------ sessions


def session_request() -> tuple[bytes, Any]:
    """The body every OpenAI path sends, and the ``OrchestrateRequest`` the gateway makes of it."""
    body = orjson.dumps(SESSION_BODY)
    request, _ = orchestrate_request(parse_chat_request(body, 200_000))
    return body, request


def grpc_session(stub: Any, request: Any, texts: set[str]) -> Call:
    """``Orchestrate`` straight to the orchestrator, as the gateway's tenant."""
    metadata = (("x-orx-tenant", TENANT),)

    async def call() -> Metrics:
        start = time.perf_counter()
        first = completed = None
        rounds = events = 0
        async for response in stub.Orchestrate(request, metadata=metadata, timeout=120):
            now = time.perf_counter()
            events += 1
            if first is None:
                first = now
            kind = response.event.WhichOneof("kind")
            if kind == "session_completed":
                completed = now
                texts.add(response.event.session_completed.final_text)
                rounds = response.event.session_completed.rounds_used
            elif kind == "session_failed":
                raise CallError(f"session failed: {response.event.session_failed.reason}")
        end = time.perf_counter()
        if first is None or completed is None:
            raise CallError("the stream ended without session_completed")
        return {
            "e2e_ms": (end - start) * 1000,
            "ttfc_ms": (completed - start) * 1000,
            "first_ms": (first - start) * 1000,
            "rounds": rounds,
            "events": events,
        }

    return call


def openai_session(http: aiohttp.ClientSession, url: str, body: bytes, texts: set[str], *, stream: bool) -> Call:
    """``POST /openai/v1/chat/completions`` for a session, whole or streamed."""
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
    if stream:
        body = orjson.dumps({**orjson.loads(body), "stream": True, "stream_options": {"include_usage": True}})

    async def whole() -> Metrics:
        start = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise CallError(f"HTTP {resp.status}: {raw[:200]!r}")
        data = orjson.loads(raw)
        end = time.perf_counter()
        content = data["choices"][0]["message"]["content"]
        if not content or data["usage"].get("cost") is None:
            raise CallError("no content or no cost")
        texts.add(content)
        return {"e2e_ms": (end - start) * 1000, "rounds": data["orchestratex"]["rounds_used"]}

    async def streamed() -> Metrics:
        start = time.perf_counter()
        first = ttfc = end = None
        content: list[str] = []
        cost = None
        rounds = 0
        async with http.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise CallError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                now = time.perf_counter()
                if first is None:
                    first = now
                payload = line[6:].rstrip()
                if payload == b"[DONE]":
                    end = now
                    continue  # read to the end, so the connection goes back to the pool
                chunk = orjson.loads(payload)
                if chunk.get("error") is not None:
                    raise CallError(f"error event: {chunk['error']}")
                for choice in chunk.get("choices") or ():
                    piece = choice["delta"].get("content")
                    if piece:
                        content.append(piece)
                        if ttfc is None:
                            ttfc = now
                if chunk.get("usage"):
                    cost = chunk["usage"].get("cost")
                if chunk.get("orchestratex"):
                    rounds = chunk["orchestratex"]["rounds_used"]
        if first is None or ttfc is None or end is None or cost is None:
            raise CallError(f"incomplete stream: content {ttfc is not None}, cost {cost}, [DONE] {end is not None}")
        texts.add("".join(content))
        return {
            "e2e_ms": (end - start) * 1000,
            "ttfc_ms": (ttfc - start) * 1000,
            "first_ms": (first - start) * 1000,
            "rounds": rounds,
        }

    return streamed if stream else whole


SESSION_METRICS = {
    GRPC: ("e2e_ms", "ttfc_ms", "first_ms"),
    OPENAI: ("e2e_ms",),
    OPENAI_STREAM: ("e2e_ms", "ttfc_ms", "first_ms"),
}


@contextmanager
def session_stack(tmp: Path) -> Iterator[tuple[Cluster, Proc]]:
    """The four services on the simulator's fixed fast profile, and the gateway."""
    data = tmp / "data"
    data.mkdir()
    extra = {
        "ORX_PROVIDER_MODE": "simulated",
        "ORX_SIM_SPEED": SIM_SPEED,
        "ORX_SIM_PROFILE": str(fixed_profile(tmp)),
        "ORX_SHADOW_SAMPLE_RATE": "0",
        "ORX_EXPLORATION": "0",
        "ORX_SELECTOR_HISTORY": "off",
    }
    with cluster(data, extra) as suite:
        for name in SERVICES:
            suite.start(name)
        port = free_port()
        with gateway_process(tmp, gateway_env(suite.env, port), port, probe="/readyz") as gateway:
            yield suite, gateway


async def measure_sessions(mode: Mode, suite: Cluster, gateway: Proc) -> tuple[dict[str, Collected], set[str]]:
    """Warm up, then the alternating blocks; also every final answer seen (they should all be one)."""
    body, request = session_request()
    texts: set[str] = set()
    url = f"http://127.0.0.1:{gateway.port}/openai/v1/chat/completions"
    meters = {"gateway": cpu_meter(gateway.pid)}
    meters.update({name: cpu_meter(suite.procs[name].pid) for name in SERVICES})
    async with AsyncExitStack() as stack:
        channel = await stack.enter_async_context(open_channel(suite.addr["orchestrator"], unary_timeout=60))
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)))
        calls: dict[str, Call] = {
            GRPC: grpc_session(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), request, texts),
            OPENAI: openai_session(http, url, body, texts, stream=False),
            OPENAI_STREAM: openai_session(http, url, body, texts, stream=True),
        }
        say(f"  warm-up: {mode.session_warmup} sessions per path")
        await run_blocks(calls, meters, blocks=1, per_block=mode.session_warmup, settle=0.3)
        say(f"  {mode.session_blocks} blocks of {mode.sessions_per_block} sessions per path")
        results = await run_blocks(
            calls, meters, blocks=mode.session_blocks, per_block=mode.sessions_per_block, settle=0.3
        )
    return results, texts


def run_sessions(mode: Mode) -> dict[str, Any]:
    """Part (a): the OpenAI surface over ``Orchestrate`` for the same sessions."""
    say("sessions: starting the suite on the simulator and the gateway")
    with tempfile.TemporaryDirectory(prefix="orx-openai-bench-") as tmp, session_stack(Path(tmp)) as (suite, gw):
        start = Load.now()
        results, texts = asyncio.run(measure_sessions(mode, suite, gw))
        load = Load.now().since(start)
    paths = summarize(results, GRPC, SESSION_METRICS)
    for name, collected in results.items():
        rounds = Counter(int(s["rounds"]) for block in collected.blocks for s in block)
        paths[name]["rounds_used"] = {str(k): v for k, v in sorted(rounds.items())}
    events = [s["events"] for block in results[GRPC].blocks for s in block]
    events_p50 = statistics.median(events) if events else None
    for name, entry in paths.items():
        if entry["failed"]:
            say(f"  {name}: {entry['failed']} failed sessions, first: {entry['first_errors'][0]}")
    verdict: dict[str, Any] = {}
    for name in (OPENAI, OPENAI_STREAM):
        for metric in ("e2e_ms", "ttfc_ms"):
            value = paths[name].get("added", {}).get(metric, {}).get("p50")
            if metric in SESSION_METRICS[name]:
                verdict[f"{name}_{metric.removesuffix('_ms')}_added_p50_within_2ms"] = judged(
                    value, TARGET_ADDED_P50_MS
                )
    return {
        "setup": {
            "body": SESSION_BODY,
            "sim_speed": float(SIM_SPEED),
            "latency_jitter": False,
            "selector": "greedy on catalogue priors (ORX_EXPLORATION=0, ORX_SELECTOR_HISTORY=off)",
            "warmup_sessions_per_path": mode.session_warmup,
            "blocks": mode.session_blocks,
            "sessions_per_block": mode.sessions_per_block,
        },
        "distinct_final_answers": len(texts),
        "events_per_session_p50": events_p50,
        "machine": load,
        "paths": paths,
        "verdict": verdict,
    }


# ------------------------------------------------------------------------------------------ pass-through


def nonstream_caller(client: httpx.AsyncClient, url: str, headers: Mapping[str, str], chunks: int) -> Call:
    """A non-streamed chat completion over HTTP (the same body without ``stream``)."""
    body = orjson.dumps({k: v for k, v in orjson.loads(chat_body()).items() if k not in ("stream", "stream_options")})
    expected = "".join(reply_chunks(chunks))

    async def call() -> Metrics:
        start = time.perf_counter()
        response = await client.post(url, content=body, headers=dict(headers))
        if response.status_code != 200:
            raise CallError(f"HTTP {response.status_code}: {response.content[:200]!r}")
        data = orjson.loads(response.content)
        end = time.perf_counter()
        if data["choices"][0]["message"]["content"] != expected:
            raise CallError("wrong content")
        return {"call_ms": (end - start) * 1000}

    return call


def streamed(call: Callable[[], Awaitable[Any]]) -> Call:
    """A ``bench.providers_bench`` streamed call, its sample as metrics."""

    async def metrics() -> Metrics:
        sample = await call()
        return {
            "call_ms": sample.latency * 1000,
            "ttft_ms": sample.ttft * 1000,
            "per_chunk_ms": sample.per_chunk * 1000,
            "messages": float(sample.messages),
        }

    return metrics


STREAM_METRICS = ("call_ms", "ttft_ms", "per_chunk_ms")


async def measure_calls(
    mode: Mode,
    standin: Proc,
    ours: Proc,
    gateway: Proc,
    litellm: Proc | None,
    *,
    stream: bool,
) -> dict[str, Collected]:
    """Warm up, then the alternating blocks of single calls."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16, keepalive_expiry=60)
    timeout = httpx.Timeout(120.0)
    json_headers = {"Content-Type": "application/json"}
    headers = {
        DIRECT: {**json_headers, "Authorization": f"Bearer {STANDIN_KEY}", "X-OpenRouter-Title": "OrchestrateX"},
        GATEWAY: {**json_headers, "Authorization": f"Bearer {GATEWAY_KEY}"},
        LITELLM: {**json_headers, "Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
    }
    urls = {
        DIRECT: f"{base_url(standin)}/chat/completions",
        GATEWAY: f"http://127.0.0.1:{gateway.port}/openai/v1/chat/completions",
    }
    meters = {"standin": standin.cpu_seconds, "providers": ours.cpu_seconds, "gateway": gateway.cpu_seconds}
    if litellm is not None:
        urls[LITELLM] = f"http://127.0.0.1:{litellm.port}/v1/chat/completions"
        meters["litellm"] = litellm.cpu_seconds
    async with AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        for name, url in urls.items():
            # One client per path, as each would be its own application.
            client = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=timeout))
            if stream:
                calls[name] = streamed(http_caller(client, url, headers[name], mode.chunks))
            else:
                calls[name] = nonstream_caller(client, url, headers[name], mode.chunks)
        if stream:
            channel = await stack.enter_async_context(open_channel(f"127.0.0.1:{ours.port}", unary_timeout=60))
            stub = providers_pb2_grpc.ProviderServiceStub(channel)
            calls[PROVIDERS_GRPC] = streamed(grpc_caller(stub, mode.chunks))
        say(f"  warm-up: {mode.call_warmup} calls per path")
        await run_blocks(calls, meters, blocks=1, per_block=mode.call_warmup, settle=0.2)
        say(f"  {mode.call_blocks} blocks of {mode.calls_per_block} calls per path")
        return await run_blocks(calls, meters, blocks=mode.call_blocks, per_block=mode.calls_per_block, settle=0.1)


def server_cpu(entry: Mapping[str, Any], name: str) -> float | None:
    """CPU per call of the server side of a path: the gateway and providers for ours, the proxy for LiteLLM."""
    cpu = entry.get("cpu_ms_per_call")
    if not cpu:
        return None
    if name == GATEWAY:
        return float(cpu["gateway"] + cpu["providers"])
    if name == PROVIDERS_GRPC:
        return float(cpu["providers"])
    if name == LITELLM:
        return float(cpu["litellm"])
    return None


def run_scenario(mode: Mode, scenario: str, skip_litellm: bool) -> dict[str, Any]:
    """Fresh processes for one stand-in pacing; streamed calls, and for the burst also whole ones."""
    gap_ms = 2.0 if scenario == "paced" else 0.0
    with tempfile.TemporaryDirectory(prefix="orx-openai-bench-") as tmp, ExitStack() as stack:
        tmpdir = Path(tmp)
        standin = stack.enter_context(standin_process(tmpdir, mode.chunks, gap_ms))
        ours = stack.enter_context(providers_process(tmpdir, standin))
        port = free_port()
        env = gateway_env({**os.environ, "ORX_DATA_DIR": str(tmpdir)}, port, f"127.0.0.1:{ours.port}")
        gateway = stack.enter_context(gateway_process(tmpdir, env, port))
        litellm = None
        if not skip_litellm:
            say("  starting LiteLLM's proxy (about 20 s)")
            litellm = stack.enter_context(litellm_process(tmpdir, standin))
        kinds = (True, False) if scenario == "burst" else (True,)
        out: dict[str, Any] = {"name": scenario, "gap_ms": gap_ms}
        for stream in kinds:
            label = "stream" if stream else "whole"
            say(f"  {scenario}, {label} calls")
            start = Load.now()
            results = asyncio.run(measure_calls(mode, standin, ours, gateway, litellm, stream=stream))
            load = Load.now().since(start)
            metrics = dict.fromkeys(results, STREAM_METRICS if stream else ("call_ms",))
            paths = summarize(results, DIRECT, metrics)
            for name, entry in paths.items():
                entry["server_cpu_ms_per_call"] = server_cpu(entry, name)
                if entry["failed"]:
                    say(f"  {name}: {entry['failed']} failed calls, first: {entry['first_errors'][0]}")
            part: dict[str, Any] = {"machine": load, "paths": paths}
            ours_added = paths[GATEWAY].get("added", {})
            theirs_added = paths.get(LITELLM, {}).get("added", {})
            verdict: dict[str, Any] = {
                "call_added_p50_within_2ms": judged(ours_added.get("call_ms", {}).get("p50"), TARGET_ADDED_P50_MS)
            }
            for metric in metrics[DIRECT]:
                mine, theirs = ours_added.get(metric, {}).get("p50"), theirs_added.get(metric, {}).get("p50")
                below = None if mine is None or theirs is None else mine < theirs
                verdict[f"{metric.removesuffix('_ms')}_added_p50_below_litellm"] = below
                # A ratio only when both add something: a negative "added" is noise around zero.
                if mine is not None and theirs is not None and mine >= 0 and theirs > 0:
                    part.setdefault("ours_over_litellm_added_p50", {})[metric] = mine / theirs
            ours_cpu, theirs_cpu = paths[GATEWAY].get("server_cpu_ms_per_call"), None
            if LITELLM in paths:
                theirs_cpu = paths[LITELLM].get("server_cpu_ms_per_call")
            if ours_cpu is not None and theirs_cpu:
                part["ours_over_litellm_server_cpu"] = ours_cpu / theirs_cpu
            part["verdict"] = verdict
            out[label] = part
    return out


def run_passthrough(mode: Mode, skip_litellm: bool) -> dict[str, Any]:
    """Part (b): single calls of a plain catalogue id, against the upstream and LiteLLM's proxy."""
    reply = "".join(reply_chunks(mode.chunks))
    doc: dict[str, Any] = {
        "setup": {
            "model": MODEL,
            "content_chunks": mode.chunks,
            "reply_chars": len(reply),
            "warmup_calls_per_path": mode.call_warmup,
            "blocks": mode.call_blocks,
            "calls_per_block": mode.calls_per_block,
        },
        "scenarios": [],
    }
    for scenario in mode.scenarios:
        say(f"pass-through: scenario {scenario}")
        doc["scenarios"].append(run_scenario(mode, scenario, skip_litellm))
    return doc


# ------------------------------------------------------------------------------------------ the run


NOTES = [
    "Sessions: every session has the same messages and settings on the simulator with latency jitter off, "
    "ORX_SIM_SPEED=1000 and greedy selection on catalogue priors, so every session makes the same calls "
    "(one round: an answer and two critiques; 'rounds_used' per path). The simulator seeds each call from "
    "the messages and the attempt number of that (model, purpose, messages), so a repeated prompt gets a new "
    "draft each time: 'distinct_final_answers' counts the texts, which differ by design.",
    "Sessions: the OpenAI surface sends the answer when the session completes (the loop's progress goes "
    "first, as reasoning), so its time to the first content token is compared with the gRPC client's receipt "
    "of session_completed, the first moment the answer exists for any client.",
    "Pass-through: all HTTP clients run in this process with the same httpx + httpx-sse code; 'added' "
    "includes the difference between clients only for providers_grpc (grpc.aio).",
    "CPU per call is user + system time of each process during its own path's blocks (10 ms ticks, summed "
    "over blocks, settle time included). 'client_busy_share' is the client process's CPU over the wall time "
    "of its blocks: well below 1, the client was never the bottleneck.",
    "Two cores, shared: a call through the gateway keeps more processes busy than the reference, so part of "
    "any added latency is waiting for a core; 'machine.other_cores' is what other work used meanwhile.",
]


def run(mode: Mode, part: str | None, skip_litellm: bool, quick: bool) -> dict[str, Any]:
    """Every part; the results document."""
    doc: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        "quick": quick,
        "quiet_flag": Path("/tmp/orx-quiet").exists(),
        "versions": versions(skip_litellm or part == "sessions"),
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
    }
    if part in (None, "sessions"):
        doc["sessions"] = run_sessions(mode)
    if part in (None, "passthrough"):
        doc["passthrough"] = run_passthrough(mode, skip_litellm)
    doc["notes"] = NOTES
    return doc


def _cell(entry: Mapping[str, Any] | None, metric: str, *, add: bool = False) -> str:
    if entry is None:
        return "—"
    if not entry["calls"]:
        return f"all {entry['failed']} failed"
    source = entry.get("added", {}) if add else entry
    if metric not in source:
        return "—"
    return f"{source[metric]['p50']:.2f} / {source[metric]['p99']:.2f}"


def session_table(sessions: Mapping[str, Any]) -> str:
    """Part (a) as Markdown (milliseconds)."""
    paths = sessions["paths"]
    labels = {GRPC: "gRPC `Orchestrate` (reference)", OPENAI: "OpenAI, whole", OPENAI_STREAM: "OpenAI, streamed"}
    lines = [
        "| path | sessions (failed) | end to end p50 / p99 | added p50 / p99 | first content token p50 / p99 "
        "| added p50 / p99 | first event p50 / p99 | added p50 / p99 | gateway CPU per session | client CPU "
        "per session (busy share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in labels.items():
        entry = paths[name]
        cpu = entry.get("cpu_ms_per_call", {})
        busy = entry.get("client_busy_share")
        lines.append(
            f"| {label} | {entry['calls']} ({entry['failed']}) "
            f"| {_cell(entry, 'e2e_ms')} | {_cell(entry, 'e2e_ms', add=True)} "
            f"| {_cell(entry, 'ttfc_ms')} | {_cell(entry, 'ttfc_ms', add=True)} "
            f"| {_cell(entry, 'first_ms')} | {_cell(entry, 'first_ms', add=True)} "
            f"| {cpu.get('gateway', float('nan')):.2f} ms "
            f"| {cpu.get('client', float('nan')):.2f} ms ({busy if busy is not None else float('nan'):.2f}) |"
        )
    services = ", ".join(
        f"{name} {paths[name].get('cpu_ms_per_call', {}).get('orchestrator', float('nan')):.1f} ms" for name in labels
    )
    lines += ["", f"Orchestrator CPU per session (the same sessions): {services}."]
    return "\n".join(lines)


def passthrough_table(part: Mapping[str, Any], stream: bool) -> str:
    """One pass-through measurement as Markdown (milliseconds)."""
    paths = part["paths"]
    metrics = STREAM_METRICS if stream else ("call_ms",)
    labels = {"call_ms": "per call", "ttft_ms": "TTFT", "per_chunk_ms": "per chunk"}
    lines = [
        "| metric | direct p50 / p99 | OrchestrateX p50 / p99 | LiteLLM p50 / p99 | **added by OrchestrateX** "
        "p50 / p99 | added by LiteLLM p50 / p99 | ours ÷ LiteLLM (added p50) | providers gRPC, added p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for metric in metrics:
        ratio = part.get("ours_over_litellm_added_p50", {}).get(metric)
        lines.append(
            f"| {labels[metric]} | {_cell(paths[DIRECT], metric)} | {_cell(paths[GATEWAY], metric)} "
            f"| {_cell(paths.get(LITELLM), metric)} | **{_cell(paths[GATEWAY], metric, add=True)}** "
            f"| {_cell(paths.get(LITELLM), metric, add=True)} | {f'{ratio:.3f}' if ratio is not None else '—'} "
            f"| {_cell(paths.get(PROVIDERS_GRPC), metric, add=True)} |"
        )

    def cpu(name: str) -> str:
        entry = paths.get(name)
        value = entry.get("server_cpu_ms_per_call") if entry else None
        return f"{value:.2f}" if value is not None else "—"

    ratio = part.get("ours_over_litellm_server_cpu")
    gateway_only = paths[GATEWAY].get("cpu_ms_per_call", {}).get("gateway")
    lines.append(
        f"| server CPU per call | — | {cpu(GATEWAY)} (gateway {gateway_only or float('nan'):.2f}) | {cpu(LITELLM)} "
        f"| | | {f'{ratio:.2f}' if ratio is not None else '—'} | {cpu(PROVIDERS_GRPC)} |"
    )
    clients = ", ".join(
        f"{name} {entry['cpu_ms_per_call']['client']:.2f} ms ({entry['client_busy_share']:.2f})"
        for name, entry in paths.items()
        if entry.get("cpu_ms_per_call")
    )
    failed = ", ".join(f"{name} {entry['failed']}" for name, entry in paths.items())
    lines += ["", f"Client CPU per call (busy share): {clients}. Failed calls: {failed}."]
    return "\n".join(lines)


def print_tables(doc: Mapping[str, Any]) -> None:
    """Every table and verdict."""
    if "sessions" in doc:
        sessions = doc["sessions"]
        machine = sessions["machine"]
        print("\n### Sessions: OpenAI surface over gRPC Orchestrate (milliseconds)\n")
        print(
            f"{machine['seconds']:.0f} s; cores used by the benchmark {machine['benchmark_cores']:.2f}, by other "
            f"work {machine['other_cores']:.2f} (of {doc['cpus']}); {sessions.get('events_per_session_p50')} events "
            f"per session (median, gRPC); rounds used: {sessions['paths'][GRPC]['rounds_used']}\n"
        )
        print(session_table(sessions))
        print()
        print(json.dumps(sessions["verdict"], indent=2))
    for scenario in doc.get("passthrough", {}).get("scenarios", []):
        for label in ("stream", "whole"):
            if label not in scenario:
                continue
            part = scenario[label]
            machine = part["machine"]
            print(f"\n### Pass-through, {scenario['name']}, {label} calls (milliseconds)\n")
            print(
                f"{machine['seconds']:.0f} s; cores used by the benchmark {machine['benchmark_cores']:.2f}, by "
                f"other work {machine['other_cores']:.2f} (of {doc['cpus']})\n"
            )
            print(passthrough_table(part, label == "stream"))
            print()
            print(json.dumps(part["verdict"], indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, write the results and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few blocks, burst scenario only")
    parser.add_argument("--part", choices=("sessions", "passthrough"), help="run one part only")
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM's proxy out")
    parser.add_argument("--out", type=Path, default=Path("bench/results/openai.json"))
    parser.add_argument("--show", type=Path, help="print the tables of an existing results file and exit")
    args = parser.parse_args(argv)
    if args.show is not None:
        print_tables(json.loads(args.show.read_text()))
        return
    if shutil.which("orchestratex", path=str(BIN)) is None:
        parser.error(f"{BIN}/orchestratex not found: install the project into this venv first")
    doc = run(QUICK if args.quick else Mode(), args.part, args.skip_litellm, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print_tables(doc)
    say(f"written to {args.out}")


if __name__ == "__main__":
    main()
