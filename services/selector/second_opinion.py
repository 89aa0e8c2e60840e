"""An optional second opinion on a prompt's domain from a cheap model, for low-confidence prompts.

Off by default (``ORX_SELECTOR_SECOND_OPINION=on`` turns it on). When the classifier's primary domain
has a probability below ``ORX_SELECTOR_SECOND_OPINION_BELOW`` (default 0.5), the selector asks one
model through the providers service which of the nine domains the prompt belongs to:

* **Model**: ``ORX_SELECTOR_SECOND_OPINION_MODEL``, or by default the catalogue's cheapest model for
  this short call (input and output prices; open circuits skipped).
* **Question**: a fixed system message listing the domains, and the prompt's first and last
  :data:`PROMPT_CHARS` characters (the instruction sits at one end; the cost stays bounded). Temperature
  0, at most :data:`MAX_TOKENS` tokens out. The reply's shape is enforced as far as the model allows:
  a JSON Schema (:data:`DOMAIN_SCHEMA`, an ``enum`` of the nine domains) when its ``ModelInfo`` says
  ``supports_structured_outputs`` — a small local model then cannot answer anything else — and JSON
  mode otherwise.
* **Answer**: strictly ``{"domain": "<one of the nine>"}`` (a bare domain name is accepted too).
  Anything else keeps the classifier's answer, with a warning.
* **Combination**: the answer is a vote that is right with probability :data:`ACCURACY`. By Bayes'
  rule each domain's probability is multiplied by ``ACCURACY`` if it is the answer and by
  ``(1 - ACCURACY) / 8`` otherwise, then renormalised::

      p'(d) ∝ p(d) · (ACCURACY if d == answer else (1 - ACCURACY) / 8)

  With ``ACCURACY = 0.6`` the answer's odds against any other domain grow 12-fold: the answer becomes
  the primary domain unless the classifier gave the primary more than 12 times the answer's probability.
  A close call (0.35 vs 0.30) is settled by the answer; a clear one (0.45 vs 0.03) stands.
* **Deadline**: :data:`DEFAULT_TIMEOUT` seconds (or ``rpc_timeout`` if shorter). On a timeout or any
  failure the classifier's answer stands and the response carries a warning; the request never fails
  because of the second opinion.

Its cost (tokens and USD, as the providers service reports them) and latency are reported in
``PromptAnalysis.second_opinion``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from orchestratex.domains import DOMAINS
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.selector.analysis import PromptAnalysis, default_output_tokens, too_small
from services.selector.ranking import Circuit, ModelEntry

log = logging.getLogger(__name__)

#: Probability that the second opinion names the right domain (see the module docstring).
ACCURACY = 0.6
#: Seconds the selector waits for the answer at most.
DEFAULT_TIMEOUT = 2.0
#: Characters of the prompt sent, from each end.
PROMPT_CHARS = 1_000
#: Output ceiling: ``{"domain": "classification"}`` is about ten tokens.
MAX_TOKENS = 20
#: Token estimate of the fixed system message (for picking the cheapest model).
_SYSTEM_TOKENS = 150

#: Name of :data:`DOMAIN_SCHEMA` in ``response_format``.
SCHEMA_NAME = "prompt_domain"
#: What a model that supports structured outputs must answer.
DOMAIN_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"domain": {"type": "string", "enum": list(DOMAINS)}},
    "required": ["domain"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    "You label prompts sent to an AI assistant with the one domain that best describes the task.\n"
    "Domains: " + ", ".join(DOMAINS) + ".\n"
    "coding = write, fix or explain code; math = calculations, equations, proofs; reasoning = logic puzzles,"
    " commonsense inference; creative = stories, poems, role-play; factual = knowledge questions;"
    " summarization = shorten a given text; extraction = pull items out of a given text; classification ="
    " label or rate a given text; brainstorming = ideas, plans, advice.\n"
    'Answer with JSON only, exactly {"domain": "<domain>"}. The prompt follows; do not answer it.'
)


@dataclass(frozen=True)
class Opinion:
    """The outcome of asking for a second opinion (mirrors ``orchestratex.v1.SecondOpinion``)."""

    model: str
    domain: str
    """The model's answer; ``""`` when there is no usable answer."""
    applied: bool
    classifier_domain: str
    classifier_confidence: float
    latency_s: float
    usage: common_pb2.Usage | None = None
    warning: str = ""


def should_ask(analysis: PromptAnalysis, below: float) -> bool:
    """True when the classifier's confidence is under ``below``."""
    return analysis.confidence < below


def pick_model(models: Sequence[ModelEntry], configured: str, prompt_tokens: int) -> str:
    """``configured`` when set; else the cheapest usable model for this call ("" when there is none)."""
    if configured:
        return configured
    usable = [m for m in models if m.circuit is not Circuit.OPEN]
    if not usable:
        return ""
    tokens_in = min(prompt_tokens, 2 * PROMPT_CHARS // 4) + _SYSTEM_TOKENS

    def cost(m: ModelEntry) -> tuple[float, str]:
        return ((tokens_in * m.input_price_per_mtok + MAX_TOKENS * m.output_price_per_mtok), m.id)

    return min(usable, key=cost).id


def build_request(prompt: str, model: str, *, structured: bool = False) -> providers_pb2.GenerateRequest:
    """The ``Generate`` call: system message, the prompt's two ends, temperature 0; :data:`DOMAIN_SCHEMA`
    when the model supports structured outputs (``structured``), JSON mode otherwise."""
    excerpt = prompt if len(prompt) <= 2 * PROMPT_CHARS else f"{prompt[:PROMPT_CHARS]}\n[...]\n{prompt[-PROMPT_CHARS:]}"
    if structured:
        response_format = providers_pb2.ResponseFormat(
            type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            schema_name=SCHEMA_NAME,
            json_schema=json.dumps(DOMAIN_SCHEMA),
            strict=True,
        )
    else:
        response_format = providers_pb2.ResponseFormat(type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    return providers_pb2.GenerateRequest(
        model=model,
        messages=[
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=SYSTEM_PROMPT),
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=excerpt),
        ],
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        response_format=response_format,
        context=providers_pb2.CallContext(purpose=common_pb2.CALL_PURPOSE_CLASSIFY),
    )


def parse_domain(text: str) -> str:
    """The domain named by a reply, strictly: ``{"domain": "math"}`` or ``math``; ``""`` otherwise."""
    text = text.strip()
    if text.startswith("```"):  # some models fence JSON even in JSON mode
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if isinstance(value, dict):
        if set(value) != {"domain"}:
            return ""
        value = value["domain"]
    if not isinstance(value, str):
        return ""
    name = value.strip().lower()
    return name if name in DOMAINS else ""


def combine(probabilities: Mapping[str, float], answer: str, accuracy: float = ACCURACY) -> dict[str, float]:
    """Bayes' rule with the answer as a vote right with probability ``accuracy`` (see the module docstring)."""
    other = (1 - accuracy) / (len(DOMAINS) - 1)
    weighted = {d: p * (accuracy if d == answer else other) for d, p in probabilities.items()}
    total = sum(weighted.values())
    if not math.isfinite(total) or total <= 0:
        return dict(probabilities)
    return {d: v / total for d, v in weighted.items()}


def revise(
    analysis: PromptAnalysis,
    probabilities: Mapping[str, float],
    note: str,
    *,
    context_windows: Mapping[str, int] | None,
    expected_output_tokens: int,
) -> PromptAnalysis:
    """``analysis`` with new ``probabilities``: primary domain, confidence and window checks follow.

    ``expected_output_tokens`` is the caller's value (0: the new primary domain's default).
    """
    primary = max(DOMAINS, key=lambda d: probabilities.get(d, 0.0))
    output = expected_output_tokens if expected_output_tokens > 0 else default_output_tokens(primary)
    required = analysis.estimated_prompt_tokens + analysis.context_tokens + output
    small = tuple(sorted(m for m, window in (context_windows or {}).items() if too_small(window, required)))
    reasons = dict(analysis.reasons)
    reasons[primary] = f"{reasons[primary]}; {note}" if reasons.get(primary) else note
    return dataclasses.replace(
        analysis,
        probabilities={d: probabilities.get(d, 0.0) for d in DOMAINS},
        primary_domain=primary,
        confidence=probabilities.get(primary, 0.0),
        needs_long_context=bool(small),
        models_too_small=small,
        expected_output_tokens=output,
        reasons=reasons,
    )


class SecondOpinionClient:
    """Asks the providers service; never raises for an RPC failure (returns an :class:`Opinion` with a warning)."""

    def __init__(
        self,
        stub: providers_pb2_grpc.ProviderServiceStub,
        *,
        model: str = "",
        below: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._stub = stub
        self._model = model
        self.below = below
        self._timeout = timeout

    async def ask(self, prompt: str, analysis: PromptAnalysis, models: Sequence[ModelEntry]) -> Opinion:
        """One call with a deadline; the answer, or why there is none."""
        model = pick_model(models, self._model, analysis.estimated_prompt_tokens)

        def outcome(domain: str, latency_s: float, usage: common_pb2.Usage | None = None, warning: str = "") -> Opinion:
            return Opinion(
                model=model,
                domain=domain,
                applied=bool(domain),
                classifier_domain=analysis.primary_domain,
                classifier_confidence=analysis.confidence,
                latency_s=latency_s,
                usage=usage,
                warning=warning,
            )

        if not model:
            return outcome("", 0.0, warning=_warning("no model available"))
        structured = any(m.id == model and m.supports_structured_outputs for m in models)
        started = time.perf_counter()
        try:
            response = await self._stub.Generate(
                build_request(prompt, model, structured=structured), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as err:
            log.warning("second opinion from %s failed: %s", model, err.code().name)
            reason = "no answer in time" if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED else err.code().name
            return outcome("", time.perf_counter() - started, warning=_warning(f"{model}: {reason}"))
        elapsed = time.perf_counter() - started
        domain = parse_domain(response.text)
        if not domain:
            log.warning("second opinion from %s was not a domain name; keeping the classifier's answer", model)
            return outcome("", elapsed, response.usage, _warning(f"{model} did not answer with one domain name"))
        return outcome(domain, elapsed, response.usage)


def _warning(reason: str) -> str:
    return f"second opinion unavailable ({reason}): using the classifier's domain"
