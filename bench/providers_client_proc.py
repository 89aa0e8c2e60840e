"""A client process for ``bench.providers_bench``: one path's streamed calls, on command, in its own process.

    .venv/bin/python -m bench.providers_client_proc --kind sse --target URL [--header K=V ...] [--chunks 50]
    .venv/bin/python -m bench.providers_client_proc --kind grpc --target HOST:PORT [--channels 4]

Each path's client runs in a process of its own, so its CPU is read from ``/proc/<pid>/stat`` by the
benchmark, apart from every other path's and from the servers', and one path's client never competes with
another's in one event loop. It runs on uvloop (as the services do) and keeps its connections open between
blocks: aiohttp's pool for ``sse``; for ``grpc``, ``--channels`` channels, each with its own subchannel pool
(``grpc.use_local_subchannel_pool``) and so its own TCP connection, used in turn, so that with several
worker processes behind one ``SO_REUSEPORT`` port the calls spread over them.

Protocol: it prints ``READY 0`` once its connections are set up, then reads one JSON command per line on
stdin and answers each with one JSON line on stdout::

    {"workers": 16, "min_calls": 1, "seconds": 1.5}

``workers`` concurrent loops each make sequential calls until each has made ``min_calls`` and ``seconds``
have passed since the block began (a call is never cut short). The answer lists every call as
``[started, latency, ttft, messages, deltas]`` (seconds; ``started`` since the block began) and the errors.
An empty line or end of input ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from itertools import cycle
from typing import Any

import aiohttp
import grpc

from bench.providers_calls import Call, Sample, grpc_caller, sse_caller
from orchestratex.eventloop import run as run_loop
from orchestratex.v1 import providers_pb2_grpc


async def block(call: Call, workers: int, min_calls: int, seconds: float) -> dict[str, Any]:
    """``workers`` loops of sequential calls; every call's timings and every error."""
    start = time.perf_counter()
    samples: list[list[float]] = []
    errors: list[str] = []

    async def loop() -> None:
        made = 0
        while made < min_calls or time.perf_counter() - start < seconds:
            began = time.perf_counter() - start
            try:
                sample: Sample = await call()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                samples.append([began, sample.latency, sample.ttft, sample.messages, sample.deltas])
            made += 1

    await asyncio.gather(*(loop() for _ in range(workers)))
    return {"samples": samples, "errors": errors, "wall": time.perf_counter() - start}


async def serve(args: argparse.Namespace) -> None:
    """Open the connections, announce, then run blocks as commanded."""
    async with AsyncExitStack() as stack:
        if args.kind == "sse":
            headers = dict(h.split("=", 1) for h in args.header)
            # Idle connections are dropped after 60 s, before any server here closes them (75 s).
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300))
            )
            call = sse_caller(session, args.target, headers, args.chunks)
        else:
            options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 16 << 20)]
            calls = []
            for _ in range(args.channels):
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(args.target, options=options))
                await channel.channel_ready()
                calls.append(grpc_caller(providers_pb2_grpc.ProviderServiceStub(channel), args.chunks))
            turn = cycle(calls)

            def call() -> Any:
                return next(turn)()

        print("READY 0", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            command = json.loads(line)
            result = await block(call, int(command["workers"]), int(command["min_calls"]), float(command["seconds"]))
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve commands."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("sse", "grpc"), required=True)
    parser.add_argument("--target", required=True, help="URL (sse) or host:port (grpc)")
    parser.add_argument("--header", action="append", default=[], help="K=V, sse only; repeatable")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels (connections), used in turn")
    run_loop(serve(parser.parse_args(argv)), "auto")


if __name__ == "__main__":
    main()
