"""Outbound gRPC: channels to peer services with request-id/tenant propagation and default deadlines.

Every call made through these channels carries the caller's request id and tenant, and gets a
deadline when the caller did not set one — no outbound call can hang forever. Every call is counted in
the ``orx_grpc_client_*`` metrics when prometheus_client is installed (the ``server`` extra; a plain
install of the library has none), and, on a channel opened while tracing is on (:mod:`orchestratex.tracing`),
gets a client span whose W3C ``traceparent`` travels in the metadata.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from orchestratex import context

if TYPE_CHECKING:
    from orchestratex.metrics import RpcMetrics, RpcMetricsCache

    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor


def _decorate(details: grpc.aio.ClientCallDetails, default_timeout: float) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if context.REQUEST_ID_HEADER not in metadata:
        rid = context.request_id.get() or context.new_request_id()
        metadata.add(context.REQUEST_ID_HEADER, rid)
    tenant = context.tenant.get()
    if tenant and context.TENANT_HEADER not in metadata:
        metadata.add(context.TENANT_HEADER, tenant)
    timeout = details.timeout if details.timeout is not None else default_timeout
    return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


class _UnaryUnary(_UnaryUnaryBase):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_decorate(details, self.timeout), request)


class _UnaryStream(_UnaryStreamBase):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_decorate(details, self.timeout), request)


class _UnaryUnaryMetrics(_UnaryUnaryBase):
    """Counts and times unary calls: the interceptor waits for the status (not for the caller to read it)."""

    def __init__(self, metrics: RpcMetricsCache) -> None:
        self.metrics = metrics

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        rpc = self.metrics(_method_name(details.method))
        start = time.perf_counter()
        call = await continuation(details, request)
        try:
            code = await call.code()
        except asyncio.CancelledError:
            call.cancel()
            rpc.duration.observe(time.perf_counter() - start)
            rpc.count("CANCELLED")
            raise
        rpc.duration.observe(time.perf_counter() - start)
        rpc.count(code.name)
        return call


class _UnaryStreamMetrics(_UnaryStreamBase):
    """Counts and times server-streaming calls, from the call to its status (a done callback: the stream
    itself is untouched, and a call that is cancelled before it is read is counted too)."""

    def __init__(self, metrics: RpcMetricsCache) -> None:
        self.metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        rpc = self.metrics(_method_name(details.method))
        start = time.perf_counter()
        call = await continuation(details, request)

        def done(finished: Any) -> None:
            elapsed = time.perf_counter() - start
            if finished.cancelled():
                rpc.duration.observe(elapsed)
                rpc.count("CANCELLED")
                return
            # The status of a finished call is ready, but grpc.aio only hands it out through a coroutine.
            task = asyncio.get_running_loop().create_task(self._record(finished, rpc, elapsed))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)
        return call

    @staticmethod
    async def _record(call: Any, rpc: RpcMetrics, elapsed: float) -> None:
        code = await call.code()
        rpc.duration.observe(elapsed)
        rpc.count(code.name)


def _method_name(method: str | bytes) -> str:
    # grpc.aio passes the method as bytes to interceptors (https://github.com/grpc/grpc/issues/31092)
    return method.decode() if isinstance(method, bytes) else method


def _tracing_interceptors() -> list[Any]:
    """The client tracing interceptors when tracing is on, else none (and none without OpenTelemetry)."""
    try:
        from orchestratex.tracing import client_interceptors  # noqa: PLC0415 - the server extra, optional here
    except ImportError:
        return []
    return client_interceptors()


def _metrics_interceptors() -> list[Any]:
    """The client-side metrics interceptors, or none when prometheus_client is not installed."""
    try:
        from orchestratex.metrics import client_rpc_metrics  # noqa: PLC0415 - the server extra, optional here
    except ImportError:
        return []
    metrics = client_rpc_metrics()
    return [_UnaryUnaryMetrics(metrics), _UnaryStreamMetrics(metrics)]


def open_channel(
    target: str,
    unary_timeout: float = 10.0,
    stream_timeout: float = 3600.0,
    max_message_bytes: int = 8 * 1024 * 1024,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure channel to a peer inside the deployment (TLS is terminated by the platform).

    Interceptors, outermost first: tracing (when on), metrics (when installed), then request id, tenant and
    default deadline, so spans and metrics see the deadline's DEADLINE_EXCEEDED like any other status.
    """
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 1),
            # A peer that restarts is back within seconds; gRPC's default backoff grows to 120 s, which
            # would leave e.g. the outbox idle for up to two minutes after analytics returns.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
            *options,
        ],
        interceptors=[
            *_tracing_interceptors(),
            *_metrics_interceptors(),
            _UnaryUnary(unary_timeout),  # type: ignore[list-item]
            _UnaryStream(stream_timeout),  # type: ignore[list-item]
        ],
    )
