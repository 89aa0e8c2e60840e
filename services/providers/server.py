"""ProviderService: ListModels, Generate and StreamGenerate over a :class:`Backend`.

The backend is the simulator when ``settings.providers.simulated`` (everything labelled ``simulated=true``),
otherwise :class:`OpenRouterBackend` (OpenRouter and any OpenAI-compatible endpoint of the catalogue).

Error contract (field paths are relative to the RPC's request message, see ``validate``):

* bad input -> INVALID_ARGUMENT naming the field; unknown model -> NOT_FOUND listing valid ids;
* failure before the first token, by what the provider said:
  400 / 413 / 422 -> INVALID_ARGUMENT (a context-length error names ``messages`` and the token counts),
  401 -> UNAUTHENTICATED (kind AUTH: the provider rejected OUR key — this service has no caller
  authentication, so it can mean nothing else), 402 -> FAILED_PRECONDITION (kind CREDITS: no retry
  helps until the account is topped up), 403 -> PERMISSION_DENIED (kind REFUSED, with the moderation
  reasons), 404 / unknown model upstream -> NOT_FOUND listing valid ids,
  429 -> RESOURCE_EXHAUSTED (``RetryInfo`` = the vendor's Retry-After, when known),
  5xx / connection errors / invalid replies -> UNAVAILABLE, timeouts (and 408) -> DEADLINE_EXCEEDED;
* refused here without calling the vendor: an open circuit -> UNAVAILABLE; the client-side rate limit
  -> RESOURCE_EXHAUSTED; a model held for the vendor's Retry-After window -> RESOURCE_EXHAUSTED (429) or
  UNAVAILABLE (503); every model of a provider whose key was rejected -> UNAUTHENTICATED (see
  ``resilience.policy``); RESOURCE_EXHAUSTED and UNAVAILABLE carry ``RetryInfo`` = the time left;
* failure after tokens (StreamGenerate) -> a ``failed`` event (MID_STREAM_ERROR, usage of what was
  streamed, partial text), then the RPC ends with UNAVAILABLE. Generate ends with UNAVAILABLE.

Every failed call carries an ``ErrorInfo`` detail whose ``reason`` is the ``FailureKind`` enum name
(``FAILURE_KIND_AUTH``, ``FAILURE_KIND_CREDITS``, ``FAILURE_KIND_CIRCUIT_OPEN``...), so a caller need not
infer the kind from the status code, with the ``model`` and the failure's ``origin`` in its metadata; and
the trailer ``orx-usage-bin`` (:data:`orchestratex.usage.USAGE_TRAILER`): the ``Usage`` the call spent.
The details are set by the server interceptor from the exception (``orchestratex.errors``).

Observability: every call is counted in the ``orx_provider_*`` metrics and traced as ``providers.generate``
with a ``providers.attempt`` per upstream request (``metrics``, ``telemetry``).

Every message built from what a vendor sent is scrubbed of every provider key the service holds, in
any form (``orchestratex.secrets``), before it reaches a status, an event, a trailer or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2
from opentelemetry.trace import Tracer

from orchestratex.config import Secret, Settings
from orchestratex.errors import (
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OrxError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from orchestratex.grpc_server import GrpcServer, ServiceBinding, building
from orchestratex.logging import register_secret
from orchestratex.secrets import SecretScrubber
from orchestratex.usage import USAGE_TRAILER
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers import catalogue as cat
from services.providers import peers
from services.providers.backend import (
    Backend,
    ErrorCategory,
    FailureKind,
    FinishReason,
    TextDelta,
    TokenUsage,
)
from services.providers.coalesce import Coalesced
from services.providers.generation import CallFailed, Completion, generate
from services.providers.openrouter import OPENROUTER_KEY_ENV, OpenRouterBackend, OpenRouterConfig, resolve_keys
from services.providers.resilience import CircuitState, HealthSnapshot, Origin, Resilience
from services.providers.simulator import Simulator
from services.providers.validate import parse_generate_request

log = logging.getLogger(__name__)

SERVICE_NAME = "orchestratex.v1.ProviderService"

_FINISH = {
    FinishReason.STOP: providers_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: providers_pb2.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: providers_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: providers_pb2.FINISH_REASON_ERROR,
}
_CIRCUIT = {
    CircuitState.CLOSED: common_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: common_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: common_pb2.CIRCUIT_STATE_HALF_OPEN,
}
_FAILURE_KIND = {
    FailureKind.RATE_LIMITED: common_pb2.FAILURE_KIND_RATE_LIMITED,
    FailureKind.UPSTREAM_ERROR: common_pb2.FAILURE_KIND_UPSTREAM_ERROR,
    FailureKind.TIMEOUT: common_pb2.FAILURE_KIND_TIMEOUT,
    FailureKind.MID_STREAM_ERROR: common_pb2.FAILURE_KIND_MID_STREAM_ERROR,
    FailureKind.INVALID_OUTPUT: common_pb2.FAILURE_KIND_INVALID_OUTPUT,
    FailureKind.INVALID_REQUEST: common_pb2.FAILURE_KIND_INVALID_REQUEST,
    FailureKind.REFUSED: common_pb2.FAILURE_KIND_REFUSED,
    FailureKind.AUTH: common_pb2.FAILURE_KIND_AUTH,
    FailureKind.CREDITS: common_pb2.FAILURE_KIND_CREDITS,
}


class ProviderServicer(providers_pb2_grpc.ProviderServiceServicer):
    """The gRPC face of the catalogue and the backend."""

    def __init__(
        self,
        catalogue: cat.Catalogue,
        backend: Backend,
        max_prompt_chars: int,
        policy: Resilience,
        secrets: SecretScrubber | None = None,
        tracer: Tracer | None = None,
        flush_window: float = 0.0,
        flush_chars: int = 4096,
    ) -> None:
        self._flush_window = flush_window
        self._flush_chars = flush_chars
        self._catalogue = catalogue
        self._backend = backend
        self._max_prompt_chars = max_prompt_chars
        self._policy = policy
        self._secrets = secrets or SecretScrubber(())
        self._tracer = tracer

    async def ListModels(
        self, request: providers_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> providers_pb2.ListModelsResponse:
        """The catalogue with live health (circuit state, cooldown, in-flight calls, why a model is unavailable).

        Models whose circuit is open — or that are held for a vendor's Retry-After window, or because
        their provider rejected the API key (shown as OPEN, with the time left as cooldown) — are left
        out unless ``include_unavailable`` is set.
        """
        models = []
        for model in self._catalogue:
            health = _health(self._policy.health(model.id, model.provider))
            if health.circuit_state == common_pb2.CIRCUIT_STATE_OPEN and not request.include_unavailable:
                continue
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
        deadline = self._policy.deadline_after(context.time_remaining())
        try:
            async with contextlib.aclosing(
                generate(self._backend, parsed, policy=self._policy, deadline=deadline, tracer=self._tracer)
            ) as events:
                async for event in events:
                    if isinstance(event, Completion):
                        return _completion(event)
        except CallFailed as failure:
            raise _fail(self._scrubbed(failure), context, parsed.model.id, "") from None
        raise Unavailable(f"{parsed.model.id}: no result")  # pragma: no cover - generate always ends or raises

    async def StreamGenerate(
        self, request: providers_pb2.StreamGenerateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        """Deltas, then one ``completed`` — or a ``failed`` event then UNAVAILABLE after a mid-stream error.

        Deltas are coalesced (:mod:`services.providers.coalesce`): the first goes out at once, the rest at most
        one message per ``ORX_PROVIDER_STREAM_FLUSH_MS``."""
        parsed = parse_generate_request(
            request.request, self._catalogue, max_prompt_chars=self._max_prompt_chars, prefix="request."
        )
        sequence = 0
        deadline = self._policy.deadline_after(context.time_remaining())
        events = Coalesced(
            generate(self._backend, parsed, policy=self._policy, deadline=deadline, tracer=self._tracer),
            window=self._flush_window,
            max_chars=self._flush_chars,
        )
        try:
            async for batch in events:
                sequence += 1
                if isinstance(batch, TextDelta):
                    delta = providers_pb2.StreamDelta(text=batch.text, reasoning=batch.reasoning)
                    yield providers_pb2.StreamGenerateResponse(sequence=sequence, delta=delta)
                else:
                    yield providers_pb2.StreamGenerateResponse(sequence=sequence, completed=_completion(batch))
        except CallFailed as failure:
            failure = self._scrubbed(failure)
            if failure.streamed:
                yield providers_pb2.StreamGenerateResponse(sequence=sequence + 1, failed=_failed(failure))
            raise _fail(failure, context, parsed.model.id, "request.") from None
        except asyncio.CancelledError:
            log.info("stream for %s cancelled by the caller after %d events", parsed.model.id, sequence)
            raise
        finally:
            # Stops the reader task, which closes the upstream stream and frees the rate-limit slot.
            await events.aclose()

    def _scrubbed(self, failure: CallFailed) -> CallFailed:
        """``failure`` with its message scrubbed of every provider key (a second net behind the backend's)."""
        failure.message = self._secrets.scrub(failure.message)
        return failure


def _health(snapshot: HealthSnapshot) -> common_pb2.ModelHealth:
    reason = common_pb2.FAILURE_KIND_UNSPECIFIED
    if snapshot.held is not None:
        reason = _FAILURE_KIND[snapshot.held]
    elif snapshot.state is CircuitState.OPEN:
        reason = common_pb2.FAILURE_KIND_CIRCUIT_OPEN
    return common_pb2.ModelHealth(
        circuit_state=_CIRCUIT[snapshot.state],
        consecutive_failures=snapshot.consecutive_failures,
        cooldown_remaining=_duration(snapshot.cooldown_remaining),
        in_flight=snapshot.in_flight,
        unavailable_reason=reason,
    )


def _kind(failure: CallFailed) -> common_pb2.FailureKind:
    """The ``FailureKind`` a failure is reported with (``ErrorInfo.reason``, ``StreamFailure.kind``)."""
    if failure.streamed:
        return common_pb2.FAILURE_KIND_MID_STREAM_ERROR
    if failure.origin is Origin.CIRCUIT_OPEN:
        return common_pb2.FAILURE_KIND_CIRCUIT_OPEN
    return _FAILURE_KIND[failure.kind]


def _fail(failure: CallFailed, context: grpc.aio.ServicerContext[Any, Any], model: str, prefix: str) -> OrxError:
    """The error to end the RPC with: its details name the failure kind (``ErrorInfo``) and any wait
    (``RetryInfo``); the usage trailer carries what the call spent."""
    context.set_trailing_metadata(((USAGE_TRAILER, _usage(failure.usage).SerializeToString()),))
    error = _status(failure, prefix)
    error.reason = common_pb2.FailureKind.Name(_kind(failure))
    error.metadata = {"model": model, "origin": failure.origin.value}
    if isinstance(error, ResourceExhausted | Unavailable) and failure.retry_after is not None:
        error.retry_after = failure.retry_after
    return error


def _status(failure: CallFailed, prefix: str) -> OrxError:
    """The status a failure ends the RPC with (mid-stream failures are always UNAVAILABLE).

    ``prefix`` is prepended to field names (``request.`` for StreamGenerate). Calls refused here (open
    circuit, client-side rate limit) carry no backend error and are mapped by their kind.
    """
    log.warning("provider call failed (%s): %s", failure.kind.value, failure.message)
    if failure.streamed or failure.kind is FailureKind.MID_STREAM_ERROR:
        return Unavailable(failure.message)
    if failure.origin is Origin.CIRCUIT_OPEN:
        return Unavailable(failure.message)
    error = failure.error
    category = error.category if error is not None else None
    if category is ErrorCategory.BAD_REQUEST:
        # Without a field to blame, name the whole request (``request`` in both RPCs).
        field = prefix + error.field if error is not None and error.field else prefix.rstrip(".") or "request"
        return InvalidArgument(field, failure.message)
    if category is ErrorCategory.UNAUTHENTICATED:
        return Unauthenticated(failure.message)
    if category is ErrorCategory.INSUFFICIENT_CREDITS:
        return FailedPrecondition(failure.message)
    if category is ErrorCategory.FORBIDDEN:
        return PermissionDenied(failure.message)
    if category is ErrorCategory.NOT_FOUND:
        return NotFound(failure.message)
    if category is ErrorCategory.TIMEOUT:
        return DeadlineExceeded(failure.message)
    if category is ErrorCategory.UNAVAILABLE:
        return Unavailable(failure.message)
    # No category (the simulator) or RATE_LIMITED: decide by the failure kind.
    if failure.kind is FailureKind.RATE_LIMITED:
        if failure.retry_after is not None:
            return ResourceExhausted(f"{failure.message}; retry after {failure.retry_after:.3g}s", failure.retry_after)
        return ResourceExhausted(failure.message)
    if failure.kind is FailureKind.TIMEOUT:
        return DeadlineExceeded(failure.message)
    if failure.kind is FailureKind.REFUSED:
        return PermissionDenied(failure.message)
    if failure.kind is FailureKind.AUTH:
        return Unauthenticated(failure.message)
    if failure.kind is FailureKind.CREDITS:
        return FailedPrecondition(failure.message)
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
        kind=_kind(failure),
        message=failure.message,
        usage=_usage(failure.usage),
        partial_text=failure.partial_text,
        retry_after=_duration(failure.retry_after),
        time_to_first_token=_duration(failure.time_to_first_token),
        latency=_duration(failure.latency),
        attempts=failure.attempts,
    )


async def build(
    settings: Settings,
    listen: str | None = None,
    *,
    backend: Backend | None = None,
    resilience: Resilience | None = None,
    tracer: Tracer | None = None,
) -> GrpcServer:
    """The ProviderService server (not started).

    ``backend`` defaults to the simulator when ``settings.providers.simulated``, else to :class:`OpenRouterBackend`
    (keys from the settings and the providers' ``api_key_env`` variables, timeouts from ``settings.providers``).
    ``tracer`` records the calls' spans; it defaults to the global tracer provider's (see ``telemetry``).
    Raises :class:`ConfigError` when live mode lacks the OpenRouter key.
    """
    common, own = settings.common, settings.providers
    async with building(
        listen or str(common.listen["providers"]), common.max_message_bytes, common.reuse_port("providers")
    ) as (srv, resources):
        catalogue = cat.load_catalogue(settings)
        keys = resolve_keys(settings, catalogue)
        secrets = [own.openrouter_api_key.get(), *(key.get() for key in keys.values())]
        for secret in secrets:
            register_secret(secret)
        if backend is None:
            backend = (
                Simulator.from_settings(settings, catalogue)
                if own.simulated
                else _live_backend(settings, catalogue, keys)
            )
        resources.push_async_callback(backend.aclose)
        # Several workers share the per-model limits: each enforces its share (ResilienceSettings.per_worker), and
        # with ORX_PROVIDER_PEERS that share is divided again by the providers pods counted in DNS.
        policy = resilience or Resilience.from_settings(own.resilience.per_worker(common.workers_of("providers")))
        if own.resilience.peers:
            peer_count = peers.PeerCount(
                own.resilience.peers,
                policy.share_among,
                interval=own.resilience.peers_interval,
                resolve=peers.resolve_addresses,
            )
            await peer_count.refresh()
            peer_count.start()
            resources.push_async_callback(peer_count.close)
        servicer = ProviderServicer(
            catalogue,
            backend,
            common.max_prompt_chars,
            policy,
            SecretScrubber(secrets),
            tracer=tracer,
            flush_window=own.stream_flush,
            flush_chars=own.stream_flush_chars,
        )
        srv.add(ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, servicer, SERVICE_NAME))
        log.info("providers: %d models, backend %s", len(catalogue), backend.name)
    return srv


def _live_backend(settings: Settings, catalogue: cat.Catalogue, keys: dict[str, Secret]) -> OpenRouterBackend:
    for name, key in keys.items():
        spec = catalogue.providers[name]
        if key:
            continue
        if spec.api_key_env == OPENROUTER_KEY_ENV:
            raise ConfigError(
                f"{OPENROUTER_KEY_ENV}: required for live models (provider {name!r}); set it or "
                "ORX_OPENROUTER_API_KEY_FILE, or use ORX_PROVIDER_MODE=simulated"
            )
        log.info("provider %s: %s is not set; calling %s without a key", name, spec.api_key_env, spec.base_url)
    return OpenRouterBackend(catalogue, keys, OpenRouterConfig.from_settings(settings.providers))
