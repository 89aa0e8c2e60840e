"""The critique-and-refine loop of one session (:class:`SessionRunner`).

select (done by the caller) -> the author answers (streamed, coalesced deltas) -> critics of other
families score it in parallel -> aggregate -> stop or refine the best version so far -> ...
The session's context (the conversation before its prompt) goes to every author call and, as data, to
every critic; the caller's ``author_options`` go to the author's calls only (fallback authors included),
never to critics or shadow answers.
Every provider call ends up in exactly one event that carries its usage (``response_completed``,
``critique_completed``, ``provider_fallback`` or a ``warning``), so the event log is also the ledger.

This module decides what happens next, runs shadow evaluation beside the loop and builds the ending;
the calls are :mod:`~services.orchestrator.calls`, the critics :mod:`~services.orchestrator.critics`,
the totals :mod:`~services.orchestrator.ledger` and the events :mod:`~services.orchestrator.events`.
Each round runs in an ``orchestrator.round`` span, each author call in an ``orchestrator.answer`` or
``orchestrator.refine`` span and each shadow runner-up in an ``orchestrator.shadow`` span
(:mod:`~services.orchestrator.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration
from opentelemetry.trace import Span

from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import metrics, policy, shadow, tracing
from services.orchestrator.calls import Caller, CallFailed, CallResult
from services.orchestrator.catalogue import Pricing
from services.orchestrator.critics import CriticPanel, Draft, choose_critics
from services.orchestrator.critique import feedback_text
from services.orchestrator.events import Emitter, duration
from services.orchestrator.hub import Hub, LiveSession
from services.orchestrator.ledger import Ledger
from services.orchestrator.prompts import PromptSet
from services.orchestrator.selection import Selection

log = logging.getLogger(__name__)


class SessionError(Exception):
    """The session cannot go on; ``reason`` is shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunConfig:
    """A validated request with defaults applied."""

    request: pb.OrchestrateRequest
    rules: policy.StopRules
    critic_count: int
    #: The conversation before the prompt: the caller's earlier messages, or the thread's earlier turns.
    history: list[common_pb2.ChatMessage]
    trimmed_turns: int = 0
    #: Whether this session is sampled for shadow evaluation (see shadow.py).
    shadow: bool = False


class SessionRunner:
    """Runs one session to its end, emitting events through the hub."""

    def __init__(
        self,
        *,
        live: LiveSession,
        record: pb.Session,
        config: RunConfig,
        selection: Selection,
        providers: providers_pb2_grpc.ProviderServiceStub,
        prompts: PromptSet,
        pricing: Pricing,
        hub: Hub,
        simulated: bool,
    ) -> None:
        self.live = live
        self.record = record
        self.config = config
        self.request = config.request
        self.selection = selection
        self.prompts = prompts
        self.pricing = pricing
        self.simulated = simulated
        self.author = selection.primary
        self.failed_authors: set[str] = set()
        self.drafts: list[Draft] = []
        self.history: list[float] = []
        self.ledger = Ledger()
        self.events = Emitter(hub, live)
        #: The terminal event (its kind set; the hub numbers it when it records the end), once run() returns.
        self.terminal: pb.OrchestrationEvent | None = None
        self._ending: Callable[[], pb.OrchestrationEvent] | None = None
        self.started = time.monotonic()
        self.deadline = self.started + config.rules.time_limit_s
        self.calls = Caller(
            providers=providers,
            prompts=prompts,
            pricing=pricing,
            ledger=self.ledger,
            events=self.events,
            session_id=live.session_id,
            domain=selection.analysis.primary_domain,
            deadline=self.deadline,
        )
        self.panel = CriticPanel(
            caller=self.calls,
            ledger=self.ledger,
            events=self.events,
            prompts=prompts,
            prompt=self.request.prompt,
            context=config.history,
        )
        #: Whether a model may author: with a JSON Schema asked for, only models that follow one.
        self._can_author: Callable[[str], bool] = (
            pricing.structured_outputs
            if self.request.author_options.response_format.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
            else lambda model: True
        )
        ranked = [c.model for c in selection.candidates]
        self._shadow_critics = self._critics()
        self.shadow_models = shadow.runners_up(ranked, self.author, self._shadow_critics) if config.shadow else []
        self._shadow_task: asyncio.Task[None] | None = None
        self._last_author_cost = 0.0
        self._last_author_time = 0.0
        self._round_cost_start = 0.0

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Run the loop to its end and set ``terminal`` (the last event, recorded by the caller).

        The terminal event is built last, after any shadow calls have finished or been cancelled,
        so its totals include every call the session made. Never raises, except for a second
        cancellation during cleanup.
        """
        turns = sum(1 for m in self.config.history if m.role == common_pb2.ROLE_USER)
        self.events.session_started(self.request, simulated=self.simulated, thread_turns=turns)
        if self.config.trimmed_turns:
            self.events.warning(
                pb.WARNING_CODE_CONTEXT_TRIMMED,
                f"{self.config.trimmed_turns} earlier turn(s) of the thread left out to fit the context",
            )
        self._emit_selection()
        try:
            async with asyncio.timeout_at(self._loop_deadline()):
                await self._loop()
                if self._shadow_task is not None:
                    # Shadow answers run beside the session; a session that ends first waits a
                    # little for them (never past its own deadline) so the evaluation is complete,
                    # then cancels what is left. Either way every call is accounted before the end.
                    await asyncio.wait([self._shadow_task], timeout=shadow.GRACE_S)
        except TimeoutError:
            if self.drafts:
                self._complete(pb.STOP_REASON_DEADLINE, "the session's time limit was reached")
            else:
                self._fail("the session's time limit was reached before any answer", pb.SESSION_STATUS_FAILED)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._fail(self.live.cancel_reason, self.live.cancel_status)
        except SessionError as exc:
            self._fail(exc.reason, pb.SESSION_STATUS_FAILED)
        except Exception:
            log.exception("session %s crashed", self.live.session_id)
            self._fail("internal error in the orchestrator", pb.SESSION_STATUS_FAILED)
        await self._stop_shadow()
        if self._ending is not None:
            self.terminal = self._ending()

    async def _stop_shadow(self) -> None:
        """Cancel shadow calls still running (their usage is recorded as they unwind) and wait for them."""
        task = self._shadow_task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task])

    def _loop_deadline(self) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + max(0.0, self.deadline - time.monotonic())

    def _emit_selection(self) -> None:
        sel = self.selection
        for text in sel.warnings:
            self.events.warning(pb.WARNING_CODE_SELECTOR_UNAVAILABLE, text)
        self.events.model_selected(
            primary=sel.primary,
            critics=sel.critics,
            candidates=sel.candidates,
            analysis=sel.analysis,
            from_defaults=sel.from_defaults,
            shadow_models=self.shadow_models,
        )
        self.record.primary_model = sel.primary
        self.record.primary_domain = sel.analysis.primary_domain

    async def _loop(self) -> None:
        if self.shadow_models:
            self._shadow_task = asyncio.create_task(self._shadow_round(), name=f"shadow-{self.live.session_id}")
        round_no = 1
        best: Draft | None = None
        while True:
            with tracing.span(tracing.ROUND, {"orx.round": round_no}) as round_span:
                best = await self._round(round_no, best, round_span)
            if best is None:
                return
            round_no += 1

    async def _round(self, round_no: int, best: Draft | None, span: Span) -> Draft | None:
        """One round: the author answers (``best`` is None) or refines ``best``, the critics score the draft
        and the stop rule decides. Returns the draft to refine next, or None once the ending is decided."""
        if best is None:
            draft = await self._author(round_no, self._answer_messages(), common_pb2.CALL_PURPOSE_ANSWER)
        else:
            try:
                draft = await self._author(round_no, self._refine_messages(best), common_pb2.CALL_PURPOSE_REFINE)
            except SessionError as exc:
                self.events.warning(pb.WARNING_CODE_REFINEMENT_FAILED, exc.reason, round_no=round_no)
                self._complete(pb.STOP_REASON_UNSPECIFIED, f"refinement failed ({exc.reason}); kept the best version")
                _decided(span, pb.ROUND_DECISION_STOP, pb.STOP_REASON_UNSPECIFIED)
                return None
        rules = self.config.rules
        round_started = time.monotonic()
        round_cost_before = self.ledger.own_cost()
        critiques = await self.panel.score(draft, self._critics())
        if not critiques:
            reason = (
                "no critics were requested"
                if self.config.critic_count == 0
                else "every critic failed; returning the best answer so far"
            )
            if self.config.critic_count > 0:
                self.events.warning(pb.WARNING_CODE_ALL_CRITICS_FAILED, reason, round_no=round_no)
            self._complete(pb.STOP_REASON_NO_CRITIQUE, reason)
            _decided(span, pb.ROUND_DECISION_STOP, pb.STOP_REASON_NO_CRITIQUE)
            return None
        draft.critiques = critiques
        draft.score = policy.aggregate([c.score for c in critiques])
        previous = self.history[-1] if self.history else None
        self.history.append(draft.score)
        best = self._best()
        critique_time = time.monotonic() - round_started
        next_cost = self._last_author_cost + (self.ledger.own_cost() - round_cost_before)
        decision = policy.decide(
            rules,
            self.history,
            spent_usd=self.ledger.own_cost(),
            next_cost_usd=next_cost,
            elapsed_s=time.monotonic() - self.started,
            next_time_s=self._last_author_time + critique_time,
        )
        self.events.round_completed(
            round_no,
            decision,
            aggregate_score=draft.score,
            score_change=0.0 if previous is None else draft.score - previous,
            critics_scored=len(critiques),
            best_round=best.round,
            round_cost_usd=round(self.ledger.own_cost() - self._round_cost_start, 9),
        )
        if span.is_recording():
            span.set_attributes({"orx.aggregate_score": draft.score, "orx.critics_scored": len(critiques)})
        if decision.stop:
            _decided(span, pb.ROUND_DECISION_STOP, decision.reason)
            self._complete(decision.reason, decision.text)
            return None
        _decided(span, pb.ROUND_DECISION_CONTINUE)
        return best

    def _best(self) -> Draft:
        scored = [d for d in self.drafts if d.score is not None]
        if not scored:
            return self.drafts[-1]
        return max(scored, key=lambda d: (d.score, -d.round))

    def _critics(self) -> list[str]:
        return choose_critics(self.selection, self.author, self.failed_authors, self.config.critic_count, self.pricing)

    # -------------------------------------------------------------- messages

    def _answer_messages(self) -> list[common_pb2.ChatMessage]:
        return self.prompts.answer_messages(self.request.prompt, self.config.history)

    def _refine_messages(self, best: Draft) -> list[common_pb2.ChatMessage]:
        feedback = feedback_text(best.critiques)
        return self.prompts.refine_messages(self.request.prompt, best.text, feedback, self.config.history)

    # ---------------------------------------------------------------- author

    async def _author(
        self, round_no: int, messages: list[common_pb2.ChatMessage], purpose: common_pb2.CallPurpose
    ) -> Draft:
        """The author writes (or refines); on failure the next-ranked model takes over."""
        self._round_cost_start = self.ledger.own_cost()
        name = tracing.ANSWER if purpose == common_pb2.CALL_PURPOSE_ANSWER else tracing.REFINE
        while True:
            model = self.author
            started = time.monotonic()
            attributes = tracing.call_attributes(model, round_no, fallback=bool(self.failed_authors))
            with tracing.span(name, attributes) as call_span:
                try:
                    result = await self.calls.stream(model, messages, purpose, round_no, self.request.author_options)
                except CallFailed as failure:
                    metrics.AUTHOR_FAILURES.labels(metrics.failure_kind_label(failure.kind)).inc()
                    tracing.call_failed(call_span, failure.kind, failure.usage)
                    self.ledger.account(model, failure.usage)
                    self.failed_authors.add(model)
                    replacement = self._next_author()
                    if replacement is not None and call_span.is_recording():
                        call_span.set_attribute("orx.fallback_model", replacement)
                    self.events.provider_fallback(
                        round_no,
                        model,
                        replacement or "",
                        failure_kind=failure.kind,
                        reason=failure.message,
                        usage=failure.usage,
                        latency=failure.latency,
                        ttft=failure.ttft or 0.0,
                    )
                    if replacement is None:
                        raise SessionError(
                            f"every candidate model failed; last error from {model}: {failure.message}"
                        ) from None
                    self.author = replacement
                    continue
                tracing.call_done(call_span, result.usage, result.served_model)
            self.ledger.account(model, result.usage)
            self._last_author_cost = result.usage.cost_usd
            self._last_author_time = time.monotonic() - started
            self._answered(round_no, result)
            draft = Draft(round=round_no, model=model, text=result.text)
            self.drafts.append(draft)
            return draft

    def _next_author(self) -> str | None:
        for cand in self.selection.candidates:
            if cand.model not in self.failed_authors and self._can_author(cand.model):
                return cand.model
        return None

    def _answered(self, round_no: int, result: CallResult, *, shadow: bool = False) -> None:
        self.events.response_completed(
            round_no,
            result.model,
            served_model=result.served_model,
            text=result.text,
            usage=result.usage,
            latency=result.latency,
            ttft=result.ttft,
            simulated=result.simulated,
            shadow=shadow,
        )

    # ---------------------------------------------------------------- shadow

    async def _shadow_round(self) -> None:
        """Runner-ups answer round 1 and the round's critics score each answer, beside the session.

        Nothing here touches the session's drafts, scores or stop rule: shadow answers exist only
        so analytics can compare the primary with the models ranked after it.
        """
        await asyncio.gather(*(self._shadow_answer(model) for model in self.shadow_models))

    async def _shadow_answer(self, model: str) -> None:
        with tracing.span(tracing.SHADOW, {"gen_ai.request.model": model}):
            with tracing.span(tracing.ANSWER, tracing.call_attributes(model, 1, shadow=True)) as call_span:
                try:
                    result = await self.calls.unary(
                        model, self._answer_messages(), common_pb2.CALL_PURPOSE_ANSWER, 1, shadow=True
                    )
                except CallFailed as failure:
                    tracing.call_failed(call_span, failure.kind, failure.usage)
                    self.ledger.account(model, failure.usage, shadow=True)
                    self.events.call_warning(
                        pb.WARNING_CODE_SHADOW_FAILED,
                        f"shadow answer from {model} failed: {failure.message}",
                        round_no=1,
                        model=model,
                        failure_kind=failure.kind,
                        usage=failure.usage,
                        latency=failure.latency,
                        purpose=common_pb2.CALL_PURPOSE_ANSWER,
                    )
                    return
                tracing.call_done(call_span, result.usage, result.served_model)
            self.ledger.account(model, result.usage, shadow=True)
            self._answered(1, result, shadow=True)
            draft = Draft(round=1, model=model, text=result.text)
            await self.panel.score(draft, self._shadow_critics, shadow=True)

    # ------------------------------------------------------------- endings

    def _wall(self) -> Duration:
        return duration(time.monotonic() - self.started)

    def _complete(self, reason: pb.StopReason, detail: str) -> None:
        """Decide the ending now; build it (with final totals) once shadow calls are done."""
        self._ending = lambda: self._completed(reason, detail)

    def _fail(self, reason: str, status: pb.SessionStatus) -> None:
        self._ending = lambda: self._failed(reason, status)

    def _completed(self, reason: pb.StopReason, detail: str) -> pb.OrchestrationEvent:
        best = self._best()
        result = pb.SessionCompleted(
            final_text=best.text,
            best_round=best.round,
            best_model=best.model,
            final_score=best.score or 0.0,
            unscored=best.score is None,
            rounds_used=len(self.drafts),
            stop_reason=reason,
            stop_detail=detail,
            total_cost_usd=self.ledger.total.cost_usd,
            usage=self.ledger.total,
            per_model=self.ledger.models(),
            wall_time=self._wall(),
        )
        self.record.status = pb.SESSION_STATUS_COMPLETED
        self.record.result.CopyFrom(result)
        return pb.OrchestrationEvent(session_completed=result)

    def _failed(self, reason: str, status: pb.SessionStatus) -> pb.OrchestrationEvent:
        best = self._best().text if self.drafts else ""
        failure = pb.SessionFailed(
            reason=reason,
            status=status,
            total_cost_usd=self.ledger.total.cost_usd,
            usage=self.ledger.total,
            per_model=self.ledger.models(),
            best_text=best,
            wall_time=self._wall(),
        )
        self.record.status = status
        self.record.failure.CopyFrom(failure)
        return pb.OrchestrationEvent(session_failed=failure)


def _decided(span: Span, decision: pb.RoundDecision, reason: pb.StopReason | None = None) -> None:
    """The stop rule's verdict on a round, on the round's span."""
    if span.is_recording():
        span.set_attribute("orx.decision", metrics.decision_label(decision))
        if reason is not None:
            span.set_attribute("orx.stop_reason", metrics.stop_reason_label(reason))
