"""StreamGenerate's delta coalescing: the first delta at once, then batches bounded in time and size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from services.providers.backend import FailureKind, FinishReason, TextDelta, TokenUsage
from services.providers.coalesce import Coalesced
from services.providers.generation import CallFailed, Completion

FOREVER = 3600.0  # a window that never ends within a test: only the other bounds can release a batch


def _done(text: str) -> Completion:
    return Completion(
        text=text,
        reasoning="",
        served_model="m",
        requested_model="m",
        finish_reason=FinishReason.STOP,
        usage=TokenUsage(1, 1, cost_usd=0.0),
        generation_id="",
        simulated=True,
        time_to_first_token=0.0,
        latency=0.0,
    )


class Vendor:
    """A source the test releases delta by delta (``send``), then ends (``finish``) or fails (``fail``)."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[TextDelta | Completion | CallFailed | None] = asyncio.Queue()
        self.consumed = asyncio.Queue[None]()
        self.closed = asyncio.Event()

    async def source(self) -> AsyncGenerator[TextDelta | Completion, None]:
        try:
            while (item := await self.items.get()) is not None:
                if isinstance(item, CallFailed):
                    raise item
                yield item
                self.consumed.put_nowait(None)
        finally:
            self.closed.set()

    async def send(self, *items: TextDelta | Completion | CallFailed) -> None:
        """Queue ``items`` and wait until the coalescer's reader has taken every one."""
        for item in items:
            self.items.put_nowait(item)
        for item in items:
            if not isinstance(item, CallFailed):
                await self.consumed.get()


async def test_the_first_delta_goes_out_at_once_even_with_a_long_window() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source(), window=FOREVER)
    await vendor.send(TextDelta("Hel"))
    assert await asyncio.wait_for(stream.__anext__(), timeout=10) == TextDelta("Hel")
    await stream.aclose()
    assert vendor.closed.is_set()


async def test_deltas_within_the_window_are_held_until_the_completion_flushes_them_in_order() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source(), window=FOREVER)
    await vendor.send(TextDelta("a"))
    assert await stream.__anext__() == TextDelta("a")
    pending = asyncio.ensure_future(stream.__anext__())
    await vendor.send(TextDelta("b", "B"), TextDelta("c", "C"))
    assert not pending.done()  # held: the window has not ended and the batch is small
    await vendor.send(_done("abc"))
    assert await pending == TextDelta("bc", "BC")
    assert isinstance(await stream.__anext__(), Completion)
    await stream.aclose()


async def test_the_window_ends_a_held_batch_without_more_input() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source(), window=0.02)
    await vendor.send(TextDelta("a"))
    assert await stream.__anext__() == TextDelta("a")
    await vendor.send(TextDelta("b"), TextDelta("c"))
    # nothing else arrives: the window's timer releases the batch
    assert await asyncio.wait_for(stream.__anext__(), timeout=10) == TextDelta("bc")
    await stream.aclose()


async def test_a_held_batch_that_reaches_the_size_bound_goes_at_once() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source(), window=FOREVER, max_chars=5)
    await vendor.send(TextDelta("a"))
    assert await stream.__anext__() == TextDelta("a")
    pending = asyncio.ensure_future(stream.__anext__())
    await vendor.send(TextDelta("bc"))
    assert not pending.done()
    await vendor.send(TextDelta("de", "f"))
    assert await asyncio.wait_for(pending, timeout=10) == TextDelta("bcde", "f")
    await stream.aclose()


async def test_a_failure_flushes_the_held_text_then_raises() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source(), window=FOREVER)
    await vendor.send(TextDelta("a"))
    assert await stream.__anext__() == TextDelta("a")
    await vendor.send(TextDelta("b"))
    failure = CallFailed(
        FailureKind.MID_STREAM_ERROR,
        "stream broke",
        usage=TokenUsage(1, 1, cost_usd=0.0),
        partial_text="ab",
        retry_after=None,
        time_to_first_token=0.0,
        latency=0.0,
    )
    await vendor.send(failure)
    assert await asyncio.wait_for(stream.__anext__(), timeout=10) == TextDelta("b")
    try:
        await stream.__anext__()
    except CallFailed as raised:
        assert raised is failure
    else:
        raise AssertionError("the failure was not raised")
    await stream.aclose()


async def test_without_a_window_deltas_that_pile_up_go_out_as_one() -> None:
    produced = asyncio.Event()

    async def burst() -> AsyncGenerator[TextDelta | Completion, None]:
        for word in ("a", "b", "c", "d"):
            yield TextDelta(word, reasoning=word.upper())
        yield _done("abcd")
        produced.set()

    stream = Coalesced(burst())
    await produced.wait()  # the vendor sent everything before the client asked for anything
    assert await stream.__anext__() == TextDelta("abcd", "ABCD")
    assert isinstance(await stream.__anext__(), Completion)
    await stream.aclose()


async def test_without_a_window_a_client_that_keeps_up_gets_every_delta_alone() -> None:
    vendor = Vendor()
    stream = Coalesced(vendor.source())
    seen = []
    for word in ("a", "b", "c"):
        await vendor.send(TextDelta(word))
        seen.append(await stream.__anext__())
    assert seen == [TextDelta("a"), TextDelta("b"), TextDelta("c")]
    await vendor.send(_done("abc"))
    assert isinstance(await stream.__anext__(), Completion)
    await stream.aclose()


async def test_the_first_delta_does_not_wait_for_the_rest_of_a_burst() -> None:
    # A vendor whose first read holds the whole reply: the source never waits between its events. The writer
    # must get the first delta before the reader goes on through the rest.
    taken: list[str] = []

    async def burst() -> AsyncGenerator[TextDelta | Completion, None]:
        for text in ("a", "b", "c"):
            yield TextDelta(text)
            taken.append(text)
        yield _done("abc")

    stream = Coalesced(burst(), window=FOREVER)
    try:
        first = await anext(stream)
        assert first == TextDelta("a") and taken == []
        assert await anext(stream) == TextDelta("bc")  # the rest, joined, released by the end
        assert isinstance(await anext(stream), Completion)
    finally:
        await stream.aclose()
