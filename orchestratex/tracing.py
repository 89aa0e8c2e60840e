"""OpenTelemetry tracing for every process: off unless the standard ``OTEL_*`` variables ask for it.

Each process calls :func:`setup_tracing` once before it builds its servers and channels (the launcher does,
for every service and the gateway) and :func:`shutdown_tracing` when it stops. Tracing is on when

* ``OTEL_TRACES_EXPORTER`` is set to anything but ``none`` (``otlp``, ``console``, or both, comma-separated), or
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (then the exporter is OTLP),

and ``OTEL_SDK_DISABLED`` is not ``true``. Then the process gets an SDK ``TracerProvider`` as the global one and
a ``BatchSpanProcessor`` per exporter. The SDK reads the rest itself: the sampler
(``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``, default ``parentbased_always_on``: a trace started
upstream keeps its sampling decision), the OTLP endpoint, headers, timeout, compression and TLS
(``OTEL_EXPORTER_OTLP_*``; the exporter is OTLP over gRPC, default ``localhost:4317``, so a ``_PROTOCOL`` other
than ``grpc`` is refused), the batch processor (``OTEL_BSP_*``), span limits, ``OTEL_RESOURCE_ATTRIBUTES``
and ``OTEL_PROPAGATORS`` (default W3C ``tracecontext,baggage``). The resource's ``service.name`` is
``OTEL_SERVICE_NAME``, else ``orchestratex-<service>``. With tracing off nothing is installed and nothing of
the SDK is even imported.

What is traced:

* Every RPC of the project's own services (``orchestratex.v1``; not health checks or reflection), on servers
  built after :func:`setup_tracing`: a SERVER span opened by the shared server interceptor
  (:mod:`orchestratex.grpc_server`, :func:`start_server_span`) with the remote parent taken from the call's
  metadata by OpenTelemetry's propagator (``opentelemetry.propagate.extract``), current for the whole handler
  (so the access log line and everything the handler logs carry its trace id), ended with the RPC's final
  status, the aborted code or ``CANCELLED`` included.
* Every call on a channel opened with :func:`~orchestratex.open_channel` while tracing is on
  (:func:`client_interceptors`): a CLIENT span, its context put in the metadata by the propagator
  (``opentelemetry.propagate.inject``), ended when the call ends, however it ends.
* Both use the attributes of the gRPC semantic conventions (``rpc.system``, ``rpc.service``, ``rpc.method``,
  ``rpc.grpc.status_code``); a server span is an error for the codes the conventions call server errors
  (``UNKNOWN``, ``DEADLINE_EXCEEDED``, ``UNIMPLEMENTED``, ``INTERNAL``, ``UNAVAILABLE``, ``DATA_LOSS``), a
  client span for every code but ``OK``. Why not ``opentelemetry-instrumentation-grpc`` (0.66b1): its
  asyncio server interceptor wraps a streaming handler in an async generator that attaches and detaches the
  span's context around it, so every stream whose client leaves while the handler waits to write (the
  generator is then closed by the garbage collector, in another context) logs "Failed to detach context"
  at ERROR; its client interceptor returns a server stream as a generator that ends the span only when read
  to its end, so the span of a stream the caller cancels or leaves (a critic cut short, the gateway's
  detached start, a closed WebSocket) stays open until the cyclic garbage collector finds it, and the call
  then no longer supports ``read()``; and it does not see ``abort_with_status``, so the project's error
  codes were missing from its spans. Each RPC runs in its own asyncio task, so the server span's context is
  attached for the task's life and never detached.
* The aiohttp client, with ``opentelemetry-instrumentation-aiohttp-client``: every ``ClientSession`` created
  afterwards, i.e. the providers' calls to model vendors, gets a CLIENT span per request and sends
  ``traceparent``.
* The aiohttp server is not instrumented here: ``opentelemetry-instrumentation-aiohttp-server``'s
  ``AioHttpServerInstrumentor`` (0.66b1) replaces ``aiohttp.web.Application`` process-wide with a subclass
  (which aiohttp deprecates) and its ``create_aiohttp_middleware`` only works after that, so the gateway builds
  the package's span in its own middleware (:mod:`gateway.tracing`), added to its application when the global
  provider is the SDK's. The metrics endpoint is a bare ``web.Server``, never traced.

Span attributes never carry prompts, completions or keys: the spans record methods, routes, status codes and
(for HTTP) URLs and peers, never bodies or headers (unless
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` asks for them: leave those unset, the gateway's keys travel
in ``Authorization`` and ``Sec-WebSocket-Protocol``), and the project's own spans (``orchestratex.<area>``
tracers) add ids, models, counts and costs only. As a last line of defence every exporter set up here is
wrapped so that every registered secret (:func:`orchestratex.logging.register_secret`: the provider keys, the
MongoDB URI) is replaced by ``[REDACTED]`` in span names, attributes, events (exception messages and stack
traces) and status descriptions before a span leaves the process.

Tests pass ``exporter=`` (the SDK's ``InMemorySpanExporter``): spans are then exported synchronously
(``SimpleSpanProcessor``). OpenTelemetry lets a process set its global tracer provider once, so a setup
reuses the SDK provider already installed (by an earlier setup, or by a test) and adds its processor to it;
:func:`shutdown_tracing` flushes and closes that processor (the provider keeps it, inert) and removes the
instrumentation, so a test process can set tracing up again. A provider that another tool installed (the
``opentelemetry-instrument`` wrapper) is used as it is: its exporters stay its own, only the instrumentation
is added.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.context import attach
from opentelemetry.propagate import extract, inject
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from orchestratex.errors import ConfigError
from orchestratex.logging import redact

if TYPE_CHECKING:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

EXPORTERS = frozenset({"otlp", "console", "none"})
"""The values ``OTEL_TRACES_EXPORTER`` may list."""
TRACED_SERVICES = "orchestratex.v1."
"""The prefix of the gRPC services that are traced (not health checks or reflection)."""


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """True when the ``OTEL_*`` variables of ``env`` (``os.environ`` when None) turn tracing on."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(env)
    if exporters:
        return exporters != ["none"]
    return bool(_get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _get(env: Mapping[str, str], var: str) -> str:
    return env.get(var, "").strip()


def _exporters(env: Mapping[str, str]) -> list[str]:
    """``OTEL_TRACES_EXPORTER`` as a list; raises :class:`ConfigError` naming it for a value not supported."""
    names = [name.strip().lower() for name in _get(env, "OTEL_TRACES_EXPORTER").split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} not supported; expected otlp, console or none "
            f"(comma-separated)"
        )
    if "none" in names and len(names) > 1:
        raise ConfigError("OTEL_TRACES_EXPORTER: none cannot be combined with another exporter")
    return names


def _check_protocol(env: Mapping[str, str]) -> None:
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _get(env, var)
        if value and value.lower() != "grpc":
            raise ConfigError(
                f"{var}: only grpc is supported (the OTLP exporter installed is OTLP/gRPC), got {value!r}"
            )
        if value:
            return


# ------------------------------------------------------------------------------------------ the state


@dataclass
class _Tracing:
    """What one setup installed, so that :func:`shutdown_tracing` can undo it."""

    processors: list[Any] = field(default_factory=list)
    """Added to the global provider; a synchronous one (tests) is only closed at shutdown, through its exporter,
    since the SDK warns about every span that reaches a processor it shut down."""
    exporters: list[_RedactingExporter] = field(default_factory=list)
    instrumentors: list[Any] = field(default_factory=list)


class _Process:
    """The process-wide state OpenTelemetry imposes (one global tracer provider, global instrumentation)."""

    active: _Tracing | None = None


# ------------------------------------------------------------------------------------------ redaction


class _RedactingExporter:
    """Wraps an exporter: registered secrets become ``[REDACTED]`` in every text a span carries. Once shut down
    it drops what it is given (its processor stays on the global provider)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.closed:
            from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415 - loaded by now

            return SpanExportResult.SUCCESS
        return self.inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list):
        return tuple(_redact_value(item) for item in value)
    return value


def _redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: _redact_value(value) for key, value in (attributes or {}).items()}


def _redacted(span: ReadableSpan) -> ReadableSpan:
    """``span`` itself when no registered secret shows in it, else a copy with every secret redacted."""
    from opentelemetry.sdk.trace import Event, ReadableSpan  # noqa: PLC0415 - the SDK is loaded by now

    original = dict(span.attributes or {})
    attributes = _redact_attributes(original)
    events = [Event(e.name, _redact_attributes(e.attributes), e.timestamp) for e in span.events]
    description = span.status.description
    status = Status(span.status.status_code, redact(description)) if description else span.status
    name = redact(span.name)
    if (
        name == span.name
        and attributes == original
        and all(new.attributes == dict(old.attributes or {}) for new, old in zip(events, span.events, strict=True))
        and status.description == description
    ):
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


# ------------------------------------------------------------------------------------------- set up


def setup_tracing(
    service_name: str, *, env: Mapping[str, str] | None = None, exporter: SpanExporter | None = None
) -> bool:
    """Turn tracing on for this process when the ``OTEL_*`` variables of ``env`` (``os.environ`` when None) ask
    for it, or when ``exporter`` is given (tests); True when it is on.

    Call it once, before building servers, channels and HTTP sessions (the instrumentation applies to those
    created afterwards), and :func:`shutdown_tracing` at the end. Raises :class:`ConfigError` naming the
    variable for an exporter or protocol that is not supported, and :class:`RuntimeError` when tracing is
    already set up, or when the global tracer provider is not the SDK's.
    """
    env = os.environ if env is None else env
    if _Process.active is not None:
        raise RuntimeError("tracing is already set up in this process; call shutdown_tracing() first")
    names: list[str] = []
    if exporter is None:
        if not tracing_requested(env):
            return False
        _check_protocol(env)
        names = _exporters(env) or ["otlp"]

    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415 - only when on
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: PLC0415

    name = _get(env, "OTEL_SERVICE_NAME") or f"orchestratex-{service_name}"
    provider = trace.get_tracer_provider()
    ours = False
    if not isinstance(provider, SdkTracerProvider):
        provider = _install_provider(name)
        ours = True
    active = _Tracing()
    if exporter is not None:
        active.exporters.append(_RedactingExporter(exporter))
        active.processors.append(SimpleSpanProcessor(active.exporters[-1]))  # type: ignore[arg-type]
    elif ours:
        for chosen in names:
            active.exporters.append(_RedactingExporter(_exporter(chosen)))
            active.processors.append(BatchSpanProcessor(active.exporters[-1]))  # type: ignore[arg-type]
    else:
        log.info("tracing: a tracer provider is already installed (opentelemetry-instrument?); using its exporters")
    for processor in active.processors:
        provider.add_span_processor(processor)
    active.instrumentors = _instrument()
    _Process.active = active
    log.info("tracing on: service.name %s", name if ours else provider.resource.attributes.get("service.name"))
    return True


def private_id_generator() -> Any:
    """Trace and span ids from a generator of our own (seeded from ``os.urandom``).

    The SDK's default ``RandomIdGenerator`` draws from the global ``random`` module, which the process shares
    with everything else: every span would move the sequence of a program (or a test, or Hypothesis) that
    seeded it. Ids only need to be unique and unpredictable enough; they need not come from that module.
    """
    import random  # noqa: PLC0415

    from opentelemetry.sdk.trace.id_generator import IdGenerator  # noqa: PLC0415

    class _Private(IdGenerator):
        def __init__(self) -> None:
            self._rng = random.Random(os.urandom(16))

        def generate_span_id(self) -> int:
            return self._rng.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return self._rng.getrandbits(128) or 1

    return _Private()


def _install_provider(name: str) -> SdkTracerProvider:
    """An SDK provider with this process's resource, as the global one; RuntimeError when another, not the
    SDK's, holds that place."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415

    provider = SdkTracerProvider(
        resource=Resource.create({SERVICE_NAME: name, **_version()}), id_generator=private_id_generator()
    )
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        kind = type(trace.get_tracer_provider()).__name__
        raise RuntimeError(f"the global tracer provider is already set, to a {kind}, not an SDK TracerProvider")
    return provider


def _version() -> dict[str, str]:
    """``service.version``: the installed distribution's version, when it is installed."""
    try:
        return {"service.version": importlib.metadata.version("orchestratex")}
    except importlib.metadata.PackageNotFoundError:
        return {}


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter()


def _instrument() -> list[Any]:
    """Instrument the aiohttp client; the instrumentors (gRPC is traced by the project's interceptors)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor  # noqa: PLC0415

    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument()
    return [instrumentor]


def shutdown_tracing() -> None:
    """Remove the instrumentation, export what is buffered and close the exporters (nothing when tracing is off).

    The provider stays the global one (OpenTelemetry allows no other), with its processors inert."""
    active = _Process.active
    if active is None:
        return
    _Process.active = None
    for instrumentor in reversed(active.instrumentors):
        instrumentor.uninstrument()
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415 - loaded by setup_tracing

    for processor in active.processors:
        processor.force_flush()
        if isinstance(processor, BatchSpanProcessor):  # stop its thread
            processor.shutdown()  # type: ignore[no-untyped-call]
    for exporter in active.exporters:
        exporter.shutdown()


# ----------------------------------------------------------------------------------------------- gRPC

RPC_TRACER = "orchestratex.grpc"
"""The tracer (instrumentation scope) of the RPC spans."""
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def server_tracer() -> Tracer | None:
    """The tracer of a server being built, or None when tracing is off (its RPCs are then never traced)."""
    return trace.get_tracer(RPC_TRACER) if _Process.active is not None else None


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def start_server_span(tracer: Tracer, method: str, metadata: Mapping[str, str]) -> Span:
    """A SERVER span for the RPC ``method``, child of the caller's span in ``metadata``, made current for the
    rest of the calling task (the RPC's own)."""
    parent = extract(metadata)
    span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=_rpc_attributes(method))
    attach(trace.set_span_in_context(span, parent))
    return span


def end_server_span(span: Span, code: str) -> None:
    """End the span of an RPC that ended with ``code`` (a status code's name)."""
    status = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    if status in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


def client_interceptors() -> list[Any]:
    """The tracing interceptors of a new channel (:func:`~orchestratex.open_channel` adds them first), none when
    tracing is off. A channel opened while tracing is on keeps them; after :func:`shutdown_tracing` their
    spans are no-ops."""
    if _Process.active is None:
        return []
    tracer = trace.get_tracer(RPC_TRACER)
    return [_TracedUnaryUnary(tracer), _TracedUnaryStream(tracer)]


class _MetadataSetter(Setter[grpc.aio.Metadata]):
    """Puts propagation headers into gRPC metadata (keys must be lowercase)."""

    def set(self, carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key.lower()] = value


_SETTER = _MetadataSetter()


def _start_client_span(tracer: Tracer, details: Any) -> tuple[Span, Any] | None:
    """A CLIENT span for the call and the call's details with its context in the metadata; None for a call
    that is not traced."""
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    if not method.startswith("/" + TRACED_SERVICES):
        return None
    span = tracer.start_span(method, kind=SpanKind.CLIENT, attributes=_rpc_attributes(method))
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    inject(metadata, context=trace.set_span_in_context(span), setter=_SETTER)
    new = grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )
    return span, new


def _end_client_span(span: Span, code: grpc.StatusCode, details: str | None, end_time: int | None = None) -> None:
    # Only the code: the peer's message may echo user input (an INVALID_ARGUMENT naming a bad value), and
    # spans, like the server side's, carry no free text from requests.
    del details
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code.name != "OK":
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end(end_time)


def _end_failed(span: Span, exc: BaseException) -> None:
    """End the span of a call that never got a status: cancelled by its caller, or failed locally."""
    if isinstance(exc, asyncio.CancelledError):
        _end_client_span(span, grpc.StatusCode.CANCELLED, None)
        return
    span.set_attribute("error.type", type(exc).__name__)  # never the exception's text or stack
    _end_client_span(span, grpc.StatusCode.UNKNOWN, None)


class _TracedUnaryUnary(_UnaryUnaryBase):
    """A span per unary call, ended when its status is known."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        started = _start_client_span(self.tracer, details)
        if started is None:
            return await continuation(details, request)
        span, details = started
        try:
            call = await continuation(details, request)
            code = await call.code()
        except BaseException as exc:
            _end_failed(span, exc)
            raise
        _end_client_span(span, code, await call.details())
        return call


class _TracedUnaryStream(_UnaryStreamBase):
    """A span per server-streaming call, ended when the call ends (read to its end, failed or cancelled); the
    call itself is returned untouched."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._pending: set[Any] = set()

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        started = _start_client_span(self.tracer, details)
        if started is None:
            return await continuation(details, request)
        span, details = started
        try:
            call = await continuation(details, request)
        except BaseException as exc:
            _end_failed(span, exc)
            raise

        def done(finished: Any) -> None:
            end = time.time_ns()
            if finished.cancelled():
                _end_client_span(span, grpc.StatusCode.CANCELLED, None, end)
                return
            # the status of a finished call is ready, but grpc.aio only hands it out through a coroutine
            task = asyncio.get_running_loop().create_task(self._end(finished, span, end))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)
        return call

    @staticmethod
    async def _end(call: Any, span: Span, end: int) -> None:
        _end_client_span(span, await call.code(), await call.details(), end)
