"""The gateway's error model and its ONE mapping from gRPC status codes to HTTP statuses.

Everything that goes wrong while serving a client becomes a :class:`GatewayError` (a status code
and a message that is safe to show). REST turns it into ``{"error": {"code", "message"}}`` with the
HTTP status from :func:`http_status`; the WebSocket turns it into ``{"type": "error", ...}``.
Peers' error details are passed on only when they were written for clients; transport noise
(addresses, socket errors) and unexpected failures become generic messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import grpc
import orjson
from aiohttp import web

from orchestratex.errors import OrxError

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
    """A failure to report to the client: a canonical status code and a message safe to show."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status for :attr:`code`."""
        return http_status(self.code)

    def body(self) -> dict[str, object]:
        """The REST error body ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code.name, "message": self.message}}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status that corresponds to a gRPC status code."""
    return _HTTP_STATUS.get(code, 502)


def error_response(
    exc: GatewayError, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The REST response for ``exc``: its JSON body and HTTP status (``status`` overrides it)."""
    return web.json_response(exc.body(), status=status or exc.http_status, headers=headers, dumps=_dumps)


def _dumps(data: object) -> str:
    return orjson.dumps(data).decode()


def invalid(field: str, problem: str) -> GatewayError:
    """An INVALID_ARGUMENT error naming ``field`` (the same ``field: problem`` shape as the services)."""
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")


def from_orx(exc: OrxError) -> GatewayError:
    """Our own domain exceptions (raised by shared validation helpers) as a gateway error."""
    return GatewayError(exc.code, exc.message)


def from_rpc(err: grpc.aio.AioRpcError, peer: str) -> GatewayError:
    """A peer's status as a gateway error; ``peer`` names the service in generic messages."""
    code = err.code()
    details = (err.details() or "").strip()
    return GatewayError(code, _safe_message(code, details, peer))


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
