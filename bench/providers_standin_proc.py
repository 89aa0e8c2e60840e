"""Run the OpenRouter stand-in in its own process for ``bench.providers_bench``.

    .venv/bin/python -m bench.providers_standin_proc [--chunks 50] [--gap-ms 0] [--loop uvloop]

Every chat completion gets the same streamed reply: ``--chunks`` content chunks of a few tokens each,
then the finish chunk and a final usage chunk (empty ``choices``) carrying the cost, then ``[DONE]``.
One keep-alive comment precedes the first chunk, as OpenRouter sends while it is processing. With
``--gap-ms 0`` the chunks go out as fast as the server can write them; otherwise the content chunks are
due that far apart on a fixed schedule from the first one, and the rest follows the last one at once.
On SIGUSR1 it prints one JSON line with how many paced chunks it wrote, and how many of them late.

The stand-in runs in its own process so that its CPU does not distort either client, on uvloop by default
(``--loop``, as in ``ORX_EVENT_LOOP``): it stands for a vendor, so the less of the machine it takes, the less
it competes with what is measured. It listens on a free port of 127.0.0.1, prints ``READY <port>`` on stdout,
and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from aiohttp import web

from orchestratex.eventloop import run as run_loop
from tests.providers.openrouter_standin import DEFAULT_KEY, OpenRouterStandIn, Reply

_TEXT = (
    "The quick answer is that a binary heap keeps the smallest element at the root, so each insertion and "
    "removal costs logarithmic time while peeking stays constant. For a stream of events ordered by "
    "deadline this is usually the right structure, because the scheduler only ever needs the next one. "
    "If you also need to cancel arbitrary entries, mark them as removed and skip them when they surface, "
    "which keeps every operation cheap and avoids rebuilding the heap after each cancellation. In Python "
    "the heapq module gives you exactly this on top of a plain list, and it is fast enough for most uses."
)
_WORDS = _TEXT.split()


def reply_chunks(count: int) -> list[str]:
    """``count`` content deltas of two or three words each (about 3-4 tokens), like a real model's."""
    chunks: list[str] = []
    position = 0
    for index in range(count):
        size = 2 + index % 2
        words = [_WORDS[(position + k) % len(_WORDS)] for k in range(size)]
        position += size
        chunks.append(("" if index == 0 else " ") + " ".join(words))
    return chunks


LATE_BUCKETS_MS = (0.5, 1.0, 2.0, 5.0)


class _PacedResponse(web.StreamResponse):
    """A stream response whose content chunks after the first are due ``gap`` seconds apart.

    Chunk k (k = 2 ... ``content_chunks``) is due ``(k - 1) * gap`` after the first content chunk was written,
    on a fixed schedule, as a model generates tokens whatever its reader does: a late write is not carried
    into the next gap, and no pause accumulates with the server's load. The finish chunk, the usage chunk
    and ``[DONE]`` follow the last content chunk at once.
    """

    gap = 0.0
    content_chunks = 0
    late = dict.fromkeys(LATE_BUCKETS_MS, 0)
    """Paced chunks written more than k ms after they were due, for each k (a chunk 3 ms late counts in 0.5, 1, 2)."""
    paced = 0
    """Paced chunks written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data_events = 0
        self._first = 0.0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Pace content chunks (the first data event is the empty role chunk, the second the first content)."""
        if bytes(data[:6]) == b"data: ":
            self._data_events += 1
            content = self._data_events - 1
            if content == 1:
                self._first = time.perf_counter()
            elif 1 < content <= self.content_chunks:
                due = self._first + (content - 1) * self.gap
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                late_ms = (time.perf_counter() - due) * 1000
                _PacedResponse.paced += 1
                for bucket in LATE_BUCKETS_MS:
                    if late_ms > bucket:
                        _PacedResponse.late[bucket] += 1
        await super().write(data)


def pacing_stats() -> dict[str, Any]:
    """How many paced chunks were written, and how many of them late by more than each bucket (ms)."""
    return {"paced": _PacedResponse.paced, "late_ms": {str(k): v for k, v in _PacedResponse.late.items()}}


async def run(chunks: int, gap_ms: float) -> None:
    """Serve until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    standin = OpenRouterStandIn(api_key=DEFAULT_KEY)
    standin.default = Reply(content=reply_chunks(chunks), keepalives_before=1, keepalives_between=0)
    if gap_ms > 0:
        # The stand-in builds its streams with ``web.StreamResponse``, looked up at call time. Nothing
        # else in this process serves HTTP, so swapping that class paces the stand-in and only it.
        _PacedResponse.gap = gap_ms / 1000
        _PacedResponse.content_chunks = chunks
        web.StreamResponse = _PacedResponse  # type: ignore[misc]
    await standin.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR1: one JSON line on stdout with the pacing counters (how late the paced chunks were written).
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(pacing_stats()), flush=True))
    print(f"READY {standin.port}", flush=True)

    async def forget() -> None:
        # The stand-in records every request for tests; a benchmark makes tens of thousands.
        while True:
            await asyncio.sleep(2)
            standin.requests.clear()
            standin.generations.clear()

    janitor = asyncio.create_task(forget())
    try:
        await stop.wait()
    finally:
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor
        await standin.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per reply")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="wait before each content chunk after the first")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto", help="event loop")
    args = parser.parse_args(argv)
    if args.chunks < 2:
        sys.exit("--chunks: at least 2")
    run_loop(run(args.chunks, args.gap_ms), args.loop)


if __name__ == "__main__":
    main()
