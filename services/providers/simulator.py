"""The deterministic model simulator: the offline default backend.

Every simulated answer carries a hidden quality and a set of the domain's **aspects** it shows (things a
reviewer can ask for and a refinement can add, such as an "Edge cases" section for code or a "Check" line for
math: :data:`sim_text.ASPECTS`), kept in an in-memory registry keyed by a draft id that is printed on the
answer's first line. Critics score answers from both (with noise that shrinks as the critic's skill grows,
and a self-enhancement bias for same-family critics) and name missing aspects as weaknesses; refinements add
the sections the reviews ask for, which raises the quality with diminishing returns, and sometimes make it
worse. This is the contract the orchestrator and the benchmarks rely on:

* Answers (purpose ANSWER, REFINE, AGGREGATE, OTHER, unspecified) start with ``_(simulated answer · draft
  <8 lowercase hex>)_``, a blank line, then the body. Unkeyed bodies (:mod:`sim_text`) have the domain's shape
  (the call's domain, else a keyword guess from the prompt): a fenced Python block for coding, numbered steps
  ending in a ``**Result:**`` line for math, verse for a poem, bullets for brainstorming, a short paragraph for
  a summary, a table for extraction, a ``**Label:**`` line for classification; then one ``**Title:**``
  section (or a line of verse, or a change to the code) per aspect shown. A first draft of quality q shows
  about ``FIRST_COVERAGE × q²`` of its domain's aspects, never all of them; below ``HEDGE_BELOW`` it ends with
  :data:`sim_text.HEDGE`.
* CRITIQUE replies are one JSON object with keys ``rationale``, ``strengths``, ``weaknesses``,
  ``suggestions``, ``score`` (0-10, one decimal; a whole number when the request's JSON Schema declares
  ``score`` an integer, as the orchestrator's critique schema does), in that order — or, with the profile's
  ``invalid_json`` probability, unusable text. Before noise and biases a draft of quality q showing a share
  c of its domain's aspects scores ``10 × (SCORE_FLOOR + (1 - SCORE_FLOOR) q) × (1 - coverage_weight ×
  (1 - c))``. The weaknesses are missing aspects, as many as the score implies (none or one ``Minor:`` nit at
  9 and above, three or four below 6, an error wording only below 6), each critic choosing with its own draw
  and leanings, in its own voice; each suggestion quotes the aspect's title (``Add a short 'Edge cases'
  section ...``).
* REFINE keeps the body of the answer it quotes (the last simulated answer in the last user message, its
  profile suffix and the hedge removed) and adds a section for each aspect whose title the text after it (the
  reviews) names, the most often named first, at most ``REFINE_MAX_ADDED``. Its quality rises by
  ``(1 - q) × refine_gain × skill × REFINE_DECAY ** (earlier refinements)``, times 1/3, 2/3 or 1 for 0, 1 or 2+
  aspects added; with probability ``regress_rate × (1 - skill)`` it drops by 0.02-0.15 instead, and then the
  body visibly loses a section and gains :data:`sim_text.MUDDLE`. With no answer quoted it writes the body
  afresh.
* CLASSIFY replies are one domain name.
* A reply ends before the first of the request's stop sequences it contains (finish reason STOP),
  then is cut to ``max_tokens`` (finish reason LENGTH), as a vendor's would.
* The draft under review / being refined is the LAST ``draft <id>`` found in the messages.
* A CRITIQUE request whose last message asks for a pairwise verdict (both ``[[A]]`` and ``[[B]]`` outside its
  fenced ``<<<BEGIN …>>>`` sections, as MT-Bench's pairwise judge prompt does) and quotes two drafts compares
  the last two quoted (A, then B):
  the reply is a sentence ending in ``[[A]]``, ``[[B]]`` or ``[[C]]`` (a tie), from each draft's score as
  this critic perceives it (its noise, self bias and error penalty, as for a score).
* AGGREGATE combines candidates: the distinct known draft ids in the LAST user message. The aggregator
  keeps the best candidate (highest hidden quality) with probability equal to its skill in the domain,
  else a uniformly random one, and improves it by one refinement step (the REFINE formula: gain or
  regression); the new draft's parent is the chosen candidate and it shows every aspect any candidate
  showed. With no known candidate it is an ANSWER.

Answer key (SIMULATION ONLY). ``orchestratex eval`` measures strategies on checkable suites (GSM8K's
final number, HumanEval's functions). For that, and only in simulation, ``ORX_SIM_ANSWER_KEY`` names a
JSONL answer key (:mod:`services.providers.sim_answers`): an explicit test hook through which the
simulator reads an item's expected answer. It never applies to real providers, and scores obtained with
it are simulated results, never to be mixed with real ones. When a line of a call's user messages
matches an item of the key, the answer draft also gets a latent draw ``u`` in [0, 1) and is correct
when ``u < quality``. A first answer draws ``u``; a refinement or an aggregate inherits its parent's, so
a refinement that raises quality can only turn wrong into right and one that lowers it only right into
wrong. The body is then checkable: for ``number`` items a few worked steps ending in the line
``Answer: <n>`` (the expected number when correct, else a different one), for ``python`` items a
fenced block with the item's prompt + its canonical body when correct, the prompt + a wrong body
otherwise. Critics take ``critic_error_penalty × skill`` points off a wrong draft. Unkeyed calls are
unaffected.

Determinism: each call's random generator is seeded from (profile seed, model, purpose, sha256 of the
messages without their random fence keys, attempt number of that triple), so a retry differs from the
first try while a whole run replays identically from a fresh simulator. The draws come in a fixed order:
latency jitter, failure, draft id; then a first answer's quality, its aspects, its body's wording, and a keyed
item's latent draw; a refinement's regression draw and drop, its dropped section, its latent draw; a critique's
noise, then its wording. The body's slots (topic, function name, numbers) come from the prompt alone, so a
draft and its refinements agree. Issue 19 changed this order (aspects and new wording), so a run replays a
run of the same version only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.errors import ConfigError
from orchestratex.usage import estimate_tokens
from services.providers import sim_answers, sim_text
from services.providers.backend import (
    BackendError,
    FailureKind,
    FinishReason,
    GenerationRequest,
    Message,
    OutputFormat,
    Purpose,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Timing,
    TokenUsage,
    estimate_prompt_tokens,
)
from services.providers.catalogue import SIMULATED_PROVIDER, Catalogue, ModelSpec
from services.providers.sim_answers import AnswerKey, KeyedItem, load_answer_key
from services.providers.sim_profile import FailureRates, ModelProfile, SimProfile, load_profile

log = logging.getLogger(__name__)

DRAFT_LABEL = "_(simulated answer · draft {draft_id})_"
"""First line of every simulated answer; ``draft_id`` is 8 lowercase hex digits."""
DRAFT_ID_RE = re.compile(r"draft ([0-9a-f]{8})")
"""Finds draft ids in messages; the simulator uses the last match."""

SELF_BIAS = 0.7
"""Score bonus when critic and author share a family (self-enhancement bias)."""
CRITIC_NOISE_BASE = 0.4
CRITIC_NOISE_PER_MISSING_SKILL = 2.0
REFINE_DECAY = 0.6
SCORE_FLOOR = 0.3
"""Critics' scale starts here: a readable, on-topic draft of hidden quality q rates ``0.3 + 0.7 q`` of full marks
(then less for the aspects it lacks), so weak first drafts score about 4, not 2."""
REFINE_MAX_ADDED = 2
"""A refinement adds at most this many of the aspects the reviews ask for (those asked for most often first): a
draft that two critics found many gaps in takes more than one round to fill them all."""
FIRST_COVERAGE = 0.6
"""A first draft of quality q covers about ``FIRST_COVERAGE × q²`` of its domain's aspects (at least one, and
always two fewer than all, so a critic has something to ask for)."""
HEDGE_BELOW = 0.75
"""A first draft below this quality closes with a hedge (:data:`sim_text.HEDGE`); a refinement removes it."""
MAX_REMEMBERED = 8192
"""Drafts kept, and attempt counters kept; the least recently used go first. Full, both take about 3.6 MiB
(about 440 bytes a draft and an attempt counter, the memo's tables included; tests/providers/
test_simulator_memory.py holds them to 4 MiB). A draft is needed while its session still refines or critiques
it, seconds to minutes: 8,192 drafts are the last 2,500 or so sessions of 3 rounds. A forgotten draft is
reviewed as an unknown one (:func:`_hash_quality`), and a forgotten attempt counter starts again at the
first attempt."""

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Draft:
    """The hidden record of one simulated answer."""

    draft_id: str
    quality: float
    model: str
    domain: str
    refinements: int
    """How many refinements led to this draft (0 for a first answer)."""
    parent: str | None = None
    """The draft this one refines (REFINE) or was aggregated from (AGGREGATE)."""
    latent: float | None = None
    """Keyed items only: the draw u in [0, 1) that, against the quality, decides correctness. A first answer
    draws it; a refinement or an aggregate inherits its parent's."""
    correct: bool | None = None
    """Keyed items only: ``latent < quality``. None when the prompt matches no item of the answer key."""
    aspects: int = 0
    """The domain's aspects the body shows, a bitmask over :func:`sim_text.aspects_of` (bit i = aspect i)."""


@dataclass(frozen=True)
class _Plan:
    """Everything one call will do, decided up front from its seeded generator."""

    text: str
    finish: FinishReason
    prompt_tokens: int
    ttft: float
    seconds_per_token: float
    failure: FailureKind | None
    failure_delay: float
    fail_fraction: float
    retry_after: float
    draft: Draft | None
    generation_id: str


class Simulator:
    """A :class:`~services.providers.backend.Backend` serving simulated models."""

    def __init__(
        self,
        catalogue: Catalogue,
        profile: SimProfile,
        speed: float = 1.0,
        max_remembered: int = MAX_REMEMBERED,
        answer_key: AnswerKey | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._catalogue = catalogue
        self._profile = profile
        self._answer_key = answer_key if answer_key is not None and len(answer_key) else None
        self._speed = speed
        self._max = max_remembered
        self._drafts: OrderedDict[str, Draft] = OrderedDict()
        # Attempts so far per (model, purpose, messages), keyed by the first attempt's seed: one int rather than a
        # tuple of strings (a 64-character digest among them), which halves an entry.
        self._attempts: OrderedDict[int, int] = OrderedDict()
        # Each critic model writes in its own voice (its position in the profile), so two critics' texts differ.
        self._voices = {model_id: i for i, model_id in enumerate(profile.models)}
        # Suffixes the profile appends to answers, taken off a quoted answer before it is refined.
        self._suffixes = tuple(sorted({m.answer_suffix for m in profile.models.values() if m.answer_suffix}))

    @classmethod
    def from_settings(cls, settings: Settings, catalogue: Catalogue) -> Simulator:
        """A simulator with ``settings.providers.sim_profile`` (or the packaged profile), its ``sim_speed`` and,
        when set, the answer key ``sim_answer_key``. A bad key raises :class:`ConfigError` naming
        ``ORX_SIM_ANSWER_KEY``, the file and the line."""
        own = settings.providers
        profile = load_profile(own.sim_profile, catalogue)
        key = None
        if own.sim_answer_key is not None:
            try:
                key = load_answer_key(own.sim_answer_key)
            except ConfigError as exc:
                raise ConfigError(f"ORX_SIM_ANSWER_KEY: {exc}") from None
            log.info(
                "simulator: answer key %s (%d items); answers to them are simulated as right or wrong",
                own.sim_answer_key,
                len(key),
            )
        return cls(catalogue, profile, speed=own.sim_speed, answer_key=key)

    @property
    def name(self) -> str:
        """Always ``simulated``."""
        return SIMULATED_PROVIDER

    @property
    def simulated(self) -> bool:
        """Always True."""
        return True

    @property
    def profile(self) -> SimProfile:
        """The loaded profile."""
        return self._profile

    @property
    def answer_key(self) -> AnswerKey | None:
        """The answer key of checkable items, or None (then no answer is right or wrong)."""
        return self._answer_key

    def quality_of(self, draft_id: str) -> float | None:
        """Hidden quality (0-1) of a draft this simulator still remembers, or None if unknown (reading it
        does not count as a use: it never keeps a draft from being forgotten)."""
        draft = self._drafts.get(draft_id)
        return None if draft is None else draft.quality

    def draft(self, draft_id: str) -> Draft | None:
        """The hidden record of a draft, or None if unknown (like :meth:`quality_of`, not a use)."""
        return self._drafts.get(draft_id)

    def expected_score(self, draft_id: str, domain: str = "") -> float | None:
        """The 0-10 score a noiseless, unbiased critic gives a remembered draft (its quality on the critics'
        scale, its missing aspects counted), or None if unknown. Like :meth:`quality_of`, not a use."""
        draft = self._drafts.get(draft_id)
        if draft is None:
            return None
        return self._scale(draft.quality, draft.aspects, domain or draft.domain or "factual")

    def timing(self, model: ModelSpec) -> Timing:
        """Typical latency as callers see it (profile values scaled by ``sim_speed``)."""
        prof = self._profile.models[model.id]
        return Timing(prof.ttft_ms / 1000 / self._speed, prof.tokens_per_second * self._speed)

    async def aclose(self) -> None:
        """Nothing to release."""

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Simulated latency, then the planned text in chunks of a few tokens, then :class:`StreamEnd`."""
        plan = self._plan(request)
        model = request.model.id
        if plan.failure in (FailureKind.RATE_LIMITED, FailureKind.UPSTREAM_ERROR, FailureKind.TIMEOUT):
            await asyncio.sleep(plan.failure_delay)
            raise _early_failure(plan, model)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(plan.ttft)
        chunks = _chunks(plan.text)
        limit = len(chunks)
        if plan.failure is FailureKind.MID_STREAM_ERROR:
            limit = max(1, min(limit, int(limit * plan.fail_fraction)))
        sent = 0
        first = loop.time()
        for index, chunk in enumerate(chunks[:limit]):
            if index:
                # A chunk is due once every token up to its end is generated, counted from the first token:
                # a whole answer takes exactly ttft + tokens / tokens_per_second (the profile's nominal time,
                # which the benchmarks compare against), and timer slack never accumulates.
                due = first + estimate_tokens(plan.text[: sent + len(chunk)]) * plan.seconds_per_token
                await asyncio.sleep(max(0.0, due - loop.time()))
            yield TextDelta(chunk)
            sent += len(chunk)
        if plan.failure is FailureKind.MID_STREAM_ERROR:
            usage = TokenUsage(plan.prompt_tokens, estimate_tokens(plan.text[:sent]))
            raise BackendError(FailureKind.MID_STREAM_ERROR, f"{model} stream broke (simulated)", usage=usage)
        if plan.draft is not None:
            _remember(self._drafts, plan.draft.draft_id, plan.draft, self._max)
        usage = TokenUsage(plan.prompt_tokens, estimate_tokens(plan.text))
        yield StreamEnd(plan.finish, served_model=model, usage=usage, generation_id=plan.generation_id)

    # -- planning -------------------------------------------------------------------------------

    def _plan(self, request: GenerationRequest) -> _Plan:
        model = request.model
        prof = self._profile.models[model.id]
        digest = _digest(request.messages)
        key = _seed(self._profile.seed, model.id, request.purpose, digest, 0)
        attempt = self._attempts.get(key, 0)
        _remember(self._attempts, key, attempt + 1, self._max)
        rng = random.Random(_seed(self._profile.seed, model.id, request.purpose, digest, attempt))

        # The draw order below is part of the determinism contract: change it and every run changes.
        ttft_jitter, speed_jitter = rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.15)
        if not self._profile.latency_jitter:
            ttft_jitter = speed_jitter = 1.0
        ttft = prof.ttft_ms / 1000 * ttft_jitter / self._speed
        tokens_per_second = prof.tokens_per_second * speed_jitter * self._speed
        failure = _draw_failure(rng.random(), prof.failures)
        fail_fraction = rng.uniform(0.2, 0.8)
        generation_id = f"sim-{rng.getrandbits(64):016x}"

        draft: Draft | None = None
        if request.purpose is Purpose.CRITIQUE:
            text = self._critique(rng, request, prof, digest)
        elif request.purpose is Purpose.CLASSIFY:
            text = self._classify(rng, request, prof)
        else:
            item = self._keyed_item(request.messages)
            draft, body = self._next_draft(rng, request, prof, digest, item)
            if item is not None:
                body = sim_answers.answer_body(rng, item, bool(draft.correct), _prompt_text(request.messages))
            text = DRAFT_LABEL.format(draft_id=draft.draft_id) + "\n\n" + body
            if prof.answer_suffix:
                text += "\n\n" + prof.answer_suffix

        finish = FinishReason.STOP
        text = _cut_at_stop(text, request.stop)
        if estimate_tokens(text) > request.max_tokens:
            text, finish = text[: request.max_tokens * 4], FinishReason.LENGTH

        # A vendor refuses a rate-limited call quickly, fails a broken one after about a first-token
        # wait, and a timeout takes as long as the caller's patience.
        failure_delay = 0.0
        if failure is FailureKind.RATE_LIMITED:
            failure_delay = ttft / 4
        elif failure is FailureKind.UPSTREAM_ERROR:
            failure_delay = ttft
        elif failure is FailureKind.TIMEOUT:
            failure_delay = prof.timeout_after_ms / 1000 / self._speed
        return _Plan(
            text=text,
            finish=finish,
            prompt_tokens=estimate_prompt_tokens([m.content for m in request.messages]),
            ttft=ttft,
            seconds_per_token=1.0 / tokens_per_second,
            failure=failure,
            failure_delay=failure_delay,
            fail_fraction=fail_fraction,
            retry_after=prof.failures.retry_after_seconds / self._speed,
            draft=draft,
            generation_id=generation_id,
        )

    def _next_draft(
        self,
        rng: random.Random,
        request: GenerationRequest,
        prof: ModelProfile,
        digest: str,
        item: KeyedItem | None,
    ) -> tuple[Draft, str]:
        """A first answer (ANSWER/OTHER), a refinement (REFINE) or an aggregate (AGGREGATE): its hidden record
        and its body; for a keyed ``item`` also its latent draw and correctness (drawn after everything else)."""
        draft_id = self._new_id(rng)
        task = _task_text(request.messages)
        ctx = sim_text.context(task)
        if request.purpose is Purpose.AGGREGATE:
            candidates = self._candidates(request.messages)
            if candidates:
                return self._aggregate(rng, request, prof, draft_id, candidates, item, ctx, task)
        if request.purpose is not Purpose.REFINE:
            skill = prof.skill(request.domain)
            quality = _clamp(rng.gauss(skill, self._profile.quality_noise_sd), 0.0, 1.0)
            shape = request.domain or sim_text.guess_domain(task)
            aspects = self._first_aspects(rng, shape, quality)
            first = Draft(draft_id, quality, request.model.id, request.domain, refinements=0, aspects=aspects)
            body = sim_text.answer_body(rng, ctx, shape, aspects, hedge=quality < HEDGE_BELOW)
            return _keyed(rng, first, item, None), body
        parent_id = _last_draft_id(request.messages)
        parent = self._recall(parent_id) if parent_id else None
        previous, reviews = _quoted_answer(request.messages, self._suffixes)
        if parent is None:
            before, done, domain = _hash_quality(parent_id or digest), 0, request.domain
        else:
            before, done, domain = parent.quality, parent.refinements, request.domain or parent.domain
        shape = domain or sim_text.guess_domain(task)
        had = parent.aspects if parent is not None else sim_text.covered_in(previous, shape)
        asked = sim_text.asked_aspects(reviews, shape, skip=had, limit=REFINE_MAX_ADDED)
        quality, regressed = self._refined(rng, before, done, prof.skill(domain), asked.bit_count())
        if previous:
            body, aspects = sim_text.refine_body(rng, ctx, shape, previous, had, asked, regress=regressed)
        else:  # nothing quoted to start from: write the improved answer afresh
            aspects = had | asked
            body = sim_text.answer_body(rng, ctx, shape, aspects)
        draft = Draft(
            draft_id, quality, request.model.id, domain, refinements=done + 1, parent=parent_id, aspects=aspects
        )
        return _keyed(rng, draft, item, parent.latent if parent is not None else None), body

    def _first_aspects(self, rng: random.Random, domain: str, quality: float) -> int:
        """The aspects a first draft of ``quality`` covers: more for a better draft, never all of them."""
        count = len(sim_text.aspects_of(domain))
        wanted = min(count - 2, max(1, round(count * quality * quality * FIRST_COVERAGE)))
        return sum(1 << i for i in rng.sample(range(count), wanted))

    def _refined(
        self, rng: random.Random, before: float, done: int, skill: float, addressed: int = 2
    ) -> tuple[float, bool]:
        """One refinement step from quality ``before`` after ``done`` earlier ones, having added ``addressed``
        aspects the reviews asked for: usually a gain (full with two or more, a third with none), sometimes a
        drop. Returns the new quality and whether it dropped."""
        regress, drop = rng.random(), rng.uniform(0.02, 0.15)
        if regress < self._profile.regress_rate * (1 - skill):
            return max(0.0, before - drop), True
        gain = self._profile.refine_gain * skill * REFINE_DECAY**done * (1 + min(addressed, 2)) / 3
        return before + (1 - before) * gain, False

    def _candidates(self, messages: Sequence[Message]) -> list[Draft]:
        """The known drafts quoted in the last user message, distinct, in order of appearance."""
        last = next((m for m in reversed(messages) if m.role is Role.USER), None)
        if last is None:
            return []
        found = dict.fromkeys(DRAFT_ID_RE.findall(last.content))
        return [draft for draft in (self._recall(i) for i in found) if draft is not None]

    def _aggregate(
        self,
        rng: random.Random,
        request: GenerationRequest,
        prof: ModelProfile,
        draft_id: str,
        candidates: Sequence[Draft],
        item: KeyedItem | None,
        ctx: sim_text.Context,
        task: str,
    ) -> tuple[Draft, str]:
        """The aggregator keeps the best candidate with probability = its skill (else a random one), then
        improves it by one refinement step; its body has every aspect any candidate covered."""
        best = max(candidates, key=lambda d: d.quality)
        domain = request.domain or best.domain
        skill = prof.skill(domain)
        chosen = best if rng.random() < skill else candidates[rng.randrange(len(candidates))]
        quality, _ = self._refined(rng, chosen.quality, chosen.refinements, skill)
        aspects = 0
        for candidate in candidates:
            aspects |= candidate.aspects
        draft = Draft(
            draft_id,
            quality,
            request.model.id,
            domain,
            refinements=chosen.refinements + 1,
            parent=chosen.draft_id,
            aspects=aspects,
        )
        body = sim_text.answer_body(rng, ctx, domain or sim_text.guess_domain(task), aspects)
        return _keyed(rng, draft, item, chosen.latent), body

    def _keyed_item(self, messages: Sequence[Message]) -> KeyedItem | None:
        """The answer-key item the call's user messages are about (first matching line wins), or None."""
        if self._answer_key is None:
            return None
        return self._answer_key.lookup("\n".join(m.content for m in messages if m.role is Role.USER))

    def _critique(self, rng: random.Random, request: GenerationRequest, prof: ModelProfile, digest: str) -> str:
        last = request.messages[-1].content if request.messages else ""
        unfenced = _FENCED_RE.sub("", last)  # the instruction, not quoted text, asks for a verdict
        if "[[A]]" in unfenced and "[[B]]" in unfenced:
            pair = [self._recall(d) for d in DRAFT_ID_RE.findall(last)[-2:]]
            if len(pair) == 2 and pair[0] is not None and pair[1] is not None:
                return self._compare(rng, request, prof, pair[0], pair[1])
        reviewed_id = _last_draft_id(request.messages)
        reviewed = self._recall(reviewed_id) if reviewed_id else None
        task = _task_text(request.messages)
        if reviewed is None:
            quality, author_family, domain = _hash_quality(reviewed_id or digest), None, request.domain
        else:
            author = self._catalogue.get(reviewed.model)
            author_family = author.family if author else None
            quality, domain = reviewed.quality, request.domain or reviewed.domain
        skill = prof.skill(domain)
        noise = rng.gauss(0.0, CRITIC_NOISE_BASE + CRITIC_NOISE_PER_MISSING_SKILL * (1 - skill))
        bias = SELF_BIAS if author_family == request.model.family else 0.0
        shape = domain or sim_text.guess_domain(task)
        if reviewed is not None:
            covered = reviewed.aspects
        else:
            covered = sim_text.covered_in(_quoted_answer(request.messages, self._suffixes)[0], shape)
        raw = self._scale(quality, covered, shape) + noise + bias
        if reviewed is not None and reviewed.correct is False:
            raw -= self._profile.critic_error_penalty * skill  # a skilled critic spots a wrong answer
        score = round(_clamp(raw, 0.0, 10.0), 1)
        if _integer_score(request):
            score = float(round(score))
        voice = self._voices.get(request.model.id, 0)
        review = sim_text.critique(rng, sim_text.context(task), shape, score, covered, voice)
        if _integer_score(request):
            review["score"] = round(score)
        if rng.random() < prof.failures.invalid_json:
            return sim_text.unusable_critique(rng, review)
        return json.dumps(review, ensure_ascii=False, indent=2)

    def _perceived(self, rng: random.Random, request: GenerationRequest, prof: ModelProfile, draft: Draft) -> float:
        """A draft's quality (0-10) as this critic sees it: noise, self bias and error penalty as for a score."""
        author = self._catalogue.get(draft.model)
        skill = prof.skill(request.domain or draft.domain)
        noise = rng.gauss(0.0, CRITIC_NOISE_BASE + CRITIC_NOISE_PER_MISSING_SKILL * (1 - skill))
        bias = SELF_BIAS if author is not None and author.family == request.model.family else 0.0
        penalty = self._profile.critic_error_penalty * skill if draft.correct is False else 0.0
        shape = request.domain or draft.domain or "factual"
        return self._scale(draft.quality, draft.aspects, shape) + noise + bias - penalty

    def _scale(self, quality: float, covered: int, domain: str) -> float:
        """A draft on a critic's 0-10 scale before noise and biases: ``10 × (SCORE_FLOOR + (1 - SCORE_FLOOR) ×
        quality)``, times ``1 - coverage_weight`` for a draft showing none of its domain's aspects up to 1 for one
        showing all of them."""
        share = covered.bit_count() / len(sim_text.aspects_of(domain))
        return 10 * (SCORE_FLOOR + (1 - SCORE_FLOOR) * quality) * (1 - self._profile.coverage_weight * (1 - share))

    def _compare(self, rng: random.Random, request: GenerationRequest, prof: ModelProfile, a: Draft, b: Draft) -> str:
        """A pairwise verdict between drafts ``a`` and ``b`` (``[[C]]`` within half a point)."""
        gap = self._perceived(rng, request, prof, a) - self._perceived(rng, request, prof, b)
        verdict = "A" if gap > 0.5 else "B" if gap < -0.5 else "C"
        better = {"A": "Assistant A's answer is better", "B": "Assistant B's answer is better", "C": "It is a tie"}
        return f"Comparing the two answers on accuracy and helpfulness: {better[verdict]}. [[{verdict}]]"

    def _classify(self, rng: random.Random, request: GenerationRequest, prof: ModelProfile) -> str:
        guess = sim_text.guess_domain(_prompt_text(request.messages))
        # Weaker classifiers are wrong more often: up to half the time for zero skill.
        if rng.random() < (1 - prof.skill("classification")) * 0.5:
            guess = rng.choice([d for d in DOMAINS if d != guess])
        return guess

    def _recall(self, draft_id: str) -> Draft | None:
        """A remembered draft, marked as just used (the least recently used are forgotten first)."""
        draft = self._drafts.get(draft_id)
        if draft is not None:
            self._drafts.move_to_end(draft_id)
        return draft

    def _new_id(self, rng: random.Random) -> str:
        while True:
            draft_id = f"{rng.getrandbits(32):08x}"
            if draft_id not in self._drafts:
                return draft_id


def _keyed(rng: random.Random, draft: Draft, item: KeyedItem | None, latent: float | None) -> Draft:
    """``draft`` with its latent draw (``latent``, else a new one) and correctness when ``item`` is keyed."""
    if item is None:
        return draft
    u = latent if latent is not None else rng.random()
    return replace(draft, latent=u, correct=u < draft.quality)


def _early_failure(plan: _Plan, model: str) -> BackendError:
    if plan.failure is FailureKind.RATE_LIMITED:
        return BackendError(
            FailureKind.RATE_LIMITED, f"{model} is rate limited (simulated)", retry_after=plan.retry_after
        )
    if plan.failure is FailureKind.TIMEOUT:
        return BackendError(FailureKind.TIMEOUT, f"{model} did not answer in time (simulated)")
    return BackendError(FailureKind.UPSTREAM_ERROR, f"{model} upstream error (simulated)")


def _draw_failure(u: float, rates: FailureRates) -> FailureKind | None:
    edge = 0.0
    for kind, rate in (
        (FailureKind.RATE_LIMITED, rates.rate_limit),
        (FailureKind.UPSTREAM_ERROR, rates.upstream_error),
        (FailureKind.TIMEOUT, rates.timeout),
        (FailureKind.MID_STREAM_ERROR, rates.mid_stream_error),
    ):
        edge += rate
        if u < edge:
            return kind
    return None


# The orchestrator and `orchestratex eval` fence untrusted text with a key that is random for every call
# (fences such as ``<<<BEGIN CANDIDATE_2 <key>>>>``; a system prompt may name the key too). Every occurrence,
# in any of the call's messages, is left out of the digest so that a run still replays identically.
_FENCE_KEY_RE = re.compile(r"<<<BEGIN [A-Z][A-Z0-9_]* ([0-9a-f]{8,64})>>>")


_FENCED_RE = re.compile(r"<<<BEGIN ([A-Z0-9_]+) ([0-9a-f]{8,64})>>>.*?<<<END \1 \2>>>", re.DOTALL)


def _digest(messages: Sequence[Message]) -> str:
    found = {key for m in messages for key in _FENCE_KEY_RE.findall(m.content)}
    keys = sorted(found, key=lambda k: (-len(k), k))  # longest first, so one key never leaves part of another
    h = hashlib.sha256()
    for m in messages:
        content = m.content
        for key in keys:
            if key in content:
                content = content.replace(key, "")
        h.update(m.role.value.encode())
        h.update(b"\x00")
        h.update(content.encode())
        h.update(b"\x01")
    return h.hexdigest()


def _seed(seed: int, model: str, purpose: Purpose, digest: str, attempt: int) -> int:
    material = f"{seed}\x00{model}\x00{purpose.value}\x00{digest}\x00{attempt}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def _hash_quality(material: str) -> float:
    """A stable pseudo-quality in [0.3, 0.8] for drafts this simulator did not write."""
    value = int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big") / 2**64
    return 0.3 + 0.5 * value


def _last_draft_id(messages: Sequence[Message]) -> str | None:
    found = DRAFT_ID_RE.findall("\n".join(m.content for m in messages))
    return found[-1] if found else None


_TASK_FENCE_RE = re.compile(r"<<<BEGIN TASK ([0-9a-f]{8,64})>>>\n(.*?)\n<<<END TASK \1>>>", re.DOTALL)
_REFINE_TASK_RE = re.compile(r"\A## Task\n\n(.*?)\n\n## ", re.DOTALL)


def _task_text(messages: Sequence[Message]) -> str:
    """The user's request as the orchestrator's calls carry it: the fenced TASK of a critique, the "## Task"
    section of a refinement, else the last user message up to the first simulated answer it quotes."""
    last = next((m.content for m in reversed(messages) if m.role is Role.USER), "")
    for pattern, group in ((_TASK_FENCE_RE, 2), (_REFINE_TASK_RE, 1)):
        found = pattern.search(last)
        if found:
            return found.group(group)
    head = last.split(DRAFT_LABEL.split("{", 1)[0], 1)[0]
    return head if head.strip() else _prompt_text(messages)


def _quoted_answer(messages: Sequence[Message], suffixes: Sequence[str]) -> tuple[str, str]:
    """The body of the last simulated answer quoted in the last user message (its label, the fence's end and a
    profile suffix left out; empty when none is quoted), and what that message says after it (the reviews)."""
    last = next((m.content for m in reversed(messages) if m.role is Role.USER), "")
    start = last.rfind(DRAFT_LABEL.split("{", 1)[0])
    if start < 0:
        return "", last
    label_end = last.find("\n", start)
    if label_end < 0:
        return "", last
    end = last.find("\n<<<END ", label_end)  # the orchestrator fences the answer it quotes
    if end < 0:
        end = last.find("\n## ", label_end)  # else the next heading of the request, if any
    end = len(last) if end < 0 else end
    body = last[label_end:end].strip()
    for suffix in suffixes:
        if body.endswith(suffix):
            body = body[: -len(suffix)].rstrip()
    return body, last[end:]


def _integer_score(request: GenerationRequest) -> bool:
    """Whether the request's JSON Schema wants a whole-number score (the orchestrator's critique schema)."""
    schema = request.response_format.schema
    if request.response_format.type is not OutputFormat.JSON_SCHEMA or not isinstance(schema, Mapping):
        return False
    props = schema.get("properties")
    score = props.get("score") if isinstance(props, Mapping) else None
    return isinstance(score, Mapping) and score.get("type") == "integer"


def _prompt_text(messages: Sequence[Message]) -> str:
    """The user's words: user messages up to the first simulated answer they quote."""
    text = "\n".join(m.content for m in messages if m.role is Role.USER)
    head = text.split(DRAFT_LABEL.split("{", 1)[0], 1)[0]
    return head if head.strip() else text


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest of ``stops`` (excluded), as a vendor stops at a stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _chunks(text: str) -> list[str]:
    """Split into pieces of about three tokens (12 characters) on word boundaries; joins back to ``text``."""
    chunks: list[str] = []
    current = ""
    for piece in re.findall(r"\S+\s*|\s+", text):
        current += piece
        if len(current) >= 12:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return chunks


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _remember(store: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)
