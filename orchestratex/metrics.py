"""Prometheus metrics: the conventions every process follows, the metrics shared by all of them, and the
``/metrics`` endpoint each process serves when ``ORX_<SERVICE>_METRICS_LISTEN`` is set.

Conventions (the services, the gateway and this library all follow them):

* Metrics are :mod:`prometheus_client` objects on the default ``REGISTRY``, defined once at module level in
  the module of whoever records them: the shared ones here, each service's own in ``services/<svc>/metrics.py``,
  the gateway's in ``gateway/metrics.py``. Importing such a module reads no environment and opens nothing.
* Names are ``orx_<area>_<what>`` in base units: ``_seconds``, ``_bytes``; counters end in ``_total``
  (prometheus_client adds it). Ratios are 0-1, money is ``_usd``.
* Labels are bounded: a gRPC method and status code, a model id from the catalogue, a route template, an
  enum-like kind or outcome. Never a session, thread or request id, a prompt or completion, a tenant id, a key,
  a raw URL or an exception's text: one series per distinct value lives until the process ends, so one
  unbounded label is a memory leak and a bill (tests/e2e/test_observability.py scrapes every endpoint after
  200 sessions and bounds the series).
* Traces use ``opentelemetry.trace.get_tracer("orchestratex.<area>")``; span attributes never carry prompts,
  completions or keys (:mod:`orchestratex.tracing`, which also redacts registered secrets at export).

Why prometheus_client rather than OpenTelemetry's Prometheus exporter: it is the reference client, its text
format is what Prometheus and every scraper parse, it is small, and it costs about a microsecond per
update with no SDK pipeline behind it; tracing keeps the OpenTelemetry SDK, the one that does propagation.

The shared metrics (the default registry also holds prometheus_client's process collector,
``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``..., and its
``python_gc_*`` and ``python_info``):

=============================================== ========= ===================== ===============================
name                                            type      labels                meaning
=============================================== ========= ===================== ===============================
``orx_grpc_server_requests_total``              counter   service, method, code RPCs handled, by final status
``orx_grpc_server_request_duration_seconds``    histogram service, method       handler time (a stream: whole)
``orx_grpc_server_in_flight``                   gauge     service, method       RPCs being handled now
``orx_grpc_client_requests_total``              counter   service, method, code calls made through
                                                                                :func:`~orchestratex.open_channel`
``orx_grpc_client_request_duration_seconds``    histogram service, method       call start to its status
``orx_event_loop_lag_seconds``                  histogram                       how long a new event waited for the loop
=============================================== ========= ===================== ===============================

``service`` is the full gRPC service name (``orchestratex.v1.SelectorService``), ``method`` the bare method
(``Select``), ``code`` the status code's name (``OK``, ``INVALID_ARGUMENT``, ``CANCELLED``...). The server side
counts the project's own services (not health checks or reflection); a handler's abort counts under the
aborted code, a call its client cancelled (or whose deadline passed) under ``CANCELLED``. The client side
counts every call made through :func:`~orchestratex.open_channel` when prometheus_client is installed (a
plain install of the library has no metrics).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from orchestratex.config import Address
from orchestratex.loopmon import LoopLagMonitor

if TYPE_CHECKING:
    from prometheus_client.metrics import MetricWrapperBase

log = logging.getLogger(__name__)

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""Seconds: a unary call takes a millisecond, an orchestration stream minutes."""
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""Seconds; the first bucket is below uvloop's 1 ms timer granularity."""
LAG_INTERVAL = 0.1
"""Seconds between two lag samples of the metrics endpoint's sampler (10 per second)."""

GRPC_SERVER_REQUESTS = Counter(
    "orx_grpc_server_requests", "RPCs handled by this process, by final status.", ["service", "method", "code"]
)
GRPC_SERVER_DURATION = Histogram(
    "orx_grpc_server_request_duration_seconds",
    "Time handling an RPC, from the request to the status (a stream: the whole stream).",
    ["service", "method"],
    buckets=RPC_BUCKETS,
)
GRPC_SERVER_IN_FLIGHT = Gauge("orx_grpc_server_in_flight", "RPCs being handled now.", ["service", "method"])
GRPC_CLIENT_REQUESTS = Counter(
    "orx_grpc_client_requests", "Outbound RPCs made by this process, by final status.", ["service", "method", "code"]
)
GRPC_CLIENT_DURATION = Histogram(
    "orx_grpc_client_request_duration_seconds",
    "Outbound RPCs: from the call to its status (a stream: the whole stream).",
    ["service", "method"],
    buckets=RPC_BUCKETS,
)
EVENT_LOOP_LAG = Histogram(
    "orx_event_loop_lag_seconds",
    "How long an event arriving at an arbitrary moment waited for the event loop to run it "
    f"(sampled {1 / LAG_INTERVAL:g} times a second; orchestratex.loopmon).",
    buckets=LAG_BUCKETS,
)


def split_method(full_method: str) -> tuple[str, str]:
    """``/orchestratex.v1.SelectorService/Select`` -> (``orchestratex.v1.SelectorService``, ``Select``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class RpcMetrics:
    """The children of one side's (server or client) three metrics for one method, bound once.

    Binding labels costs a lock and a dictionary lookup per metric; an RPC then costs a few increments.
    """

    __slots__ = ("_codes", "_counter", "_labels", "duration", "in_flight")

    def __init__(self, full_method: str, counter: Counter, duration: Histogram, in_flight: Gauge | None = None) -> None:
        service, method = split_method(full_method)
        self._labels = (service, method)
        self._counter = counter
        self._codes: dict[str, MetricWrapperBase] = {}
        self.duration = duration.labels(service, method)
        self.in_flight = in_flight.labels(service, method) if in_flight is not None else None

    def count(self, code: str) -> None:
        """One more call that ended with ``code`` (a status code's name)."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self._counter.labels(*self._labels, code)
        child.inc()  # type: ignore[attr-defined]


class RpcMetricsCache:
    """:class:`RpcMetrics` per method, bound on first use (methods are a fixed, small set)."""

    __slots__ = ("_by_method", "_counter", "_duration", "_in_flight")

    def __init__(self, counter: Counter, duration: Histogram, in_flight: Gauge | None = None) -> None:
        self._counter, self._duration, self._in_flight = counter, duration, in_flight
        self._by_method: dict[str, RpcMetrics] = {}

    def __call__(self, full_method: str) -> RpcMetrics:
        found = self._by_method.get(full_method)
        if found is None:
            found = RpcMetrics(full_method, self._counter, self._duration, self._in_flight)
            self._by_method[full_method] = found
        return found


def server_rpc_metrics() -> RpcMetricsCache:
    """The server-side metrics, per method (one cache per server interceptor)."""
    return RpcMetricsCache(GRPC_SERVER_REQUESTS, GRPC_SERVER_DURATION, GRPC_SERVER_IN_FLIGHT)


def client_rpc_metrics() -> RpcMetricsCache:
    """The client-side metrics, per method (one cache per channel)."""
    return RpcMetricsCache(GRPC_CLIENT_REQUESTS, GRPC_CLIENT_DURATION)


# ------------------------------------------------------------------------------------------- endpoint


class MetricsListenError(OSError):
    """The metrics endpoint cannot listen on its address (in use, or not an address of this machine)."""


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint and the event-loop lag sampler that goes with it."""

    port: int
    """The bound port (the configured one, or the one picked for port 0)."""
    _runner: Any
    _lag: LoopLagMonitor

    async def stop(self) -> None:
        """Stop sampling and serving."""
        await self._lag.stop()
        await self._runner.cleanup()


async def start_metrics_server(
    address: Address, registry: CollectorRegistry = REGISTRY, lag_interval: float = LAG_INTERVAL
) -> MetricsServer:
    """Serve ``GET /metrics`` on ``address`` (port 0 picks a free one) from the running event loop, and start
        sampling its lag into ``orx_event_loop_lag_seconds``. Raises :class:`MetricsListenError`.

        A bare aiohttp server (no application: no middlewares, no tracing of scrapes, no access log). The format is
        negotiated as prometheus_client's own servers do (``choose_encoder``): OpenMetrics when the scraper asks
        for it (Prometheus does), else the Prometheus text format (``generate_latest``; version 0.0.4 without an
        ``Accept`` header). Rendering costs about 7 ms of CPU per thousand samples on the development VM, so it runs
    in the loop's default executor (prometheus_client is thread-safe): the loop keeps serving meanwhile.

        The lag sampler (:class:`~orchestratex.loopmon.LoopLagMonitor`) pokes the loop from a thread every
        ``lag_interval`` seconds and records how long the poke waited. Its cost, measured by
        ``bench/loopmon_bench.py`` (docs/benchmarks.md): about 70-240 µs of CPU per sample, so well under 0.3% of a
        core at the default 10 samples a second.
    """
    from aiohttp import web  # noqa: PLC0415 - the server extra; only processes that serve metrics need it

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/metrics":
            return web.Response(status=404, text="not found; metrics are at /metrics\n")
        if request.method not in {"GET", "HEAD"}:
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.get_running_loop().run_in_executor(None, encode, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address.host, address.port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsListenError(exc.errno, f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
    port: int = runner.addresses[0][1]
    lag = LoopLagMonitor(interval=lag_interval, max_samples=0, observe=EVENT_LOOP_LAG.observe)
    lag.start()
    log.info("serving metrics on http://%s:%d/metrics", address.host, port)
    return MetricsServer(port, runner, lag)
