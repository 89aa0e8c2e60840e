"""``stop_sequences`` and ``end_user`` over the real wire: OpenAI's ``stop`` and ``user`` reach OpenRouter (the
stand-in), and the simulator ends a reply before the first stop sequence, as a vendor does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestratex.v1 import providers_pb2
from services.providers.backend import FinishReason, Purpose
from services.providers.catalogue import Catalogue
from services.providers.sim_profile import load_profile
from services.providers.simulator import Simulator
from tests.providers.helpers import Providers, collect, request
from tests.providers.openrouter_standin import LiveProviders, OpenRouterStandIn, Reply, live_providers
from tests.providers.test_simulator import req, run

GLM = "z-ai/glm-4.5"


@pytest.fixture
async def standin() -> AsyncIterator[OpenRouterStandIn]:
    async with OpenRouterStandIn() as server:
        yield server


@pytest.fixture
async def live(standin: OpenRouterStandIn, tmp_path: Path) -> AsyncIterator[LiveProviders]:
    async with live_providers(standin, tmp_path) as providers:
        yield providers


async def _generate(stub: Any, msg: providers_pb2.GenerateRequest, streaming: bool) -> providers_pb2.GenerateResponse:
    if not streaming:
        reply: providers_pb2.GenerateResponse = await stub.Generate(msg, timeout=30)
        return reply
    events, err = await collect(stub, msg)
    assert err is None
    done: providers_pb2.GenerateResponse = events[-1].completed
    assert "".join(e.delta.text for e in events[:-1]) == done.text
    return done


@pytest.mark.parametrize("streaming", [False, True], ids=["Generate", "StreamGenerate"])
async def test_stop_and_user_reach_openrouter(live: LiveProviders, standin: OpenRouterStandIn, streaming: bool) -> None:
    standin.script.append(Reply(content=["Line one", " END", " and more"]))
    msg = request(GLM, stop_sequences=["\n\n", "END"], end_user="user-42")
    done = await _generate(live.stub, msg, streaming)
    (sent,) = standin.chat_requests()
    assert sent.body["stop"] == ["\n\n", "END"]
    assert sent.body["user"] == "user-42"
    # the vendor stops at the sequence and leaves it out
    assert done.text == "Line one "
    assert done.finish_reason == providers_pb2.FINISH_REASON_STOP


async def test_stop_and_user_are_left_out_when_not_given(live: LiveProviders, standin: OpenRouterStandIn) -> None:
    await live.stub.Generate(request(GLM), timeout=30)
    (sent,) = standin.chat_requests()
    assert "stop" not in sent.body and "user" not in sent.body


@pytest.mark.parametrize("streaming", [False, True], ids=["Generate", "StreamGenerate"])
async def test_the_simulator_stops_at_the_first_stop_sequence(providers: Providers, streaming: bool) -> None:
    # Every simulated answer starts with its draft label line, then a blank line: "\n" ends it there.
    whole = await _generate(providers.stub, request(), streaming)
    assert "\n" in whole.text
    stopped = await _generate(providers.stub, request(stop_sequences=["never there", "\n"]), streaming)
    assert stopped.text.startswith("_(simulated answer · draft ") and stopped.text.endswith(")_")
    assert "\n" not in stopped.text
    assert stopped.finish_reason == providers_pb2.FINISH_REASON_STOP
    assert stopped.usage.completion_tokens < whole.usage.completion_tokens


async def test_the_simulator_cuts_at_the_earliest_sequence_before_the_length_limit(catalogue: Catalogue) -> None:
    sim = Simulator(catalogue, load_profile(None, catalogue), speed=1e9)
    base = req(catalogue, GLM, "Explain hash maps.", purpose=Purpose.ANSWER, max_tokens=8)
    # without a stop sequence, 8 tokens cut the answer (LENGTH)
    assert (await run(sim, base)).finish_reason is FinishReason.LENGTH
    # the earliest of the sequences wins, whatever their order, and comes before the length limit
    stopped = await run(sim, replace(base, stop=("draft", "answer")))
    assert stopped.text == "_(simulated "
    assert stopped.finish_reason is FinishReason.STOP
