"""The gateway's error model and its ONE mapping from gRPC status codes to HTTP statuses.

Everything that goes wrong while serving a client becomes a :class:`GatewayError` (a status code
and a message that is safe to show). REST turns it into
``{"error": {"code", "status", "message", "field"?, "retry_after"?}}`` with the HTTP status from
:func:`http_status`; the WebSocket sends the same fields in ``{"type": "error", ...}`` (snake_case, as
everything the gateway writes).
Peers' messages are passed on only when they were written for clients; transport noise
(addresses, socket errors) and unexpected failures become generic messages. ``field`` and ``retry_after``
come from the peer's structured status details (``google.rpc.BadRequest`` and ``RetryInfo``, see
``orchestratex.errors``), never from the message text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import grpc
import orjson
from aiohttp import web

from orchestratex.errors import OrxError, error_details

_MAX_MESSAGE_CHARS: Final = 1000

_HTTP_STATUS: Final[dict[grpc.StatusCode, int]] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 502,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    # A peer's INTERNAL is a failure behind the gateway, hence "bad gateway" rather than 500.
    grpc.StatusCode.INTERNAL: 502,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 502,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# Our services write these details for end users (see orchestratex.errors); pass them on.
_CLIENT_FACING: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ABORTED,
    }
)

# Fragments that mark a detail produced by the gRPC transport rather than by a service.
_TRANSPORT_NOISE: Final = (
    "ipv4:",
    "ipv6:",
    "unix:",
    "failed to connect",
    "connection refused",
    "connection reset",
    "socket closed",
    "dns resolution",
    "errno",
    "goaway",
    "rst_stream",
)


class GatewayError(Exception):
    """A failure to report to the client: a canonical status code and a message safe to show.

    ``field`` names the input at fault (INVALID_ARGUMENT and friends); ``retry_after`` (whole seconds)
    is set on rate limits and becomes the ``Retry-After`` header. ``close`` ends the connection after the
    answer (``Connection: close``): used when the rest of the request will not be read.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        http: int | None = None,
        code_name: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self._http = http
        self._code_name = code_name
        self.close = close

    @property
    def http_status(self) -> int:
        """The HTTP status for :attr:`code` (or the explicit one given)."""
        return self._http or http_status(self.code)

    @property
    def code_name(self) -> str:
        """The ``code`` shown to clients: the gRPC status name, or an HTTP-only name (PAYLOAD_TOO_LARGE)."""
        return self._code_name or self.code.name

    def fields(self) -> dict[str, object]:
        """The error's fields as sent to clients: code, status, message, field?, retry_after?."""
        out: dict[str, object] = {"code": self.code_name, "status": self.http_status, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    def body(self) -> dict[str, object]:
        """The REST error body ``{"error": {...}}``."""
        return {"error": self.fields()}

    def headers(self) -> dict[str, str]:
        """Headers that go with the error (``Retry-After``, ``WWW-Authenticate``)."""
        out: dict[str, str] = {}
        if self.retry_after is not None:
            out["Retry-After"] = str(self.retry_after)
        if self.code == grpc.StatusCode.UNAUTHENTICATED:
            out["WWW-Authenticate"] = 'Bearer realm="orchestratex"'
        return out


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status that corresponds to a gRPC status code."""
    return _HTTP_STATUS.get(code, 502)


def error_response(
    exc: GatewayError, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The REST response for ``exc``: its JSON body, HTTP status (``status`` overrides it) and headers."""
    merged = {**exc.headers(), **(headers or {})}
    response = web.json_response(exc.body(), status=status or exc.http_status, headers=merged, dumps=_dumps)
    if exc.close:
        response.force_close()
    return response


def _dumps(data: object) -> str:
    return orjson.dumps(data).decode()


def invalid(field: str, problem: str) -> GatewayError:
    """An INVALID_ARGUMENT error naming ``field`` (the same ``field: problem`` shape as the services)."""
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}", field=field)


def from_orx(exc: OrxError) -> GatewayError:
    """Our own domain exceptions (raised by shared validation helpers) as a gateway error."""
    retry = exc.retry_after if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    return GatewayError(
        exc.code,
        exc.message,
        field=exc.field if exc.code in _CLIENT_FACING else None,
        retry_after=max(1, math.ceil(retry)) if retry else None,
    )


def from_rpc(err: grpc.aio.AioRpcError, peer: str) -> GatewayError:
    """A peer's status as a gateway error; ``peer`` names the service in generic messages.

    ``field`` is the peer's ``BadRequest`` field violation (on client-facing codes, whose message is passed
    on); ``retry_after`` is its ``RetryInfo`` delay in whole seconds (at least 1) on RESOURCE_EXHAUSTED, or
    1 when the peer gave none.
    """
    code = err.code()
    message = (err.details() or "").strip()
    details = error_details(err)
    retry_after = None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = max(1, math.ceil(details.retry_after)) if details.retry_after else 1
    field = details.field if code in _CLIENT_FACING and message else None
    return GatewayError(code, _safe_message(code, message, peer), field=field, retry_after=retry_after)


def _safe_message(code: grpc.StatusCode, details: str, peer: str) -> str:
    lowered = details.lower()
    noisy = not details or any(fragment in lowered for fragment in _TRANSPORT_NOISE)
    if code in _CLIENT_FACING and details:
        message = details
    elif code == grpc.StatusCode.UNAVAILABLE:
        message = f"the {peer} service is unavailable; try again later" if noisy else details
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the {peer} service did not answer in time" if noisy or lowered == "deadline exceeded" else details
    elif code == grpc.StatusCode.CANCELLED:
        message = "the call was cancelled"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = f"the {peer} service does not implement this operation"
    elif code == grpc.StatusCode.INTERNAL and lowered.startswith("internal error (request id"):
        # Written by our server interceptor: generic, and the request id helps support.
        message = details
    else:
        message = f"the {peer} service failed ({code.name})"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    return message
