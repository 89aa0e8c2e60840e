"""The optional second opinion on a prompt's domain: parsing, combination, model choice, and the wire."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from orchestratex.domains import DOMAINS, from_proto
from orchestratex.v1 import common_pb2, providers_pb2, selector_pb2
from services.selector.analysis import analyze, default_output_tokens
from services.selector.classifier import default_classifier
from services.selector.ranking import Circuit
from services.selector.second_opinion import (
    ACCURACY,
    PROMPT_CHARS,
    build_request,
    combine,
    parse_domain,
    pick_model,
    revise,
)
from tests.selector.conftest import analysis_for, catalogue, entry

# ------------------------------------------------------------------------------------------------
# Pure logic


@pytest.mark.parametrize(
    ("reply", "domain"),
    [
        ('{"domain": "math"}', "math"),
        ('  {"domain":"Math"}\n', "math"),
        ("coding", "coding"),
        ('"summarization"', "summarization"),
        ('```json\n{"domain": "extraction"}\n```', "extraction"),
    ],
)
def test_parse_domain_accepts_one_domain_name(reply: str, domain: str) -> None:
    assert parse_domain(reply) == domain


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I think this is math",
        "math.",
        '{"domain": "cooking"}',
        '{"domain": "math", "confidence": 0.9}',
        '{"label": "math"}',
        '{"domain": 3}',
        '["math"]',
        '{"domain": "math"',
    ],
)
def test_parse_domain_rejects_anything_else(reply: str) -> None:
    assert parse_domain(reply) == ""


def _probabilities(**given: float) -> dict[str, float]:
    rest = (1 - sum(given.values())) / (len(DOMAINS) - len(given))
    return {d: given.get(d, rest) for d in DOMAINS}


def test_combine_settles_a_close_call() -> None:
    before = _probabilities(math=0.35, factual=0.30)
    after = combine(before, "factual")
    assert max(after, key=after.__getitem__) == "factual"
    assert sum(after.values()) == pytest.approx(1.0)
    # Bayes' rule: the answer's odds against any other domain grow by ACCURACY / ((1 - ACCURACY) / 8).
    factor = ACCURACY / ((1 - ACCURACY) / (len(DOMAINS) - 1))
    assert after["factual"] / after["math"] == pytest.approx(factor * 0.30 / 0.35)


def test_combine_does_not_overturn_a_clear_call() -> None:
    after = combine(_probabilities(coding=0.45, math=0.03), "math")
    assert max(after, key=after.__getitem__) == "coding"
    assert after["math"] > 0.03


def test_pick_model_prefers_configured_then_cheapest_usable() -> None:
    models = catalogue()  # dune/small is the cheapest
    assert pick_model(models, "", 100) == "dune/small"
    assert pick_model(models, "bolt/think", 100) == "bolt/think"
    blocked = [m for m in models if m.id != "dune/small"] + [entry("dune/small", "dune", circuit=Circuit.OPEN)]
    assert pick_model(blocked, "", 100) == "acme/mini"
    assert pick_model([], "", 100) == ""


def test_request_is_json_mode_bounded_and_marked_as_classification() -> None:
    prompt = "Summarize this. " + "x" * 10_000 + " THE END"
    request = build_request(prompt, "dune/small")
    assert request.model == "dune/small"
    assert request.response_format.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert request.context.purpose == common_pb2.CALL_PURPOSE_CLASSIFY
    assert request.temperature == 0.0 and 0 < request.max_tokens <= 50
    user = request.messages[-1].content
    assert user.startswith("Summarize this.") and user.endswith("THE END")
    assert len(user) <= 2 * PROMPT_CHARS + 20


def test_revise_follows_the_new_primary_domain() -> None:
    analysis = analysis_for("math", prompt_tokens=7_000, probabilities=_probabilities(math=0.4, coding=0.35))
    revised = revise(
        analysis,
        combine(analysis.probabilities, "coding"),
        "second opinion from m: coding",
        context_windows={"small": 7_500, "big": 100_000},
        expected_output_tokens=0,
    )
    assert revised.primary_domain == "coding"
    assert revised.confidence == revised.probabilities["coding"]
    assert revised.expected_output_tokens == default_output_tokens("coding")
    assert revised.models_too_small == ("small",) and revised.needs_long_context
    assert "second opinion" in revised.reasons["coding"]


# ------------------------------------------------------------------------------------------------
# Over the wire, with a fake providers service

AMBIGUOUS = "Tell me about the Fibonacci numbers"


async def _select(stub, prompt: str = AMBIGUOUS) -> selector_pb2.SelectModelsResponse:
    response: selector_pb2.SelectModelsResponse = await stub.SelectModels(
        selector_pb2.SelectModelsRequest(prompt=f"{prompt} ({uuid.uuid4().hex[:6]})"), timeout=10
    )
    return response


async def test_off_by_default_no_call_and_no_report(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    stub, _ = await start_selector(port)
    resp = await _select(stub)
    assert not resp.analysis.HasField("second_opinion")
    assert fake.generate_requests == []


async def test_low_confidence_asks_the_cheapest_model_and_combines(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    prompt = f"{AMBIGUOUS} ({uuid.uuid4().hex[:6]})"
    own = analyze(prompt, default_classifier())
    answer = next(d for d in sorted(own.probabilities, key=own.probabilities.__getitem__) if d != own.primary_domain)
    fake.generate_text = f'{{"domain": "{answer}"}}'
    stub, _ = await start_selector(port, ORX_SELECTOR_SECOND_OPINION="on", ORX_SELECTOR_SECOND_OPINION_BELOW="1")
    resp = await stub.SelectModels(selector_pb2.SelectModelsRequest(prompt=prompt), timeout=10)

    assert len(fake.generate_requests) == 1
    assert fake.generate_requests[0].model == "dune/small"
    opinion = resp.analysis.second_opinion
    assert opinion.applied and opinion.model == "dune/small"
    assert from_proto(opinion.domain) == answer
    assert from_proto(opinion.classifier_domain) == own.primary_domain
    assert opinion.classifier_confidence == pytest.approx(own.confidence)
    assert opinion.usage.cost_usd == pytest.approx(0.0000102) and opinion.usage.total_tokens == 188
    expected = combine(own.probabilities, answer)
    got = {from_proto(s.domain): s.score for s in resp.analysis.domain_probabilities}
    assert got == pytest.approx(expected)
    assert from_proto(resp.analysis.primary_domain) == max(expected, key=expected.__getitem__)
    assert not any("second opinion" in w for w in resp.warnings)


async def test_configured_model_is_used(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    stub, _ = await start_selector(
        port,
        ORX_SELECTOR_SECOND_OPINION="on",
        ORX_SELECTOR_SECOND_OPINION_BELOW="1",
        ORX_SELECTOR_SECOND_OPINION_MODEL="cedar/writer",
    )
    resp = await _select(stub)
    assert [r.model for r in fake.generate_requests] == ["cedar/writer"]
    assert resp.analysis.second_opinion.model == "cedar/writer"


async def test_confident_prompts_are_not_asked(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    stub, _ = await start_selector(port, ORX_SELECTOR_SECOND_OPINION="on", ORX_SELECTOR_SECOND_OPINION_BELOW="0")
    resp = await _select(stub)
    assert fake.generate_requests == []
    assert not resp.analysis.HasField("second_opinion")


async def test_unparseable_answer_keeps_the_classifier_and_warns(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.generate_text = "This prompt is about mathematics, I believe."
    stub, _ = await start_selector(port, ORX_SELECTOR_SECOND_OPINION="on", ORX_SELECTOR_SECOND_OPINION_BELOW="1")
    prompt = f"{AMBIGUOUS} ({uuid.uuid4().hex[:6]})"
    own = analyze(prompt, default_classifier())
    resp = await stub.SelectModels(selector_pb2.SelectModelsRequest(prompt=prompt), timeout=10)
    opinion = resp.analysis.second_opinion
    assert not opinion.applied and opinion.domain == common_pb2.DOMAIN_UNSPECIFIED
    assert opinion.usage.cost_usd > 0  # the call was made and billed
    assert from_proto(resp.analysis.primary_domain) == own.primary_domain
    assert resp.analysis.confidence == pytest.approx(own.confidence)
    assert any("second opinion unavailable" in w and "domain name" in w for w in resp.warnings)


async def test_slow_model_times_out_quickly_and_falls_back(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.generate_gate = asyncio.Event()  # never opened: the model never answers
    stub, _ = await start_selector(
        port,
        build_options={"second_opinion_timeout": 0.3},
        ORX_SELECTOR_SECOND_OPINION="on",
        ORX_SELECTOR_SECOND_OPINION_BELOW="1",
    )
    started = time.monotonic()
    resp = await _select(stub)
    assert time.monotonic() - started < 3.0
    opinion = resp.analysis.second_opinion
    assert not opinion.applied and opinion.latency.ToMilliseconds() >= 250
    assert any("no answer in time" in w for w in resp.warnings)
    assert resp.primary_model  # the selection itself is complete


async def test_failed_call_falls_back_and_analyze_prompt_reports_it(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.generate_fail = grpc.StatusCode.UNAVAILABLE
    stub, _ = await start_selector(port, ORX_SELECTOR_SECOND_OPINION="on", ORX_SELECTOR_SECOND_OPINION_BELOW="1")
    resp = await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=AMBIGUOUS), timeout=10)
    assert resp.analysis.HasField("second_opinion") and not resp.analysis.second_opinion.applied
    assert resp.warnings and "UNAVAILABLE" in resp.warnings[0]


async def test_analyze_prompt_applies_the_second_opinion(fake_providers, start_selector) -> None:
    fake, port = fake_providers
    fake.generate_text = '{"domain": "brainstorming"}'
    stub, _ = await start_selector(port, ORX_SELECTOR_SECOND_OPINION="on", ORX_SELECTOR_SECOND_OPINION_BELOW="1")
    resp = await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=AMBIGUOUS), timeout=10)
    assert resp.analysis.second_opinion.applied
    assert from_proto(resp.analysis.second_opinion.domain) == "brainstorming"
    assert list(resp.warnings) == []
