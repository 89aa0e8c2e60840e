"""OpenTelemetry server spans for the gateway's HTTP requests, when tracing is configured.

:func:`tracing_middleware` returns the middleware :func:`gateway.app.init_app` puts first, or None when the
process has no SDK ``TracerProvider`` (tracing is configured by the ``OTEL_*`` variables at process start;
without it the gateway does not even add the middleware, so an untraced gateway pays nothing per request).

The spans are those of ``opentelemetry-instrumentation-aiohttp-server`` (0.66b1): one ``SERVER`` span per
request, named ``"<METHOD> <route template>"`` (``GET /v1/orchestrations/{id}``; the method alone for a path that
matches no route), never the raw path, which holds session ids; the W3C ``traceparent`` of the request is its
parent; its attributes are the package's (method, scheme, host, port, target with the query's signature
parameters redacted, route, user agent, HTTP version, status), plus ``orx.request_id``. A 5xx marks the span
as an error. Request bodies, hence prompts, are never read into spans; headers are captured only when the
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` variable asks for them, and then ``Authorization``
and ``Sec-WebSocket-Protocol`` (which carry API keys) must be listed in
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``; ``OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS`` leaves
paths out. A WebSocket's or an SSE stream's span lasts as long as the stream.

How the package applies itself, and why this module does not do it that way: its
``AioHttpServerInstrumentor().instrument()`` replaces ``aiohttp.web.Application`` process-wide with a subclass that
puts ``create_aiohttp_middleware()`` first in every application built afterwards (every other aiohttp server in
the process included), and that middleware reads module state only ``instrument()`` sets, so it cannot be added
to one application alone. :func:`tracing_middleware` builds the same span from the package's public functions
(``get_default_span_name``, ``collect_request_attributes``, ``set_status_code`` and its header getter for
``opentelemetry.propagate.extract``) for this application only. When the instrumentor *is* active, the
application class already carries its middleware, and :func:`tracing_middleware` returns None so that
requests are not traced twice.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from opentelemetry import trace

from orchestratex import context

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_ATTRIBUTE: Final = "orx.request_id"
"""The span attribute holding the request id (the ``X-Request-Id`` the gateway answered with)."""


def tracing_configured() -> bool:
    """True when the process's global tracer provider is the SDK's (``OTEL_*`` configured tracing).

    Without tracing the SDK is never imported (orchestratex.tracing imports it only to set tracing up), and
    this module does not import it either: a provider can only be the SDK's once its module is loaded.
    """
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    return sdk is not None and isinstance(trace.get_tracer_provider(), sdk.TracerProvider)


def tracing_middleware() -> Middleware | None:
    """The middleware that opens a ``SERVER`` span per request, or None: tracing is not configured, or
    ``AioHttpServerInstrumentor`` already instruments every application of the process."""
    if not tracing_configured():
        return None
    # Imported only when tracing is on: the instrumentation package pulls in part of the SDK.
    from opentelemetry.instrumentation.aiohttp_server import (  # noqa: PLC0415
        AioHttpServerInstrumentor,
        collect_request_attributes,
        collect_request_headers_attributes,
        get_default_span_name,
        getter,
        set_status_code,
    )
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled  # noqa: PLC0415
    from opentelemetry.propagate import extract  # noqa: PLC0415
    from opentelemetry.util.http import get_excluded_urls  # noqa: PLC0415

    if AioHttpServerInstrumentor().is_instrumented_by_opentelemetry:
        return None
    provider = trace.get_tracer_provider()
    tracer = provider.get_tracer(__name__)
    excluded = get_excluded_urls("AIOHTTP_SERVER")

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_http_instrumentation_enabled() or excluded.url_disabled(request.path):
            return await handler(request)
        with tracer.start_as_current_span(
            get_default_span_name(request),
            context=extract(request, getter=getter),
            kind=trace.SpanKind.SERVER,
            attributes=collect_request_attributes(request),
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                span.set_attributes(collect_request_headers_attributes(request))
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                set_status_code(span, exc.status)
                raise
            except Exception as exc:
                set_status_code(span, 500)
                span.record_exception(exc)
                raise
            finally:
                # Set by the errors middleware while handling the request (same task, same context).
                rid = context.request_id.get()
                if rid and span.is_recording():
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)
            set_status_code(span, response.status)
            return response

    return traced
