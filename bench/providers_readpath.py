"""CPU of the providers service's upstream read path alone, without gRPC: for profiling and before/after checks.

    .venv/bin/python -m bench.providers_readpath [--gap-ms 2] [--streams 32] [--seconds 5] [--profile FILE]

Starts the OpenRouter stand-in (``bench.providers_standin_proc``) in its own process, then runs in this process,
on the service's event loop, what ``StreamGenerate`` runs below gRPC: :class:`~services.providers.coalesce.Coalesced`
over :func:`~services.providers.generation.generate` over :class:`~services.providers.openrouter.OpenRouterBackend`
(with the service's default resilience policy), reading every batch the way the servicer does. ``--streams`` loops of
sequential calls run for ``--seconds``; it prints calls, this process's CPU per call and per upstream chunk, and
the share of one core used. The stand-in's CPU is its own process's, so it is not counted.

Run it under ``flock /tmp/orx-bench.lock`` like every benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from bench.providers_procs import MODEL, STANDIN_KEY, base_url, standin_process
from orchestratex.config import Settings
from orchestratex.eventloop import run as run_loop
from services.providers.backend import GenerationRequest, Message, Role, TextDelta
from services.providers.catalogue import load_catalogue
from services.providers.coalesce import Coalesced
from services.providers.generation import generate
from services.providers.openrouter import OpenRouterBackend
from services.providers.resilience import Resilience


async def _calls(url: str, data_dir: str, streams: int, seconds: float, window: float) -> tuple[int, int, float]:
    env = {
        "ORX_DATA_DIR": data_dir,
        "OPENROUTER_API_KEY": STANDIN_KEY,
        "ORX_OPENROUTER_BASE_URL": url,
        "ORX_PROVIDER_RPM": "1000000",
        "ORX_PROVIDER_CONCURRENCY": "4096",
    }
    settings = Settings.from_env(env)
    catalogue = load_catalogue(settings)
    model = catalogue.get(MODEL)
    assert model is not None
    backend = OpenRouterBackend.from_settings(settings, catalogue, {})
    policy = Resilience.from_settings(settings.providers.resilience)
    request = GenerationRequest(model=model, messages=(Message(Role.USER, "Hi"),), max_tokens=256)
    calls = deltas = 0

    async def one() -> None:
        nonlocal deltas
        events = Coalesced(generate(backend, request, policy=policy), window=window)
        try:
            async for batch in events:
                if isinstance(batch, TextDelta):
                    deltas += 1
        finally:
            await events.aclose()

    async def loop(until: float) -> None:
        nonlocal calls
        while time.perf_counter() < until:
            await one()
            calls += 1

    await asyncio.gather(*(loop(time.perf_counter() + 0.5) for _ in range(streams)))  # warm-up
    calls = deltas = 0
    cpu = time.process_time()
    await asyncio.gather(*(loop(time.perf_counter() + seconds) for _ in range(streams)))
    cpu = time.process_time() - cpu
    await backend.aclose()
    return calls, deltas, cpu


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="the stand-in's pacing (0: burst)")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window-ms", type=float, default=20.0, help="the coalescing window")
    parser.add_argument("--profile", type=Path, help="cProfile the measured part into this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="orx-readpath-") as tmp, contextlib.ExitStack() as stack:
        standin = stack.enter_context(standin_process(Path(tmp), args.chunks, args.gap_ms, nice=-10))
        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        calls, deltas, cpu = run_loop(
            _calls(base_url(standin), tmp, args.streams, args.seconds, args.window_ms / 1000), "auto"
        )
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
            stats = pstats.Stats(str(args.profile))
            stats.strip_dirs().sort_stats("tottime").print_stats(35)
        wall = time.perf_counter() - start - 0.5
    print(
        f"gap {args.gap_ms:g} ms, {args.streams} streams: {calls} calls ({calls / args.seconds:.0f}/s), "
        f"{cpu * 1000 / calls:.3f} ms CPU per call, {cpu * 1e6 / calls / args.chunks:.1f} µs per chunk, "
        f"{deltas / calls:.1f} batches per call, {cpu / args.seconds:.2f} cores (wall {wall:.1f} s)"
    )


if __name__ == "__main__":
    main()
