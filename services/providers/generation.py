"""One generation call over any :class:`Backend`: timing, text accumulation, usage and cost.

gRPC-free: the servicer turns :class:`Completion` and :class:`CallFailed` into protobuf and status
codes. Closing or cancelling :func:`generate` closes the backend stream, which stops the upstream work.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

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
    estimate_tokens,
)
from services.providers.catalogue import ModelSpec, cost_usd


@dataclass(frozen=True)
class Completion:
    """A successful call. ``usage.cost_usd`` is always set."""

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
    """A failed call, with what it cost. ``streamed`` tells whether any text reached the caller."""

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

    @property
    def streamed(self) -> bool:
        """True when deltas were already delivered (a mid-stream failure)."""
        return self.time_to_first_token is not None


async def generate(
    backend: Backend,
    request: GenerationRequest,
    clock: Callable[[], float] = time.perf_counter,
) -> AsyncIterator[TextDelta | Completion]:
    """Yield the backend's deltas, then one :class:`Completion`; raise :class:`CallFailed` on failure."""
    start = clock()
    ttft: float | None = None
    text: list[str] = []
    reasoning: list[str] = []
    end: StreamEnd | None = None
    try:
        # aclosing: however this generator ends (done, error, cancelled, closed by its consumer),
        # the backend stream is closed right away, not whenever it is garbage collected.
        async with contextlib.aclosing(backend.stream(request)) as events:
            async for event in events:
                if isinstance(event, StreamEnd):
                    end = event
                    break
                if ttft is None:
                    ttft = clock() - start
                text.append(event.text)
                reasoning.append(event.reasoning)
                yield event
        if end is None:
            raise BackendError(FailureKind.UPSTREAM_ERROR, f"{request.model.id}: stream ended without a result")
    except BackendError as exc:
        partial = "".join(text)
        usage = exc.usage
        if usage is None:
            # A failure before any token bills nothing; after tokens, count what was streamed.
            usage = _estimate(request, partial) if partial else TokenUsage(0, 0)
        raise CallFailed(
            exc.kind,
            exc.message,
            usage=_priced(request.model, usage),
            partial_text=partial,
            retry_after=exc.retry_after,
            time_to_first_token=ttft,
            latency=clock() - start,
        ) from None
    full = "".join(text)
    yield Completion(
        text=full,
        reasoning="".join(reasoning),
        served_model=end.served_model or request.model.id,
        requested_model=request.model.id,
        finish_reason=end.finish_reason,
        usage=_priced(request.model, end.usage or _estimate(request, full)),
        generation_id=end.generation_id,
        simulated=backend.simulated,
        time_to_first_token=ttft,
        latency=clock() - start,
    )


def _estimate(request: GenerationRequest, completion: str) -> TokenUsage:
    return TokenUsage(estimate_prompt_tokens([m.content for m in request.messages]), estimate_tokens(completion))


def _priced(model: ModelSpec, usage: TokenUsage) -> TokenUsage:
    """Fill in the cost from catalogue prices unless the vendor reported it."""
    if usage.cost_usd is not None:
        return usage
    return replace(usage, cost_usd=cost_usd(model, usage.prompt_tokens, usage.completion_tokens))
