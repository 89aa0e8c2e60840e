"""The exception hierarchy of OrchestrateX, its one mapping to gRPC status codes, and the structured details.

Domain code raises these; the server interceptor (``orchestratex.grpc_server``) is the one place that turns
them into a status: the code below, the message unchanged (it is written for people), and the structured
details as ``google.rpc`` messages in the standard ``grpc-status-details-bin`` trailer (a
``google.rpc.Status``, read with ``grpc_status.rpc_status.from_call`` or any language's gRPC status helper).
Anything else becomes ``INTERNAL`` with a generic message and the request id: clients never see a stack
trace or an exception's text. Every class, where it lives and what it becomes::

    Exception
    ├── OrxError                        INTERNAL (a base, not raised itself)
    │   ├── InvalidArgument             INVALID_ARGUMENT      BadRequest: the field and the problem
    │   ├── NotFound                    NOT_FOUND             (BadRequest when it names a field)
    │   ├── FailedPrecondition          FAILED_PRECONDITION   (BadRequest when it names a field)
    │   ├── ResourceExhausted           RESOURCE_EXHAUSTED    RetryInfo when the wait is known
    │   ├── Unavailable                 UNAVAILABLE           RetryInfo when the wait is known
    │   │   └── StorageUnavailable      UNAVAILABLE           orchestratex/store/sqlite.py: disk full, I/O error...
    │   ├── DeadlineExceeded            DEADLINE_EXCEEDED
    │   ├── PermissionDenied            PERMISSION_DENIED     (BadRequest when it names a field)
    │   ├── Unauthenticated             UNAUTHENTICATED
    │   └── Cancelled                   CANCELLED
    ├── ConfigError                     never on the wire: the process exits non-zero naming the variable
    │   └── LeaseHeld                   services/orchestrator/lease.py: another orchestrator owns the database
    ├── OSError
    │   └── ListenError                 orchestratex/grpc_server.py: the port cannot be bound (exit non-zero)
    └── BackupError                     orchestratex/store/backup.py: a backup or restore that cannot proceed
    (any other exception)               INTERNAL  "internal error (request id …)"

Any :class:`OrxError` may also carry a reason (``ErrorInfo``), and every error status carries
``RequestInfo`` with the request id. The details, by ``google.rpc`` type:

* ``BadRequest``: one ``FieldViolation`` (``field`` = the dotted path of the offending request field, e.g.
  ``preferences.cost_weight`` or ``request.messages``; ``description`` = the problem, without the field);
  the message is then ``"<field>: <problem>"``.
* ``RetryInfo``: ``retry_delay``, how long to wait before retrying (a vendor's Retry-After, a cooldown).
* ``ErrorInfo``: ``reason`` (UPPER_SNAKE_CASE), ``domain`` (:data:`ERROR_DOMAIN`) and ``metadata``. A failed
  provider call's reason is its ``FailureKind`` name (``FAILURE_KIND_AUTH``...), with ``model`` and ``origin``
  in the metadata.
* ``RequestInfo``: ``request_id``, the id of the call in the services' logs.

Service-internal exceptions never cross the wire; each becomes one of the above (or an event) at its
service's edge: in ``services/providers``, ``backend.BackendError`` (a vendor failure, classified) and
``resilience.Rejected`` (``ClientRateLimited``, ``CircuitOpen``, ``Held``: refused without calling the vendor)
end as ``generation.CallFailed``, which ``server.py`` maps to a status; in ``services/orchestrator``,
``calls.CallFailed`` (a provider call failed, with what it cost) and ``engine.SessionError`` end as events,
``critique.UnusableCritique`` (a ``ValueError``) as a warning; ``providers.models_sync.SyncError`` and
``selector.classifier.model.ArtefactError`` end a command. The gateway has its own ``GatewayError``
(``gateway/errors.py``), which maps status codes to HTTP statuses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Self

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "orchestratex.v1"
"""``ErrorInfo.domain`` of the reasons this project sets: they are names from the ``orchestratex.v1`` protos."""


class OrxError(Exception):
    """Base class. ``message`` is safe to show to clients.

    The keyword arguments become the status's structured details: ``field`` (``BadRequest``, with
    ``problem`` as its description), ``retry_after`` in seconds (``RetryInfo``), ``reason`` with
    ``metadata`` (``ErrorInfo``).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """The offending request field (dotted path), when the error is about one field."""
        self.problem = message.removeprefix(f"{field}: ") if field else message
        """What is wrong with :attr:`field`: the message without the field."""
        self.retry_after = retry_after
        """Seconds to wait before retrying, when known."""
        self.reason = reason
        """An UPPER_SNAKE_CASE reason in :data:`ERROR_DOMAIN` (a ``FailureKind`` name for provider failures)."""
        self.metadata: dict[str, str] = dict(metadata or {})
        """Context for :attr:`reason` (e.g. ``model``)."""

    @classmethod
    def relayed(cls, message: str, details: ErrorDetails) -> Self:
        """The error a peer reported, its message verbatim and its details kept, to pass on to our caller."""
        exc = cls.__new__(cls)
        OrxError.__init__(
            exc,
            message,
            field=details.field,
            retry_after=details.retry_after,
            reason=details.reason if details.domain == ERROR_DOMAIN else None,
            metadata=details.metadata,
        )
        if details.problem is not None:
            exc.problem = details.problem
        return exc


class InvalidArgument(OrxError):
    """The request is malformed. ``field`` names the offending field (dotted path); the message is
    ``"<field>: <problem>"``."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", field=field, reason=reason)
        self.problem = problem


class NotFound(OrxError):
    """The named resource does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(OrxError):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(OrxError):
    """A rate limit or quota was hit. ``retry_after`` is in seconds when known."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, reason=reason, metadata=metadata)


class Unavailable(OrxError):
    """A dependency is down; retrying later may work (after ``retry_after`` seconds, when known)."""

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
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        PermissionDenied,
        Unauthenticated,
        Cancelled,
    )
}


# ---------------------------------------------------------------------------------------------------------
# The wire form: google.rpc.Status with details


def to_status(exc: OrxError, request_id: str = "") -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``exc``: its code, its message unchanged, and its details."""
    details: list[Message] = []
    if exc.field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.problem)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if exc.retry_after is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=_duration(exc.retry_after)))
    if exc.reason is not None:
        details.append(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata))
    return _status(exc.code, exc.message, details, request_id)


def internal_status(request_id: str) -> status_pb2.Status:
    """The ``INTERNAL`` status for an unexpected exception: a generic message naming the request id."""
    return _status(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})", [], request_id)


def _status(code: grpc.StatusCode, message: str, details: list[Message], request_id: str) -> status_pb2.Status:
    if request_id:
        details.append(error_details_pb2.RequestInfo(request_id=request_id))
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    number: int = code.value[0]
    return status_pb2.Status(code=number, message=message, details=packed)


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(max(0, round(seconds * 1e9)))
    return value


@dataclasses.dataclass(frozen=True)
class ErrorDetails:
    """The structured details of a failed call (all empty when the peer sent none)."""

    field: str | None = None
    """``BadRequest``: the first field violation's field path."""
    problem: str | None = None
    """``BadRequest``: the first field violation's description."""
    retry_after: float | None = None
    """``RetryInfo``: seconds to wait before retrying."""
    reason: str | None = None
    """``ErrorInfo.reason``."""
    domain: str | None = None
    """``ErrorInfo.domain``."""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``ErrorInfo.metadata``."""
    request_id: str | None = None
    """``RequestInfo.request_id``."""


def error_details(err: grpc.aio.AioRpcError) -> ErrorDetails:
    """The ``google.rpc`` details of a failed call (``grpc-status-details-bin``), read with grpcio-status.

    A status whose details do not match its code and message (not written by a gRPC status library) is
    treated as having none.
    """
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]  # an AioRpcError is a finished call
    except ValueError:
        return ErrorDetails()
    if status is None or status.code == code_pb2.OK:
        return ErrorDetails()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    info = error_details_pb2.ErrorInfo()
    request = error_details_pb2.RequestInfo()
    for packed in status.details:
        for message in (bad, retry, info, request):
            if packed.Is(message.DESCRIPTOR) and not message.ByteSize():
                packed.Unpack(message)
    violation = bad.field_violations[0] if bad.field_violations else None
    return ErrorDetails(
        field=violation.field if violation is not None else None,
        problem=violation.description if violation is not None else None,
        retry_after=retry.retry_delay.ToNanoseconds() / 1e9 if retry.HasField("retry_delay") else None,
        reason=info.reason or None,
        domain=info.domain or None,
        metadata=dict(info.metadata),
        request_id=request.request_id or None,
    )


def from_rpc_error(err: grpc.aio.AioRpcError, peer: str) -> OrxError:
    """Turn a peer's status into our exception, keeping the code, the (already safe) message and the details.

    Used when a service relays a downstream failure to its own caller. A code that is not ours to relay
    (INTERNAL, UNKNOWN...) becomes ``Unavailable`` naming ``peer``.
    """
    code = err.code()
    cls = _BY_CODE.get(code)
    if cls is None:
        return Unavailable(f"{peer} failed: {code.name}")
    return cls.relayed(err.details() or code.name.lower(), error_details(err))
