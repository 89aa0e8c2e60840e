"""Run the OpenRouter stand-in in its own process for ``bench.providers_bench``.

    .venv/bin/python -m bench.providers_standin_proc [--chunks 50] [--gap-ms 0]

Every chat completion gets the same streamed reply: ``--chunks`` content chunks of a few tokens each,
then the finish chunk and a final usage chunk (empty ``choices``) carrying the cost, then ``[DONE]``.
One keep-alive comment precedes the first chunk, as OpenRouter sends while it is processing. With
``--gap-ms 0`` the chunks go out as fast as the server can write them; otherwise each content chunk
after the first waits that long first.

The stand-in runs in its own process so that its CPU does not distort either client. It listens on a
free port of 127.0.0.1, prints ``READY <port>`` on stdout, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from aiohttp import web

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


class _PacedResponse(web.StreamResponse):
    """A stream response that waits ``gap`` seconds before each data event after the first content one."""

    gap = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data_events = 0

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Pace content chunks (the first data event is the empty role chunk, the second the first content)."""
        if bytes(data[:6]) == b"data: ":
            self._data_events += 1
            if self._data_events > 2:
                await asyncio.sleep(self.gap)
        await super().write(data)


async def run(chunks: int, gap_ms: float) -> None:
    """Serve until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    standin = OpenRouterStandIn(api_key=DEFAULT_KEY)
    standin.default = Reply(content=reply_chunks(chunks), keepalives_before=1, keepalives_between=0)
    if gap_ms > 0:
        # The stand-in builds its streams with ``web.StreamResponse``, looked up at call time. Nothing
        # else in this process serves HTTP, so swapping that class paces the stand-in and only it.
        _PacedResponse.gap = gap_ms / 1000
        web.StreamResponse = _PacedResponse  # type: ignore[misc]
    await standin.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
    args = parser.parse_args(argv)
    if args.chunks < 2:
        sys.exit("--chunks: at least 2")
    asyncio.run(run(args.chunks, args.gap_ms))


if __name__ == "__main__":
    main()
