"""The simulator without gRPC: draft labels, determinism, hidden quality, critiques, refinements, profile."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestratex.domains import DOMAINS
from orchestratex.errors import ConfigError
from services.providers.backend import (
    BackendError,
    FailureKind,
    FinishReason,
    GenerationRequest,
    Message,
    Purpose,
    Role,
    TextDelta,
)
from services.providers.catalogue import Catalogue, cost_usd
from services.providers.generation import CallFailed, Completion, generate
from services.providers.sim_profile import DEFAULT_PROFILE, SimProfile, load_profile
from services.providers.simulator import DRAFT_ID_RE, Simulator

LABEL = re.compile(r"^_\(simulated answer · draft ([0-9a-f]{8})\)_\n\n\S")
FAST = 1e9  # effectively no simulated latency


def simulator(catalogue: Catalogue, profile_path: Path | None = None) -> Simulator:
    return Simulator(catalogue, load_profile(profile_path, catalogue), speed=FAST)


def req(
    catalogue: Catalogue,
    model: str,
    text: str,
    purpose: Purpose = Purpose.ANSWER,
    domain: str = "coding",
    max_tokens: int = 4000,
    system: str | None = None,
) -> GenerationRequest:
    spec = catalogue.get(model)
    assert spec is not None
    messages = ((Message(Role.SYSTEM, system),) if system else ()) + (Message(Role.USER, text),)
    return GenerationRequest(model=spec, messages=messages, max_tokens=max_tokens, purpose=purpose, domain=domain)


async def run(sim: Simulator, request: GenerationRequest) -> Completion:
    result = None
    async for event in generate(sim, request):
        if isinstance(event, Completion):
            result = event
    assert result is not None
    return result


def draft_id(text: str) -> str:
    match = LABEL.match(text)
    assert match, text[:80]
    return match.group(1)


def critique_prompt(task: str, answer: str) -> str:
    return f"## Task\n\n{task}\n\n## Response to evaluate\n\n{answer}\n\nReturn only the JSON object."


def refine_prompt(task: str, answer: str) -> str:
    return f"## Task\n\n{task}\n\n## Your previous answer\n\n{answer}\n\n## Reviewer feedback\n\nBe clearer."


TASK = "Write a Python function that merges two sorted lists."


@pytest.mark.parametrize("purpose", [Purpose.ANSWER, Purpose.OTHER])
async def test_answers_start_with_the_draft_label_and_mention_the_prompt(
    catalogue: Catalogue, purpose: Purpose
) -> None:
    sim = simulator(catalogue)
    done = await run(sim, req(catalogue, "qwen/qwen3-coder", TASK, purpose))
    did = draft_id(done.text)
    assert "merges" in done.text or "sorted" in done.text
    assert done.finish_reason is FinishReason.STOP
    quality = sim.quality_of(did)
    assert quality is not None and 0.0 <= quality <= 1.0
    record = sim.draft(did)
    assert record is not None and (record.model, record.domain, record.refinements) == ("qwen/qwen3-coder", "coding", 0)


async def test_usage_follows_the_estimation_rules(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    request = req(catalogue, "z-ai/glm-4.5", TASK, system="Be brief.")
    done = await run(sim, request)
    expected_prompt = (math.ceil(len("Be brief.") / 4) + 4) + (math.ceil(len(TASK) / 4) + 4)
    assert done.usage.prompt_tokens == expected_prompt
    assert done.usage.completion_tokens == math.ceil(len(done.text) / 4)
    assert done.usage.cost_usd == cost_usd(request.model, expected_prompt, done.usage.completion_tokens)


async def test_same_seed_same_outputs_across_fresh_simulators(catalogue: Catalogue) -> None:
    async def session(sim: Simulator) -> list[str]:
        answer = await run(sim, req(catalogue, "moonshotai/kimi-k2", TASK))
        review = await run(sim, req(catalogue, "z-ai/glm-4.5", critique_prompt(TASK, answer.text), Purpose.CRITIQUE))
        better = await run(sim, req(catalogue, "moonshotai/kimi-k2", refine_prompt(TASK, answer.text), Purpose.REFINE))
        label = await run(sim, req(catalogue, "openai/gpt-oss-120b", TASK, Purpose.CLASSIFY))
        return [answer.text, review.text, better.text, label.text]

    first, second = await session(simulator(catalogue)), await session(simulator(catalogue))
    assert first == second
    assert json.loads(first[1])["score"] == json.loads(second[1])["score"]


async def test_a_retry_differs_but_replays_identically(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    request = req(catalogue, "z-ai/glm-4.5", TASK)
    first, retry = await run(sim, request), await run(sim, request)
    assert draft_id(first.text) != draft_id(retry.text)
    replay = simulator(catalogue)
    assert [(await run(replay, request)).text, (await run(replay, request)).text] == [first.text, retry.text]


async def test_a_different_seed_changes_outputs(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    other = simulator(catalogue, write_file("seed = 7\n"))
    request = req(catalogue, "z-ai/glm-4.5", TASK)
    assert (await run(simulator(catalogue), request)).text != (await run(other, request)).text


async def test_critique_is_one_json_object_in_contract_order(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    answer = await run(sim, req(catalogue, "qwen/qwen3-coder", TASK))
    review = await run(
        sim, req(catalogue, "tngtech/deepseek-r1t2-chimera", critique_prompt(TASK, answer.text), Purpose.CRITIQUE)
    )
    data = json.loads(review.text)
    assert list(data) == ["rationale", "strengths", "weaknesses", "suggestions", "score"]
    assert isinstance(data["rationale"], str) and data["rationale"]
    for key in ("strengths", "weaknesses", "suggestions"):
        assert data[key] and all(isinstance(item, str) and item for item in data[key])
    assert isinstance(data["score"], float) and 0 <= data["score"] <= 10
    assert data["score"] == round(data["score"], 1)
    assert not DRAFT_ID_RE.search(review.text)  # critiques never carry a draft label


async def test_critique_score_tracks_hidden_quality(catalogue: Catalogue) -> None:
    """A strong math critic (chimera) scores strong authors' math answers above weak authors'."""
    sim = simulator(catalogue)
    scored: list[tuple[float, float]] = []
    by_author: dict[str, list[float]] = {"openai/gpt-oss-120b": [], "meta-llama/llama-4-maverick": []}
    for i in range(60):
        task = f"Problem {i}: what is the probability of drawing {i % 5 + 2} aces in a row?"
        for author, scores in by_author.items():
            answer = await run(sim, req(catalogue, author, task, domain="math"))
            quality = sim.quality_of(draft_id(answer.text))
            review = await run(
                sim,
                req(
                    catalogue,
                    "tngtech/deepseek-r1t2-chimera",
                    critique_prompt(task, answer.text),
                    Purpose.CRITIQUE,
                    domain="math",
                ),
            )
            score = json.loads(review.text)["score"]
            assert quality is not None
            scored.append((quality, score))
            scores.append(score)
    strong, weak = (
        statistics.mean(by_author["openai/gpt-oss-120b"]),
        statistics.mean(by_author["meta-llama/llama-4-maverick"]),
    )
    assert strong > weak + 1.5, (strong, weak)  # hidden skills 0.86 vs 0.52
    assert statistics.correlation([q for q, _ in scored], [s for _, s in scored]) > 0.7


async def test_weak_critics_are_noisier(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    errors: dict[str, list[float]] = {"tngtech/deepseek-r1t2-chimera": [], "meta-llama/llama-4-maverick": []}
    for i in range(60):
        task = f"Riddle {i}: which door leads out if the guard always lies?"
        answer = await run(sim, req(catalogue, "moonshotai/kimi-k2", task, domain="reasoning"))
        quality = sim.quality_of(draft_id(answer.text))
        assert quality is not None
        for critic, misses in errors.items():
            review = await run(
                sim, req(catalogue, critic, critique_prompt(task, answer.text), Purpose.CRITIQUE, domain="reasoning")
            )
            expected = sim.expected_score(draft_id(answer.text))
            assert expected is not None
            misses.append(abs(json.loads(review.text)["score"] - expected))
    assert statistics.mean(errors["tngtech/deepseek-r1t2-chimera"]) < statistics.mean(
        errors["meta-llama/llama-4-maverick"]
    )


async def test_same_family_critics_are_biased_upwards(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    self_bias, other_bias = [], []
    for i in range(120):
        task = f"Problem {i}: how many ways can {i % 7 + 3} people sit at a round table?"
        answer = await run(sim, req(catalogue, "moonshotai/kimi-k2", task, domain="math"))
        quality = sim.quality_of(draft_id(answer.text))
        assert quality is not None
        prompt = critique_prompt(task, answer.text)
        mine = await run(sim, req(catalogue, "moonshotai/kimi-k2", prompt, Purpose.CRITIQUE, domain="math"))
        theirs = await run(sim, req(catalogue, "z-ai/glm-4.5", prompt, Purpose.CRITIQUE, domain="math"))
        self_bias.append(json.loads(mine.text)["score"] - 10 * quality)
        other_bias.append(json.loads(theirs.text)["score"] - 10 * quality)
    # Expected gap +0.7 (standard error ~0.11). Mid-skill domain (kimi math 0.76) so clamping at 10 hides little.
    assert statistics.mean(self_bias) - statistics.mean(other_bias) > 0.3


async def test_unknown_drafts_get_a_stable_quality(catalogue: Catalogue) -> None:
    text = critique_prompt(TASK, "_(simulated answer · draft 0badc0de)_\n\nSome answer from elsewhere.")
    scores = []
    for _ in range(2):
        sim = simulator(catalogue)
        review = await run(sim, req(catalogue, "z-ai/glm-4.5", text, Purpose.CRITIQUE))
        scores.append(json.loads(review.text)["score"])
    assert scores[0] == scores[1]


async def test_the_last_draft_label_is_the_one_reviewed(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    good = await run(sim, req(catalogue, "qwen/qwen3-coder", TASK))
    bad = await run(sim, req(catalogue, "meta-llama/llama-4-maverick", TASK, domain="math"))
    refined = await run(
        sim,
        req(
            catalogue, "meta-llama/llama-4-maverick", good.text + "\n\n" + refine_prompt(TASK, bad.text), Purpose.REFINE
        ),
    )
    record = sim.draft(draft_id(refined.text))
    assert record is not None and record.parent == draft_id(bad.text)


async def test_refinements_have_diminishing_returns(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    sim = simulator(catalogue, write_file("regress_rate = 0.0\n"))
    for i in range(10):
        task = f"Task {i}: implement a thread-safe LRU cache."
        text = (await run(sim, req(catalogue, "moonshotai/kimi-k2", task))).text
        qualities = [sim.quality_of(draft_id(text))]
        for _ in range(4):
            text = (
                await run(sim, req(catalogue, "moonshotai/kimi-k2", refine_prompt(task, text), Purpose.REFINE))
            ).text
            qualities.append(sim.quality_of(draft_id(text)))
        assert all(q is not None for q in qualities)
        gains = [b - a for a, b in itertools.pairwise(qualities)]  # type: ignore[operator]
        assert all(g > 0 for g in gains), gains
        assert all(later < earlier for earlier, later in itertools.pairwise(gains)), gains
        last = sim.draft(draft_id(text))
        assert last is not None and last.refinements == 4


async def test_refinements_can_regress(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    sim = simulator(catalogue, write_file("regress_rate = 1.0\n"))
    worse = 0
    for i in range(40):
        task = f"Write a haiku number {i} about autumn."
        text = (await run(sim, req(catalogue, "qwen/qwen3-coder", task, domain="creative"))).text
        before = sim.quality_of(draft_id(text))
        refined = await run(
            sim, req(catalogue, "qwen/qwen3-coder", refine_prompt(task, text), Purpose.REFINE, domain="creative")
        )
        after = sim.quality_of(draft_id(refined.text))
        assert before is not None and after is not None
        if after < before:
            worse += 1
            assert 0.02 - 1e-9 <= before - after <= 0.15 + 1e-9 or after == 0.0
    # P(regress) = 1.0 * (1 - 0.45) = 0.55 for qwen3-coder on creative work.
    assert 10 <= worse <= 32


async def test_classify_returns_one_domain_name(catalogue: Catalogue) -> None:
    sim = simulator(catalogue)
    labels = []
    for i in range(30):
        prompt = f"Fix the bug in this Python function number {i}: def f(x): return x +"
        done = await run(sim, req(catalogue, "z-ai/glm-4.5", prompt, Purpose.CLASSIFY, domain=""))
        assert done.text in DOMAINS
        labels.append(done.text)
    assert labels.count("coding") >= 20


async def test_invalid_json_rate_makes_critiques_unusable(
    catalogue: Catalogue, write_file: Callable[..., Path]
) -> None:
    sim = simulator(catalogue, write_file('[models."z-ai/glm-4.5".failures]\ninvalid_json = 1.0\n'))
    answer = await run(sim, req(catalogue, "qwen/qwen3-coder", TASK))
    for i in range(12):
        review = await run(
            sim, req(catalogue, "z-ai/glm-4.5", critique_prompt(f"{TASK} ({i})", answer.text), Purpose.CRITIQUE)
        )
        try:
            data = json.loads(review.text)
        except ValueError:
            continue
        assert not isinstance(data.get("score"), int | float)
    # Answers are unaffected by invalid_json.
    assert LABEL.match((await run(sim, req(catalogue, "z-ai/glm-4.5", TASK))).text)


async def test_max_tokens_truncates_with_finish_length(catalogue: Catalogue) -> None:
    done = await run(simulator(catalogue), req(catalogue, "z-ai/glm-4.5", TASK, max_tokens=5))
    assert done.finish_reason is FinishReason.LENGTH
    assert len(done.text) == 20 and done.usage.completion_tokens == 5


async def test_answer_suffix_is_appended(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    suffix = "<img src=x onerror=alert(1)>"
    sim = simulator(catalogue, write_file(f'[defaults]\nanswer_suffix = "{suffix}"\n'))
    done = await run(sim, req(catalogue, "z-ai/glm-4.5", TASK))
    assert done.text.endswith("\n\n" + suffix)
    review = await run(sim, req(catalogue, "z-ai/glm-4.5", critique_prompt(TASK, done.text), Purpose.CRITIQUE))
    assert json.loads(review.text)["score"] >= 0  # critiques stay plain JSON


async def test_mid_stream_failure_reports_partial_usage(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    sim = simulator(catalogue, write_file("[defaults.failures]\nmid_stream_error = 1.0\n"))
    request = req(catalogue, "z-ai/glm-4.5", TASK)
    seen = []
    with pytest.raises(CallFailed) as info:
        async for event in generate(sim, request):
            assert isinstance(event, TextDelta)
            seen.append(event.text)
    failure = info.value
    assert failure.kind is FailureKind.MID_STREAM_ERROR and failure.streamed
    assert failure.partial_text == "".join(seen) and seen
    assert failure.usage.completion_tokens == math.ceil(len(failure.partial_text) / 4)
    assert failure.usage.cost_usd == cost_usd(
        request.model, failure.usage.prompt_tokens, failure.usage.completion_tokens
    )


async def test_early_failures_raise_before_any_token(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    sim = simulator(
        catalogue,
        write_file("[defaults.failures]\nrate_limit = 1.0\nretry_after_seconds = 5.0\n"),
    )
    stream = sim.stream(req(catalogue, "z-ai/glm-4.5", TASK))
    with pytest.raises(BackendError) as info:
        await anext(stream)
    assert info.value.kind is FailureKind.RATE_LIMITED
    assert info.value.retry_after == 5.0 / FAST


def test_default_profile_is_failure_free(catalogue: Catalogue) -> None:
    profile = load_profile(None, catalogue)
    assert set(profile.models) == set(catalogue.ids())
    for model in profile.models.values():
        rates = model.failures
        assert (rates.rate_limit, rates.upstream_error, rates.timeout, rates.mid_stream_error, rates.invalid_json) == (
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        )
        assert model.answer_suffix == ""
        assert set(model.skills) == set(DOMAINS)


def test_default_profile_documents_every_key() -> None:
    """Every key has a comment right above it or is explained by name in a comment block."""
    lines = DEFAULT_PROFILE.read_text(encoding="utf-8").splitlines()
    comments = " ".join(line for line in lines if line.lstrip().startswith("#"))
    keys = set()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=", 1)[0].strip()
            keys.add(key)
            commented_above = lines[i - 1].lstrip().startswith("#")
            assert commented_above or re.search(rf"\b{re.escape(key)}\b", comments), f"{key} is undocumented"
    assert {"seed", "ttft_ms", "tokens_per_second", "skill", "rate_limit", "invalid_json", "answer_suffix"} <= keys


def test_profile_resolution_order(catalogue: Catalogue, write_file: Callable[..., Path]) -> None:
    profile: SimProfile = load_profile(
        write_file(
            "[defaults]\nttft_ms = 5\n[defaults.failures]\nupstream_error = 0.25\n"
            '[models."qwen/qwen3-coder"]\nttft_ms = 9\nskill = { coding = 0.1 }\n'
            '[models."qwen/qwen3-coder".failures]\ntimeout = 0.5\n'
        ),
        catalogue,
    )
    qwen, glm = profile.models["qwen/qwen3-coder"], profile.models["z-ai/glm-4.5"]
    spec = catalogue.get("z-ai/glm-4.5")
    assert spec is not None
    assert (qwen.ttft_ms, glm.ttft_ms) == (9, 5)
    assert glm.tokens_per_second == spec.typical_tokens_per_second
    assert qwen.skills["coding"] == 0.1 and glm.skills["math"] == spec.specialties["math"].score
    assert (qwen.failures.upstream_error, qwen.failures.timeout, glm.failures.timeout) == (0.25, 0.5, 0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[models."acme/unknown"]\nttft_ms = 1\n', "models.acme/unknown: unknown model"),
        ("[defaults.failures]\nrate_limit = 0.6\ntimeout = 0.6\n", "must not exceed 1"),
        ("[defaults]\nttft = 3\n", "defaults.ttft: unknown key"),
        ("[defaults.failures]\nupstream_error = 2\n", "defaults.failures.upstream_error: must be between 0 and 1"),
        ('[models."z-ai/glm-4.5"]\nskill = { cooking = 0.5 }\n', "skill.cooking: unknown key"),
    ],
)
def test_bad_profiles_are_rejected(
    catalogue: Catalogue, write_file: Callable[..., Path], text: str, expected: str
) -> None:
    path = write_file(text)
    with pytest.raises(ConfigError) as info:
        load_profile(path, catalogue)
    assert expected in str(info.value) and str(path) in str(info.value)


async def test_latency_jitter_can_be_turned_off_for_benchmarks(
    catalogue: Catalogue, write_file: Callable[..., Path]
) -> None:
    fixed = simulator(catalogue, write_file("latency_jitter = false\n"))
    jittered = simulator(catalogue)
    model = "z-ai/glm-4.5"
    expected = fixed.profile.models[model].ttft_ms / 1000 / FAST
    fixed_ttfts = {fixed._plan(req(catalogue, model, f"task {i}")).ttft for i in range(10)}
    jittered_ttfts = {jittered._plan(req(catalogue, model, f"task {i}")).ttft for i in range(10)}
    assert len(fixed_ttfts) == 1
    assert fixed_ttfts.pop() == pytest.approx(expected)
    assert len(jittered_ttfts) > 1


async def test_an_answer_takes_its_profile_time_to_the_token(
    catalogue: Catalogue, write_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first chunk comes after ttft and the last once every token is generated: ttft + tokens / speed,
    the nominal time the orchestrator benchmark measures against (on a virtual clock: nothing is timed)."""
    profile = write_file("latency_jitter = false\n[defaults]\nttft_ms = 400\ntokens_per_second = 100\n")
    sim = Simulator(catalogue, load_profile(profile, catalogue))
    loop = asyncio.get_running_loop()
    now = [loop.time()]
    start = now[0]
    arrivals: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += max(0.0, seconds)

    monkeypatch.setattr(loop, "time", lambda: now[0])
    monkeypatch.setattr(asyncio, "sleep", sleep)  # the simulator's pacing; nothing else sleeps meanwhile
    text = ""
    async for event in sim.stream(req(catalogue, "z-ai/glm-4.5", TASK)):
        if isinstance(event, TextDelta):
            arrivals.append(now[0] - start)
            text += event.text
    assert len(arrivals) > 10
    assert arrivals[0] == pytest.approx(0.4)
    assert arrivals[-1] == pytest.approx(0.4 + math.ceil(len(text) / 4) / 100)
    assert arrivals == sorted(arrivals)
