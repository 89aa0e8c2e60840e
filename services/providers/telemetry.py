"""What one provider call reports: its metrics and its spans.

:func:`services.providers.generation.generate` drives a :class:`CallTelemetry` at each step it takes (an
attempt admitted, the first token, an attempt's end, a retry, the call's end), so the numbers come from the
very places the decisions are made. The resilience layer counts its own decisions (breaker trips and
refusals, limiter queueing and waits, vendor holds); see :mod:`services.providers.metrics` for every metric.

Spans (OpenTelemetry API; a no-op until the process installs an SDK tracer provider):

* ``providers.generate`` (INTERNAL) — one per call, a child of whatever span is current when the call
  starts (the gRPC server span). It ends when the call ends: its Completion or failure, or the caller
  leaving (a stream cancelled or closed early).
* ``providers.attempt`` (INTERNAL) — one per upstream request, a child of the call's span, current
  while the backend runs so that the backend's own spans (the aiohttp client's) nest under it.

Attributes:

* both spans: ``gen_ai.operation.name`` (``chat``), ``gen_ai.system`` (the catalogue's provider,
  ``simulated`` for the simulator), ``gen_ai.request.model``, ``orx.purpose``, ``orx.outcome`` (the
  metric's outcome value) and, once known, ``gen_ai.response.model`` (the model that served),
  ``gen_ai.response.finish_reasons``, ``orx.finish_reason``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``orx.cost_usd``;
* ``providers.generate``: ``gen_ai.request.max_tokens``, ``orx.domain``, ``orx.session_id``,
  ``orx.simulated``, ``orx.attempts``, ``orx.origin`` (``upstream``, or the local refusal:
  ``circuit_open``, ``client_rate_limit``, ``vendor_hold``), ``orx.time_to_first_token_seconds``,
  ``gen_ai.response.id``; the usage is the whole call's (every billed attempt);
* ``providers.attempt``: ``orx.attempt`` (1-based), ``orx.limiter_wait_seconds``, on a retry
  ``orx.retry_reason`` (the kind of the failure retried) and ``orx.retry_wait_seconds``; on a failure
  ``orx.retried`` and ``http.response.status_code`` (the vendor's, when there is one).

A failure sets status ERROR with the failure kind as description and ``error.type`` — never the vendor's
message, and no recorded exception. A caller leaving is ``orx.outcome = cancelled`` with status UNSET. The
service does no model fallback of its own (the orchestrator does), so ``orx.fallback`` is not set here.

Never on a span: prompts, completions, the end-user id, keys or vendor error text.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from services.providers import metrics
from services.providers.backend import BackendError, FinishReason, GenerationRequest, StreamEnd, TokenUsage
from services.providers.catalogue import SIMULATED_PROVIDER
from services.providers.resilience import RetryDecision

TRACER_NAME = "orchestratex.providers"
"""Instrumentation scope of the providers' spans."""

TRACER: Tracer = trace.get_tracer(TRACER_NAME)
"""The default tracer: a proxy of the global tracer provider, so it records once the process sets one up."""

CALL_SPAN = "providers.generate"
ATTEMPT_SPAN = "providers.attempt"


class Done(Protocol):
    """What a successful call reports (``generation.Completion``; a protocol, as generation imports this module)."""

    @property
    def served_model(self) -> str: ...
    @property
    def finish_reason(self) -> FinishReason: ...
    @property
    def usage(self) -> TokenUsage: ...
    @property
    def generation_id(self) -> str: ...
    @property
    def latency(self) -> float: ...
    @property
    def attempts(self) -> int: ...


class Failed(Protocol):
    """What a failed call reports (``generation.CallFailed``)."""

    @property
    def outcome(self) -> str: ...
    @property
    def usage(self) -> TokenUsage: ...
    @property
    def latency(self) -> float: ...
    @property
    def attempts(self) -> int: ...
    @property
    def origin(self) -> str: ...


DoneT = TypeVar("DoneT", bound=Done)
FailedT = TypeVar("FailedT", bound=Failed)


class CallTelemetry:
    """Metrics and spans of one call; every method is cheap and a no-op once the call is accounted for."""

    def __init__(self, request: GenerationRequest, *, simulated: bool, tracer: Tracer | None = None) -> None:
        model = request.model
        self._model_id = model.id
        self._purpose = request.purpose.value
        self._metrics = metrics.for_model(model.id)
        self._tracer = tracer or TRACER
        self._system = SIMULATED_PROVIDER if simulated else model.provider
        self._span = self._tracer.start_span(CALL_SPAN, kind=SpanKind.INTERNAL)
        self._recording = self._span.is_recording()
        self._context = trace.set_span_in_context(self._span) if self._recording else None
        self._attempt_open = False
        self._attempt: Span | None = None
        self._attempt_context: otel_context.Context | None = None
        self._retry: tuple[str, float] | None = None
        self._done = False
        if self._recording:
            self._span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": self._system,
                    "gen_ai.request.model": model.id,
                    "gen_ai.request.max_tokens": request.max_tokens,
                    "orx.purpose": self._purpose,
                    "orx.domain": request.domain,
                    "orx.session_id": request.session_id,
                    "orx.simulated": simulated,
                }
            )

    # -- attempts -----------------------------------------------------------------------------------------

    def attempt_started(self, number: int, waited: float) -> None:
        """Upstream attempt ``number`` (1-based) was admitted after waiting ``waited`` seconds for a slot."""
        self._attempt_open = True
        if not self._recording:
            return
        attempt = self._tracer.start_span(ATTEMPT_SPAN, context=self._context, kind=SpanKind.INTERNAL)
        attempt.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": self._system,
                "gen_ai.request.model": self._model_id,
                "orx.purpose": self._purpose,
                "orx.attempt": number,
                "orx.limiter_wait_seconds": waited,
            }
        )
        if self._retry is not None:
            attempt.set_attribute("orx.retry_reason", self._retry[0])
            attempt.set_attribute("orx.retry_wait_seconds", self._retry[1])
        self._attempt = attempt
        self._attempt_context = trace.set_span_in_context(attempt)

    def enter_attempt(self) -> object | None:
        """Make the attempt's span current (around each read of the backend); hand the result to
        :meth:`exit_attempt`. None, and nothing done, when no span records."""
        if self._attempt_context is None:
            return None
        return otel_context.attach(self._attempt_context)

    @staticmethod
    def exit_attempt(token: object | None) -> None:
        """Undo :meth:`enter_attempt`."""
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def first_token(self, seconds: float) -> None:
        """The call's first delta arrived ``seconds`` after it started."""
        self._metrics.time_to_first_token.observe(seconds)
        if self._recording:
            self._span.set_attribute("orx.time_to_first_token_seconds", seconds)

    def attempt_succeeded(self, end: StreamEnd, usage: TokenUsage) -> None:
        """The current attempt ended with ``end``; ``usage`` is what it billed (priced)."""
        metrics.attempts(self._model_id, "success").inc()
        attempt = self._attempt
        if attempt is not None:
            attempt.set_attributes(_result(end.served_model or self._model_id, end.finish_reason.value, usage))
            attempt.set_attribute("orx.outcome", "success")
        self._end_attempt()

    def attempt_failed(self, failure: BackendError, usage: TokenUsage, decision: RetryDecision) -> None:
        """The current attempt failed with ``failure``, billing ``usage``; ``decision`` says whether it is retried."""
        kind = failure.kind.value
        metrics.attempts(self._model_id, kind).inc()
        if decision.retry:
            metrics.retries(self._model_id, kind).inc()
            self._retry = (kind, decision.wait)
        attempt = self._attempt
        if attempt is not None:
            attempt.set_attributes(_usage(usage))
            attempt.set_attributes({"orx.outcome": kind, "error.type": kind, "orx.retried": decision.retry})
            if failure.http_status is not None:
                attempt.set_attribute("http.response.status_code", failure.http_status)
            attempt.set_status(Status(StatusCode.ERROR, kind))
        self._end_attempt()

    def _end_attempt(self) -> None:
        self._attempt_open = False
        if self._attempt is not None:
            self._attempt.end()
        self._attempt = None
        self._attempt_context = None

    # -- the call -----------------------------------------------------------------------------------------

    def succeeded(self, done: DoneT) -> DoneT:
        """Account for the call's Completion; returns it."""
        if self._done:
            return done
        self._done = True
        metrics.calls(self._model_id, self._purpose, "success").inc()
        self._count(done.usage)
        self._metrics.duration_success.observe(done.latency)
        if self._recording:
            span = self._span
            span.set_attributes(_result(done.served_model, done.finish_reason.value, done.usage))
            span.set_attributes({"orx.outcome": "success", "orx.attempts": done.attempts, "orx.origin": "upstream"})
            if done.generation_id:
                span.set_attribute("gen_ai.response.id", done.generation_id)
            span.end()
        return done

    def failed(self, failure: FailedT) -> FailedT:
        """Account for the call's failure; returns it (to be raised)."""
        if self._done:
            return failure
        self._done = True
        outcome = failure.outcome
        metrics.calls(self._model_id, self._purpose, outcome).inc()
        self._count(failure.usage)
        self._metrics.duration_failure.observe(failure.latency)
        if self._recording:
            span = self._span
            span.set_attributes(_usage(failure.usage))
            span.set_attributes(
                {
                    "orx.outcome": outcome,
                    "error.type": outcome,
                    "orx.attempts": failure.attempts,
                    "orx.origin": str(failure.origin),
                }
            )
            span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()
        return failure

    def cancelled(self, usage: TokenUsage | None, latency: float) -> None:
        """The caller left (cancelled, or closed the stream early) after ``latency`` seconds; ``usage`` is what
        the call is estimated to have billed."""
        self._left("cancelled", usage, latency)

    def crashed(self, usage: TokenUsage | None, latency: float) -> None:
        """The call ended with an unexpected exception (a bug): counted as ``internal``."""
        self._left("internal", usage, latency)

    def _left(self, outcome: str, usage: TokenUsage | None, latency: float) -> None:
        if self._done:
            return
        self._done = True
        metrics.calls(self._model_id, self._purpose, outcome).inc()
        if usage is not None:
            self._count(usage)
        if outcome == "cancelled":
            self._metrics.duration_cancelled.observe(latency)
        else:
            self._metrics.duration_failure.observe(latency)
        if self._attempt_open:
            metrics.attempts(self._model_id, outcome).inc()
            if self._attempt is not None:
                self._attempt.set_attribute("orx.outcome", outcome)
                if outcome != "cancelled":
                    self._attempt.set_status(Status(StatusCode.ERROR, outcome))
            self._end_attempt()
        if self._recording:
            if usage is not None:
                self._span.set_attributes(_usage(usage))
            self._span.set_attribute("orx.outcome", outcome)
            if outcome != "cancelled":
                self._span.set_attributes({"error.type": outcome})
                self._span.set_status(Status(StatusCode.ERROR, outcome))
            self._span.end()

    def _count(self, usage: TokenUsage) -> None:
        bound = self._metrics
        bound.prompt_tokens.inc(usage.prompt_tokens)
        bound.completion_tokens.inc(usage.completion_tokens)
        if usage.reasoning_tokens:
            bound.reasoning_tokens.inc(usage.reasoning_tokens)
        if usage.cached_tokens:
            bound.cached_tokens.inc(usage.cached_tokens)
        if usage.cost_usd:
            bound.cost.inc(usage.cost_usd)


def _usage(usage: TokenUsage) -> dict[str, int | float]:
    return {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "orx.cost_usd": usage.cost_usd or 0.0,
    }


def _result(served_model: str, finish_reason: str, usage: TokenUsage) -> dict[str, str | int | float | tuple[str]]:
    return {
        "gen_ai.response.model": served_model,
        "gen_ai.response.finish_reasons": (finish_reason,),
        "orx.finish_reason": finish_reason,
        **_usage(usage),
    }
