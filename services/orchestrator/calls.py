"""A session's provider calls and what each one cost.

:class:`Caller` makes them, each with the session's deadline: ``Generate`` for critics and shadow answers
(nothing to stream to the client), ``StreamGenerate`` for the author, whose text reaches the client as
coalesced ``response_delta`` events and whose requests carry the caller's ``author_options`` (sampling,
stop sequences, end-user id, output format, and ``max_tokens`` within the model's ceiling). A finished
call returns a :class:`CallResult`; a failed one raises :class:`CallFailed` with the usage the providers
service reported (the :data:`USAGE_TRAILER` trailer, or the stream's ``failed`` event), for the caller
to account and report. A call cut short by
cancellation accounts an estimate of what it spent and reports it (a ``CALL_CANCELLED`` warning) before
the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import grpc

from orchestratex.errors import error_details
from orchestratex.usage import USAGE_TRAILER, estimate_tokens
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.catalogue import Pricing
from services.orchestrator.events import Coalescer, Emitter
from services.orchestrator.ledger import Ledger
from services.orchestrator.prompts import PromptSet

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


def failure_kind(err: grpc.aio.AioRpcError) -> common_pb2.FailureKind:
    """The kind of a failed provider call: the providers service's own word (the ``ErrorInfo`` reason),
    else read off the status."""
    reason = error_details(err).reason
    if reason is not None:
        try:
            return cast(common_pb2.FailureKind, common_pb2.FailureKind.Value(reason))
        except ValueError:
            pass
    return _STATUS_KIND.get(err.code(), common_pb2.FAILURE_KIND_UPSTREAM_ERROR)


def _trailer_usage(metadata: object) -> common_pb2.Usage:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == USAGE_TRAILER and isinstance(value, bytes):
            try:
                return common_pb2.Usage.FromString(value)
            except Exception:
                break
    return common_pb2.Usage()


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


class Caller:
    """Makes one session's provider calls (every one ends before the session's deadline)."""

    def __init__(
        self,
        *,
        providers: providers_pb2_grpc.ProviderServiceStub,
        prompts: PromptSet,
        pricing: Pricing,
        ledger: Ledger,
        events: Emitter,
        session_id: str,
        domain: common_pb2.Domain,
        deadline: float,
    ) -> None:
        self.providers = providers
        self.prompts = prompts
        self.pricing = pricing
        self.ledger = ledger
        self.events = events
        self.session_id = session_id
        self.domain = domain
        #: ``time.monotonic()`` by which every call must have ended.
        self.deadline = deadline

    def _request(
        self,
        model: str,
        messages: Sequence[common_pb2.ChatMessage],
        purpose: common_pb2.CallPurpose,
        options: pb.AuthorOptions | None = None,
    ) -> providers_pb2.GenerateRequest:
        critique = purpose == common_pb2.CALL_PURPOSE_CRITIQUE
        request = providers_pb2.GenerateRequest(
            model=model,
            messages=messages,
            max_tokens=self.pricing.max_tokens(model, CRITIQUE_MAX_TOKENS if critique else ANSWER_MAX_TOKENS),
            context=providers_pb2.CallContext(purpose=purpose, session_id=self.session_id, domain=self.domain),
        )
        if critique:
            request.response_format.CopyFrom(self._critique_format(model))
        if options is not None:
            _apply(request, options, self.pricing.max_tokens(model, options.max_tokens))
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

    def _timeout(self) -> float:
        return max(0.001, self.deadline - time.monotonic())

    async def unary(
        self,
        model: str,
        messages: Sequence[common_pb2.ChatMessage],
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
        call = self.providers.Generate(self._request(model, messages, purpose), timeout=self._timeout())
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

    async def stream(
        self,
        model: str,
        messages: Sequence[common_pb2.ChatMessage],
        purpose: common_pb2.CallPurpose,
        round_no: int,
        options: pb.AuthorOptions | None = None,
    ) -> CallResult:
        """One StreamGenerate call, its text streamed to the client as coalesced deltas; ``options``
        are the caller's settings for an author's call.

        Raises CallFailed (with usage) or CancelledError (after recording the estimated usage).
        """
        request = self._request(model, messages, purpose, options)
        started = time.monotonic()
        ttft: float | None = None
        parts: list[str] = []
        coalescer = Coalescer(lambda text: self.events.response_delta(round_no, model, text))
        failure: providers_pb2.StreamFailure | None = None
        completed: providers_pb2.GenerateResponse | None = None
        call = self.providers.StreamGenerate(
            providers_pb2.StreamGenerateRequest(request=request), timeout=self._timeout()
        )
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
        messages: Sequence[common_pb2.ChatMessage],
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
        self.ledger.account(model, usage, shadow=shadow)
        self.events.call_warning(
            pb.WARNING_CODE_CALL_CANCELLED,
            f"call to {model} cancelled; usage estimated from {completion_tokens} tokens received",
            round_no=round_no,
            model=model,
            failure_kind=common_pb2.FAILURE_KIND_CANCELLED,
            usage=usage,
            latency=latency,
            purpose=purpose,
        )


def _apply(request: providers_pb2.GenerateRequest, options: pb.AuthorOptions, max_tokens: int) -> None:
    """The caller's settings on an author's request; ``max_tokens`` is theirs within the model's ceiling."""
    if options.max_tokens:
        request.max_tokens = max_tokens
    if options.HasField("temperature"):
        request.temperature = options.temperature
    if options.HasField("top_p"):
        request.top_p = options.top_p
    if options.HasField("seed"):
        request.seed = options.seed
    request.stop_sequences.extend(options.stop_sequences)
    request.end_user = options.end_user
    request.response_format.CopyFrom(options.response_format)
