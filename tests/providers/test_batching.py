"""StreamGenerate's delta batching: alone when the client keeps up, joined when they pile up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from services.providers.backend import FinishReason, TextDelta, TokenUsage
from services.providers.generation import Completion
from services.providers.server import _Batched


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


async def test_deltas_that_pile_up_go_out_as_one() -> None:
    produced = asyncio.Event()

    async def burst() -> AsyncGenerator[TextDelta | Completion, None]:
        for word in ("a", "b", "c", "d"):
            yield TextDelta(word, reasoning=word.upper())
        yield _done("abcd")
        produced.set()

    batched = _Batched(burst())
    await produced.wait()  # the vendor sent everything before the client asked for anything
    first = await batched.__anext__()
    assert first == TextDelta("abcd", "ABCD")
    assert isinstance(await batched.__anext__(), Completion)
    await batched.aclose()


async def test_a_client_that_keeps_up_gets_every_delta_alone() -> None:
    step = asyncio.Event()

    async def paced() -> AsyncGenerator[TextDelta | Completion, None]:
        for word in ("a", "b", "c"):
            yield TextDelta(word)
            await step.wait()
            step.clear()
        yield _done("abc")

    batched = _Batched(paced())
    seen = []
    for _ in range(3):
        seen.append(await batched.__anext__())
        step.set()
    assert seen == [TextDelta("a"), TextDelta("b"), TextDelta("c")]
    assert isinstance(await batched.__anext__(), Completion)
    await batched.aclose()


async def test_closing_stops_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncGenerator[TextDelta | Completion, None]:
        try:
            while True:
                yield TextDelta("x")
                await asyncio.Event().wait()
        finally:
            closed.set()

    batched = _Batched(endless())
    assert await batched.__anext__() == TextDelta("x")
    await batched.aclose()
    assert closed.is_set()
