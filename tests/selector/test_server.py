"""SelectorService through the real wire: the real selector on port 0, a fake providers service."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import grpc
import pytest

from orchestratex.v1 import common_pb2, selector_pb2
from services.selector.classifier import default_classifier
from services.selector.ranking import Circuit
from tests.ports import free_port
from tests.selector.conftest import FakeProviders, StartSelector, catalogue, eventually, start_fake

CODING_PROMPT = "Write a Python function that merges two sorted lists into one sorted list."


def details(err: grpc.aio.AioRpcError) -> str:
    return err.details() or ""


async def test_analyze_prompt(selector) -> None:
    prompt = "Fix this:\n```python\ndef add(a, b):\n    return a - b\n```"
    response = await selector.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=prompt))
    analysis = response.analysis
    assert analysis.primary_domain == common_pb2.DOMAIN_CODING
    assert len(analysis.domain_probabilities) == 9
    assert math.isclose(sum(d.score for d in analysis.domain_probabilities), 1.0, abs_tol=1e-9)
    coding = next(d for d in analysis.domain_probabilities if d.domain == common_pb2.DOMAIN_CODING)
    assert analysis.confidence == coding.score
    assert "contains code" in coding.reason
    assert analysis.estimated_prompt_tokens == math.ceil(len(prompt) / 4)
    assert analysis.has_code and not analysis.has_data
    assert analysis.language == "en"
    assert analysis.classifier_version == default_classifier().version
    assert not analysis.needs_long_context


async def test_analyze_prompt_flags_models_too_small(selector) -> None:
    prompt = "Summarize this log.\n" + "2024-01-01 12:00:00 INFO request served in 12 ms\n" * 800  # ~40k chars
    analysis = (await selector.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=prompt))).analysis
    assert analysis.needs_long_context
    assert list(analysis.models_too_small) == ["dune/small"]


async def test_select_models(selector, fake_providers) -> None:
    response = await selector.SelectModels(selector_pb2.SelectModelsRequest(prompt=CODING_PROMPT))
    assert response.analysis.primary_domain == common_pb2.DOMAIN_CODING
    assert response.primary_model == "acme/coder-pro"
    assert list(response.critic_models) == ["bolt/think", "cedar/writer"]
    assert [c.rank for c in response.candidates] == [1, 2, 3, 4, 5]
    assert response.candidates[0].model == "acme/coder-pro"
    assert response.candidates[0].family == "acme"
    for candidate in response.candidates:
        assert "coding" in candidate.reason
        assert candidate.estimated_cost_usd > 0
        assert 0 <= candidate.breakdown.cost <= 1 and 0 <= candidate.breakdown.latency <= 1
    assert list(response.dropped) == []
    assert list(response.warnings) == []
    fake, _ = fake_providers
    assert fake.requests[0].include_unavailable  # open circuits must be listed to be reported


async def test_select_models_honours_preferences(selector) -> None:
    request = selector_pb2.SelectModelsRequest(
        prompt=CODING_PROMPT,
        preferences=common_pb2.Preferences(
            cost_weight=5.0, quality_weight=1.0, excluded_models=["dune/small"], max_cost_usd=0.01
        ),
        critic_count=1,
    )
    response = await selector.SelectModels(request)
    assert response.primary_model == "acme/mini"
    assert len(response.critic_models) == 1
    assert {d.model: d.reason for d in response.dropped} == {
        "acme/coder-pro": "estimated cost $0.014 is over max_cost_usd $0.010",
        "dune/small": "excluded by preferences.excluded_models",
    }


async def test_pinned_model_is_primary(selector) -> None:
    request = selector_pb2.SelectModelsRequest(
        prompt=CODING_PROMPT, preferences=common_pb2.Preferences(pinned_model="cedar/writer"), critic_count=0
    )
    response = await selector.SelectModels(request)
    assert response.primary_model == "cedar/writer"
    assert list(response.critic_models) == []
    pinned = next(c for c in response.candidates if c.model == "cedar/writer")
    assert pinned.reason.startswith("Pinned by the caller;")


async def test_expected_output_and_context_tokens_count_towards_the_window(selector) -> None:
    request = selector_pb2.SelectModelsRequest(
        prompt=CODING_PROMPT, context_tokens=30_000, expected_output_tokens=2_500
    )
    response = await selector.SelectModels(request)
    dropped = {d.model: d.reason for d in response.dropped}
    assert set(dropped) == {"dune/small", "acme/mini"}
    assert "context 30,000 + expected output 2,500" in dropped["acme/mini"]
    assert list(response.analysis.models_too_small) == ["acme/mini", "dune/small"]


def _select(**fields) -> selector_pb2.SelectModelsRequest:
    fields.setdefault("prompt", CODING_PROMPT)
    return selector_pb2.SelectModelsRequest(**fields)


def _prefs(**fields) -> common_pb2.Preferences:
    return common_pb2.Preferences(**fields)


BAD_SELECT_REQUESTS = [
    ("empty-prompt", _select(prompt=""), "prompt"),
    ("blank-prompt", _select(prompt=" \n\t "), "prompt"),
    ("prompt-too-long", _select(prompt="x" * 2_001), "prompt"),
    ("negative-quality-weight", _select(preferences=_prefs(quality_weight=-1)), "preferences.quality_weight"),
    ("nan-cost-weight", _select(preferences=_prefs(cost_weight=math.nan)), "preferences.cost_weight"),
    ("inf-latency-weight", _select(preferences=_prefs(latency_weight=math.inf)), "preferences.latency_weight"),
    (
        "all-weights-zero",
        _select(preferences=_prefs(quality_weight=0, cost_weight=0, latency_weight=0)),
        "preferences",
    ),
    ("negative-cap", _select(preferences=_prefs(max_cost_usd=-0.01)), "preferences.max_cost_usd"),
    ("unknown-pinned", _select(preferences=_prefs(pinned_model="nope/x")), "preferences.pinned_model"),
    (
        "unknown-allowed",
        _select(preferences=_prefs(allowed_models=["acme/mini", "nope/x"])),
        "preferences.allowed_models[1]",
    ),
    ("unknown-excluded", _select(preferences=_prefs(excluded_models=["nope/x"])), "preferences.excluded_models[0]"),
    ("too-many-critics", _select(critic_count=6), "critic_count"),
    ("negative-critics", _select(critic_count=-1), "critic_count"),
    ("negative-expected-output", _select(expected_output_tokens=-5), "expected_output_tokens"),
    ("negative-context-tokens", _select(context_tokens=-1), "context_tokens"),
]


@pytest.mark.parametrize(
    ("request_", "field"), [r[1:] for r in BAD_SELECT_REQUESTS], ids=[r[0] for r in BAD_SELECT_REQUESTS]
)
async def test_bad_select_requests_are_invalid_argument_naming_the_field(
    fake_providers, start_selector: StartSelector, request_, field: str
) -> None:
    stub, _ = await start_selector(fake_providers[1], ORX_MAX_PROMPT_CHARS="2000")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(info.value).startswith(f"{field}: ")


async def test_all_weights_zero_message_names_the_weights(selector) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await selector.SelectModels(_select(preferences=_prefs(quality_weight=0, cost_weight=0, latency_weight=0)))
    assert "quality_weight, cost_weight and latency_weight are all 0" in details(info.value)


@pytest.mark.parametrize(
    ("prompt", "why"), [("", "is required"), ("   ", "is required"), ("y" * 2_001, "limit is 2,000")]
)
async def test_bad_analyze_requests_are_invalid_argument(fake_providers, start_selector, prompt, why) -> None:
    stub, _ = await start_selector(fake_providers[1], ORX_MAX_PROMPT_CHARS="2000")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=prompt))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(info.value).startswith("prompt: ")
    assert why in details(info.value)


async def test_bad_requests_do_not_wait_for_the_catalogue(start_selector) -> None:
    stub, _ = await start_selector(free_port())  # nothing listens there
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(_select(critic_count=9))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_everything_excluded_is_failed_precondition(selector) -> None:
    everything = [m.id for m in catalogue()]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await selector.SelectModels(_select(preferences=_prefs(excluded_models=everything)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = details(info.value)
    assert message.startswith("no eligible model for this prompt: ")
    for model_id in everything:
        assert f"{model_id} (excluded by preferences.excluded_models)" in message


async def test_pinned_model_with_open_circuit_is_failed_precondition(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.models = [
        replace(m, circuit=Circuit.OPEN, cooldown_remaining_s=20) if m.id == "bolt/think" else m for m in fake.models
    ]
    stub, _ = await start_selector(port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(_select(preferences=_prefs(pinned_model="bolt/think")))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(info.value) == (
        "preferences.pinned_model 'bolt/think' cannot be used: circuit open after repeated failures; retry in 20 s"
    )


async def test_providers_down_at_first_call_is_unavailable(start_selector) -> None:
    stub, _ = await start_selector(free_port())
    for call, request in (
        (stub.SelectModels, _select()),
        (stub.AnalyzePrompt, selector_pb2.AnalyzePromptRequest(prompt=CODING_PROMPT)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(info.value).startswith("model catalogue unavailable: cannot reach the providers service")


async def test_providers_error_at_first_call_is_unavailable(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.fail = grpc.StatusCode.INTERNAL
    stub, _ = await start_selector(port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(_select())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "(INTERNAL)" in details(info.value)


async def test_slow_providers_at_first_call_is_unavailable(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.gate = asyncio.Event()  # never answers
    stub, _ = await start_selector(port, ORX_RPC_TIMEOUT="0.3")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(_select())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(info.value).startswith("model catalogue unavailable")
    fake.gate.set()


async def test_recovers_when_providers_comes_up(tmp_path, start_selector) -> None:
    port = free_port()
    stub, _ = await start_selector(port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SelectModels(_select())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    server, _ = await start_fake(FakeProviders(catalogue()), f"127.0.0.1:{port}")
    try:

        async def served() -> bool:
            try:
                await stub.SelectModels(_select())
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                return False
            return True

        await eventually(served)
    finally:
        await server.stop(0)


async def test_catalogue_changes_are_picked_up_in_the_background(fake_providers, selector) -> None:
    fake, _ = fake_providers
    assert (await selector.SelectModels(_select())).primary_model == "acme/coder-pro"
    fake.models = [replace(m, circuit=Circuit.OPEN) if m.id == "acme/coder-pro" else m for m in fake.models]

    async def dropped() -> bool:
        response = await selector.SelectModels(_select())
        return any(d.model == "acme/coder-pro" and "circuit open" in d.reason for d in response.dropped)

    await eventually(dropped)


async def test_cached_catalogue_survives_a_providers_outage(start_selector) -> None:
    server, port = await start_fake(FakeProviders(catalogue()))
    stub, _ = await start_selector(port)
    assert (await stub.SelectModels(_select())).primary_model == "acme/coder-pro"
    await server.stop(0)

    async def warned() -> bool:
        response = await stub.SelectModels(_select())  # still served from the cache
        assert response.primary_model == "acme/coder-pro"
        return any(w.startswith("model catalogue is ") for w in response.warnings)

    await eventually(warned)


async def test_concurrent_first_calls_share_one_catalogue_fetch(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.gate = asyncio.Event()
    stub, _ = await start_selector(port, refresh=60)
    calls = [asyncio.ensure_future(stub.SelectModels(_select())) for _ in range(5)]
    await asyncio.wait_for(fake.called.wait(), 10)
    fake.gate.set()
    responses = await asyncio.gather(*calls)
    assert {r.primary_model for r in responses} == {"acme/coder-pro"}
    assert len(fake.requests) == 1


async def test_stop_cancels_the_refresh_task(fake_providers, start_selector) -> None:
    stub, srv = await start_selector(fake_providers[1])
    await stub.SelectModels(_select())
    assert [t for t in asyncio.all_tasks() if t.get_name() == "selector-catalogue-refresh"]
    await srv.stop(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("selector-catalogue")]
