"""What a user sees of the simulator: domain-shaped answers, critiques that name what is missing, refinements that
add it. Requests are built with the orchestrator's own prompts (``load_prompts``) and feedback rendering
(``feedback_text``), so the wording the simulator recognises is the wording the loop sends."""

from __future__ import annotations

import ast
import itertools
import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.orchestrator.critique import Critique, feedback_text, parse_critique
from services.orchestrator.prompts import load_prompts
from services.providers import sim_text
from services.providers.backend import (
    GenerationRequest,
    Message,
    OutputFormat,
    Purpose,
    ResponseFormat,
    Role,
)
from services.providers.catalogue import Catalogue
from services.providers.simulator import Simulator
from tests.providers.test_catalogue import SIX as MODELS
from tests.providers.test_simulator import draft_id, run, simulator

PROMPTS = load_prompts()
SCHEMA = json.loads(PROMPTS.critique_schema_json)
SAMPLES = {
    "coding": "Write a Python function that merges two sorted lists",
    "math": "A train leaves at 3pm going 60 mph; another at 4pm going 80 mph. When does the second catch up?",
    "reasoning": "Alice is taller than Bob, Bob than Carol. Who is shortest?",
    "creative": "Write a haiku about the first snow in a city",
    "factual": "What causes the seasons on Earth?",
    "summarization": "Summarize: The city council met on Tuesday to discuss the new budget, which raises park funding.",
    "extraction": "Extract all dates from: The meeting moved from 3 March to 14 April.",
    "classification": "Classify the sentiment of this review: the battery lasts all day.",
    "brainstorming": "Brainstorm ten ideas for a team offsite",
}


def call(
    catalogue: Catalogue,
    model: str,
    system: str,
    user: str,
    purpose: Purpose,
    domain: str,
    response_format: ResponseFormat | None = None,
) -> GenerationRequest:
    spec = catalogue.get(model)
    assert spec is not None
    return GenerationRequest(
        model=spec,
        messages=(Message(Role.SYSTEM, system), Message(Role.USER, user)),
        max_tokens=4000,
        purpose=purpose,
        domain=domain,
        response_format=response_format or ResponseFormat(),
    )


async def answer(s: Simulator, catalogue: Catalogue, model: str, prompt: str, domain: str) -> str:
    messages = PROMPTS.answer_messages(prompt)
    return (await run(s, call(catalogue, model, messages[0].content, prompt, Purpose.ANSWER, domain))).text


async def review(
    s: Simulator, catalogue: Catalogue, critic: str, prompt: str, text: str, domain: str, schema: bool = False
) -> dict[str, Any]:
    system, user = PROMPTS.critique(prompt, text)
    fmt = ResponseFormat(OutputFormat.JSON_SCHEMA, "critique", SCHEMA, strict=True) if schema else None
    reply = await run(s, call(catalogue, critic, system, user, Purpose.CRITIQUE, domain, fmt))
    data = json.loads(reply.text)
    assert isinstance(data, dict)
    return data


async def refine(
    s: Simulator, catalogue: Catalogue, model: str, prompt: str, text: str, reviews: list[Critique], domain: str
) -> str:
    system, user = PROMPTS.refine(prompt, text, feedback_text(reviews))
    return (await run(s, call(catalogue, model, system, user, Purpose.REFINE, domain))).text


def body_of(text: str) -> str:
    return text.split("\n\n", 1)[1]


@pytest.mark.parametrize("domain", sorted(SAMPLES))
async def test_each_domain_has_its_shape_and_the_prompts_words(catalogue: Catalogue, domain: str) -> None:
    s = simulator(catalogue)
    prompt = SAMPLES[domain]
    for model in MODELS:
        text = await answer(s, catalogue, model, prompt, domain)
        body = body_of(text)
        words = sim_text.context(prompt).words
        assert any(w in body for w in words), body
        if domain == "coding":
            blocks = re.findall(r"```python\n(.*?)```", body, re.DOTALL)
            assert blocks and "def merges_sorted_lists(items):" in blocks[0], body
            for block in blocks:
                ast.parse(block)
        elif domain == "math":
            assert re.search(r"^1\. .+\n2\. .+\n3\. .+\n\n\*\*Result:\*\* \d+$", body, re.MULTILINE), body
        elif domain == "reasoning":
            assert re.search(r"^1\. .+\n2\. .+\n3\. .+\n\n\*\*Conclusion:\*\* ", body, re.MULTILINE), body
        elif domain == "creative":  # a haiku asked for: stanzas of three short lines
            stanzas = [p for p in body.split("\n\n") if p.count("\n") == 2 and not p.startswith("*")]
            assert len(stanzas) >= 2 and all(len(line) < 70 for st in stanzas for line in st.splitlines()), body
        elif domain == "brainstorming":
            assert len(re.findall(r"^- \*\*.+:\*\* ", body, re.MULTILINE)) >= 3, body
        elif domain == "summarization":
            paragraph = next(p for p in body.split("\n\n") if p.startswith("The text reports that"))
            assert "city council met on Tuesday" in paragraph and len(paragraph.split()) < 60, body
        elif domain == "extraction":
            assert "| # | item | note |\n|---|---|---|\n| 1 |" in body, body
        elif domain == "classification":
            assert re.search(r"^\*\*Label:\*\* (positive|negative|neutral) — ", body, re.MULTILINE), body
        else:
            assert body.count("\n\n") >= 1 and "seasons on Earth" in body, body


async def test_first_drafts_mostly_score_5_to_7_5(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    rounds: list[float] = []
    for i, (domain, prompt) in enumerate(itertools.islice(itertools.cycle(SAMPLES.items()), 108)):
        author = MODELS[i % len(MODELS)]
        critics = [m for m in MODELS if m != author][i % 3 :: 3][:2]
        text = await answer(s, catalogue, author, f"{prompt} (case {i})", domain)
        scores = [float((await review(s, catalogue, c, prompt, text, domain))["score"]) for c in critics]
        rounds.append(statistics.median(scores))
    deciles = statistics.quantiles(rounds, n=10)
    assert 5.5 <= statistics.median(rounds) <= 7.0, deciles
    assert deciles[1] >= 4.0 and deciles[-2] <= 8.5, deciles  # 80 % within 4-8.5
    assert sum(5 <= r <= 7.5 for r in rounds) >= 0.5 * len(rounds), sorted(rounds)


async def test_two_critics_name_different_points_in_different_words(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    same_points = 0
    for i in range(40):
        domain, prompt = list(SAMPLES.items())[i % len(SAMPLES)]
        text = await answer(s, catalogue, "moonshotai/kimi-k2", f"{prompt} ({i})", domain)
        one = await review(s, catalogue, "z-ai/glm-4.5", prompt, text, domain)
        two = await review(s, catalogue, "openai/gpt-oss-120b", prompt, text, domain)
        assert one["rationale"] != two["rationale"]
        assert json.dumps(one) != json.dumps(two)
        same_points += set(one["suggestions"]) == set(two["suggestions"])
    assert same_points <= 8, same_points  # mostly different points


async def test_weaknesses_agree_with_the_score(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    errors = {
        a.error.format(**sim_text._slots(sim_text.context(p), ""))
        for d, p in SAMPLES.items()
        for a in sim_text.aspects_of(d)
        if a.error
    }
    seen_high = seen_low = 0
    for i in range(90):
        domain, prompt = list(SAMPLES.items())[i % len(SAMPLES)]
        author = MODELS[i % len(MODELS)]
        text = await answer(s, catalogue, author, f"{prompt} [{i}]", domain)
        data = await review(s, catalogue, MODELS[(i + 1) % len(MODELS)], prompt, text, domain)
        score, weaknesses = float(data["score"]), data["weaknesses"]
        assert isinstance(weaknesses, list)
        if score >= 9:
            seen_high += 1
            assert len(weaknesses) <= 1 and all(w.startswith("Minor:") for w in weaknesses), data
        if any(w in errors or "error" in w.lower() or "wrong" in w.lower() for w in weaknesses):
            seen_low += 1
            assert score < 6.5, data
        if score < 6:
            assert len(weaknesses) >= 3, data
    assert seen_high and seen_low  # both ends of the scale were exercised


async def test_a_schema_with_an_integer_score_gets_one(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    prompt = SAMPLES["math"]
    text = await answer(s, catalogue, "qwen/qwen3-coder", prompt, "math")
    data = await review(s, catalogue, "z-ai/glm-4.5", prompt, text, "math", schema=True)
    jsonschema.validate(data, SCHEMA)
    assert isinstance(data["score"], int)
    plain = await review(s, catalogue, "z-ai/glm-4.5", prompt, text, "math")
    assert isinstance(plain["score"], float) and plain["score"] == round(plain["score"], 1)


async def test_a_refinement_adds_what_the_review_asked_for_and_keeps_the_rest(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    prompt = SAMPLES["coding"]
    first = await answer(s, catalogue, "qwen/qwen3-coder", prompt, "coding")
    record = s.draft(draft_id(first))
    assert record is not None
    missing = [a for i, a in enumerate(sim_text.ASPECTS["coding"]) if not record.aspects >> i & 1 and a.section]
    wanted = missing[0]
    assert not wanted.found_in(first)
    ask = Critique(score=6, weaknesses=[wanted.weakness.format(fn="f")], suggestions=[wanted.suggestion])
    refined = await refine(s, catalogue, "qwen/qwen3-coder", prompt, first, [ask], "coding")
    assert wanted.found_in(refined), refined
    kept = body_of(first).replace("\n\n" + sim_text.HEDGE, "")
    assert kept.split("\n\n")[0] in refined and re.findall(r"```python\n.*?```", kept, re.DOTALL)[0] in refined
    new = s.draft(draft_id(refined))
    assert new is not None and new.aspects == record.aspects | 1 << sim_text.ASPECTS["coding"].index(wanted)
    assert new.quality > record.quality


async def test_code_aspects_rewrite_the_code_block(catalogue: Catalogue) -> None:
    s = simulator(catalogue)
    for i in range(12):
        prompt = f"Write a Python function that counts words in a file, case {i}"
        first = await answer(s, catalogue, "meta-llama/llama-4-maverick", prompt, "coding")
        record = s.draft(draft_id(first))
        assert record is not None
        if record.aspects & 0b11 == 0b11:
            continue
        asks = [Critique(score=5, suggestions=[a.suggestion]) for a in sim_text.ASPECTS["coding"][:2]]
        refined = await refine(s, catalogue, "meta-llama/llama-4-maverick", prompt, first, asks, "coding")
        code = re.findall(r"```python\n(.*?)```", refined, re.DOTALL)[0]
        ast.parse(code)
        assert '"""' in code and "raise TypeError" in code, code
        return
    pytest.fail("every first draft already had a docstring and validation")


async def test_refinement_through_real_critiques_gains_less_each_time(
    catalogue: Catalogue, write_file: Callable[..., Path]
) -> None:
    s = simulator(catalogue, write_file("regress_rate = 0.0\n"))
    steps: list[list[float]] = [[], [], []]
    for i in range(12):
        domain, prompt = list(SAMPLES.items())[i % len(SAMPLES)]
        text = await answer(s, catalogue, "moonshotai/kimi-k2", f"{prompt} <{i}>", domain)
        sections = body_of(text).count("**")
        for step in range(3):
            reviews = [
                parse_critique(json.dumps(await review(s, catalogue, c, prompt, text, domain)))
                for c in ("z-ai/glm-4.5", "openai/gpt-oss-120b")
            ]
            before = s.quality_of(draft_id(text))
            text = await refine(s, catalogue, "moonshotai/kimi-k2", prompt, text, reviews, domain)
            after = s.quality_of(draft_id(text))
            assert before is not None and after is not None and after > before
            steps[step].append(after - before)
        assert body_of(text).count("**") > sections  # sections were added along the way
    means = [statistics.fmean(gains) for gains in steps]
    assert means[0] > means[1] > means[2], means


async def test_a_regression_is_visible(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    s = simulator(catalogue, write_file("regress_rate = 1.0\n"))
    regressions = 0
    for i in range(30):
        prompt = f"{SAMPLES['factual']} ({i})"
        first = await answer(s, catalogue, "meta-llama/llama-4-maverick", prompt, "factual")
        ask = [Critique(score=6, suggestions=["Add one concrete 'Example'."])]
        refined = await refine(s, catalogue, "meta-llama/llama-4-maverick", prompt, first, ask, "factual")
        before, after = s.quality_of(draft_id(first)), s.quality_of(draft_id(refined))
        assert before is not None and after is not None
        assert (after < before) == (sim_text.MUDDLE in refined), refined
        regressions += after < before
    assert regressions >= 3


async def test_same_calls_same_words(catalogue: Catalogue) -> None:
    async def session(s: Simulator) -> list[str]:
        prompt = SAMPLES["brainstorming"]
        text = await answer(s, catalogue, "z-ai/glm-4.5", prompt, "brainstorming")
        data = await review(s, catalogue, "moonshotai/kimi-k2", prompt, text, "brainstorming")
        refined = await refine(
            s, catalogue, "z-ai/glm-4.5", prompt, text, [parse_critique(json.dumps(data))], "brainstorming"
        )
        return [text, json.dumps(data), refined]

    assert await session(simulator(catalogue)) == await session(simulator(catalogue))


def test_every_domain_has_aspects_with_recognisable_titles() -> None:
    assert set(sim_text.ASPECTS) == {*SAMPLES, ""}
    for domain, aspects in sim_text.ASPECTS.items():
        assert 5 <= len(aspects) <= 8, domain
        for i, aspect in enumerate(aspects):
            assert f"'{aspect.title}'" in aspect.suggestion, aspect
            assert sim_text.asked_aspects(aspect.suggestion, domain) >> i & 1, aspect


def test_untrusted_prompts_take_linear_time() -> None:
    # Prompts are untrusted: patterns that backtrack (a list of labels, a repeated lead word) stay fast.
    hostile = ["as " + "a, " * 30_000, "into " + "a or " * 30_000, "Write " * 20_000, "x" * 200_000]
    started = time.perf_counter()
    contexts = [sim_text.context(p) for p in hostile]
    assert time.perf_counter() - started < 2.0
    assert all(c.fn.isidentifier() and len(c.topic.split()) <= 24 for c in contexts)
    assert sim_text.context("Sort these into fruit or vegetable: apple").labels == ("fruit", "vegetable")


def test_an_identifier_tagging_the_prompt_is_not_a_word_to_write_about() -> None:
    # Tests (and people) tag prompts with ids; the words come from the request, not from its tag.
    tag = "1df8b25a-b7ab-4efc-b9e8-ecd973d31116"
    poem = sim_text.context(f"Write a short poem about the sea. [{tag}]")
    assert poem.words == ("sea",)
    code = sim_text.context(f"Write a Python function that merges two sorted lists. [{tag}]")
    assert code.fn == "merges_sorted_lists"
    assert all(tag not in word and not any(ch.isdigit() for ch in word) for word in poem.words + code.words)
