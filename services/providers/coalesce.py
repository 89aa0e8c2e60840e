"""Coalescing a generation's text deltas into fewer ``StreamGenerate`` messages.

A vendor streams a token or two per SSE chunk, often a few milliseconds apart. Relaying each one as its own gRPC
message costs the providers service, and every service downstream, one message's work per token: on one core
that capped the service at about 80 calls a second with chunks 2 ms apart. :class:`Coalesced` reads the
generation in its own task and hands the writer deltas joined under two bounds:

* **time** (``ORX_PROVIDER_STREAM_FLUSH_MS``, 20 ms): after a message goes out, deltas that arrive within the
  window wait for its end and leave together. A delta that arrives after a quiet window goes out at once, so the
  **first token is never delayed**, and no delta waits more than the window;
* **size** (``ORX_PROVIDER_STREAM_FLUSH_CHARS``, 4,096 characters): a held batch that reaches it leaves at once.

The completion (and a failure) flushes whatever is held first, in order. With the window at 0 every delta goes out
as soon as the writer is free, joined only with those that arrived while it was busy (the behaviour before
coalescing). The orchestrator coalesces again, per session, at 50 ms for its watchers, so a 20 ms window here
is not visible to people; a pass-through OpenAI client sees chunks at most 20 ms apart instead of per token.

While a batch is held, the reader does not wake the writer for every delta: one timer per window does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator

from services.providers.backend import TextDelta
from services.providers.generation import CallFailed, Completion

_END = object()


class Coalesced:
    """Reads ``source`` in its own task; iterating yields joined :class:`TextDelta` batches, then the
    :class:`Completion` (a :class:`CallFailed` is raised in order). Call :meth:`aclose` when done."""

    def __init__(
        self,
        source: AsyncGenerator[TextDelta | Completion, None],
        window: float = 0.0,
        max_chars: int = 4096,
    ) -> None:
        self._source = source
        self._window = window
        self._max_chars = max_chars
        self._queue: collections.deque[object] = collections.deque()
        self._held_chars = 0
        """Characters of the deltas queued (reset when they are taken)."""
        self._final = False
        """Something other than a delta is queued: whatever is held must go now."""
        self._holding = False
        """The writer waits for the window's end: the reader wakes it only for the size bound or the end."""
        self._sent_at = float("-inf")
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._pump())

    async def _pump(self) -> None:
        first = True
        try:
            async with contextlib.aclosing(self._source) as events:
                async for event in events:
                    self._queue.append(event)
                    if isinstance(event, TextDelta):
                        self._held_chars += len(event.text) + len(event.reasoning)
                        if self._holding and self._held_chars < self._max_chars:
                            continue
                        if first:
                            # The writer goes first: when the vendor's first read holds many events (a burst),
                            # the first token must not wait until all of them are parsed.
                            first = False
                            self._ready.set()
                            await asyncio.sleep(0)
                            continue
                    else:
                        self._final = True
                    self._ready.set()
        except CallFailed as failure:
            self._queue.append(failure)
        finally:
            self._queue.append(_END)
            self._final = True
            self._ready.set()

    def __aiter__(self) -> Coalesced:
        return self

    async def __anext__(self) -> TextDelta | Completion:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        head = self._queue[0]
        if isinstance(head, TextDelta):
            await self._hold()
            return self._take_deltas()
        self._queue.popleft()
        if head is _END:
            self._queue.appendleft(_END)  # iterating again ends again
            raise StopAsyncIteration
        if isinstance(head, CallFailed):
            raise head
        return head  # type: ignore[return-value]

    async def _hold(self) -> None:
        """Wait until the window since the last message ends, the size bound is reached, or the stream ends."""
        flush_at = self._sent_at + self._window
        if self._loop.time() >= flush_at:
            return
        timer = self._loop.call_at(flush_at, self._ready.set)
        self._holding = True
        try:
            while not self._final and self._held_chars < self._max_chars and self._loop.time() < flush_at:
                self._ready.clear()
                await self._ready.wait()
        finally:
            self._holding = False
            timer.cancel()

    def _take_deltas(self) -> TextDelta:
        first = self._queue.popleft()
        assert isinstance(first, TextDelta)
        if self._queue and isinstance(self._queue[0], TextDelta):
            texts, reasoning = [first.text], [first.reasoning]
            while self._queue and isinstance(self._queue[0], TextDelta):
                nxt = self._queue.popleft()
                texts.append(nxt.text)  # type: ignore[attr-defined]
                reasoning.append(nxt.reasoning)  # type: ignore[attr-defined]
            first = TextDelta("".join(texts), "".join(reasoning))
        self._held_chars = 0
        self._sent_at = self._loop.time()
        return first

    async def aclose(self) -> None:
        """Stop reading (closing the source) and wait for the reader to finish."""
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
