"""One generation call over any :class:`Backend`: retries, limits, timing, text, usage and cost.

gRPC-free: the servicer turns :class:`Completion` and :class:`CallFailed` into protobuf and status
codes. Closing or cancelling :func:`generate` closes the backend stream, which stops the upstream
work, releases the model's rate-limiter slot and leaves its circuit breaker untouched.

With a :class:`~services.providers.resilience.Resilience` policy every attempt passes the holds on
the model and its provider, the model's circuit breaker and its rate limiter; failures before the
first token are retried as the policy says, and what they say beyond the call (a Retry-After window,
a rejected key) is noted (see :mod:`services.providers.resilience`). The contract seen by the caller
is the same with or without a policy: deltas of exactly one attempt, then one :class:`Completion`; or
:class:`CallFailed` carrying the usage of *every* attempt (each one that billed anything is paid for),
the partial text, the last retry-after hint, the time to first token, the latency and the attempts made.

The deadline is enforced between attempts (no retry wait ends past it, no queueing past it); a
running attempt is cut by the caller's cancellation (gRPC cancels the handler at the deadline),
which never counts against the model.

Every call is observed by a :class:`~services.providers.telemetry.CallTelemetry`: metrics (calls, attempts,
retries, tokens, cost, time to first token, duration) and the spans ``providers.generate`` and
``providers.attempt``, the attempt's span current while the backend runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

from opentelemetry.trace import Tracer

from orchestratex.usage import estimate_tokens
from services.providers.backend import (
    Backend,
    BackendError,
    FailureKind,
    FinishReason,
    GenerationRequest,
    StreamEnd,
    TextDelta,
    TokenUsage,
    estimate_prompt_tokens,
)
from services.providers.catalogue import ModelSpec, cost_usd
from services.providers.resilience import (
    SYSTEM_CLOCK,
    AttemptGuard,
    Clock,
    Origin,
    Outcome,
    Rejected,
    Resilience,
    RetryDecision,
    classify,
)
from services.providers.telemetry import CallTelemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """A successful call. ``usage`` covers every attempt; ``usage.cost_usd`` is always set."""

    text: str
    reasoning: str
    served_model: str
    requested_model: str
    finish_reason: FinishReason
    usage: TokenUsage
    generation_id: str
    simulated: bool
    time_to_first_token: float | None
    latency: float
    attempts: int = 1


class CallFailed(Exception):
    """A failed call, with what it cost. ``streamed`` tells whether any text reached the caller.

    ``attempts`` counts upstream requests made (0 when the breaker or the client-side limit refused
    the call before any); ``origin`` says whether the provider failed it or this service refused it;
    ``error`` is the backend's last error when the provider failed it.
    """

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        usage: TokenUsage,
        partial_text: str,
        retry_after: float | None,
        time_to_first_token: float | None,
        latency: float,
        attempts: int = 1,
        origin: Origin = Origin.UPSTREAM,
        error: BackendError | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.usage = usage
        self.partial_text = partial_text
        self.retry_after = retry_after
        self.time_to_first_token = time_to_first_token
        self.latency = latency
        self.attempts = attempts
        self.origin = origin
        self.error = error
        """The backend's last error (HTTP status, category, field), when the provider failed the call."""

    @property
    def streamed(self) -> bool:
        """True when deltas were already delivered (a mid-stream failure)."""
        return self.time_to_first_token is not None

    @property
    def outcome(self) -> str:
        """The failure kind the caller is told, as a label: ``mid_stream_error`` once deltas were delivered,
        ``circuit_open`` when the breaker refused the call, else the :class:`FailureKind` value."""
        if self.streamed:
            return FailureKind.MID_STREAM_ERROR.value
        if self.origin is Origin.CIRCUIT_OPEN:
            return "circuit_open"
        return self.kind.value


_NO_RETRY = RetryDecision(False)


async def generate(
    backend: Backend,
    request: GenerationRequest,
    *,
    policy: Resilience | None = None,
    deadline: float | None = None,
    clock: Clock | None = None,
    tracer: Tracer | None = None,
) -> AsyncGenerator[TextDelta | Completion, None]:
    """Yield the backend's deltas, then one :class:`Completion`; raise :class:`CallFailed` on failure.

    ``policy`` None means one attempt with no limits and no breaker. ``deadline`` is an absolute time
    on the clock (``policy.deadline_after(context.time_remaining())``). ``clock`` defaults to the
    policy's clock (else the system clock) and times TTFT and latency. ``tracer`` defaults to
    :data:`services.providers.telemetry.TRACER` (the global tracer provider's).
    """
    if clock is None:
        clock = policy.clock if policy is not None else SYSTEM_CLOCK
    model = request.model
    start = clock.now()
    ttft: float | None = None
    text: list[str] = []
    reasoning: list[str] = []
    billed: TokenUsage | None = None  # usage of failed attempts so far
    left: TokenUsage | None = None  # what the call billed by the time the caller left mid-stream (estimated)
    attempts = 0
    watch = CallTelemetry(request, simulated=backend.simulated, tracer=tracer)
    try:
        while True:
            end: StreamEnd | None = None
            failure: BackendError | None = None
            asked = clock.now()
            try:
                async with _admit(policy, model, deadline) as guard:
                    attempts += 1
                    watch.attempt_started(attempts, clock.now() - asked)
                    try:
                        # aclosing: however this attempt ends (done, error, cancelled, closed by the consumer),
                        # the backend stream is closed right away, not whenever it is garbage collected.
                        async with contextlib.aclosing(backend.stream(request)) as events:
                            while True:
                                token = watch.enter_attempt()
                                try:
                                    event = await events.__anext__()
                                except StopAsyncIteration:
                                    break
                                finally:
                                    watch.exit_attempt(token)
                                if isinstance(event, StreamEnd):
                                    end = event
                                    break
                                if ttft is None:
                                    ttft = clock.now() - start
                                    watch.first_token(ttft)
                                text.append(event.text)
                                reasoning.append(event.reasoning)
                                try:
                                    yield event
                                except GeneratorExit:
                                    # closed by the consumer while it held this chunk
                                    left = _report_cancelled(request, "".join(text), billed)
                                    raise
                        if end is None:
                            raise BackendError(FailureKind.UPSTREAM_ERROR, f"{model.id}: stream ended without a result")
                        guard.outcome = Outcome.SUCCESS
                    except BackendError as exc:
                        failure = exc
                        guard.outcome = classify(exc, now=clock.now(), deadline=deadline)
                    except asyncio.CancelledError:
                        # the caller went away while the vendor was still sending
                        if text:
                            left = _report_cancelled(request, "".join(text), billed)
                        raise
            except Rejected as rejected:
                raise watch.failed(
                    CallFailed(
                        rejected.kind,
                        rejected.message,
                        usage=billed if billed is not None else _priced(model, TokenUsage(0, 0)),
                        partial_text="",
                        retry_after=rejected.retry_after,
                        time_to_first_token=None,
                        latency=clock.now() - start,
                        attempts=attempts,
                        origin=rejected.origin,
                    )
                ) from None
            if failure is None:
                break
            partial = "".join(text)
            usage = failure.usage
            if usage is None:
                # A failure before any token bills nothing; after tokens, count what was streamed.
                usage = _estimate(request, partial) if partial else TokenUsage(0, 0)
            priced = _priced(model, usage)
            billed = _add(billed, priced)
            streamed = ttft is not None
            decision = _NO_RETRY
            if policy is not None:
                policy.note_failure(model.id, failure, provider=model.provider, streamed=streamed)
                decision = policy.decide(failure, attempts=attempts, streamed=streamed, deadline=deadline)
            watch.attempt_failed(failure, priced, decision)
            if not decision.retry:
                raise watch.failed(
                    CallFailed(
                        failure.kind,
                        _final_message(failure.message, attempts, decision),
                        usage=billed,
                        partial_text=partial,
                        retry_after=failure.retry_after,
                        time_to_first_token=ttft,
                        latency=clock.now() - start,
                        attempts=attempts,
                        error=failure,
                    )
                ) from None
            log.info(
                "%s attempt %d failed (%s); retrying in %.3fs", model.id, attempts, failure.kind.value, decision.wait
            )
            await clock.sleep(decision.wait)
        assert end is not None  # the loop only breaks on success
        full = "".join(text)
        last = _priced(model, end.usage or _estimate(request, full, end.finish_reason))
        watch.attempt_succeeded(end, last)
        yield watch.succeeded(
            Completion(
                text=full,
                reasoning="".join(reasoning),
                served_model=end.served_model or model.id,
                requested_model=model.id,
                finish_reason=end.finish_reason,
                usage=_add(billed, last),
                generation_id=end.generation_id,
                simulated=backend.simulated,
                time_to_first_token=ttft,
                latency=clock.now() - start,
                attempts=attempts,
            )
        )
    except (asyncio.CancelledError, GeneratorExit):
        # The caller left (after a Completion, closing the generator is the normal end: a no-op here).
        watch.cancelled(left if left is not None else billed, clock.now() - start)
        raise
    except Exception:
        # CallFailed is already accounted for (a no-op here); anything else is a bug.
        watch.crashed(billed, clock.now() - start)
        raise


@contextlib.asynccontextmanager
async def _admit(policy: Resilience | None, model: ModelSpec, deadline: float | None) -> AsyncIterator[AttemptGuard]:
    if policy is None:
        yield AttemptGuard()
        return
    async with policy.admit(model.id, deadline, model.provider) as guard:
        yield guard


def _report_cancelled(request: GenerationRequest, partial: str, billed: TokenUsage | None) -> TokenUsage:
    """The caller left mid-stream: nobody can receive the usage any more, so it is logged (priced from
    the tokens streamed so far) for cost reconciliation, and returned for the metrics; the orchestrator
    records its own estimate."""
    usage = _add(billed, _priced(request.model, _estimate(request, partial)))
    log.info(
        "call to %s cancelled by the caller after %d completion tokens (about $%.6f)",
        request.model.id,
        usage.completion_tokens,
        usage.cost_usd or 0.0,
        extra={
            "model": request.model.id,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": usage.cost_usd,
            "session_id": request.session_id,
            "cancelled": True,
        },
    )
    return usage


def _final_message(message: str, attempts: int, decision: RetryDecision) -> str:
    """The last failure's message, saying how many attempts were made and why no more."""
    notes = [f"after {attempts} attempts"] if attempts > 1 else []
    if decision.reason:
        notes.append(f"not retried: {decision.reason}")
    return f"{message} ({'; '.join(notes)})" if notes else message


def _estimate(request: GenerationRequest, completion: str, finish: FinishReason | None = None) -> TokenUsage:
    """Usage for a vendor that reported none (llama-cpp-python never does in a stream): estimated from the
    text, except that a reply stopped by ``max_tokens`` used exactly ``max_tokens`` tokens."""
    prompt = estimate_prompt_tokens([m.content for m in request.messages])
    if finish is FinishReason.LENGTH:
        return TokenUsage(prompt, request.max_tokens)
    return TokenUsage(prompt, estimate_tokens(completion))


def _priced(model: ModelSpec, usage: TokenUsage) -> TokenUsage:
    """Fill in the cost from catalogue prices unless the vendor reported it."""
    if usage.cost_usd is not None:
        return usage
    return replace(usage, cost_usd=cost_usd(model, usage.prompt_tokens, usage.completion_tokens))


def _add(total: TokenUsage | None, usage: TokenUsage) -> TokenUsage:
    """Sum of two priced usages (``total`` None: just ``usage``)."""
    if total is None:
        return usage
    return TokenUsage(
        prompt_tokens=total.prompt_tokens + usage.prompt_tokens,
        completion_tokens=total.completion_tokens + usage.completion_tokens,
        reasoning_tokens=total.reasoning_tokens + usage.reasoning_tokens,
        cached_tokens=total.cached_tokens + usage.cached_tokens,
        cost_usd=(total.cost_usd or 0.0) + (usage.cost_usd or 0.0),
    )
