"""The gRPC floor for ``bench.providers_bench``: our server stack streaming a canned reply, no upstream at all.

    .venv/bin/python -m bench.providers_floor_proc [--chunks 50]

A ``ProviderService`` built with the project's own ``create_server`` (interceptor, health, reflection)
whose ``StreamGenerate`` yields the same deltas the stand-in sends, then a ``completed`` event with
usage, as fast as gRPC takes them. What our service costs beyond this floor is the provider pipeline
(HTTP upstream, SSE parsing, retries/limits, accounting); the floor itself is the price of gRPC's
per-message handling in Python. Listens on a free port of 127.0.0.1, prints ``READY <port>``, runs
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench.providers_standin_proc import reply_chunks
from orchestratex.grpc_server import ServiceBinding, create_server, serve
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc


class FloorServicer(providers_pb2_grpc.ProviderServiceServicer):
    """Streams a fixed reply: one message per delta, then ``completed``."""

    def __init__(self, chunks: int) -> None:
        self._chunks = reply_chunks(chunks)
        self._text = "".join(self._chunks)

    async def StreamGenerate(
        self, request: providers_pb2.StreamGenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        """The canned deltas, built per call as the real service builds them, then ``completed``."""
        sequence = 0
        for text in self._chunks:
            sequence += 1
            yield providers_pb2.StreamGenerateResponse(
                sequence=sequence, delta=providers_pb2.StreamDelta(text=text, reasoning="")
            )
        usage = common_pb2.Usage(prompt_tokens=40, completion_tokens=len(self._chunks), cost_usd=0.0001)
        completed = providers_pb2.GenerateResponse(
            text=self._text,
            served_model=request.request.model,
            requested_model=request.request.model,
            finish_reason=providers_pb2.FINISH_REASON_STOP,
            usage=usage,
            attempts=1,
        )
        yield providers_pb2.StreamGenerateResponse(sequence=sequence + 1, completed=completed)


async def run(chunks: int) -> None:
    """Serve until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    srv = create_server(
        [
            ServiceBinding(
                providers_pb2_grpc.add_ProviderServiceServicer_to_server,
                FloorServicer(chunks),
                "orchestratex.v1.ProviderService",
            )
        ],
        "127.0.0.1:0",
    )
    await serve(srv, 1.0, ready=lambda port: print(f"READY {port}", flush=True))


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per reply")
    args = parser.parse_args(argv)
    asyncio.run(run(args.chunks))


if __name__ == "__main__":
    main()
