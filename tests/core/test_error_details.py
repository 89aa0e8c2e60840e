"""Structured error details over the real wire: each mapped exception reaches the client with its status code,
its message unchanged, and its ``google.rpc`` details (read here with grpcio-status, as any client would), and
``from_rpc_error`` relays them unchanged through a second service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from orchestratex.errors import (
    ERROR_DOMAIN,
    ErrorDetails,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OrxError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    error_details,
    from_rpc_error,
)
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.usage import USAGE_TRAILER
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc, selector_pb2, selector_pb2_grpc

SELECTOR = "orchestratex.v1.SelectorService"
PROVIDERS = "orchestratex.v1.ProviderService"

#: What the servicer raises, by prompt.
RAISED: dict[str, Exception] = {
    "field": InvalidArgument("preferences.cost_weight", "must be a finite number >= 0, got -1"),
    # A field path and a problem that both contain ": " — reading "field: problem" off the message cannot
    # recover either of them.
    "colons": InvalidArgument("metadata[note: a]", "is bad: it has a colon"),
    "no-field": NotFound("session: s-1 not found"),
    "field-not-found": NotFound("session_id: no session 's-1'", field="session_id"),
    "precondition": FailedPrecondition("session_id: session 's-1' is still running", field="session_id"),
    "denied": PermissionDenied("tenant: differs from the caller's tenant", field="tenant"),
    "rate": ResourceExhausted("z-ai/glm-4.5: rate limited; retry after 2.5s", 2.5),
    "rate-no-hint": ResourceExhausted("slow down"),
    "reason": Unavailable(
        "z-ai/glm-4.5: circuit open",
        retry_after=30.0,
        reason="FAILURE_KIND_CIRCUIT_OPEN",
        metadata={"model": "z-ai/glm-4.5", "origin": "circuit_open"},
    ),
    "crash": RuntimeError("database password is hunter2"),
}


class Raising(selector_pb2_grpc.SelectorServiceServicer):
    """Raises ``RAISED[prompt]``; sets the usage trailer first for ``rate`` (as the providers service does)."""

    async def AnalyzePrompt(self, request: Any, ctx: Any) -> selector_pb2.AnalyzePromptResponse:
        if request.prompt == "rate":
            ctx.set_trailing_metadata(((USAGE_TRAILER, common_pb2.Usage(prompt_tokens=7).SerializeToString()),))
        raise RAISED[request.prompt]


class StreamRaising(providers_pb2_grpc.ProviderServiceServicer):
    """A stream that fails after one message, with a reason and a wait."""

    async def StreamGenerate(self, request: Any, ctx: Any) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        yield providers_pb2.StreamGenerateResponse(sequence=1)
        raise ResourceExhausted("m/a: held", 1.25, reason="FAILURE_KIND_RATE_LIMITED", metadata={"model": "m/a"})


class Relaying(selector_pb2_grpc.SelectorServiceServicer):
    """Calls the raising service and relays its failure with ``from_rpc_error`` (as the orchestrator does)."""

    def __init__(self, target: str) -> None:
        self.channel = open_channel(target)
        self.stub = selector_pb2_grpc.SelectorServiceStub(self.channel)

    async def AnalyzePrompt(self, request: Any, ctx: Any) -> selector_pb2.AnalyzePromptResponse:
        try:
            response: selector_pb2.AnalyzePromptResponse = await self.stub.AnalyzePrompt(request)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "selector") from None
        return response


@dataclass
class Servers:
    raising: GrpcServer
    relaying: GrpcServer
    streaming: GrpcServer
    relay: Relaying


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    raising = create_server(
        [ServiceBinding(selector_pb2_grpc.add_SelectorServiceServicer_to_server, Raising(), SELECTOR)], "127.0.0.1:0"
    )
    await raising.start()
    relay = Relaying(f"127.0.0.1:{raising.port}")
    relaying = create_server(
        [ServiceBinding(selector_pb2_grpc.add_SelectorServiceServicer_to_server, relay, SELECTOR)], "127.0.0.1:0"
    )
    await relaying.start()
    streaming = create_server(
        [ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, StreamRaising(), PROVIDERS)],
        "127.0.0.1:0",
    )
    await streaming.start()
    yield Servers(raising, relaying, streaming, relay)
    await relay.channel.close(None)
    for srv in (relaying, raising, streaming):
        await srv.stop(0)


async def _fail(port: int, prompt: str, request_id: str = "req-details") -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = selector_pb2_grpc.SelectorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.AnalyzePrompt(
                selector_pb2.AnalyzePromptRequest(prompt=prompt), metadata=(("x-request-id", request_id),), timeout=5
            )
    return info.value


def _wire(err: grpc.aio.AioRpcError) -> dict[str, Message]:
    """The details as sent, by type name, read with grpcio-status only (no project code)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin trailer"
    assert status.code == err.code().value[0] and status.message == err.details()
    found: dict[str, Message] = {}
    for packed in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RequestInfo,
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                found[cls.DESCRIPTOR.name] = message
    assert len(found) == len(status.details), "an unexpected detail type"
    return found


def _violation(field: str, description: str) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    )


@pytest.mark.parametrize(
    ("prompt", "code", "field", "description"),
    [
        ("field", grpc.StatusCode.INVALID_ARGUMENT, "preferences.cost_weight", "must be a finite number >= 0, got -1"),
        ("colons", grpc.StatusCode.INVALID_ARGUMENT, "metadata[note: a]", "is bad: it has a colon"),
        ("field-not-found", grpc.StatusCode.NOT_FOUND, "session_id", "no session 's-1'"),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION, "session_id", "session 's-1' is still running"),
        ("denied", grpc.StatusCode.PERMISSION_DENIED, "tenant", "differs from the caller's tenant"),
    ],
)
async def test_a_field_travels_as_a_bad_request_field_violation(
    servers: Servers, prompt: str, code: grpc.StatusCode, field: str, description: str
) -> None:
    err = await _fail(servers.raising.port, prompt)
    raised = RAISED[prompt]
    assert isinstance(raised, OrxError)
    assert (err.code(), err.details()) == (code, raised.message)  # the message is unchanged
    assert raised.message == f"{field}: {description}"
    wire = _wire(err)
    assert set(wire) == {"BadRequest", "RequestInfo"}
    assert wire["BadRequest"] == _violation(field, description)
    assert wire["RequestInfo"] == error_details_pb2.RequestInfo(request_id="req-details")
    assert error_details(err) == ErrorDetails(field=field, problem=description, request_id="req-details", metadata={})


async def test_a_colon_in_a_message_without_a_field_names_no_field(servers: Servers) -> None:
    """``"session: s-1 not found"`` reads like ``field: problem``; without a declared field there is none."""
    err = await _fail(servers.raising.port, "no-field")
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "session: s-1 not found")
    assert set(_wire(err)) == {"RequestInfo"}
    assert error_details(err).field is None


@pytest.mark.parametrize(("prompt", "delay"), [("rate", duration_pb2.Duration(seconds=2, nanos=500_000_000))])
async def test_a_retry_delay_travels_as_retry_info_beside_the_handlers_trailers(
    servers: Servers, prompt: str, delay: duration_pb2.Duration
) -> None:
    err = await _fail(servers.raising.port, prompt)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "z-ai/glm-4.5: rate limited; retry after 2.5s",
    )
    wire = _wire(err)
    assert set(wire) == {"RetryInfo", "RequestInfo"}
    assert wire["RetryInfo"] == error_details_pb2.RetryInfo(retry_delay=delay)
    assert error_details(err).retry_after == 2.5
    # The trailer the handler set before raising is still there, beside the status details.
    trailers: Any = err.trailing_metadata()
    usage = dict(trailers)[USAGE_TRAILER]
    assert common_pb2.Usage.FromString(usage).prompt_tokens == 7


async def test_without_a_known_wait_there_is_no_retry_info(servers: Servers) -> None:
    err = await _fail(servers.raising.port, "rate-no-hint")
    assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
    assert set(_wire(err)) == {"RequestInfo"}
    assert error_details(err).retry_after is None


async def test_a_reason_travels_as_error_info(servers: Servers) -> None:
    err = await _fail(servers.raising.port, "reason")
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, "z-ai/glm-4.5: circuit open")
    wire = _wire(err)
    assert set(wire) == {"ErrorInfo", "RetryInfo", "RequestInfo"}
    assert wire["ErrorInfo"] == error_details_pb2.ErrorInfo(
        reason="FAILURE_KIND_CIRCUIT_OPEN",
        domain="orchestratex.v1",
        metadata={"model": "z-ai/glm-4.5", "origin": "circuit_open"},
    )
    assert wire["RetryInfo"] == error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=30))
    details = error_details(err)
    assert (details.reason, details.domain, dict(details.metadata)) == (
        "FAILURE_KIND_CIRCUIT_OPEN",
        ERROR_DOMAIN,
        {"model": "z-ai/glm-4.5", "origin": "circuit_open"},
    )


async def test_a_stream_that_fails_carries_its_details_too(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers.streaming.port}") as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for item in stub.StreamGenerate(providers_pb2.StreamGenerateRequest(), timeout=5):
                received.append(item.sequence)
    assert received == [1]
    err = info.value
    assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "m/a: held")
    wire = _wire(err)
    assert wire["RetryInfo"] == error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=250_000_000)
    )
    assert wire["ErrorInfo"] == error_details_pb2.ErrorInfo(
        reason="FAILURE_KIND_RATE_LIMITED", domain="orchestratex.v1", metadata={"model": "m/a"}
    )


async def test_an_unexpected_error_is_internal_with_only_the_request_id(servers: Servers) -> None:
    err = await _fail(servers.raising.port, "crash", request_id="r-9")
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, "internal error (request id r-9)")
    assert _wire(err) == {"RequestInfo": error_details_pb2.RequestInfo(request_id="r-9")}
    assert "hunter2" not in str(err.debug_error_string())


async def test_an_undecodable_request_names_the_request_field(servers: Servers) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers.raising.port}") as channel:
        raw = channel.unary_unary(f"/{SELECTOR}/AnalyzePrompt", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(b"\x0a\xff\xff\xff\xff", timeout=5)
    err = info.value
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "request: not a valid protobuf message")
    assert _wire(err)["BadRequest"] == _violation("request", "not a valid protobuf message")


@pytest.mark.parametrize("prompt", ["field", "colons", "field-not-found", "precondition", "denied", "rate", "reason"])
async def test_from_rpc_error_relays_code_message_and_details_unchanged(servers: Servers, prompt: str) -> None:
    direct = await _fail(servers.raising.port, prompt, request_id="relay-1")
    relayed = await _fail(servers.relaying.port, prompt, request_id="relay-1")
    assert (relayed.code(), relayed.details()) == (direct.code(), direct.details())
    assert _wire(relayed) == _wire(direct)
    assert error_details(relayed) == error_details(direct)


async def test_from_rpc_error_gives_the_matching_exception_with_its_details(servers: Servers) -> None:
    exc = from_rpc_error(await _fail(servers.raising.port, "colons"), "selector")
    assert isinstance(exc, InvalidArgument)
    assert (exc.field, exc.problem, exc.message) == (
        "metadata[note: a]",
        "is bad: it has a colon",
        "metadata[note: a]: is bad: it has a colon",
    )
    exc = from_rpc_error(await _fail(servers.raising.port, "reason"), "providers")
    assert isinstance(exc, Unavailable)
    assert (exc.retry_after, exc.reason, exc.metadata) == (
        30.0,
        "FAILURE_KIND_CIRCUIT_OPEN",
        {"model": "z-ai/glm-4.5", "origin": "circuit_open"},
    )
    exc = from_rpc_error(await _fail(servers.raising.port, "crash"), "selector")
    assert isinstance(exc, Unavailable) and exc.message == "selector failed: INTERNAL"


def test_details_that_do_not_match_the_status_are_ignored() -> None:
    """A details trailer whose code or message differs from the call's status is not the call's: none."""
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="other: message")
    status.details.add().Pack(_violation("other", "message"))
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    err = grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), trailers, "prompt: is bad", None)
    assert error_details(err) == ErrorDetails()
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(), "x: y", None
    )
    relayed = from_rpc_error(plain, "peer")
    assert isinstance(relayed, InvalidArgument) and (relayed.message, relayed.field) == ("x: y", None)
