"""ProviderService: ListModels, Generate and StreamGenerate over a :class:`Backend`.

Only the simulator backend exists for now; with ``settings.simulated`` False the service still serves
the simulator, says so in a warning, and keeps labelling everything ``simulated=true``.

Error contract (field paths are relative to the RPC's request message, see ``validate``):

* bad input -> INVALID_ARGUMENT naming the field; unknown model -> NOT_FOUND listing valid ids;
* failure before the first token -> RESOURCE_EXHAUSTED (rate limit; trailing metadata
  ``retry-after`` = seconds), UNAVAILABLE (upstream error) or DEADLINE_EXCEEDED (timeout);
* failure after tokens (StreamGenerate) -> a ``failed`` event (MID_STREAM_ERROR, usage of what was
  streamed, partial text), then the RPC ends with UNAVAILABLE. Generate ends with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2

from orchestratex.config import Settings
from orchestratex.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    OrxError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers import catalogue as cat
from services.providers.backend import Backend, FailureKind, FinishReason, TextDelta, TokenUsage
from services.providers.generation import CallFailed, Completion, generate
from services.providers.simulator import Simulator
from services.providers.validate import parse_generate_request

log = logging.getLogger(__name__)

SERVICE_NAME = "orchestratex.v1.ProviderService"
RETRY_AFTER_METADATA = "retry-after"
"""Trailing metadata key carrying the vendor's retry-after, in seconds, on RESOURCE_EXHAUSTED."""

_FINISH = {
    FinishReason.STOP: providers_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: providers_pb2.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: providers_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: providers_pb2.FINISH_REASON_ERROR,
}
_FAILURE_KIND = {
    FailureKind.RATE_LIMITED: common_pb2.FAILURE_KIND_RATE_LIMITED,
    FailureKind.UPSTREAM_ERROR: common_pb2.FAILURE_KIND_UPSTREAM_ERROR,
    FailureKind.TIMEOUT: common_pb2.FAILURE_KIND_TIMEOUT,
    FailureKind.MID_STREAM_ERROR: common_pb2.FAILURE_KIND_MID_STREAM_ERROR,
    FailureKind.INVALID_OUTPUT: common_pb2.FAILURE_KIND_INVALID_OUTPUT,
    FailureKind.INVALID_REQUEST: common_pb2.FAILURE_KIND_INVALID_REQUEST,
    FailureKind.REFUSED: common_pb2.FAILURE_KIND_REFUSED,
}


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    """The gRPC face of the catalogue and the backend."""

    def __init__(self, catalogue: cat.Catalogue, backend: Backend, max_prompt_chars: int) -> None:
        self._catalogue = catalogue
        self._backend = backend
        self._max_prompt_chars = max_prompt_chars

    async def ListModels(
        self, request: providers_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.ListModelsResponse:
        """The catalogue; every model healthy until a circuit breaker exists."""
        health = common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED)
        models = []
        for model in self._catalogue:
            timing = self._backend.timing(model)
            models.append(
                cat.to_proto(
                    model,
                    health,
                    self._backend.simulated,
                    ttft_ms=timing.ttft_seconds * 1000,
                    tokens_per_second=timing.tokens_per_second,
                )
            )
        return providers_pb2.ListModelsResponse(models=models, simulated=self._backend.simulated)

    async def Generate(
        self, request: providers_pb2.GenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.GenerateResponse:
        """The same pipeline as StreamGenerate, collected."""
        parsed = parse_generate_request(request, self._catalogue, max_prompt_chars=self._max_prompt_chars)
        try:
            async for event in generate(self._backend, parsed):
                if isinstance(event, Completion):
                    return _completion(event)
        except CallFailed as failure:
            raise _status(failure, context) from None
        raise Unavailable(f"{parsed.model.id}: no result")  # pragma: no cover - generate always ends or raises

    async def StreamGenerate(
        self, request: providers_pb2.StreamGenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        """Deltas, then one ``completed`` — or a ``failed`` event then UNAVAILABLE after a mid-stream error."""
        parsed = parse_generate_request(
            request.request, self._catalogue, max_prompt_chars=self._max_prompt_chars, prefix="request."
        )
        sequence = 0
        try:
            async for event in generate(self._backend, parsed):
                sequence += 1
                if isinstance(event, TextDelta):
                    delta = providers_pb2.StreamDelta(text=event.text, reasoning=event.reasoning)
                    yield providers_pb2.StreamGenerateResponse(sequence=sequence, delta=delta)
                else:
                    yield providers_pb2.StreamGenerateResponse(sequence=sequence, completed=_completion(event))
        except CallFailed as failure:
            if failure.streamed:
                yield providers_pb2.StreamGenerateResponse(sequence=sequence + 1, failed=_failed(failure))
            raise _status(failure, context) from None
        except asyncio.CancelledError:
            # The caller went away: `generate` has already closed the backend stream on its way out.
            log.info("stream for %s cancelled by the caller after %d events", parsed.model.id, sequence)
            raise


def _status(failure: CallFailed, context: grpc.aio.ServicerContext[Any, Any]) -> OrxError:
    """The status a failure ends the RPC with (mid-stream failures are always UNAVAILABLE)."""
    log.warning("provider call failed (%s): %s", failure.kind.value, failure.message)
    if failure.streamed or failure.kind in (FailureKind.UPSTREAM_ERROR, FailureKind.MID_STREAM_ERROR):
        return Unavailable(failure.message)
    if failure.kind is FailureKind.RATE_LIMITED:
        if failure.retry_after is not None:
            context.set_trailing_metadata(((RETRY_AFTER_METADATA, f"{failure.retry_after:.3f}"),))
            return ResourceExhausted(f"{failure.message}; retry after {failure.retry_after:.3g}s", failure.retry_after)
        return ResourceExhausted(failure.message)
    if failure.kind is FailureKind.TIMEOUT:
        return DeadlineExceeded(failure.message)
    if failure.kind is FailureKind.REFUSED:
        return PermissionDenied(failure.message)
    if failure.kind is FailureKind.INVALID_REQUEST:
        return FailedPrecondition(failure.message)
    return Unavailable(failure.message)


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _usage(usage: TokenUsage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cached_tokens=usage.cached_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        cost_usd=usage.cost_usd or 0.0,
    )


def _completion(done: Completion) -> providers_pb2.GenerateResponse:
    return providers_pb2.GenerateResponse(
        text=done.text,
        reasoning=done.reasoning,
        served_model=done.served_model,
        requested_model=done.requested_model,
        finish_reason=_FINISH[done.finish_reason],
        usage=_usage(done.usage),
        generation_id=done.generation_id,
        simulated=done.simulated,
        time_to_first_token=_duration(done.time_to_first_token),
        latency=_duration(done.latency),
        attempts=done.attempts,
    )


def _failed(failure: CallFailed) -> providers_pb2.StreamFailure:
    return providers_pb2.StreamFailure(
        kind=_FAILURE_KIND[failure.kind] if not failure.streamed else common_pb2.FAILURE_KIND_MID_STREAM_ERROR,
        message=failure.message,
        usage=_usage(failure.usage),
        partial_text=failure.partial_text,
        retry_after=_duration(failure.retry_after),
        time_to_first_token=_duration(failure.time_to_first_token),
        latency=_duration(failure.latency),
        attempts=failure.attempts,
    )


async def build(settings: Settings, listen: str | None = None, *, backend: Backend | None = None) -> GrpcServer:
    """The ProviderService server (not started). ``backend`` defaults to the simulator from settings."""
    catalogue = cat.load_catalogue(settings)
    if backend is None:
        if not settings.simulated:
            log.warning(
                "live provider mode requested but the OpenRouter backend is not available yet; "
                "serving the simulator (all answers are labelled simulated)"
            )
        backend = Simulator.from_settings(settings, catalogue)
    servicer = ProviderServicer(catalogue, backend, settings.max_prompt_chars)
    srv = create_server(
        [ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, servicer, SERVICE_NAME)],
        listen or str(settings.listen["providers"]),
        settings.max_message_bytes,
    )
    srv.on_stop.append(backend.aclose)
    log.info("providers: %d models, backend %s", len(catalogue), backend.name)
    return srv
