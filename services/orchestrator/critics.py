"""Critique rounds: which models critique a draft, asking them in parallel, and recording each verdict.

:func:`choose_critics` picks a round's panel: never the author, nor a model that has failed as an author in
this session, and models of other families first when the selector's critics run short.
:class:`CriticPanel` asks each critic for a structured critique of a :class:`Draft`. A critic whose call
fails or whose reply cannot be parsed is accounted and reported in a warning, never a crash; the round
goes on with the critiques that came back. Each call is counted
(``orx_orchestrator_critic_calls_total``, ``..._critic_failures_total{kind}``) and has its
``orchestrator.critic`` span (:mod:`~services.orchestrator.tracing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import metrics, tracing
from services.orchestrator.calls import Caller, CallFailed
from services.orchestrator.catalogue import Pricing
from services.orchestrator.critique import Critique, UnusableCritique, parse_critique
from services.orchestrator.events import Emitter
from services.orchestrator.ledger import Ledger
from services.orchestrator.prompts import PromptSet
from services.orchestrator.selection import Selection


@dataclass
class Draft:
    """One version of the answer and what the critics said of it."""

    round: int
    model: str
    text: str
    score: float | None = None
    critiques: list[Critique] = field(default_factory=list)


def choose_critics(
    selection: Selection, author: str, failed_authors: Set[str], count: int, pricing: Pricing
) -> list[str]:
    """A round's critics: never the author, nor a model that has failed as an author in this session
    (it just showed it cannot answer now; it would most likely fail as a critic too)."""
    unfit = {author, *failed_authors}
    chosen = [m for m in selection.critics if m not in unfit][:count]
    if len(chosen) < count:
        author_family = pricing.family(author)
        spares = [c.model for c in selection.candidates if c.model not in unfit and c.model not in chosen]
        spares.sort(key=lambda m: pricing.family(m) == author_family)
        chosen.extend(spares[: count - len(chosen)])
    return chosen


class CriticPanel:
    """Asks critics to score drafts of one session's answer."""

    def __init__(
        self,
        *,
        caller: Caller,
        ledger: Ledger,
        events: Emitter,
        prompts: PromptSet,
        prompt: str,
        context: Sequence[common_pb2.ChatMessage] = (),
    ) -> None:
        self.caller = caller
        self.ledger = ledger
        self.events = events
        self.prompts = prompts
        #: The user's prompt: the task every draft answers.
        self.prompt = prompt
        #: The conversation before the prompt, shown to critics as data.
        self.context = list(context)

    async def score(self, draft: Draft, critics: Sequence[str], *, shadow: bool = False) -> list[Critique]:
        """Every critic's critique of ``draft``, asked in parallel; the ones that failed are left out."""
        if not critics:
            return []
        results = await asyncio.gather(*(self._critique(critic, draft, shadow=shadow) for critic in critics))
        return [c for c in results if c is not None]

    async def _critique(self, critic: str, draft: Draft, *, shadow: bool) -> Critique | None:
        metrics.CRITIC_CALLS.inc()
        with tracing.span(tracing.CRITIC, tracing.call_attributes(critic, draft.round, shadow=shadow)) as span:
            try:
                return await self._ask(critic, draft, span, shadow=shadow)
            except asyncio.CancelledError:
                # The call recorded its estimated usage (a CALL_CANCELLED warning) before re-raising.
                metrics.CRITIC_FAILURES.labels(metrics.failure_kind_label(common_pb2.FAILURE_KIND_CANCELLED)).inc()
                raise

    async def _ask(self, critic: str, draft: Draft, span: Span, *, shadow: bool) -> Critique | None:
        system, user = self.prompts.critique(self.prompt, draft.text, self.context)
        messages = [
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=system),
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=user),
        ]
        try:
            result = await self.caller.unary(
                critic, messages, common_pb2.CALL_PURPOSE_CRITIQUE, draft.round, shadow=shadow
            )
        except CallFailed as failure:
            tracing.call_failed(span, failure.kind, failure.usage)
            self._failed(critic, draft.round, failure.kind, failure.message, failure.usage, failure.latency, shadow)
            return None
        try:
            quoted = (self.prompt, draft.text, *(m.content for m in self.context))
            critique = parse_critique(result.text, quoted=quoted)
        except UnusableCritique as exc:
            tracing.call_failed(span, common_pb2.FAILURE_KIND_INVALID_OUTPUT, result.usage)
            self._failed(
                critic,
                draft.round,
                common_pb2.FAILURE_KIND_INVALID_OUTPUT,
                str(exc),
                result.usage,
                result.latency,
                shadow,
            )
            return None
        tracing.call_done(span, result.usage, result.served_model)
        if span.is_recording():
            span.set_attribute("orx.score", critique.score)
        self.ledger.account(critic, result.usage, shadow=shadow)
        self.events.critique_completed(
            draft.round,
            critic,
            draft.model,
            critique,
            usage=result.usage,
            latency=result.latency,
            ttft=result.ttft,
            shadow=shadow,
        )
        return critique

    def _failed(
        self,
        critic: str,
        round_no: int,
        kind: common_pb2.FailureKind,
        message: str,
        usage: common_pb2.Usage,
        latency: float,
        shadow: bool,
    ) -> None:
        metrics.CRITIC_FAILURES.labels(metrics.failure_kind_label(kind)).inc()
        self.ledger.account(critic, usage, shadow=shadow)
        self.events.call_warning(
            pb.WARNING_CODE_SHADOW_FAILED if shadow else pb.WARNING_CODE_CRITIC_FAILED,
            f"{'shadow ' if shadow else ''}critic {critic} failed: {message}",
            round_no=round_no,
            model=critic,
            failure_kind=kind,
            usage=usage,
            latency=latency,
            purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
        )
