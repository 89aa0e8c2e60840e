"""The critique-and-refine loop of one session.

select (done by the caller) -> the author answers (streamed, coalesced deltas) -> critics of other
families score it in parallel -> aggregate -> stop or refine the best version so far -> ...
Every provider call ends up in exactly one event that carries its usage (``response_completed``,
``critique_completed``, ``provider_fallback`` or a ``warning``), so the event log is also the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import grpc
from google.protobuf.duration_pb2 import Duration

from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc, selector_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator import policy, shadow
from services.orchestrator.critique import Critique, UnusableCritique, feedback_text, parse_critique
from services.orchestrator.hub import Hub, LiveSession
from services.orchestrator.prompts import PromptSet

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.05
ANSWER_MAX_TOKENS = 4096
CRITIQUE_MAX_TOKENS = 1024

_STATUS_KIND = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: common_pb2.FAILURE_KIND_RATE_LIMITED,
    grpc.StatusCode.UNAVAILABLE: common_pb2.FAILURE_KIND_UPSTREAM_ERROR,
    grpc.StatusCode.INTERNAL: common_pb2.FAILURE_KIND_UPSTREAM_ERROR,
    grpc.StatusCode.UNKNOWN: common_pb2.FAILURE_KIND_UPSTREAM_ERROR,
    grpc.StatusCode.DEADLINE_EXCEEDED: common_pb2.FAILURE_KIND_TIMEOUT,
    grpc.StatusCode.INVALID_ARGUMENT: common_pb2.FAILURE_KIND_INVALID_REQUEST,
    grpc.StatusCode.NOT_FOUND: common_pb2.FAILURE_KIND_INVALID_REQUEST,
    grpc.StatusCode.PERMISSION_DENIED: common_pb2.FAILURE_KIND_REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: common_pb2.FAILURE_KIND_AUTH,
    grpc.StatusCode.FAILED_PRECONDITION: common_pb2.FAILURE_KIND_CREDITS,
    grpc.StatusCode.CANCELLED: common_pb2.FAILURE_KIND_CANCELLED,
}


def duration(seconds: float) -> Duration:
    """Seconds as a protobuf Duration."""
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


USAGE_TRAILER = "orx-usage-bin"
"""Trailing metadata key on a failed provider call: the serialised ``Usage`` it spent."""
KIND_TRAILER = "orx-failure-kind"
"""Trailing metadata key on a failed provider call: the ``FailureKind`` name the providers service chose."""


def failure_kind(err: grpc.aio.AioRpcError) -> common_pb2.FailureKind:
    """The kind of a failed provider call: the providers service's own word, else read off the status."""
    metadata: object = err.trailing_metadata()
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == KIND_TRAILER and isinstance(value, str):
            try:
                return cast(common_pb2.FailureKind, common_pb2.FailureKind.Value(value))
            except ValueError:
                break
    return _STATUS_KIND.get(err.code(), common_pb2.FAILURE_KIND_UPSTREAM_ERROR)


def _trailer_usage(metadata: object) -> common_pb2.Usage:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == USAGE_TRAILER and isinstance(value, bytes):
            try:
                return common_pb2.Usage.FromString(value)
            except Exception:
                break
    return common_pb2.Usage()


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token), used only where the vendor gave none."""
    return math.ceil(len(text) / 4)


class _Coalescer:
    """Batches answer text into ``response_delta`` events: the first piece goes out at once, later ones
    at most every :data:`COALESCE_SECONDS` — and never later than that after they arrived, even if the
    stream then stalls (a timer flushes them)."""

    def __init__(self, emit: Callable[[str], object]) -> None:
        self._emit = emit
        self._pending: list[str] = []
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        self._pending.append(text)
        elapsed = time.monotonic() - self._last
        if elapsed >= COALESCE_SECONDS:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COALESCE_SECONDS - elapsed, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._emit("".join(self._pending))
            self._pending.clear()
            self._last = time.monotonic()

    def discard(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()


class SessionError(Exception):
    """The session cannot go on; ``reason`` is shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallFailed(Exception):
    """A provider call failed; carries what it cost."""

    def __init__(
        self,
        kind: common_pb2.FailureKind,
        message: str,
        usage: common_pb2.Usage,
        latency: float,
        ttft: float | None = None,
        partial: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.usage = usage
        self.latency = latency
        self.ttft = ttft
        self.partial = partial


@dataclass
class CallResult:
    """A finished provider call."""

    model: str
    text: str
    usage: common_pb2.Usage
    latency: float
    ttft: float
    served_model: str
    simulated: bool


@dataclass
class Draft:
    """One version of the answer and what the critics said of it."""

    round: int
    model: str
    text: str
    score: float | None = None
    critiques: list[Critique] = field(default_factory=list)


@dataclass
class Selection:
    """The outcome of model selection."""

    primary: str
    critics: list[str]
    candidates: list[selector_pb2.Candidate]
    analysis: selector_pb2.PromptAnalysis
    from_defaults: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    """A validated request with defaults applied."""

    request: pb.OrchestrateRequest
    rules: policy.StopRules
    critic_count: int
    history: list[common_pb2.ChatMessage]
    trimmed_turns: int = 0
    #: Whether this session is sampled for shadow evaluation (see shadow.py).
    shadow: bool = False


class Pricing:
    """Catalogue prices and limits, for estimates when a call was cut short."""

    def __init__(self, models: dict[str, common_pb2.ModelInfo]) -> None:
        self.models = models

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        info = self.models.get(model)
        if info is None:
            return 0.0
        return round(
            (prompt_tokens * info.input_price_per_mtok + completion_tokens * info.output_price_per_mtok) / 1e6, 9
        )

    def max_tokens(self, model: str, wanted: int) -> int:
        info = self.models.get(model)
        if info is None or info.max_output_tokens <= 0:
            return wanted
        return int(min(wanted, info.max_output_tokens))

    def json_mode(self, model: str) -> bool:
        info = self.models.get(model)
        return bool(info and info.supports_json_mode)

    def structured_outputs(self, model: str) -> bool:
        info = self.models.get(model)
        return bool(info and info.supports_structured_outputs)

    def family(self, model: str) -> str:
        info = self.models.get(model)
        return info.family if info else ""


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
        save: Callable[[pb.Session], object],
        simulated: bool,
    ) -> None:
        self.live = live
        self.record = record
        self.config = config
        self.request = config.request
        self.selection = selection
        self.providers = providers
        self.prompts = prompts
        self.pricing = pricing
        self.hub = hub
        self.save = save
        self.simulated = simulated
        self.domain = selection.analysis.primary_domain
        self.author = selection.primary
        self.failed_authors: set[str] = set()
        self.drafts: list[Draft] = []
        self.history: list[float] = []
        self.per_model: dict[str, pb.ModelUsage] = {}
        self.total = common_pb2.Usage()
        #: Spent on shadow evaluation: in the totals, but never counted against the user's budget.
        self.shadow_cost = 0.0
        self.terminal: dict[str, object] = {}
        self._ending: Callable[[], dict[str, object]] | None = None
        self.started = time.monotonic()
        self.deadline = self.started + config.rules.time_limit_s
        ranked = [c.model for c in selection.candidates]
        self._shadow_critics = self._critics()
        self.shadow_models = shadow.runners_up(ranked, self.author, self._shadow_critics) if config.shadow else []
        self._shadow_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- events

    def emit(self, **kind: object) -> pb.OrchestrationEvent:
        return self.hub.emit(self.live, **kind)

    def account(self, model: str, usage: common_pb2.Usage, *, shadow: bool = False) -> None:
        """Add one call's usage to the per-model and session totals."""
        if shadow:
            self.shadow_cost = round(self.shadow_cost + usage.cost_usd, 9)
        entry = self.per_model.setdefault(model, pb.ModelUsage(model=model))
        entry.calls += 1
        for target in (entry.usage, self.total):
            target.prompt_tokens += usage.prompt_tokens
            target.completion_tokens += usage.completion_tokens
            target.reasoning_tokens += usage.reasoning_tokens
            target.cached_tokens += usage.cached_tokens
            target.total_tokens += usage.total_tokens
            target.cost_usd = round(target.cost_usd + usage.cost_usd, 9)

    # ------------------------------------------------------------------ run

    def own_cost(self) -> float:
        """What the session spent on its own answer: the total less shadow evaluation."""
        return round(self.total.cost_usd - self.shadow_cost, 9)

    async def run(self) -> None:
        """Run the loop to its end and set ``terminal`` (the last event, emitted by the caller).

        The terminal event is built last, after any shadow calls have finished or been cancelled,
        so its totals include every call the session made. Never raises, except for a second
        cancellation during cleanup.
        """
        started = pb.SessionStarted(
            request=self.request, simulated=self.simulated, thread_turns=len(self.config.history) // 2
        )
        self.emit(session_started=started)
        if self.config.trimmed_turns:
            self.emit(
                warning=pb.SessionWarning(
                    code=pb.WARNING_CODE_CONTEXT_TRIMMED,
                    message=f"{self.config.trimmed_turns} earlier turn(s) of the thread left out to fit the context",
                )
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
            self.emit(warning=pb.SessionWarning(code=pb.WARNING_CODE_SELECTOR_UNAVAILABLE, message=text))
        self.emit(
            model_selected=pb.ModelSelected(
                primary_model=sel.primary,
                critic_models=sel.critics,
                candidates=sel.candidates,
                analysis=sel.analysis,
                from_defaults=sel.from_defaults,
                shadow_models=self.shadow_models,
            )
        )
        self.record.primary_model = sel.primary
        self.record.primary_domain = sel.analysis.primary_domain

    async def _loop(self) -> None:
        rules = self.config.rules
        round_no = 1
        if self.shadow_models:
            self._shadow_task = asyncio.create_task(self._shadow_round(), name=f"shadow-{self.live.session_id}")
        draft = await self._author(round_no, self._answer_messages(), common_pb2.CALL_PURPOSE_ANSWER)
        while True:
            round_started = time.monotonic()
            round_cost_before = self.own_cost()
            critiques = await self._critique_round(draft)
            if not critiques:
                reason = (
                    "no critics were requested"
                    if self.config.critic_count == 0
                    else "every critic failed; returning the best answer so far"
                )
                if self.config.critic_count > 0:
                    self.emit(
                        warning=pb.SessionWarning(
                            code=pb.WARNING_CODE_ALL_CRITICS_FAILED, message=reason, round=round_no
                        )
                    )
                self._complete(pb.STOP_REASON_NO_CRITIQUE, reason)
                return
            draft.critiques = critiques
            draft.score = policy.aggregate([c.score for c in critiques])
            previous = self.history[-1] if self.history else None
            self.history.append(draft.score)
            best = self._best()
            critique_time = time.monotonic() - round_started
            next_cost = self._last_author_cost + (self.own_cost() - round_cost_before)
            decision = policy.decide(
                rules,
                self.history,
                spent_usd=self.own_cost(),
                next_cost_usd=next_cost,
                elapsed_s=time.monotonic() - self.started,
                next_time_s=self._last_author_time + critique_time,
            )
            self.emit(
                round_completed=pb.RoundCompleted(
                    round=round_no,
                    aggregate_score=draft.score,
                    score_change=0.0 if previous is None else draft.score - previous,
                    decision=pb.ROUND_DECISION_STOP if decision.stop else pb.ROUND_DECISION_CONTINUE,
                    stop_reason=decision.reason,
                    reason=decision.text,
                    critics_scored=len(critiques),
                    best_round=best.round,
                    round_cost_usd=round(self.own_cost() - self._round_cost_start, 9),
                )
            )
            if decision.stop:
                self._complete(decision.reason, decision.text)
                return
            round_no += 1
            try:
                draft = await self._author(round_no, self._refine_messages(best), common_pb2.CALL_PURPOSE_REFINE)
            except SessionError as exc:
                self.emit(
                    warning=pb.SessionWarning(
                        code=pb.WARNING_CODE_REFINEMENT_FAILED, message=exc.reason, round=round_no
                    )
                )
                self._complete(pb.STOP_REASON_UNSPECIFIED, f"refinement failed ({exc.reason}); kept the best version")
                return

    def _best(self) -> Draft:
        scored = [d for d in self.drafts if d.score is not None]
        if not scored:
            return self.drafts[-1]
        return max(scored, key=lambda d: (d.score, -d.round))

    # -------------------------------------------------------------- messages

    def _answer_messages(self) -> list[common_pb2.ChatMessage]:
        return [
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=self.prompts.answer_system),
            *self.config.history,
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=self.request.prompt),
        ]

    def _refine_messages(self, best: Draft) -> list[common_pb2.ChatMessage]:
        system, user = self.prompts.refine(self.request.prompt, best.text, feedback_text(best.critiques))
        return [
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=system),
            *self.config.history,
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=user),
        ]

    # ---------------------------------------------------------------- author

    _last_author_cost = 0.0
    _last_author_time = 0.0
    _round_cost_start = 0.0

    async def _author(
        self, round_no: int, messages: list[common_pb2.ChatMessage], purpose: common_pb2.CallPurpose
    ) -> Draft:
        """The author writes (or refines); on failure the next-ranked model takes over."""
        self._round_cost_start = self.own_cost()
        while True:
            model = self.author
            started = time.monotonic()
            try:
                result = await self._stream(model, messages, purpose, round_no)
            except CallFailed as failure:
                self.account(model, failure.usage)
                self.failed_authors.add(model)
                replacement = self._next_author()
                self.emit(
                    provider_fallback=pb.ProviderFallback(
                        round=round_no,
                        failed_model=model,
                        replacement_model=replacement or "",
                        failure_kind=failure.kind,
                        reason=failure.message,
                        usage=failure.usage,
                        latency=duration(failure.latency),
                        time_to_first_token=duration(failure.ttft or 0.0),
                    )
                )
                if replacement is None:
                    raise SessionError(
                        f"every candidate model failed; last error from {model}: {failure.message}"
                    ) from None
                self.author = replacement
                continue
            self.account(model, result.usage)
            self._last_author_cost = result.usage.cost_usd
            self._last_author_time = time.monotonic() - started
            self.emit(
                response_completed=pb.ResponseCompleted(
                    round=round_no,
                    model=model,
                    served_model=result.served_model,
                    text=result.text,
                    usage=result.usage,
                    latency=duration(result.latency),
                    time_to_first_token=duration(result.ttft),
                    simulated=result.simulated,
                )
            )
            draft = Draft(round=round_no, model=model, text=result.text)
            self.drafts.append(draft)
            return draft

    def _next_author(self) -> str | None:
        for cand in self.selection.candidates:
            if cand.model not in self.failed_authors:
                return cand.model
        return None

    # --------------------------------------------------------------- critics

    def _critics(self) -> list[str]:
        """This round's critics: never the author, nor a model that has failed as an author in this
        session (it just showed it cannot answer now; it would most likely fail as a critic too)."""
        unfit = {self.author, *self.failed_authors}
        chosen = [m for m in self.selection.critics if m not in unfit][: self.config.critic_count]
        if len(chosen) < self.config.critic_count:
            author_family = self.pricing.family(self.author)
            spares = [c.model for c in self.selection.candidates if c.model not in unfit and c.model not in chosen]
            spares.sort(key=lambda m: self.pricing.family(m) == author_family)
            chosen.extend(spares[: self.config.critic_count - len(chosen)])
        return chosen

    async def _critique_round(self, draft: Draft) -> list[Critique]:
        critics = self._critics()
        if not critics:
            return []
        results = await asyncio.gather(*(self._critique(critic, draft) for critic in critics))
        return [c for c in results if c is not None]

    async def _critique(self, critic: str, draft: Draft, *, shadow: bool = False) -> Critique | None:
        system, user = self.prompts.critique(self.request.prompt, draft.text)
        messages = [
            common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content=system),
            common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=user),
        ]
        try:
            result = await self._unary(critic, messages, common_pb2.CALL_PURPOSE_CRITIQUE, draft.round, shadow=shadow)
        except CallFailed as failure:
            self._critic_failed(
                critic, draft.round, failure.kind, failure.message, failure.usage, failure.latency, shadow=shadow
            )
            return None
        try:
            critique = parse_critique(result.text, quoted=(self.request.prompt, draft.text))
        except UnusableCritique as exc:
            self._critic_failed(
                critic,
                draft.round,
                common_pb2.FAILURE_KIND_INVALID_OUTPUT,
                str(exc),
                result.usage,
                result.latency,
                shadow=shadow,
            )
            return None
        self.account(critic, result.usage, shadow=shadow)
        self.emit(
            critique_completed=pb.CritiqueCompleted(
                round=draft.round,
                critic_model=critic,
                author_model=draft.model,
                score=critique.score,
                rationale=critique.rationale,
                strengths=critique.strengths,
                weaknesses=critique.weaknesses,
                suggestions=critique.suggestions,
                usage=result.usage,
                latency=duration(result.latency),
                time_to_first_token=duration(result.ttft),
                shadow=shadow,
            )
        )
        return critique

    def _critic_failed(
        self,
        critic: str,
        round_no: int,
        kind: common_pb2.FailureKind,
        message: str,
        usage: common_pb2.Usage,
        latency: float,
        *,
        shadow: bool = False,
    ) -> None:
        self.account(critic, usage, shadow=shadow)
        self.emit(
            warning=pb.SessionWarning(
                code=pb.WARNING_CODE_SHADOW_FAILED if shadow else pb.WARNING_CODE_CRITIC_FAILED,
                message=f"{'shadow ' if shadow else ''}critic {critic} failed: {message}",
                round=round_no,
                model=critic,
                failure_kind=kind,
                usage=usage,
                latency=duration(latency),
                purpose=common_pb2.CALL_PURPOSE_CRITIQUE,
            )
        )

    # ---------------------------------------------------------------- shadow

    async def _shadow_round(self) -> None:
        """Runner-ups answer round 1 and the round's critics score each answer, beside the session.

        Nothing here touches the session's drafts, scores or stop rule: shadow answers exist only
        so analytics can compare the primary with the models ranked after it.
        """
        await asyncio.gather(*(self._shadow_answer(model) for model in self.shadow_models))

    async def _shadow_answer(self, model: str) -> None:
        try:
            result = await self._unary(model, self._answer_messages(), common_pb2.CALL_PURPOSE_ANSWER, 1, shadow=True)
        except CallFailed as failure:
            self.account(model, failure.usage, shadow=True)
            self.emit(
                warning=pb.SessionWarning(
                    code=pb.WARNING_CODE_SHADOW_FAILED,
                    message=f"shadow answer from {model} failed: {failure.message}",
                    round=1,
                    model=model,
                    failure_kind=failure.kind,
                    usage=failure.usage,
                    latency=duration(failure.latency),
                    purpose=common_pb2.CALL_PURPOSE_ANSWER,
                )
            )
            return
        self.account(model, result.usage, shadow=True)
        self.emit(
            response_completed=pb.ResponseCompleted(
                round=1,
                model=model,
                served_model=result.served_model,
                text=result.text,
                usage=result.usage,
                latency=duration(result.latency),
                time_to_first_token=duration(result.ttft),
                simulated=result.simulated,
                shadow=True,
            )
        )
        draft = Draft(round=1, model=model, text=result.text)
        await asyncio.gather(*(self._critique(critic, draft, shadow=True) for critic in self._shadow_critics))

    # ------------------------------------------------------------ the call

    def _request(
        self, model: str, messages: list[common_pb2.ChatMessage], purpose: common_pb2.CallPurpose
    ) -> providers_pb2.GenerateRequest:
        critique = purpose == common_pb2.CALL_PURPOSE_CRITIQUE
        request = providers_pb2.GenerateRequest(
            model=model,
            messages=messages,
            max_tokens=self.pricing.max_tokens(model, CRITIQUE_MAX_TOKENS if critique else ANSWER_MAX_TOKENS),
            context=providers_pb2.CallContext(purpose=purpose, session_id=self.live.session_id, domain=self.domain),
        )
        if critique:
            request.response_format.CopyFrom(self._critique_format(model))
        return request

    def _critique_format(self, model: str) -> providers_pb2.ResponseFormat:
        """The strongest structured output the model offers: the critique's JSON Schema (the vendor then
        makes the reply valid), else JSON mode (a JSON object, possibly ``{ }``), else plain text (the
        tolerant parser reads it)."""
        if self.pricing.structured_outputs(model):
            return providers_pb2.ResponseFormat(
                type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                schema_name="critique",
                json_schema=self.prompts.critique_schema_json,
                strict=True,
            )
        if self.pricing.json_mode(model):
            return providers_pb2.ResponseFormat(type=providers_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
        return providers_pb2.ResponseFormat()

    async def _unary(
        self,
        model: str,
        messages: list[common_pb2.ChatMessage],
        purpose: common_pb2.CallPurpose,
        round_no: int,
        *,
        shadow: bool = False,
    ) -> CallResult:
        """One Generate call (critics: nothing to stream to the client, so no per-chunk traffic).

        The providers service still streams from the vendor, so cancelling this call stops the
        generation upstream; a failed call's usage travels in the ``orx-usage-bin`` trailer.
        """
        started = time.monotonic()
        timeout = max(0.001, self.deadline - time.monotonic())
        call = self.providers.Generate(self._request(model, messages, purpose), timeout=timeout)
        try:
            done = await call
        except grpc.aio.AioRpcError as err:
            kind = failure_kind(err)
            usage = _trailer_usage(err.trailing_metadata())
            raise CallFailed(kind, f"{err.code().name}: {err.details()}", usage, time.monotonic() - started) from None
        except asyncio.CancelledError:
            call.cancel()
            self._record_cancelled(model, messages, "", purpose, round_no, time.monotonic() - started, shadow=shadow)
            raise
        latency = time.monotonic() - started
        if not done.text.strip():
            raise CallFailed(common_pb2.FAILURE_KIND_INVALID_OUTPUT, "empty reply", done.usage, latency)
        return CallResult(
            model=model,
            text=done.text,
            usage=done.usage,
            latency=latency,
            ttft=done.time_to_first_token.ToNanoseconds() / 1e9 if done.HasField("time_to_first_token") else latency,
            served_model=done.served_model or model,
            simulated=done.simulated,
        )

    async def _stream(
        self,
        model: str,
        messages: list[common_pb2.ChatMessage],
        purpose: common_pb2.CallPurpose,
        round_no: int,
    ) -> CallResult:
        """One StreamGenerate call, its text streamed to the client as coalesced deltas.

        Raises CallFailed (with usage) or CancelledError (after recording the estimated usage).
        """
        request = self._request(model, messages, purpose)
        started = time.monotonic()
        ttft: float | None = None
        parts: list[str] = []
        coalescer = _Coalescer(
            lambda text: self.emit(response_delta=pb.ResponseDelta(round=round_no, model=model, text=text))
        )
        failure: providers_pb2.StreamFailure | None = None
        completed: providers_pb2.GenerateResponse | None = None
        timeout = max(0.001, self.deadline - time.monotonic())
        call = self.providers.StreamGenerate(providers_pb2.StreamGenerateRequest(request=request), timeout=timeout)
        try:
            async for item in call:
                which = item.WhichOneof("event")
                if which == "delta":
                    if ttft is None:
                        ttft = time.monotonic() - started
                    parts.append(item.delta.text)
                    coalescer.add(item.delta.text)
                elif which == "completed":
                    completed = item.completed
                elif which == "failed":
                    failure = item.failed
        except grpc.aio.AioRpcError as err:
            coalescer.flush()
            latency = time.monotonic() - started
            if failure is not None:
                raise CallFailed(
                    failure.kind or common_pb2.FAILURE_KIND_MID_STREAM_ERROR,
                    failure.message or (err.details() or ""),
                    failure.usage,
                    latency,
                    ttft,
                    "".join(parts),
                ) from None
            kind = failure_kind(err)
            raise CallFailed(kind, f"{err.code().name}: {err.details()}", common_pb2.Usage(), latency, ttft) from None
        except asyncio.CancelledError:
            coalescer.discard()
            call.cancel()
            self._record_cancelled(model, messages, "".join(parts), purpose, round_no, time.monotonic() - started)
            raise
        coalescer.flush()
        latency = time.monotonic() - started
        if completed is None:
            raise CallFailed(
                common_pb2.FAILURE_KIND_INVALID_OUTPUT, "stream ended without a result", common_pb2.Usage(), latency
            )
        text = completed.text or "".join(parts)
        if not text.strip():
            raise CallFailed(common_pb2.FAILURE_KIND_INVALID_OUTPUT, "empty reply", completed.usage, latency, ttft)
        return CallResult(
            model=model,
            text=text,
            usage=completed.usage,
            latency=latency,
            ttft=ttft if ttft is not None else latency,
            served_model=completed.served_model or model,
            simulated=completed.simulated,
        )

    def _record_cancelled(
        self,
        model: str,
        messages: list[common_pb2.ChatMessage],
        partial: str,
        purpose: common_pb2.CallPurpose,
        round_no: int,
        latency: float,
        *,
        shadow: bool = False,
    ) -> None:
        """A call cut short by cancellation still cost something: record an estimate."""
        prompt_tokens = sum(estimate_tokens(m.content) + 4 for m in messages)
        completion_tokens = estimate_tokens(partial)
        usage = common_pb2.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            cost_usd=self.pricing.cost(model, prompt_tokens, completion_tokens),
        )
        self.account(model, usage, shadow=shadow)
        self.emit(
            warning=pb.SessionWarning(
                code=pb.WARNING_CODE_CALL_CANCELLED,
                message=f"call to {model} cancelled; usage estimated from {completion_tokens} tokens received",
                round=round_no,
                model=model,
                failure_kind=common_pb2.FAILURE_KIND_CANCELLED,
                usage=usage,
                latency=duration(latency),
                purpose=purpose,
            )
        )

    # ------------------------------------------------------------- endings

    def _wall(self) -> Duration:
        return duration(time.monotonic() - self.started)

    def _complete(self, reason: pb.StopReason, detail: str) -> None:
        """Decide the ending now; build it (with final totals) once shadow calls are done."""
        self._ending = lambda: self._completed(reason, detail)

    def _fail(self, reason: str, status: pb.SessionStatus) -> None:
        self._ending = lambda: self._failed(reason, status)

    def _completed(self, reason: pb.StopReason, detail: str) -> dict[str, object]:
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
            total_cost_usd=self.total.cost_usd,
            usage=self.total,
            per_model=list(self.per_model.values()),
            wall_time=self._wall(),
        )
        self.record.status = pb.SESSION_STATUS_COMPLETED
        self.record.result.CopyFrom(result)
        return {"session_completed": result}

    def _failed(self, reason: str, status: pb.SessionStatus) -> dict[str, object]:
        best = self._best().text if self.drafts else ""
        failure = pb.SessionFailed(
            reason=reason,
            status=status,
            total_cost_usd=self.total.cost_usd,
            usage=self.total,
            per_model=list(self.per_model.values()),
            best_text=best,
            wall_time=self._wall(),
        )
        self.record.status = status
        self.record.failure.CopyFrom(failure)
        return {"session_failed": failure}
