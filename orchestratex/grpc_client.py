"""Outbound gRPC: channels to peer services with request-id/tenant propagation and default deadlines.

Every call made through these channels carries the caller's request id and tenant, and gets a
deadline when the caller did not set one — no outbound call can hang forever. Every call is counted in
the ``orx_grpc_client_*`` metrics when prometheus_client is installed (the ``server`` extra; a plain
install of the library has none), and, on a channel opened while tracing is on (:mod:`orchestratex.tracing`),
gets a client span whose W3C ``traceparent`` travels in the metadata.

A peer that runs several worker processes on one port (``ORX_<SERVICE>_WORKERS``, ``SO_REUSEPORT``) gets one
HTTP/2 connection per worker from the kernel's point of view only if the client opens several: gRPC multiplexes
every call of a channel over one connection, which the kernel hands to one worker. ``open_channel(...,
connections=K)`` therefore opens K channels, each with its own connection, and spreads calls over them in turn
(:class:`ChannelPool`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
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
    connections: int = 1,
) -> grpc.aio.Channel:
    """An insecure channel to a peer inside the deployment (TLS is terminated by the platform).

    Interceptors, outermost first: tracing (when on), metrics (when installed), then request id, tenant and
    default deadline, so spans and metrics see the deadline's DEADLINE_EXCEEDED like any other status.
    ``connections`` > 1 returns a :class:`ChannelPool` of that many connections (for a peer with workers).
    """
    if connections > 1:
        return ChannelPool(
            [
                _open_one(
                    target,
                    unary_timeout,
                    stream_timeout,
                    max_message_bytes,
                    [*options, ("grpc.use_local_subchannel_pool", 1)],
                )
                for _ in range(connections)
            ]
        )
    return _open_one(target, unary_timeout, stream_timeout, max_message_bytes, options)


ROUND_ROBIN = '{"loadBalancingConfig": [{"round_robin": {}}]}'
"""The channels' service config: calls spread over every resolved address."""


def _open_one(
    target: str,
    unary_timeout: float,
    stream_timeout: float,
    max_message_bytes: int,
    options: Sequence[tuple[str, Any]],
) -> grpc.aio.Channel:
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
            # Every address the name resolves to gets calls: a Kubernetes headless Service resolves to each pod
            # (deploy/kubernetes), where gRPC's default, pick_first, would send everything to one of them.
            # With one address (compose, `up`) it changes nothing.
            ("grpc.service_config", ROUND_ROBIN),
            *options,
        ],
        interceptors=[
            *_tracing_interceptors(),
            *_metrics_interceptors(),
            _UnaryUnary(unary_timeout),  # type: ignore[list-item]
            _UnaryStream(stream_timeout),  # type: ignore[list-item]
        ],
    )


class ChannelPool(grpc.aio.Channel):
    """Several channels to one target, each with its own connection (a local subchannel pool), used in turn.

    A drop-in for a channel wherever a stub is built on it: each multi-callable the stub asks for picks the next
    channel on every call, so successive calls of any method go to successive connections, and so, with
    ``SO_REUSEPORT``, to the workers the kernel gave those connections. The kernel assigns connections by hash,
    so the split is even only on average; open a few connections per worker (``connections_to`` in the settings
    uses four).
    """

    def __init__(self, channels: Sequence[grpc.aio.Channel]) -> None:
        self._channels = list(channels)
        self._turn: Iterator[int] = itertools.cycle(range(len(self._channels)))

    def _pick(self) -> int:
        return next(self._turn)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _InTurn(self, [c.unary_unary(method, *args, **kwargs) for c in self._channels])

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _InTurn(self, [c.unary_stream(method, *args, **kwargs) for c in self._channels])

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _InTurn(self, [c.stream_unary(method, *args, **kwargs) for c in self._channels])

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _InTurn(self, [c.stream_stream(method, *args, **kwargs) for c in self._channels])

    async def close(self, grace: float | None = None) -> None:
        await asyncio.gather(*(channel.close(grace) for channel in self._channels))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state among the connections (READY when any is)."""
        states = [channel.get_state(try_to_connect) for channel in self._channels]
        for state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.CONNECTING):
            if state in states:
                return state
        return states[0]

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channels[0].wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await asyncio.gather(*(channel.channel_ready() for channel in self._channels))

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class _InTurn:
    """A multi-callable that hands each call to the pool's next channel."""

    __slots__ = ("_callables", "_pool")

    def __init__(self, pool: ChannelPool, callables: list[Any]) -> None:
        self._pool = pool
        self._callables = callables

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._callables[self._pool._pick()](*args, **kwargs)
