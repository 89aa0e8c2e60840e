"""Prometheus metrics of the gateway, defined once on the default registry.

Module-level metric objects are prometheus_client's idiom: a metric is registered once per process on
``prometheus_client.REGISTRY`` and every part of the gateway updates it; whatever serves ``/metrics`` (the
shared metrics endpoint, ``ORX_GATEWAY_METRICS_LISTEN``) exposes them without being told they exist. They hold
counts only (nothing here decides anything), and importing this module reads no environment and opens nothing.

Labels are bounded. ``route`` is the aiohttp route *template* (``/v1/orchestrations/{id}``), never the path,
which holds session ids; requests that match no route are ``unmatched``. ``method`` is one of
:data:`METHODS` or ``other`` (aiohttp accepts any token as a method). ``status`` is the HTTP status code the
gateway answered (a fixed set: see :mod:`gateway.errors`), ``transport`` is ``ws`` or ``sse``, ``reason`` a
small enum listed below. Session ids, prompts, API keys and tenants never become label values, with one
opt-in exception: ``orx_gateway_tenant_requests_total`` (below).

================================================ ========= ======================== ===============================
name                                             type      labels                   meaning
================================================ ========= ======================== ===============================
``orx_gateway_http_requests_total``              counter   method, route, status    HTTP requests answered, counted
                                                                                    when the response ends (a
                                                                                    WebSocket or SSE stream when it
                                                                                    closes; WebSocket upgrades as
                                                                                    101); 499: the handler was
                                                                                    cancelled before the response
                                                                                    started (the client left)
``orx_gateway_http_request_duration_seconds``    histogram method, route            from the request's head to the
                                                                                    end of its response (for
                                                                                    streams: their lifetime)
``orx_gateway_http_requests_in_flight``          gauge                              requests being answered (open
                                                                                    streams included)
``orx_gateway_open_streams``                     gauge     transport                open WebSockets (``ws``) and
                                                                                    Server-Sent Events streams
                                                                                    (``sse``: session events and
                                                                                    streamed OpenAI completions)
``orx_gateway_stream_closes_total``              counter   transport, reason        streams ended, by why:
                                                                                    :data:`WS_CLOSE_REASONS`,
                                                                                    :data:`SSE_CLOSE_REASONS`
``orx_gateway_send_queue_depth``                 histogram                          messages waiting in a
                                                                                    WebSocket's send queue, sampled
                                                                                    each time one is queued (the
                                                                                    queue holds
                                                                                    ``ORX_GATEWAY_SEND_QUEUE``)
``orx_gateway_send_queue_depth_max``             gauge                              the deepest any WebSocket send
                                                                                    queue has been since the
                                                                                    process started
``orx_gateway_slow_consumer_closes_total``       counter   transport                streams closed because the
                                                                                    client read too slowly (the
                                                                                    send queue overflowed: close
                                                                                    1008); only ``ws`` has a queue:
                                                                                    an SSE write waits for the
                                                                                    client, which slows the relay
                                                                                    down through gRPC flow control
``orx_gateway_events_sent_total``                counter   transport                orchestration events written to
                                                                                    clients (``event`` messages on
                                                                                    WebSockets, ``data`` frames on
                                                                                    ``/v1/orchestrations/{id}/
                                                                                    events``; OpenAI chunks are not
                                                                                    events)
``orx_gateway_rejected_requests_total``          counter   reason                   HTTP requests and WebSocket
                                                                                    client messages the gateway
                                                                                    refused, by
                                                                                    :data:`REJECT_REASONS`
``orx_gateway_tenant_requests_total``            counter   tenant, status_class     requests that authenticated with
                                                                                    a key, by tenant and ``1xx``..
                                                                                    ``5xx``; no series unless
                                                                                    ``ORX_GATEWAY_METRICS_TENANTS``
                                                                                    is set (below)
================================================ ========= ======================== ===============================

Rejection reasons: ``auth`` (no key, or a bad one: 401, WebSocket close 4401), ``rate_limit`` (the gateway's own
per-key limiter: 429, or a refused WebSocket message), ``validation`` (400: input the gateway or a service found
invalid; WebSocket messages answered INVALID_ARGUMENT), ``too_large`` (413), ``origin`` (a browser origin not
allowed: 403), ``host`` (a ``Host`` the gateway does not answer to: 421). A 429 or 403 a service returns (a full
provider queue, a permission) is not a rejection by the gateway.

Tenants
    ``ORX_GATEWAY_METRICS_TENANTS`` (default 0: off, at most 1000; :attr:`GatewayOptions.metrics_tenants
    <gateway.state.GatewayOptions.metrics_tenants>`) is the largest number of distinct tenants that get their own
    ``tenant`` label value in ``orx_gateway_tenant_requests_total``; the first that many tenants seen since the
    gateway started are labelled, every other one is counted as ``other``. At most ``(N + 1) x 5`` series. Off,
    the metric has no series at all, so no tenant name appears anywhere in the exposition.

Hot path: a request costs a few increments and one histogram observation; the children of the stream metrics
are bound once below.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from gateway.state import METRICS_TENANTS_VAR, PRINCIPAL

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OTHER_TENANT: Final = "other"
"""The ``tenant`` value of the tenants beyond the cap."""

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Values of ``method`` besides ``other``."""
UNMATCHED: Final = "unmatched"
"""The ``route`` of requests that match no route (404, 405)."""
TRANSPORTS: Final = ("ws", "sse")
"""Values of ``transport``."""
REJECT_REASONS: Final = ("auth", "rate_limit", "validation", "too_large", "origin", "host")
"""Values of ``reason`` in ``orx_gateway_rejected_requests_total``."""
WS_CLOSE_REASONS: Final = (
    "normal",
    "going_away",
    "slow_consumer",
    "unauthenticated",
    "unsupported_data",
    "invalid_data",
    "too_big",
    "protocol_error",
    "abnormal",
    "other",
)
"""Values of ``reason`` for ``transport="ws"`` in ``orx_gateway_stream_closes_total``, from the close code of the
side that closed first (the gateway's own when it closed the socket): 1000 normal, 1001 going_away (server shutdown
or a client leaving the page), 1008 slow_consumer, 4401 unauthenticated, 1003 unsupported_data (a binary frame),
1007 invalid_data (text that is not UTF-8), 1009 too_big, 1002 protocol_error, no close frame (or 1006) abnormal:
the connection dropped, any other code a client chose: other."""
SSE_CLOSE_REASONS: Final = ("completed", "client_gone", "upstream_error")
"""Values of ``reason`` for ``transport="sse"``: the stream reached its end, the client went away, or the
upstream stream failed (reported to the client as an ``error`` event)."""

_WS_CLOSE_CODES: Final = {
    1000: "normal",
    1001: "going_away",
    1002: "protocol_error",
    1003: "unsupported_data",
    1006: "abnormal",
    1007: "invalid_data",
    1008: "slow_consumer",
    1009: "too_big",
    4401: "unauthenticated",
}
_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_DEPTHS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)

HTTP_REQUESTS = Counter(
    "orx_gateway_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
)
HTTP_DURATION = Histogram(
    "orx_gateway_http_request_duration_seconds",
    "Time from a request's head to the end of its response (streams: their lifetime), by method and route.",
    ("method", "route"),
    buckets=_SECONDS,
)
HTTP_IN_FLIGHT = Gauge("orx_gateway_http_requests_in_flight", "HTTP requests being answered, open streams included.")
OPEN_STREAMS = Gauge(
    "orx_gateway_open_streams", "Open WebSockets (ws) and Server-Sent Events streams (sse).", ("transport",)
)
STREAM_CLOSES = Counter("orx_gateway_stream_closes", "Streams ended, by transport and reason.", ("transport", "reason"))
SEND_QUEUE_DEPTH = Histogram(
    "orx_gateway_send_queue_depth",
    "Messages in a WebSocket's send queue, sampled each time one is queued.",
    buckets=_DEPTHS,
)
SEND_QUEUE_DEPTH_MAX = Gauge(
    "orx_gateway_send_queue_depth_max", "The deepest any WebSocket send queue has been since the process started."
)
SLOW_CONSUMER_CLOSES = Counter(
    "orx_gateway_slow_consumer_closes",
    "Streams closed because the client read too slowly (send queue overflow).",
    ("transport",),
)
EVENTS_SENT = Counter("orx_gateway_events_sent", "Orchestration events written to clients.", ("transport",))
REJECTED = Counter(
    "orx_gateway_rejected_requests",
    "HTTP requests and WebSocket messages the gateway refused, by reason.",
    ("reason",),
)
TENANT_REQUESTS = Counter(
    "orx_gateway_tenant_requests",
    f"Requests authenticated with a key by tenant ({METRICS_TENANTS_VAR} of them, others as 'other') and status.",
    ("tenant", "status_class"),
)

# Bound once: the hot paths touch these directly. Binding also exports them at zero from the start.
WS_OPEN: Final = OPEN_STREAMS.labels("ws")
SSE_OPEN: Final = OPEN_STREAMS.labels("sse")
WS_EVENTS_SENT: Final = EVENTS_SENT.labels("ws")
SSE_EVENTS_SENT: Final = EVENTS_SENT.labels("sse")
WS_SLOW_CONSUMER: Final = SLOW_CONSUMER_CLOSES.labels("ws")
for _reason in REJECT_REASONS:
    REJECTED.labels(_reason)
for _reason in WS_CLOSE_REASONS:
    STREAM_CLOSES.labels("ws", _reason)
for _reason in SSE_CLOSE_REASONS:
    STREAM_CLOSES.labels("sse", _reason)


class _Peak:
    """A gauge that only rises: the largest value observed."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._value = 0

    def observe(self, value: int) -> None:
        if value > self._value:
            self._value = value
            self._gauge.set(value)


_QUEUE_PEAK: Final = _Peak(SEND_QUEUE_DEPTH_MAX)


def observe_send_queue(depth: int) -> None:
    """Record a WebSocket send queue's depth just after a message was queued."""
    SEND_QUEUE_DEPTH.observe(depth)
    _QUEUE_PEAK.observe(depth)


def reject(reason: str) -> None:
    """Count a request or WebSocket message refused for ``reason`` (one of :data:`REJECT_REASONS`)."""
    REJECTED.labels(reason).inc()


def ws_closed(code: int | None) -> None:
    """Count a WebSocket that closed with ``code`` (None: no close frame)."""
    STREAM_CLOSES.labels("ws", _WS_CLOSE_CODES.get(code or 1006, "other")).inc()


def sse_closed(reason: str) -> None:
    """Count an SSE stream that ended for ``reason`` (one of :data:`SSE_CLOSE_REASONS`)."""
    STREAM_CLOSES.labels("sse", reason).inc()


def route_label(request: web.Request) -> str:
    """The route template ``request`` matched (``/v1/orchestrations/{id}``), or :data:`UNMATCHED`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def method_label(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else ``other``."""
    return method if method in METHODS else "other"


class TenantLabels:
    """The ``tenant`` label values one gateway hands out: the first ``cap`` tenants seen, then ``other``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._labelled: set[str] = set()

    def label(self, tenant: str) -> str:
        """``tenant`` while fewer than ``cap`` tenants are labelled (or it already is), else ``other``."""
        if tenant in self._labelled:
            return tenant
        if len(self._labelled) < self.cap:
            self._labelled.add(tenant)
            return tenant
        return OTHER_TENANT


#: The status of a response whose head has been sent (set by :func:`note_status`).
_SENT_STATUS: Final = web.RequestKey("orx_metrics_sent_status", int)


async def note_status(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: remember the status the client was sent, so that a stream whose handler is
    cancelled when its client goes (aiohttp's ``handler_cancellation``) is counted with it rather than as 499."""
    request[_SENT_STATUS] = response.status


def http_middleware(tenant_cap: int = 0) -> Middleware:
    """The middleware that counts and times every request; put it first (outermost) so it sees every answer,
    and register :func:`note_status` as an ``on_response_prepare`` hook.

    ``tenant_cap`` > 0 also counts the requests that authenticated with a key by tenant (see the module
    docstring); each middleware labels its own first ``tenant_cap`` tenants.
    """
    tenants = TenantLabels(tenant_cap) if tenant_cap > 0 else None

    @web.middleware
    async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_label(request)
        method = method_label(request.method)
        status = 500
        HTTP_IN_FLIGHT.inc()
        start = time.perf_counter()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = request.get(_SENT_STATUS, 499)
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            if tenants is not None:
                principal = request.get(PRINCIPAL)
                # The default tenant "" (no keys configured) is nobody in particular: not counted.
                if principal is not None and principal.tenant:
                    TENANT_REQUESTS.labels(tenants.label(principal.tenant), f"{status // 100}xx").inc()

    return http_metrics
