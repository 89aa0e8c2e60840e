"""gRPC server bootstrap shared by every service.

:func:`building` is the one shape of every service's ``build``: bind the port first (nothing acquired
yet, so an address in use fails before any side effect), then acquire resources on an
``AsyncExitStack``; if building fails, everything acquired is released in reverse and the port freed,
and if it succeeds the server owns the stack and releases it after :meth:`GrpcServer.stop`.
``create_server`` is the short form for servers without resources (tests, benchmarks).

Every server has the standard health service, server reflection, and one interceptor that (1) takes
the request id and tenant from metadata, (2) writes an access log line per RPC and records it in the
``orx_grpc_server_*`` metrics (:mod:`orchestratex.metrics`), (3) maps exceptions to canonical status codes
with their ``google.rpc`` details in one place (``context.abort_with_status``, see ``orchestratex.errors``),
and (4) turns undecodable requests into INVALID_ARGUMENT. On a server built while tracing is on
(:mod:`orchestratex.tracing`) it also opens a SERVER span per RPC, child of the caller's (W3C trace context in
the metadata), current for the whole handler, so the access log line and everything the handler logs carry
the trace id, and ended with the same status code as the access log and the metrics.
``serve`` runs it until SIGTERM/SIGINT (or until the service sets ``stopping``) and shuts down
gracefully.

Trust boundary: the tenant comes from the caller's ``x-orx-tenant`` metadata and is believed as sent
(no tenant means an internal caller that sees every tenant). Only the gateway, which sets it from a
verified API key, and trusted internal callers may reach these ports; anyone else who can reach one can
act as any tenant. So services listen on loopback unless ``ORX_GRPC_ALLOW_NON_LOOPBACK`` says the network
is private (``Settings.check_grpc_exposure``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AioHealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from orchestratex import context
from orchestratex.errors import InvalidArgument, OrxError, internal_status, to_status
from orchestratex.metrics import RpcMetrics, server_rpc_metrics
from orchestratex.tracing import end_server_span, server_tracer, start_server_span

log = logging.getLogger(__name__)
access_log = logging.getLogger("orchestratex.access")

OWN_PREFIX = "/orchestratex.v1."

#: Routine polling RPCs: the access log writes their successful calls at DEBUG, so an idle suite is quiet at INFO
#: (the orchestrator's catalogue cache polls ``ListModels`` and the selector ``GetModelPerformance`` every few
#: seconds). A failed one is still logged at INFO, as is every other RPC. Health checks and reflection are not in
#: the access log at all (the interceptor wraps the project's own services only); the gateway's access log
#: (``aiohttp.access``, which would log ``/healthz`` and ``/metrics`` polls) is at WARNING
#: (:func:`orchestratex.logging.setup_logging`).
ROUTINE_RPCS: Final = frozenset(
    {
        "/orchestratex.v1.ProviderService/ListModels",
        "/orchestratex.v1.AnalyticsService/GetModelPerformance",
    }
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    Ctx = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _InterceptorBase = grpc.aio.ServerInterceptor


#: Seconds that in-flight RPCs always get once the ``on_drain`` hooks are done, even past the grace period (unless
#: the grace period itself is shorter): the calls that stream the work a hook just ended need it to send its end.
FINAL_GRACE: Final = 2.0


class ListenError(OSError):
    """The server cannot listen on its address (in use, or not an address of this machine)."""


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer and how to register it: ``add(servicer, server)`` and its full service name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    name: str


@dataclass
class GrpcServer:
    """A bound (not yet started) server.

    ``resources`` holds what the service acquired while building (stores, channels, background
    tasks); :meth:`stop` releases it, last acquired first. ``stopping`` is set when the service asks
    to stop itself (e.g. it lost its lease); :func:`serve` then shuts down as on SIGTERM.
    """

    server: grpc.aio.Server
    port: int
    health: AioHealthServicer
    service_names: list[str] = field(default_factory=list)
    on_drain: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a second SIGTERM/SIGINT while the ``on_drain`` hooks wait: they end their wait at once."""

    @classmethod
    def bind(cls, listen: str, max_message_bytes: int = 8 * 1024 * 1024, reuse_port: bool = False) -> GrpcServer:
        """A server on ``listen`` (``host:port``; port 0 picks a free one) with the health service,
        no application services yet. Raises :class:`ListenError` when the address cannot be used.

        ``reuse_port``: share the port with sibling workers (``SO_REUSEPORT``; the kernel spreads new connections
        among them). Off, a port that another process listens on is an error, as it should be."""
        server = grpc.aio.server(
            interceptors=[ServerInterceptor()], options=server_options(max_message_bytes, reuse_port=reuse_port)
        )
        health_servicer = AioHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ListenError(f"cannot listen on {listen}: the address is in use or not available")
        return cls(server=server, port=port, health=health_servicer)

    def add(self, *bindings: ServiceBinding) -> None:
        """Register the application services (once) and enable reflection for them."""
        if self.service_names:
            raise RuntimeError("services are already registered on this server")
        for binding in bindings:
            binding.add(binding.servicer, self.server)
        self.service_names = [b.name for b in bindings]
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )

    async def start(self) -> None:
        """Start serving and mark every service SERVING."""
        await self.server.start()
        for name in [*self.service_names, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Flip health to NOT_SERVING, let in-flight work drain for ``grace`` seconds, release resources.

        ``on_drain`` hooks run once health is NOT_SERVING, while the server still serves, each given the drain's
        deadline (event-loop time, ``grace`` seconds from now): a service with work that outlives its RPCs (the
        orchestrator's sessions) refuses new work there and waits for what runs, up to the deadline or until
        :attr:`hurry` is set. Then the
        server stops taking calls and those in flight get what is left of ``grace`` (at least
        :data:`FINAL_GRACE` seconds, to deliver the last events of work the hooks ended) before they are cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self.health.enter_graceful_shutdown()
        for hook in self.on_drain:
            await hook(deadline)
        await self.server.stop(max(deadline - loop.time(), min(grace, FINAL_GRACE)))
        await release(self.resources)


async def release(resources: AsyncExitStack) -> None:
    """Close ``resources``, last acquired first; a failing cleanup is logged and the rest still run."""
    try:
        await resources.aclose()
    except Exception:
        # AsyncExitStack runs every callback even when one fails, then raises the (chained) errors.
        log.exception("cleanup failed during shutdown")


@asynccontextmanager
async def building(
    listen: str, max_message_bytes: int, reuse_port: bool = False
) -> AsyncIterator[tuple[GrpcServer, AsyncExitStack]]:
    """The shape of every service's ``build``::

        async with building(address, max_bytes) as (srv, resources):
            store = await resources.enter_async_context(...)   # or push_async_callback(store.close)
            srv.add(ServiceBinding(...))
        return srv

    The port is bound before anything is acquired, so a start that cannot listen has no side effect.
    If the block raises, everything on ``resources`` is released in reverse and the port is freed; if
    it completes, the server owns ``resources`` and releases them in :meth:`GrpcServer.stop`.
    """
    srv = GrpcServer.bind(listen, max_message_bytes, reuse_port=reuse_port)
    try:
        async with AsyncExitStack() as resources:
            yield srv, resources
            if not srv.service_names:
                raise RuntimeError("build registered no service")
            srv.resources = resources.pop_all()
    except BaseException:
        await srv.server.stop(None)
        raise


class _Undecodable:
    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return parse


class _Scope:
    """Context of one RPC: sets context vars, times it, logs it, counts it, maps its errors."""

    __slots__ = ("method", "metrics", "span", "start", "status")

    def __init__(self, method: str, ctx: Ctx, metrics: RpcMetrics, tracer: Tracer | None) -> None:
        self.method = method
        self.metrics = metrics
        self.start = time.perf_counter()
        self.status = "OK"
        metadata = {k: v for k, v in (ctx.invocation_metadata() or ()) if isinstance(v, str)}
        # Each RPC runs in its own task: what is set here (context vars, the current span) is the RPC's alone.
        rid = metadata.get(context.REQUEST_ID_HEADER, "")
        context.request_id.set(rid if context.valid_request_id(rid) else context.new_request_id())
        context.tenant.set(metadata.get(context.TENANT_HEADER, "")[:128])
        self.span: Span | None = start_server_span(tracer, method, metadata) if tracer is not None else None
        if metrics.in_flight is not None:
            metrics.in_flight.inc()

    async def fail(self, exc: BaseException, ctx: Ctx) -> None:
        """End the call with the status for ``exc`` (the one mapping of exceptions to statuses)."""
        if isinstance(exc, OrxError):
            self.status = exc.code.name
            await _abort(ctx, to_status(exc, context.request_id.get()))
        self.status = "INTERNAL"
        if self.span is not None:  # the type only: an exception's text may hold anything
            self.span.set_attribute("error.type", type(exc).__qualname__)
        log.error("unhandled error in %s", self.method, exc_info=exc)
        await _abort(ctx, internal_status(context.request_id.get()))

    def done(self) -> None:
        elapsed = time.perf_counter() - self.start
        metrics = self.metrics
        if metrics.in_flight is not None:
            metrics.in_flight.dec()
        metrics.duration.observe(elapsed)
        metrics.count(self.status)
        level = logging.DEBUG if self.status == "OK" and self.method in ROUTINE_RPCS else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                "rpc %s %s",
                self.method,
                self.status,
                extra={
                    "rpc": self.method,
                    "code": self.status,
                    "ms": round(elapsed * 1000, 3),
                    "tenant": context.tenant.get(),
                },
            )
        if self.span is not None:
            end_server_span(self.span, self.status)


@dataclass(frozen=True)
class _WireStatus(grpc.Status):
    """A status as ``abort_with_status`` takes it: code, message and every trailer (details included)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


async def _abort(ctx: Ctx, status: status_pb2.Status) -> None:
    """``ctx.abort_with_status``, keeping the trailers the handler set (e.g. the usage of a failed provider
    call) beside the status details, for a call that may already have ended: when its deadline passed or
    its client left just before, gRPC cannot send a status any more (``abort`` then raises another error
    than AbortError); the call is then over, as a cancelled one, instead of failing a second time inside
    the error mapping."""
    wire = rpc_status.to_status(status)
    trailers = (*(ctx.trailing_metadata() or ()), *wire.trailing_metadata)
    try:
        # grpc-stubs does not declare abort_with_status on the asyncio context; grpc.aio has it.
        await ctx.abort_with_status(_WireStatus(wire.code, wire.details, trailers))  # type: ignore[attr-defined]
    except grpc.aio.AbortError:
        raise
    except Exception:
        raise asyncio.CancelledError from None


async def _reject_undecodable(scope: _Scope, ctx: Ctx) -> None:
    scope.status = "INVALID_ARGUMENT"
    await _abort(ctx, to_status(InvalidArgument("request", "not a valid protobuf message"), context.request_id.get()))


class ServerInterceptor(_InterceptorBase):
    """Request ids, tenant, access logs, metrics and error mapping for the project's own services."""

    def __init__(self) -> None:
        self._metrics = server_rpc_metrics()
        self._tracer = server_tracer()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(OWN_PREFIX):
            return handler
        metrics = self._metrics(method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, metrics, self._tracer, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, metrics, self._tracer, handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def _wrap_unary(
    method: str, metrics: RpcMetrics, tracer: Tracer | None, inner: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, ctx: Ctx) -> Any:
        scope = _Scope(method, ctx, metrics, tracer)
        try:
            if request is _UNDECODABLE:
                await _reject_undecodable(scope, ctx)
            return await inner(request, ctx)
        except grpc.aio.AbortError:
            if scope.status == "OK":
                scope.status = (ctx.code() or grpc.StatusCode.UNKNOWN).name
            raise
        except asyncio.CancelledError:
            scope.status = "CANCELLED"
            raise
        except Exception as exc:
            await scope.fail(exc, ctx)
        finally:
            scope.done()

    return call


def _wrap_stream(
    method: str, metrics: RpcMetrics, tracer: Tracer | None, inner: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, ctx: Ctx) -> AsyncIterator[Any]:
        scope = _Scope(method, ctx, metrics, tracer)
        try:
            if request is _UNDECODABLE:
                await _reject_undecodable(scope, ctx)
            async for item in inner(request, ctx):
                yield item
        except grpc.aio.AbortError:
            if scope.status == "OK":
                scope.status = (ctx.code() or grpc.StatusCode.UNKNOWN).name
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # a client that goes away while the handler waits to write shows up as GeneratorExit
            scope.status = "CANCELLED"
            raise
        except Exception as exc:
            await scope.fail(exc, ctx)
        finally:
            scope.done()

    return call


MAX_CONNECTION_AGE_MS = 300_000
"""How long a server keeps one client connection (5 minutes) before asking it to reconnect."""


def server_options(max_message_bytes: int, reuse_port: bool = False) -> list[tuple[str, Any]]:
    """Channel options shared by servers: message size limits, keepalive policy, and whether the port is shared
    (gRPC turns ``SO_REUSEPORT`` on by default: we only want it for workers)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", int(reuse_port)),
        # Clients reconnect (and resolve the name again) every few minutes, so pods a scaler adds get calls;
        # calls in flight at the time run on (the grace is unlimited).
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
    ]


def create_server(
    bindings: Sequence[ServiceBinding],
    listen: str,
    max_message_bytes: int = 8 * 1024 * 1024,
) -> GrpcServer:
    """A server for ``bindings`` that owns no resources (``listen`` as in :meth:`GrpcServer.bind`)."""
    srv = GrpcServer.bind(listen, max_message_bytes)
    srv.add(*bindings)
    return srv


async def serve(srv: GrpcServer, grace: float, ready: Callable[[int], None] | None = None) -> None:
    """Run ``srv`` until SIGTERM or SIGINT, then shut down gracefully (a second signal cuts the drain short:
    :attr:`GrpcServer.hurry`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await srv.start()
    # Everything allocated so far lives for the whole process: keep it out of the cyclic GC's work.
    gc.freeze()
    loop_kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    log.info("serving %s on port %d (%s event loop)", ", ".join(srv.service_names), srv.port, loop_kind)
    if ready is not None:
        ready(srv.port)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(srv.stopping.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    log.info("shutting down (grace %.1fs)", grace)
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal: stop waiting for work in flight
        loop.add_signal_handler(sig, srv.hurry.set)
    await srv.stop(grace)
    log.info("stopped")


def names_of(bindings: Iterable[ServiceBinding]) -> list[str]:
    """Full service names of ``bindings``."""
    return [b.name for b in bindings]
