"""The exception hierarchy of OrchestrateX and its one mapping to gRPC status codes.

Domain code raises these; the server interceptor (``orchestratex.grpc_server``) turns them into
canonical status codes. Anything else becomes ``INTERNAL`` with a generic message and the request id:
clients never see a stack trace or an exception's text.
"""

from __future__ import annotations

import grpc


class OrxError(Exception):
    """Base class. ``message`` is safe to show to clients."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(OrxError):
    """The request is malformed. ``field`` names the offending field (dotted path)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(OrxError):
    """The named resource does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(OrxError):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(OrxError):
    """A rate limit or quota was hit. ``retry_after`` is in seconds when known."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(OrxError):
    """A dependency is down; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(OrxError):
    """The work could not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDenied(OrxError):
    """The caller may not do this (e.g. a moderation refusal)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(OrxError):
    """Credentials are missing or invalid."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Cancelled(OrxError):
    """The operation was cancelled by its caller."""

    code = grpc.StatusCode.CANCELLED


class ConfigError(Exception):
    """A setting is invalid. The message names the environment variable."""


_BY_CODE: dict[grpc.StatusCode, type[OrxError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        PermissionDenied,
        Unauthenticated,
        Cancelled,
    )
}


def from_rpc_error(err: grpc.aio.AioRpcError, peer: str) -> OrxError:
    """Turn a peer's status into our exception, keeping the code and the (already safe) details.

    Used when a service relays a downstream failure to its own caller.
    """
    code = err.code()
    details = err.details() or code.name.lower()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, problem = details.partition(": ")
        return InvalidArgument(field, problem) if problem else InvalidArgument("request", details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(details)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(details)
    return Unavailable(f"{peer} failed: {code.name}")
