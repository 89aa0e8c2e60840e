"""The events a running session emits: one typed method per kind, and the pacing of answer text.

:class:`Emitter` is bound to one live session. Each method takes the event's content as explicit
parameters, builds the message and hands it to the :class:`~services.orchestrator.hub.Hub`, which
numbers, logs and queues it. The two terminal kinds (``session_completed``, ``session_failed``) are not
emitted here: the runner builds the ending and the manager records it with :meth:`Hub.finish`, which
makes it durable before anyone sees it. :class:`Coalescer` batches the author's streamed text into
``response_delta`` events.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

from google.protobuf.duration_pb2 import Duration

from orchestratex.v1 import common_pb2, selector_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.critique import Critique
from services.orchestrator.hub import Hub, LiveSession
from services.orchestrator.policy import Decision

COALESCE_SECONDS = 0.05


def duration(seconds: float) -> Duration:
    """Seconds as a protobuf Duration."""
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


class Emitter:
    """Emits one session's progress events, one method per event kind."""

    def __init__(self, hub: Hub, live: LiveSession) -> None:
        self.hub = hub
        self.live = live

    def _emit(self, event: pb.OrchestrationEvent) -> pb.OrchestrationEvent:
        return self.hub.emit(self.live, event)

    def session_started(
        self, request: pb.OrchestrateRequest, *, simulated: bool, thread_turns: int
    ) -> pb.OrchestrationEvent:
        """The session began (the normalised request, and how many earlier turns of its thread it sees)."""
        started = pb.SessionStarted(request=request, simulated=simulated, thread_turns=thread_turns)
        return self._emit(pb.OrchestrationEvent(session_started=started))

    def model_selected(
        self,
        *,
        primary: str,
        critics: Sequence[str],
        candidates: Sequence[selector_pb2.Candidate],
        analysis: selector_pb2.PromptAnalysis,
        from_defaults: bool,
        shadow_models: Sequence[str],
    ) -> pb.OrchestrationEvent:
        """The models chosen for the session (by the selector, or from the catalogue when it is down)."""
        selected = pb.ModelSelected(
            primary_model=primary,
            critic_models=critics,
            candidates=candidates,
            analysis=analysis,
            from_defaults=from_defaults,
            shadow_models=shadow_models,
        )
        return self._emit(pb.OrchestrationEvent(model_selected=selected))

    def response_delta(self, round_no: int, model: str, text: str) -> pb.OrchestrationEvent:
        """More of the author's answer text."""
        delta = pb.ResponseDelta(round=round_no, model=model, text=text)
        return self._emit(pb.OrchestrationEvent(response_delta=delta))

    def response_completed(
        self,
        round_no: int,
        model: str,
        *,
        served_model: str,
        text: str,
        usage: common_pb2.Usage,
        latency: float,
        ttft: float,
        simulated: bool,
        shadow: bool = False,
    ) -> pb.OrchestrationEvent:
        """An answer (or refinement, or shadow answer) finished, with what it cost."""
        completed = pb.ResponseCompleted(
            round=round_no,
            model=model,
            served_model=served_model,
            text=text,
            usage=usage,
            latency=duration(latency),
            time_to_first_token=duration(ttft),
            simulated=simulated,
            shadow=shadow,
        )
        return self._emit(pb.OrchestrationEvent(response_completed=completed))

    def critique_completed(
        self,
        round_no: int,
        critic: str,
        author: str,
        critique: Critique,
        *,
        usage: common_pb2.Usage,
        latency: float,
        ttft: float,
        shadow: bool = False,
    ) -> pb.OrchestrationEvent:
        """A critic scored an answer, with what the critique cost."""
        completed = pb.CritiqueCompleted(
            round=round_no,
            critic_model=critic,
            author_model=author,
            score=critique.score,
            rationale=critique.rationale,
            strengths=critique.strengths,
            weaknesses=critique.weaknesses,
            suggestions=critique.suggestions,
            usage=usage,
            latency=duration(latency),
            time_to_first_token=duration(ttft),
            shadow=shadow,
        )
        return self._emit(pb.OrchestrationEvent(critique_completed=completed))

    def round_completed(
        self,
        round_no: int,
        decision: Decision,
        *,
        aggregate_score: float,
        score_change: float,
        critics_scored: int,
        best_round: int,
        round_cost_usd: float,
    ) -> pb.OrchestrationEvent:
        """A round was scored and the stop rule decided whether another follows."""
        completed = pb.RoundCompleted(
            round=round_no,
            aggregate_score=aggregate_score,
            score_change=score_change,
            decision=pb.ROUND_DECISION_STOP if decision.stop else pb.ROUND_DECISION_CONTINUE,
            stop_reason=decision.reason,
            reason=decision.text,
            critics_scored=critics_scored,
            best_round=best_round,
            round_cost_usd=round_cost_usd,
        )
        return self._emit(pb.OrchestrationEvent(round_completed=completed))

    def provider_fallback(
        self,
        round_no: int,
        failed_model: str,
        replacement_model: str,
        *,
        failure_kind: common_pb2.FailureKind,
        reason: str,
        usage: common_pb2.Usage,
        latency: float,
        ttft: float,
    ) -> pb.OrchestrationEvent:
        """The author's call failed (with what it cost); ``replacement_model`` takes over, or ``""`` if none can."""
        fallback = pb.ProviderFallback(
            round=round_no,
            failed_model=failed_model,
            replacement_model=replacement_model,
            failure_kind=failure_kind,
            reason=reason,
            usage=usage,
            latency=duration(latency),
            time_to_first_token=duration(ttft),
        )
        return self._emit(pb.OrchestrationEvent(provider_fallback=fallback))

    def warning(self, code: pb.WarningCode, message: str, *, round_no: int = 0) -> pb.OrchestrationEvent:
        """A degradation the session survives that involves no single provider call."""
        warning = pb.SessionWarning(code=code, message=message, round=round_no)
        return self._emit(pb.OrchestrationEvent(warning=warning))

    def call_warning(
        self,
        code: pb.WarningCode,
        message: str,
        *,
        round_no: int,
        model: str,
        failure_kind: common_pb2.FailureKind,
        usage: common_pb2.Usage,
        latency: float,
        purpose: common_pb2.CallPurpose,
    ) -> pb.OrchestrationEvent:
        """A provider call that failed or was cut short, and what it cost (a ``warning`` with ``model`` set)."""
        warning = pb.SessionWarning(
            code=code,
            message=message,
            round=round_no,
            model=model,
            failure_kind=failure_kind,
            usage=usage,
            latency=duration(latency),
            purpose=purpose,
        )
        return self._emit(pb.OrchestrationEvent(warning=warning))


class Coalescer:
    """Batches answer text into ``response_delta`` events: the first piece goes out at once, later ones
    at most every :data:`COALESCE_SECONDS` — and never later than that after they arrived, even if the
    stream then stalls (a timer flushes them)."""

    def __init__(self, emit: Callable[[str], object]) -> None:
        self._emit = emit
        self._pending: list[str] = []
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        """Queue a piece of text; it goes out now if the last batch is old enough, else within the window."""
        self._pending.append(text)
        elapsed = time.monotonic() - self._last
        if elapsed >= COALESCE_SECONDS:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COALESCE_SECONDS - elapsed, self.flush)

    def flush(self) -> None:
        """Emit what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._emit("".join(self._pending))
            self._pending.clear()
            self._last = time.monotonic()

    def discard(self) -> None:
        """Drop what is pending (the call was cancelled: nobody is listening)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
