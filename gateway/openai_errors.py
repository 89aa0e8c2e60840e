"""Errors of the OpenAI-compatible surface, in OpenAI's shape.

Everything still goes wrong as a :class:`gateway.errors.GatewayError` (one model of failures in the gateway, and
the peers' statuses read from their ``google.rpc`` details by :func:`gateway.errors.from_rpc`); this module only
renders it the way OpenAI clients expect::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}

``param`` is the request parameter at fault, as the client named it (a service's ``BadRequest`` field is
translated back through a :class:`ParamMap`); ``code`` a short snake_case reason. Statuses follow OpenAI's:
400 for bad input (FAILED_PRECONDITION too: the SDKs retry 409, and asking again cannot help), 401, 403,
404, 413, 429 with ``Retry-After``, 503 when a service is down (``Retry-After`` when the service said how long).
A provider rejecting *our* vendor key is a 502, never a 401: the caller's key was fine. A session that failed
after it started answers 502 with ``x-should-retry: false``, so the SDKs do not pay for it twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import grpc
import orjson
from aiohttp import web

from gateway.errors import GatewayError, from_rpc, http_status
from orchestratex.errors import error_details

#: HTTP statuses by gRPC code where the OpenAI surface differs from REST (see the module docstring).
_STATUS: Final[dict[grpc.StatusCode, int]] = {
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_TYPES: Final[dict[int, str]] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_CODES: Final[dict[int, str]] = {
    400: "invalid_value",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    429: "rate_limit_exceeded",
    499: "cancelled",
    501: "unimplemented",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class OpenAIError(GatewayError):
    """A :class:`GatewayError` with OpenAI's ``code`` (and, for failed sessions, no retry)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        openai_code: str,
        field: str | None = None,
        http: int | None = None,
        retry: bool = True,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(code, message, field=field, http=http, retry_after=retry_after)
        self.openai_code = openai_code
        self.retry = retry


def invalid(param: str, problem: str, code: str = "invalid_value") -> OpenAIError:
    """A 400 naming ``param`` (``"<param>: <problem>"``, the gateway's message shape)."""
    return OpenAIError(grpc.StatusCode.INVALID_ARGUMENT, f"{param}: {problem}", field=param, openai_code=code)


def model_not_found(model: str) -> OpenAIError:
    """A 404 for a model id that is not ``orchestratex``, ``orchestratex/<id>`` or a catalogue id."""
    return OpenAIError(
        grpc.StatusCode.NOT_FOUND,
        f"model: {model[:200]!r} does not exist; GET /openai/v1/models lists the ids",
        field="model",
        openai_code="model_not_found",
    )


class ParamMap:
    """Translates a service's field path (``author_options.temperature``) to the parameter the client sent
    (``temperature``): the longest matching prefix is replaced, the rest (``[2].content``) kept."""

    def __init__(self, prefixes: Mapping[str, str], strip: str = "") -> None:
        # Longest first, so "preferences.pinned_model" wins over "preferences".
        self._prefixes = sorted(prefixes.items(), key=lambda item: -len(item[0]))
        self._strip = strip

    def param(self, field: str | None) -> str | None:
        """The client's parameter for ``field`` (None stays None)."""
        if not field:
            return None
        field = field.removeprefix(self._strip)
        for prefix, param in self._prefixes:
            if field == prefix or field.startswith((prefix + ".", prefix + "[")):
                return param + field[len(prefix) :] if param else None
        return field


def from_upstream(err: grpc.aio.AioRpcError, peer: str, params: ParamMap) -> GatewayError:
    """A peer's failure as an error of this surface: the field becomes the client's parameter, and an
    UNAVAILABLE with a ``RetryInfo`` delay gets ``Retry-After`` too."""
    failure = from_rpc(err, peer)
    code = err.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # The vendor refused our key: the caller's key was fine, the gateway's side is at fault.
        return OpenAIError(
            code, f"the {peer} service could not authenticate with its vendor", http=502, openai_code="upstream_auth"
        )
    if code == grpc.StatusCode.UNAVAILABLE and failure.retry_after is None:
        delay = error_details(err).retry_after
        if delay:
            failure.retry_after = max(1, math.ceil(delay))
    failure.field = params.param(failure.field)
    if failure.field and code == grpc.StatusCode.INVALID_ARGUMENT:
        # "author_options.temperature: must be ..." reads "temperature: must be ..." to this client.
        original = (err.details() or "").split(":", 1)
        if len(original) == 2 and not original[0].strip().count(" "):
            failure.message = f"{failure.field}:{original[1]}"
    return failure


def status_of(exc: GatewayError) -> int:
    """The HTTP status of ``exc`` on this surface."""
    status = exc.http_status
    if status == http_status(exc.code):  # not an HTTP-only status (413, 421...) set where the error was made
        status = _STATUS.get(exc.code, status)
    return status


def error_body(exc: GatewayError) -> dict[str, object]:
    """``{"error": {"message", "type", "param", "code"}}`` for ``exc``."""
    status = status_of(exc)
    kind = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    code = exc.openai_code if isinstance(exc, OpenAIError) else _CODES.get(status) or exc.code_name.lower()
    return {"error": {"message": exc.message, "type": kind, "param": exc.field or None, "code": code}}


def error_headers(exc: GatewayError) -> dict[str, str]:
    """``Retry-After`` (429, and 503 when known), ``WWW-Authenticate`` (401) and ``x-should-retry``."""
    headers = exc.headers()
    if isinstance(exc, OpenAIError) and not exc.retry:
        # Read by the OpenAI SDKs: a failed session is not retried (and paid for) again.
        headers["x-should-retry"] = "false"
    return headers


def error_response(exc: GatewayError) -> web.Response:
    """The HTTP response for ``exc`` in OpenAI's shape."""
    response = web.Response(
        body=orjson.dumps(error_body(exc)),
        status=status_of(exc),
        headers=error_headers(exc),
        content_type="application/json",
    )
    if exc.close:
        response.force_close()
    return response


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (no route, wrong method, body over ``client_max_size``) in OpenAI's shape."""
    status = exc.status
    if status == 404:
        message = "no such resource; the OpenAI-compatible API has /chat/completions and /models"
    elif status == 405:
        message = f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    elif status == 413:
        message = "body: request body is too large"
    else:
        message = (exc.text or exc.reason).removeprefix(f"{status}: ")
    error = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        field="body" if status == 413 else None,
        http=status,
        close=status == 413,
    )
    response = error_response(error)
    for name, value in exc.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response
