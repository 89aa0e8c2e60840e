"""Providers benchmark (issues #3 and 18): what ``ProviderService.StreamGenerate`` adds over calling the vendor
directly, beside what LiteLLM's proxy adds, in front of the same OpenRouter stand-in; and how many streamed
calls per second the service carries, with delta coalescing on and off, on one worker and on two.

    .venv/bin/python -m bench.providers_bench [--quick] [--skip-litellm] [--out bench/results/providers.json]
    .venv/bin/python -m bench.providers_bench --markdown [bench/results/providers.json]   # the tables again
    .venv/bin/python -m bench.providers_bench --profile /tmp/providers.prof               # cProfile the service
    .venv/bin/python -m bench.providers_bench --quick --skip-litellm --only throughput --scenario paced \
        --workers 1 --out /tmp/providers.json                                             # one part, for a before/after

Processes, all on 127.0.0.1, each its own OS process, so each one's CPU is read from ``/proc/<pid>/stat``:

* stand-in: ``bench.providers_standin_proc`` (``tests/providers/openrouter_standin.py``). Every chat request
  gets ``--chunks`` content chunks of 2-3 words, the finish chunk, a usage chunk with the cost, ``[DONE]``;
* OrchestrateX: ``orchestratex serve providers`` in live mode, ``ORX_OPENROUTER_BASE_URL`` = the stand-in,
  ``OPENROUTER_API_KEY`` = the stand-in's dummy key. Two of them: the shipped coalescing (``orchestratex``),
  and coalescing off (``orchestratex_flush0``: ``ORX_PROVIDER_STREAM_FLUSH_MS=0``), the before/after of one run;
* LiteLLM: ``litellm --config`` (its proxy, from ``bench/.litellm-venv``), the model mapped to the stand-in
  as an OpenAI-compatible endpoint, offline;
* clients: ``bench.providers_client_proc``, one process per path (more for the throughput part), on uvloop.
  The direct path and LiteLLM are read by aiohttp with a minimal SSE reader (orjson on every event);
  OrchestrateX by ``grpc.aio`` (plain channels, no interceptors). This process only gives orders and reads
  ``/proc``: it never runs a call.

The stand-in and the clients run at nice -10 (``--no-priority``: 0): they stand for machines outside this one,
so they are served first and the servers measured get what is left of the two cores; a stand-in starved of CPU
would also fall behind its schedule and send chunks in bunches, which a paced stream is not (how many paced
chunks it wrote more than 1 ms late is reported).

**Latency** (per scenario: burst, the stand-in writing all chunks at once, and paced, content chunks due 2 ms
apart on a fixed schedule, as a real model sends them). At 1, 16 and 64 concurrent streams the paths take turns in
blocks, the order rotating every block, so drift on this shared machine hits all of them alike. A block at
1 stream is ``calls_1`` sequential calls; at N streams, N loops of sequential calls for ``seconds_n`` (calls
are never cut short). Per call: L = request sent -> end marker (``completed`` for gRPC, ``[DONE]`` for
HTTP; usage and cost have arrived by then on every path); TTFT = request sent -> first non-empty content
delta; per chunk = (L - TTFT) / (chunks - 1). p50 = median of the block medians; added p50 = median over
blocks of (path block median - direct block median), neighbouring blocks; p99 pooled, added p99 a difference
of p99s (unpaired). CPU per call = each process's user + system time during its path's own blocks (settle
time included, so work a proxy does after its calls is charged to it), over the calls. A client's busy share
is its CPU over its block's wall time: well below 1, it was not the bottleneck.

**Throughput**: the providers service's calls/s, closed loop at ``concurrency`` streams spread over two
client processes with several connections each, for ``seconds_t`` per block; calls/s counts the calls that
ended between ``warm_t`` and the block's end. Coalescing on and off alternate block by block, with
``ORX_PROVIDERS_WORKERS`` = 1, then 2. Each worker's CPU is reported, so the split shows.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench._suite import percentile
from bench.providers_calls import CallError, Sample, chat_body, grpc_caller, http_caller
from bench.providers_procs import (
    LITELLM_MASTER_KEY,
    MODEL,
    STANDIN_KEY,
    Load,
    Proc,
    base_url,
    client_process,
    listening_sockets,
    litellm_process,
    litellm_version,
    niceness,
    pacing_stats,
    providers_process,
    standin_process,
    stat_cpu_seconds,
    tree_cpu_by_pid,
)
from bench.providers_standin_proc import reply_chunks

__all__ = ["CallError", "Sample", "chat_body", "grpc_caller", "http_caller", "main", "versions"]

DIRECT, OURS, OURS_OFF, LITELLM = "direct", "orchestratex", "orchestratex_flush0", "litellm"
LABELS = {
    DIRECT: "direct (reference)",
    OURS: "**OrchestrateX**",
    OURS_OFF: "OrchestrateX, coalescing off",
    LITELLM: "LiteLLM",
}
COALESCING_OFF = {"ORX_PROVIDER_STREAM_FLUSH_MS": "0"}
TARGET_TTFT_MS = 1.0
"""Issue 18: added time to first token p50 at 1 stream."""
TARGET_THROUGHPUT_RATIO = 3.0
"""Issue 18: calls/s at 2 ms-paced chunks on one core, coalescing on over off (and over the issue's 80/s)."""
ISSUE_PACED_CALLS_PER_S = 80.0
TARGET_CALL_MS = 2.0
TARGET_CHUNK_MS = 0.3
METRICS = ("call_ms", "ttft_ms", "per_chunk_ms")


@dataclass(frozen=True)
class Mode:
    """How much to run."""

    chunks: int = 50
    gaps_ms: tuple[float, ...] = (2.0, 0.0)
    streams: tuple[int, ...] = (1, 16, 64)
    warmup_1: int = 20
    blocks: tuple[int, ...] = (10, 7, 6)
    calls_1: int = 16
    seconds_n: float = 1.5
    workers: tuple[int, ...] = (1, 2)
    blocks_t: int = 4
    seconds_t: float = 4.0
    warm_t: float = 1.0
    concurrency_paced: int = 96
    concurrency_burst: int = 32
    clients_t: int = 2
    channels_t: int = 4
    parts: tuple[str, ...] = ("latency", "throughput")
    """Which parts each scenario runs (``--only``)."""
    nice: int = -10
    """The stand-in's and the clients' nice value: they stand for the world outside the machine (a vendor, a
    caller), so they are served first and the servers measured get the rest of the cores, as on a host of their
    own; a vendor that falls behind its schedule would also send bunched chunks, which a paced stream is not."""


QUICK = Mode(
    streams=(1, 16),
    warmup_1=5,
    blocks=(2, 2),
    calls_1=5,
    seconds_n=0.5,
    blocks_t=1,
    seconds_t=2.0,
    warm_t=0.5,
)


def say(text: str) -> None:
    """Progress, on stderr."""
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ blocks


@dataclass
class Block:
    """One turn of one path: its calls, and the CPU each process used meanwhile."""

    samples: list[Sample]
    errors: list[str]
    wall: float
    client_cpu: list[float]
    server_cpu: dict[int, float]
    standin_cpu: float
    paced: int = 0
    """Paced content chunks the stand-in wrote during the block."""
    late: dict[str, int] = field(default_factory=dict)
    """Of those, how many it wrote more than k ms after they were due (k = "0.5", "1.0", "2.0", "5.0")."""


@dataclass
class Route:
    """A path: its client processes and the server in front of the stand-in (none for the direct path)."""

    name: str
    clients: list[Proc]
    server: Proc | None
    blocks: list[Block] = field(default_factory=list)

    def run(self, standin: Proc, workers: int, min_calls: int, seconds: float, settle: float) -> Block:
        """One block: ``workers`` loops spread over the client processes, then ``settle`` idle seconds."""
        client_before = [c.cpu_seconds() for c in self.clients]
        server_before = self.server.cpu_by_pid() if self.server is not None else {}
        standin_before = standin.cpu_seconds()
        pacing_before = pacing_stats(standin)
        start = time.perf_counter()
        share, extra = divmod(workers, len(self.clients))
        for index, client in enumerate(self.clients):
            command = {"workers": share + (index < extra), "min_calls": min_calls, "seconds": seconds}
            assert client.proc.stdin is not None
            client.proc.stdin.write((json.dumps(command) + "\n").encode())
            client.proc.stdin.flush()
        samples: list[Sample] = []
        errors: list[str] = []
        for client in self.clients:
            assert client.proc.stdout is not None
            line = client.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{client.name} exited:\n{client.log.read_text(errors='replace')[-2000:]}")
            reply = json.loads(line)
            samples += [Sample(lat, ttft, 0, int(m), int(d), began) for began, lat, ttft, m, d in reply["samples"]]
            errors += reply["errors"]
        wall = time.perf_counter() - start
        time.sleep(settle)
        server_after = self.server.cpu_by_pid() if self.server is not None else {}
        pacing = pacing_stats(standin)
        block = Block(
            samples=samples,
            errors=errors,
            wall=wall,
            client_cpu=[c.cpu_seconds() - b for c, b in zip(self.clients, client_before, strict=True)],
            server_cpu={pid: cpu - server_before.get(pid, 0.0) for pid, cpu in server_after.items()},
            standin_cpu=standin.cpu_seconds() - standin_before,
            paced=pacing["paced"] - pacing_before["paced"],
            late={k: v - pacing_before["late_ms"][k] for k, v in pacing["late_ms"].items()},
        )
        self.blocks.append(block)
        return block


class CpuCheck:
    """Each process's CPU over a whole part both ways: threads' ``schedstat`` (what the blocks use, exact but
    blind to threads that exit mid-block) and the process's ``stat`` (10 ms ticks, exited threads included)."""

    def __init__(self, procs: Sequence[Proc]) -> None:
        self._procs = procs
        self._before = [(p.cpu_seconds(), sum(stat_cpu_seconds(pid) for pid in tree_cpu_by_pid(p.pid))) for p in procs]

    def done(self) -> dict[str, Any]:
        """Both totals per process, and the largest relative gap over processes that used at least 0.5 s."""
        out: dict[str, Any] = {}
        worst = 0.0
        for proc, (fine_before, coarse_before) in zip(self._procs, self._before, strict=True):
            fine = proc.cpu_seconds() - fine_before
            coarse = sum(stat_cpu_seconds(pid) for pid in tree_cpu_by_pid(proc.pid)) - coarse_before
            out[proc.name] = {"schedstat_s": round(fine, 3), "stat_s": round(coarse, 3)}
            if coarse >= 0.5:
                worst = max(worst, abs(fine - coarse) / coarse)
        if worst > 0.05:
            say(f"  WARNING: CPU from schedstat and from stat differ by {worst:.0%} (threads exiting?)")
        return {"max_relative_gap": worst, "by_process": out}


def rotate(paths: Sequence[Route], blocks: int) -> Iterator[Route]:
    """``blocks`` turns of every path, the order rotating by one each turn."""
    for turn in range(blocks):
        shift = turn % len(paths)
        yield from [*paths[shift:], *paths[:shift]]


# ------------------------------------------------------------------------------------------ statistics


def _value(sample: Sample, metric: str, chunks: int) -> float:
    if metric == "call_ms":
        return sample.latency * 1000
    if metric == "ttft_ms":
        return sample.ttft * 1000
    return (sample.latency - sample.ttft) * 1000 / (chunks - 1)


def distribution(blocks: Sequence[Block], metric: str, chunks: int) -> dict[str, float]:
    """p50 (median of block medians), pooled p99, and the spread of block medians."""
    pooled = [_value(s, metric, chunks) for b in blocks for s in b.samples]
    medians = [statistics.median(_value(s, metric, chunks) for s in b.samples) for b in blocks if b.samples]
    return {
        "p50": statistics.median(medians),
        "p99": percentile(pooled, 99),
        "block_p50_min": min(medians),
        "block_p50_max": max(medians),
    }


def added(mine: Sequence[Block], reference: Sequence[Block], metric: str, chunks: int) -> dict[str, float]:
    """mine - reference: median over paired blocks of the difference of medians; difference of pooled p99s."""
    diffs = [
        statistics.median(_value(s, metric, chunks) for s in a.samples)
        - statistics.median(_value(s, metric, chunks) for s in b.samples)
        for a, b in zip(mine, reference, strict=True)
        if a.samples and b.samples
    ]
    p99 = percentile([_value(s, metric, chunks) for b in mine for s in b.samples], 99)
    p99_ref = percentile([_value(s, metric, chunks) for b in reference for s in b.samples], 99)
    return {"p50": statistics.median(diffs), "p99": p99 - p99_ref, "block_min": min(diffs), "block_max": max(diffs)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def cpu_summary(blocks: Sequence[Block], chunks: int) -> dict[str, Any]:
    """CPU per call of the server, the client and the stand-in, and how busy each was (cores)."""
    calls = sum(len(b.samples) for b in blocks)
    wall = sum(b.wall for b in blocks)
    server = sum(sum(b.server_cpu.values()) for b in blocks)
    client = sum(sum(b.client_cpu) for b in blocks)
    standin = sum(b.standin_cpu for b in blocks)
    out: dict[str, Any] = {
        "client_cpu_ms_per_call": client * 1000 / calls,
        # The busiest client process in the busiest block: 1.0 would be a saturated client.
        "client_busy_max": max(max(b.client_cpu) / b.wall for b in blocks),
        "standin_cpu_ms_per_call": standin * 1000 / calls,
        "standin_busy_max": max(b.standin_cpu / b.wall for b in blocks),
        **pacing_summary(blocks),
    }
    if any(b.server_cpu for b in blocks):
        out["server_cpu_ms_per_call"] = server * 1000 / calls
        out["server_cpu_us_per_chunk"] = server * 1e6 / calls / chunks
        out["server_cores"] = server / wall
    return out


def pacing_summary(blocks: Sequence[Block]) -> dict[str, Any]:
    """Share of the stand-in's paced chunks written more than 1 / 2 / 5 ms late (none in a burst)."""
    paced = sum(b.paced for b in blocks)
    if not paced:
        return {}
    late = {k: sum(b.late.get(k, 0) for b in blocks) / paced for k in ("1.0", "2.0", "5.0")}
    return {"standin_late_share": late}


def summarize_latency(paths: Sequence[Route], chunks: int) -> dict[str, Any]:
    """Per path: distributions, added over the direct path, ratios, messages per call, CPU per call."""
    direct = next(p for p in paths if p.name == DIRECT)
    out: dict[str, Any] = {}
    for path in paths:
        calls = sum(len(b.samples) for b in path.blocks)
        entry: dict[str, Any] = {"calls": calls, "failed": sum(len(b.errors) for b in path.blocks)}
        first_errors = [e for b in path.blocks for e in b.errors][:3]
        if first_errors:
            entry["first_errors"] = first_errors
        if calls and all(b.samples for b in direct.blocks):
            entry.update({metric: distribution(path.blocks, metric, chunks) for metric in METRICS})
            entry["messages_per_call_p50"] = statistics.median(s.messages for b in path.blocks for s in b.samples)
            entry.update(cpu_summary(path.blocks, chunks))
            if path is not direct:
                entry["added"] = {metric: added(path.blocks, direct.blocks, metric, chunks) for metric in METRICS}
                entry["over_direct_p50"] = {
                    metric: _ratio(entry[metric]["p50"], out[DIRECT][metric]["p50"]) for metric in METRICS
                }
        out[path.name] = entry
    section: dict[str, Any] = {"paths": out}
    ours, theirs = out.get(OURS, {}), out.get(LITELLM, {})
    if "added" in ours and "added" in theirs:
        section["ours_over_litellm"] = {
            **{
                f"added_{metric}": _ratio(ours["added"][metric]["p50"], theirs["added"][metric]["p50"])
                for metric in ("call_ms", "ttft_ms")
                if ours["added"][metric]["p50"] >= 0
            },
            "server_cpu_per_call": _ratio(ours["server_cpu_ms_per_call"], theirs["server_cpu_ms_per_call"]),
        }
    return section


# ------------------------------------------------------------------------------------------ latency


def sse_client(tmp: Path, name: str, url: str, headers: Mapping[str, str], chunks: int, nice: int) -> Any:
    """A client process for an OpenAI-compatible HTTP path."""
    argv = ["--kind", "sse", "--target", url, "--chunks", str(chunks)]
    for key, value in headers.items():
        argv += ["--header", f"{key}={value}"]
    return client_process(tmp, name, argv, nice)


def grpc_client(tmp: Path, name: str, server: Proc, chunks: int, channels: int, nice: int) -> Any:
    """A client process for ``StreamGenerate``."""
    argv = ["--kind", "grpc", "--target", f"127.0.0.1:{server.port}", "--chunks", str(chunks)]
    return client_process(tmp, name, [*argv, "--channels", str(channels)], nice)


def latency(mode: Mode, tmp: Path, standin: Proc, servers: Mapping[str, Proc | None]) -> dict[str, Any]:
    """Every number of streams, the paths in rotating blocks, each path's client in its own process."""
    headers = {
        DIRECT: {
            "Authorization": f"Bearer {STANDIN_KEY}",
            "Content-Type": "application/json",
            "X-OpenRouter-Title": "OrchestrateX",  # what the providers service sends to OpenRouter
        },
        LITELLM: {"Authorization": f"Bearer {LITELLM_MASTER_KEY}", "Content-Type": "application/json"},
    }
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        paths: list[Route] = []
        for name, server in servers.items():
            if server is None:
                url = f"{base_url(standin)}/chat/completions"
                proc = stack.enter_context(
                    sse_client(tmp, f"client-{name}", url, headers[name], mode.chunks, mode.nice)
                )
            elif name == LITELLM:
                url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
                proc = stack.enter_context(
                    sse_client(tmp, f"client-{name}", url, headers[name], mode.chunks, mode.nice)
                )
            else:
                proc = stack.enter_context(grpc_client(tmp, f"client-{name}", server, mode.chunks, 1, mode.nice))
            paths.append(Route(name, [proc], server))
        out["nice"] = {
            "clients": sorted({niceness(c.pid) for p in paths for c in p.clients}, key=str),
            "servers": sorted({niceness(p.server.pid) for p in paths if p.server}, key=str),
        }
        for streams, blocks in zip(mode.streams, mode.blocks, strict=True):
            min_calls, seconds = (mode.calls_1, 0.0) if streams == 1 else (1, mode.seconds_n)
            settle = 0.1 if streams == 1 else 0.3
            say(f"  {streams} stream(s): warm-up, then {blocks} blocks per path")
            for path in paths:
                path.blocks.clear()
                path.run(standin, streams, mode.warmup_1 if streams == 1 else 1, 0.0, settle)
                path.blocks.clear()
            start = Load.now()
            check = CpuCheck([standin, *(p for path in paths for p in [*path.clients, path.server] if p)])
            for path in rotate(paths, blocks):
                path.run(standin, streams, min_calls, seconds, settle)
            section = summarize_latency(paths, mode.chunks)
            section["machine"] = Load.now().since(start)
            section["cpu_check"] = check.done()
            for name, entry in section["paths"].items():
                if entry["failed"]:
                    say(f"  {name}: {entry['failed']} failed calls, first: {entry['first_errors'][0]}")
                if entry.get("added", {}).get("call_ms", {}).get("p50", 0) < 0:
                    say(f"  WARNING {name}: negative added latency at {streams} streams: the reference is suspect")
            out[f"streams_{streams}"] = {"streams": streams, **section}
    return out


# ------------------------------------------------------------------------------------------ throughput


def throughput_entry(path: Route, mode: Mode, chunks: int) -> dict[str, Any]:
    """Calls/s (median over blocks), CPU per call and per chunk, messages per call, each worker's cores."""
    window = mode.seconds_t - mode.warm_t
    rates = [
        sum(1 for s in b.samples if mode.warm_t <= s.started + s.latency <= mode.seconds_t) / window
        for b in path.blocks
    ]
    calls = sum(len(b.samples) for b in path.blocks)
    wall = sum(b.wall for b in path.blocks)
    pids = sorted({pid for b in path.blocks for pid in b.server_cpu})
    workers = {str(pid): sum(b.server_cpu.get(pid, 0.0) for b in path.blocks) / wall for pid in pids}
    server = sum(sum(b.server_cpu.values()) for b in path.blocks)
    entry: dict[str, Any] = {
        "calls": calls,
        "failed": sum(len(b.errors) for b in path.blocks),
        "calls_per_s": statistics.median(rates),
        "calls_per_s_blocks": rates,
        "calls_per_server_cpu_s": calls / server if server > 0 else None,
        "server_cpu_ms_per_call": server * 1000 / calls if calls else None,
        "server_cpu_us_per_chunk": server * 1e6 / calls / chunks if calls else None,
        "server_cores": server / wall,
        "cores_by_process": workers,
        "messages_per_call_p50": statistics.median(s.messages for b in path.blocks for s in b.samples),
        "call_ms_p50": statistics.median(s.latency * 1000 for b in path.blocks for s in b.samples),
        "client_cpu_ms_per_call": sum(sum(b.client_cpu) for b in path.blocks) * 1000 / calls if calls else None,
        "client_busy_max": max(max(b.client_cpu) / b.wall for b in path.blocks),
        "standin_cores": sum(b.standin_cpu for b in path.blocks) / wall,
        **pacing_summary(path.blocks),
    }
    errors = [e for b in path.blocks for e in b.errors][:3]
    if errors:
        entry["first_errors"] = errors
    return entry


def throughput(mode: Mode, tmp: Path, standin: Proc, gap_ms: float, workers: int) -> dict[str, Any]:
    """Coalescing on and off, ``workers`` worker processes each, alternating blocks at a fixed concurrency."""
    concurrency = mode.concurrency_paced if gap_ms > 0 else mode.concurrency_burst
    with ExitStack() as stack:
        paths: list[Route] = []
        sockets: dict[str, int] = {}
        for name, env in ((OURS, {}), (OURS_OFF, COALESCING_OFF)):
            label = f"{name}-w{workers}"
            server = stack.enter_context(providers_process(tmp, standin, name=label, extra_env=env, workers=workers))
            sockets[name] = listening_sockets(server.port)
            clients = [
                stack.enter_context(
                    grpc_client(tmp, f"client-{label}-{i}", server, mode.chunks, mode.channels_t, mode.nice)
                )
                for i in range(mode.clients_t)
            ]
            paths.append(Route(name, clients, server))
        say(f"  throughput, {workers} worker(s) requested ({sockets} listening sockets): {concurrency} streams")
        for path in paths:
            path.run(standin, concurrency, 1, mode.warm_t, 0.3)
            path.blocks.clear()
        start = Load.now()
        check = CpuCheck([standin, *(p for path in paths for p in [*path.clients, path.server] if p)])
        for path in rotate(paths, mode.blocks_t):
            path.run(standin, concurrency, 1, mode.seconds_t, 0.3)
        out: dict[str, Any] = {
            "workers_requested": workers,
            "concurrency": concurrency,
            "listening_sockets": sockets,
            "processes": {p.name: len(tree_cpu_by_pid(p.server.pid)) for p in paths if p.server is not None},
            "paths": {p.name: throughput_entry(p, mode, mode.chunks) for p in paths},
        }
        out["machine"] = Load.now().since(start)
        out["cpu_check"] = check.done()
        ours, off = out["paths"][OURS], out["paths"][OURS_OFF]
        out["coalescing_on_over_off"] = {
            "calls_per_s": _ratio(ours["calls_per_s"], off["calls_per_s"]),
            "calls_per_server_cpu_s": _ratio(ours["calls_per_server_cpu_s"], off["calls_per_server_cpu_s"]),
        }
        for name, entry in out["paths"].items():
            if entry["failed"]:
                say(f"  {name}: {entry['failed']} failed calls, first: {entry['first_errors'][0]}")
    return out


# ------------------------------------------------------------------------------------------ the run


def run_scenario(mode: Mode, gap_ms: float, skip_litellm: bool) -> dict[str, Any]:
    """One stand-in pacing: latency with fresh processes, then throughput on one worker and on two."""
    name = "burst" if gap_ms == 0 else f"paced {gap_ms:g} ms"
    scenario: dict[str, Any] = {"name": name, "gap_ms": gap_ms}
    with tempfile.TemporaryDirectory(prefix="orx-providers-bench-") as tmp, ExitStack() as stack:
        tmpdir = Path(tmp)
        standin = stack.enter_context(standin_process(tmpdir, mode.chunks, gap_ms, nice=mode.nice))
        scenario["standin_nice"] = niceness(standin.pid)
        scenario["latency"] = {}
        if "latency" in mode.parts:
            with ExitStack() as services:
                servers: dict[str, Proc | None] = {DIRECT: None}
                servers[OURS] = services.enter_context(providers_process(tmpdir, standin, name=OURS))
                servers[OURS_OFF] = services.enter_context(
                    providers_process(tmpdir, standin, name=OURS_OFF, extra_env=COALESCING_OFF)
                )
                if not skip_litellm:
                    say("  starting LiteLLM's proxy (about 20 s)")
                    servers[LITELLM] = services.enter_context(litellm_process(tmpdir, standin))
                scenario["latency"] = latency(mode, tmpdir, standin, servers)
        scenario["throughput"] = {}
        if "throughput" in mode.parts:
            scenario["throughput"] = {
                f"workers_{workers}": throughput(mode, tmpdir, standin, gap_ms, workers) for workers in mode.workers
            }
    one, two = (scenario["throughput"].get(f"workers_{w}") for w in (1, 2))
    if one and two:
        scenario["scaling_1_to_2_workers"] = {
            name: _ratio(two["paths"][name]["calls_per_s"], one["paths"][name]["calls_per_s"])
            for name in (OURS, OURS_OFF)
        }
    return scenario


def sections(scenario: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The latency part's sections of a scenario, one per number of streams."""
    return [v for k, v in scenario["latency"].items() if k.startswith("streams_")]


def verdict(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Each goal: True / False, or None when it cannot be judged (no calls, or a negative added latency)."""
    out: dict[str, Any] = {}
    for scenario in doc["scenarios"]:
        key = scenario["name"]
        entry: dict[str, Any] = {}
        for section in sections(scenario):
            streams = section["streams"]
            ours = section["paths"].get(OURS, {}).get("added")
            if not ours:
                continue
            ttft, call, chunk = (ours[m]["p50"] for m in METRICS)
            if streams == 1:
                entry["ttft_added_p50_within_1ms_at_1_stream"] = None if ttft < 0 else ttft <= TARGET_TTFT_MS
                entry["call_added_p50_within_2ms_at_1_stream (issue 3)"] = None if call < 0 else call <= TARGET_CALL_MS
                entry["chunk_added_p50_within_0_3ms_at_1_stream (issue 3)"] = (
                    None if chunk < 0 else chunk <= TARGET_CHUNK_MS
                )
            theirs = section["paths"].get(LITELLM, {}).get("added")
            if theirs:
                entry[f"call_added_p50_below_litellm_at_{streams}"] = call < theirs["call_ms"]["p50"]
            entry[f"reference_sane_at_{streams}"] = all(
                p["added"]["call_ms"]["p50"] >= 0 for p in section["paths"].values() if "added" in p
            )
        one = scenario["throughput"].get("workers_1")
        if one:
            on, off = one["paths"][OURS]["calls_per_s"], one["paths"][OURS_OFF]["calls_per_s"]
            entry["calls_per_s_1_worker_on_over_off_at_least_3"] = on >= TARGET_THROUGHPUT_RATIO * off
            if scenario["gap_ms"] > 0:
                entry["calls_per_s_1_worker_at_least_3x_issue_80"] = (
                    on >= TARGET_THROUGHPUT_RATIO * ISSUE_PACED_CALLS_PER_S
                )
        out[key] = entry
    return out


def run(mode: Mode, skip_litellm: bool) -> dict[str, Any]:
    """Every scenario; the results document."""
    reply = "".join(reply_chunks(mode.chunks))
    doc: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": len(os.sched_getaffinity(0)),
        "versions": versions(skip_litellm),
        "setup": {
            "model": MODEL,
            "content_chunks": mode.chunks,
            "reply_chars": len(reply),
            "mode": asdict(mode),
            "orchestratex_env": {
                "ORX_PROVIDER_RPM": "1000000",
                "ORX_PROVIDER_CONCURRENCY": "4096",
                OURS_OFF: COALESCING_OFF,
            },
        },
        "targets": {
            "added_ttft_p50_ms_at_1_stream": TARGET_TTFT_MS,
            "paced_calls_per_s_ratio_on_one_worker": TARGET_THROUGHPUT_RATIO,
            "issue_paced_calls_per_s_before": ISSUE_PACED_CALLS_PER_S,
            "added_call_p50_ms (issue 3)": TARGET_CALL_MS,
            "added_per_chunk_p50_ms (issue 3)": TARGET_CHUNK_MS,
        },
        "scenarios": [],
    }
    for gap_ms in mode.gaps_ms:
        say(f"scenario: gap {gap_ms:g} ms")
        doc["scenarios"].append(run_scenario(mode, gap_ms, skip_litellm))
    doc["verdict"] = verdict(doc)
    doc["notes"] = NOTES
    return doc


def versions(skip_litellm: bool) -> dict[str, str]:
    """Versions of what is measured and what measures."""
    out = {"python": platform.python_version()}
    for dist in ("grpcio", "protobuf", "aiohttp", "orjson", "uvloop"):
        out[dist] = importlib.metadata.version(dist)
    if not skip_litellm:
        out["litellm"] = litellm_version()
    return out


NOTES = [
    "The stand-in and the clients run at nice -10, the servers (ours, LiteLLM) at 0: the stand-in and the clients "
    "stand for other machines, so they are served first. At nice 0 the stand-in fell behind its 2 ms schedule "
    "under the throughput load (22-39 % of paced chunks more than 2 ms late) and sent chunks in bunches, which "
    "made coalescing look less useful than it is (on / off 1.27 instead of 1.6 in a trial run).",
    "Every client runs in its own process (bench.providers_client_proc, uvloop), one per path, so a client's "
    "CPU is its path's alone and 'client_busy_max' (its CPU over its block's wall time, the busiest block) shows "
    "it never saturated. 'Added' still holds the difference between clients: a gRPC client decoding protobuf "
    "messages against an aiohttp client cutting SSE events, as a real caller of each would see it.",
    "Two cores, shared by the client, the stand-in and the server: a call through a proxy keeps one more "
    "process busy than the direct path, so at 16 and 64 streams 'added' is mostly waiting for a core, and "
    "LiteLLM's and our figures there are throughput-bound, not per-call overheads.",
    "Coalescing off is the same service with ORX_PROVIDER_STREAM_FLUSH_MS=0: a tree that does not read the "
    "variable runs the same code on both, and the two agree within noise.",
    "Our services run with ORX_PROVIDER_RPM=1000000 and ORX_PROVIDER_CONCURRENCY=4096: the defaults (600/min, "
    "32 concurrent per model) would queue the concurrent rounds, which is policy, not overhead. The limiter, "
    "breaker and retry policy still run on every call. LiteLLM has no limits configured.",
    "LiteLLM runs as its CLI starts it: one uvicorn worker on uvloop, master key checked in memory, no "
    "database, LITELLM_LOCAL_MODEL_COST_MAP=True, telemetry off, LITELLM_LOG=ERROR, keep-alive 75 s. Our "
    "service runs as 'orchestratex serve providers' starts it (uvloop where installed), ORX_LOG_LEVEL=WARNING.",
    "Throughput: calls/s counts the calls that ended between warm_t and seconds_t of each block, over that "
    "window (median over blocks); CPU per call divides all the CPU of a block by all its calls. "
    "'calls_per_server_cpu_s' is what one fully busy core of the service would carry at that CPU per call; "
    "'cores_by_process' is each process of the service's tree (workers, and a supervisor if any).",
    "CPU is user + system time from /proc (10 ms ticks), summed over a path's blocks; p99 'added' is a "
    "difference of unpaired p99s, the noisiest figure here.",
]


# ------------------------------------------------------------------------------------------ output


def _ms(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _late(entry: Mapping[str, Any]) -> str:
    late = entry.get("standin_late_share")
    return f" ({late['1.0']:.0%})" if late else ""


def latency_table(scenario: Mapping[str, Any]) -> str:
    """One scenario's latency part as Markdown (milliseconds)."""
    lines = [
        "| streams | path | calls (failed) | per call p50 / p99 | added p50 / p99 | ÷ direct | TTFT p50 "
        "| added TTFT p50 | messages per call | server CPU per call | per chunk (µs) | client CPU per call "
        "(busiest) | stand-in CPU per call (chunks > 1 ms late) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for section in sections(scenario):
        for name, entry in section["paths"].items():
            cells = [str(section["streams"]), LABELS.get(name, name), f"{entry['calls']} ({entry['failed']})"]
            if "call_ms" not in entry:
                lines.append("| " + " | ".join(cells + ["—"] * 10) + " |")
                continue
            add = entry.get("added", {})
            ratio = entry.get("over_direct_p50", {}).get("call_ms")
            cells += [
                f"{_ms(entry['call_ms']['p50'])} / {_ms(entry['call_ms']['p99'])}",
                f"**{_ms(add['call_ms']['p50'])}** / {_ms(add['call_ms']['p99'])}" if add else "—",
                f"{ratio:.2f}" if ratio is not None else "—",
                _ms(entry["ttft_ms"]["p50"]),
                _ms(add["ttft_ms"]["p50"]) if add else "—",
                f"{entry['messages_per_call_p50']:g}",
                _ms(entry.get("server_cpu_ms_per_call")),
                _ms(entry.get("server_cpu_us_per_chunk"), 0),
                f"{_ms(entry['client_cpu_ms_per_call'])} ({entry['client_busy_max']:.2f})",
                f"{_ms(entry['standin_cpu_ms_per_call'])}{_late(entry)}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(scenario: Mapping[str, Any]) -> str:
    """One scenario's throughput part as Markdown."""
    lines = [
        "| workers (listening) | coalescing | streams | calls/s (blocks) | server cores (by process) "
        "| calls per server CPU-second | server CPU per call / per chunk | messages per call | call p50 "
        "| client CPU per call (busiest) | stand-in cores (chunks > 1 ms late) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for part in scenario["throughput"].values():
        for name, entry in part["paths"].items():
            blocks = ", ".join(f"{r:.0f}" for r in entry["calls_per_s_blocks"])
            by_process = " + ".join(f"{v:.2f}" for v in entry["cores_by_process"].values())
            lines.append(
                f"| {part['workers_requested']} ({part['listening_sockets'][name]}) "
                f"| {'off (flush 0)' if name == OURS_OFF else 'on (default)'} | {part['concurrency']} "
                f"| **{entry['calls_per_s']:.0f}** ({blocks}) | {entry['server_cores']:.2f} ({by_process}) "
                f"| {_ms(entry['calls_per_server_cpu_s'], 0)} "
                f"| {_ms(entry['server_cpu_ms_per_call'])} ms / {_ms(entry['server_cpu_us_per_chunk'], 0)} µs "
                f"| {entry['messages_per_call_p50']:g} | {_ms(entry['call_ms_p50'], 0)} ms "
                f"| {_ms(entry['client_cpu_ms_per_call'])} ms ({entry['client_busy_max']:.2f}) "
                f"| {entry['standin_cores']:.2f}{_late(entry)} |"
            )
    return "\n".join(lines)


def print_tables(doc: Mapping[str, Any]) -> None:
    """Every scenario's tables, the machine's load, and the verdict."""
    print(f"\nProviders benchmark, {doc['when']}{' (quick)' if doc.get('quick') else ''}, {doc['cpus']} cores")
    for scenario in doc["scenarios"]:
        print(f"\n### {scenario['name']}: latency ({doc['setup']['content_chunks']} chunks, milliseconds)\n")
        print(latency_table(scenario))
        loads = ", ".join(
            f"{s['streams']}: {s['machine']['benchmark_cores']:.2f} / {s['machine']['other_cores']:.2f}"
            for s in sections(scenario)
        )
        print(f"\nCores used by the benchmark / by other work, by streams: {loads}.")
        for section in sections(scenario):
            ratios = section.get("ours_over_litellm")
            if ratios:
                text = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items() if v is not None)
                print(f"OrchestrateX ÷ LiteLLM at {section['streams']} streams: {text}.")
        print(f"\n### {scenario['name']}: throughput of the providers service\n")
        print(throughput_table(scenario))
        loads = ", ".join(
            f"{p['workers_requested']} worker(s): {p['machine']['benchmark_cores']:.2f} / "
            f"{p['machine']['other_cores']:.2f}"
            for p in scenario["throughput"].values()
        )
        print(f"\nCores used by the benchmark / by other work: {loads}.")
        for part in scenario["throughput"].values():
            ratio = part["coalescing_on_over_off"]["calls_per_s"]
            print(f"Coalescing on ÷ off, {part['workers_requested']} worker(s): calls/s {_ms(ratio)}.")
        if "scaling_1_to_2_workers" in scenario:
            text = ", ".join(f"{k} {_ms(v)}" for k, v in scenario["scaling_1_to_2_workers"].items())
            print(f"Calls/s, 2 workers ÷ 1: {text}.")
    print("\nVerdict:\n")
    print(json.dumps(doc["verdict"], indent=2))


def profile(mode: Mode, out: Path) -> None:
    """The service under cProfile: paced single-stream calls, then a paced throughput block."""
    with tempfile.TemporaryDirectory(prefix="orx-providers-prof-") as tmp, ExitStack() as stack:
        tmpdir = Path(tmp)
        gap = mode.gaps_ms[0]
        standin = stack.enter_context(standin_process(tmpdir, mode.chunks, gap, nice=mode.nice))
        ours = stack.enter_context(providers_process(tmpdir, standin, profile=out, name=OURS))
        client = stack.enter_context(grpc_client(tmpdir, "client", ours, mode.chunks, 4, mode.nice))
        path = Route(OURS, [client], ours)
        path.run(standin, 1, 200, 0.0, 0.1)
        path.run(standin, mode.concurrency_paced if gap > 0 else mode.concurrency_burst, 1, 5.0, 0.1)
    # Leaving the stack stopped the service with SIGTERM: it shut down cleanly and cProfile wrote ``out``.
    report = out.with_suffix(".txt")
    with report.open("w") as sink:
        stats = pstats.Stats(str(out), stream=sink)
        stats.strip_dirs()
        for order in ("tottime", "cumulative"):
            print(f"==== sorted by {order}", file=sink)
            stats.sort_stats(order).print_stats(40)
    print(report.read_text())
    say(f"profile: {out} (summary in {report})")


def narrowed(parser: argparse.ArgumentParser, mode: Mode, args: argparse.Namespace) -> Mode:
    """``mode`` cut to the part, scenario, streams and workers asked for (a shorter run, for before/after checks)."""
    if args.only:
        mode = replace(mode, parts=(args.only,))
    if args.scenario:
        mode = replace(mode, gaps_ms=tuple(g for g in mode.gaps_ms if (g > 0) == (args.scenario == "paced")))
    if args.streams:
        unknown = set(args.streams) - set(mode.streams)
        if unknown:
            parser.error(f"--streams: this mode runs {', '.join(map(str, mode.streams))}")
        kept = [(s, b) for s, b in zip(mode.streams, mode.blocks, strict=True) if s in args.streams]
        mode = replace(mode, streams=tuple(s for s, _ in kept), blocks=tuple(b for _, b in kept))
    if args.workers:
        if any(w < 1 for w in args.workers):
            parser.error("--workers: at least 1")
        mode = replace(mode, workers=tuple(args.workers))
    return mode


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, write the results and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few blocks, 1 and 16 streams")
    parser.add_argument("--out", type=Path, default=Path("bench/results/providers.json"))
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per reply (default 50)")
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--no-priority", action="store_true", help="run the stand-in and the clients at the usual priority (nice 0)"
    )
    parser.add_argument("--profile", type=Path, help="cProfile the providers service into this file (no results)")
    parser.add_argument(
        "--only", choices=("latency", "throughput"), help="run only this part of each scenario (default: both)"
    )
    parser.add_argument(
        "--scenario", choices=("paced", "burst"), help="run only this scenario (default: paced, then burst)"
    )
    parser.add_argument(
        "--streams", type=int, nargs="+", help="latency part: only these numbers of streams (of the mode's)"
    )
    parser.add_argument("--workers", type=int, nargs="+", help="throughput part: only these numbers of workers")
    parser.add_argument(
        "--markdown",
        type=Path,
        nargs="?",
        const=Path("bench/results/providers.json"),
        help="print the tables of a results file (default bench/results/providers.json) and exit",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None:
        print_tables(json.loads(args.markdown.read_text()))
        return
    if args.chunks < 2:
        parser.error("--chunks: at least 2")
    mode = replace(QUICK if args.quick else Mode(), chunks=args.chunks)
    if args.no_priority:
        mode = replace(mode, nice=0)
    mode = narrowed(parser, mode, args)
    if args.profile is not None:
        profile(mode, args.profile.resolve())
        return
    doc = run(mode, args.skip_litellm)
    doc["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print_tables(doc)
    say(f"written to {args.out}")


if __name__ == "__main__":
    main()
