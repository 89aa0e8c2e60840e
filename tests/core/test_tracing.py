"""Tracing: off unless configured; with the SDK's in-memory exporter, calls between two real servers make one
trace with W3C context in the metadata; nothing secret in any span; log lines carry the trace id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from orchestratex import context
from orchestratex.errors import ConfigError, InvalidArgument, from_rpc_error
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.logging import JsonFormatter, TextFormatter, register_secret
from orchestratex.tracing import setup_tracing, shutdown_tracing, tracing_requested
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc, selector_pb2, selector_pb2_grpc

SELECTOR = "orchestratex.v1.SelectorService"
PROVIDERS = "orchestratex.v1.ProviderService"


# ------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_say_so(env: dict[str, str], on: bool) -> None:
    assert tracing_requested(env) is on


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "none,otlp"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_an_unsupported_exporter_names_its_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as err:
        setup_tracing("selector", env=env)
    assert str(err.value).startswith(f"{var}: ")


def test_serve_refuses_an_unsupported_exporter_before_starting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"ORX_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "jaeger"})
    run = subprocess.run(
        [str(Path(sys.executable).parent / "orchestratex"), "serve", "analytics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "configuration error: OTEL_TRACES_EXPORTER: jaeger not supported" in run.stderr


def test_off_installs_nothing() -> None:
    provider, server, channel = trace.get_tracer_provider(), grpc.aio.server, grpc.aio.insecure_channel
    assert setup_tracing("selector", env={"OTEL_SERVICE_NAME": "x"}) is False
    assert trace.get_tracer_provider() is provider
    assert (grpc.aio.server, grpc.aio.insecure_channel) == (server, channel)
    shutdown_tracing()  # nothing to undo


def test_a_process_without_otel_variables_has_no_tracer_provider() -> None:
    probe = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from orchestratex.tracing import setup_tracing\n"
        "on = setup_tracing('selector')\n"
        "span = trace.get_tracer('orchestratex.probe').start_span('nothing')\n"
        "print(on, type(trace.get_tracer_provider()).__name__, span.is_recording(),"
        " 'opentelemetry.sdk' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.split() == ["False", "ProxyTracerProvider", "False", "False"]


def test_the_console_exporter_is_set_up_from_the_environment() -> None:
    """A real process with ``OTEL_TRACES_EXPORTER=console``: its service name and a span on stdout."""
    probe = (
        "from opentelemetry import trace\n"
        "from orchestratex.tracing import setup_tracing, shutdown_tracing\n"
        "assert setup_tracing('analytics')\n"
        "with trace.get_tracer('orchestratex.probe').start_as_current_span('probe.span'):\n"
        "    pass\n"
        "shutdown_tracing()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True)
    exported = json.loads(run.stdout)
    assert exported["name"] == "probe.span"
    assert exported["resource"]["attributes"]["service.name"] == "orchestratex-analytics"
    env["OTEL_SERVICE_NAME"] = "orx-analytics-eu"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(run.stdout)["resource"]["attributes"]["service.name"] == "orx-analytics-eu"


# --------------------------------------------------------------------------- two servers, in memory


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    server, channel = grpc.aio.server, grpc.aio.insecure_channel
    assert setup_tracing("test", exporter=exporter) is True
    try:
        yield exporter
    finally:
        shutdown_tracing()
    assert (grpc.aio.server, grpc.aio.insecure_channel) == (server, channel)
    exported = len(exporter.get_finished_spans())
    trace.get_tracer("orchestratex.test").start_span("after").end()
    assert len(exporter.get_finished_spans()) == exported


class Downstream(providers_pb2_grpc.ProviderServiceServicer):
    """Records the trace context it receives; streams, or blocks until cancelled."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        self.request_ids: list[str] = []
        self.cancelled = asyncio.Event()
        self.blocked = asyncio.Event()

    def _seen(self, ctx: Any) -> None:
        metadata = dict(ctx.invocation_metadata() or ())
        self.traceparents.append(metadata.get("traceparent", ""))
        self.request_ids.append(context.request_id.get())

    async def ListModels(self, request: Any, ctx: Any) -> providers_pb2.ListModelsResponse:
        self._seen(ctx)
        logging.getLogger("tests.downstream").warning("listing models")
        return providers_pb2.ListModelsResponse(models=[common_pb2.ModelInfo(id="m")])

    async def Generate(self, request: Any, ctx: Any) -> providers_pb2.GenerateResponse:
        self._seen(ctx)
        await asyncio.Event().wait()  # until the deadline
        raise AssertionError("unreachable")

    async def StreamGenerate(self, request: Any, ctx: Any) -> AsyncIterator[providers_pb2.StreamGenerateResponse]:
        self._seen(ctx)
        yield providers_pb2.StreamGenerateResponse(sequence=1)
        if request.request.model == "block":
            self.blocked.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        yield providers_pb2.StreamGenerateResponse(sequence=2)


class Upstream(selector_pb2_grpc.SelectorServiceServicer):
    """Calls the downstream service; refuses prompts that start with "bad" (echoing them, as a validation
    message might)."""

    def __init__(self, target: str) -> None:
        self.stub = providers_pb2_grpc.ProviderServiceStub(open_channel(target))

    async def AnalyzePrompt(self, request: Any, ctx: Any) -> selector_pb2.AnalyzePromptResponse:
        if request.prompt.startswith("bad"):
            raise InvalidArgument("prompt", f"cannot use {request.prompt!r}")
        await self.stub.ListModels(providers_pb2.ListModelsRequest())
        return selector_pb2.AnalyzePromptResponse()


@dataclass
class Pair:
    upstream: GrpcServer
    downstream: GrpcServer
    down: Downstream


@pytest.fixture
async def pair(spans: InMemorySpanExporter) -> AsyncIterator[Pair]:
    down = Downstream()
    dsrv = create_server(
        [ServiceBinding(providers_pb2_grpc.add_ProviderServiceServicer_to_server, down, PROVIDERS)], "127.0.0.1:0"
    )
    await dsrv.start()
    try:
        up = Upstream(f"127.0.0.1:{dsrv.port}")
        usrv = create_server(
            [ServiceBinding(selector_pb2_grpc.add_SelectorServiceServicer_to_server, up, SELECTOR)], "127.0.0.1:0"
        )
        await usrv.start()
        try:
            yield Pair(usrv, dsrv, down)
        finally:
            await usrv.stop(0)
    finally:
        await dsrv.stop(0)


async def finished(exporter: InMemorySpanExporter, count: int, within: float = 10.0) -> list[ReadableSpan]:
    """The finished spans, once there are ``count`` of them (a client span ends in a done callback)."""
    deadline = time.monotonic() + within
    while len(exporter.get_finished_spans()) < count:
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        await asyncio.sleep(0.01)
    return list(exporter.get_finished_spans())


def one(found: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    matching = [s for s in found if s.name == name and s.kind == kind]
    assert len(matching) == 1, [(s.name, s.kind) for s in found]
    return matching[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def code_of(span: ReadableSpan) -> int:
    assert span.attributes is not None
    code = span.attributes["rpc.grpc.status_code"]
    assert isinstance(code, int)
    return code


def texts(span: ReadableSpan) -> Iterator[str]:
    """Every text a span carries to a trace backend."""
    yield span.name
    yield span.status.description or ""
    for attributes in (span.attributes, span.resource.attributes, *(e.attributes for e in span.events)):
        for key, item in (attributes or {}).items():
            yield key + "=" + str(item)
    yield from (event.name for event in span.events)


async def test_a_call_through_two_servers_is_one_trace(spans: InMemorySpanExporter, pair: Pair) -> None:
    async with open_channel(f"127.0.0.1:{pair.upstream.port}") as channel:
        await selector_pb2_grpc.SelectorServiceStub(channel).AnalyzePrompt(
            selector_pb2.AnalyzePromptRequest(prompt="hi"), metadata=(("x-request-id", "req-traced"),)
        )
    found = await finished(spans, 4)
    analyze = f"/{SELECTOR}/AnalyzePrompt"
    list_models = f"/{PROVIDERS}/ListModels"
    client = one(found, analyze, SpanKind.CLIENT)
    server = one(found, analyze, SpanKind.SERVER)
    inner_client = one(found, list_models, SpanKind.CLIENT)
    inner_server = one(found, list_models, SpanKind.SERVER)
    assert {s.context.trace_id for s in found} == {client.context.trace_id}
    assert parent_of(client) is None
    assert parent_of(server) == client.context.span_id
    assert parent_of(inner_client) == server.context.span_id
    assert parent_of(inner_server) == inner_client.context.span_id
    assert server.parent is not None and server.parent.is_remote
    # W3C trace context travelled in the metadata, beside the request id
    (traceparent,) = pair.down.traceparents
    version, trace_hex, parent_hex, flags = traceparent.split("-")
    assert (version, trace_hex, parent_hex) == (
        "00",
        f"{client.context.trace_id:032x}",
        f"{inner_client.context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled
    assert pair.down.request_ids == ["req-traced"]
    assert server.attributes is not None and server.attributes["rpc.method"] == "AnalyzePrompt"


async def test_health_checks_are_not_traced(spans: InMemorySpanExporter, pair: Pair) -> None:
    async with open_channel(f"127.0.0.1:{pair.upstream.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        await selector_pb2_grpc.SelectorServiceStub(channel).AnalyzePrompt(selector_pb2.AnalyzePromptRequest())
    found = await finished(spans, 4)
    assert not [s.name for s in found if "Health" in s.name]


async def test_no_secret_or_prompt_lands_in_a_span(spans: InMemorySpanExporter, pair: Pair) -> None:
    registered = "sk-or-v1-" + secrets.token_hex(32)
    register_secret(registered)
    unregistered = "sk-or-v1-" + secrets.token_hex(32)  # an OPENROUTER_API_KEY-like string in a prompt
    prompt = f"Summarise this config: OPENROUTER_API_KEY={unregistered}"
    async with open_channel(f"127.0.0.1:{pair.upstream.port}") as channel:
        stub = selector_pb2_grpc.SelectorServiceStub(channel)
        await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=prompt))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzePrompt(selector_pb2.AnalyzePromptRequest(prompt=f"bad {registered}"))
    # the failure's message carries the secret to the caller (as a vendor's echo might); the client span's
    # status holds only the code, never the peer's message
    assert registered in (err.value.details() or "")
    found = await finished(spans, 6)
    failed = [s for s in found if s.kind == SpanKind.CLIENT and s.status.status_code is trace.StatusCode.ERROR]
    assert [s.status.description for s in failed] == ["INVALID_ARGUMENT"]
    everything = "\n".join(text for span in found for text in texts(span))
    assert registered not in everything and registered[9:25] not in everything
    assert unregistered not in everything and "OPENROUTER_API_KEY" not in everything
    assert "Summarise" not in everything


async def test_instrumented_calls_keep_details_deadlines_and_cancellation(
    spans: InMemorySpanExporter, pair: Pair
) -> None:
    async with open_channel(f"127.0.0.1:{pair.upstream.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await selector_pb2_grpc.SelectorServiceStub(channel).AnalyzePrompt(
                selector_pb2.AnalyzePromptRequest(prompt="bad prompt")
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert from_rpc_error(err.value, "selector").field == "prompt"  # the google.rpc details survived
    async with open_channel(f"127.0.0.1:{pair.downstream.port}") as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(providers_pb2.GenerateRequest(), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        request = providers_pb2.StreamGenerateRequest(request=providers_pb2.GenerateRequest(model="m"))
        assert [r.sequence async for r in stub.StreamGenerate(request)] == [1, 2]
        blocking = providers_pb2.StreamGenerateRequest(request=providers_pb2.GenerateRequest(model="block"))
        call = stub.StreamGenerate(blocking)
        async for first in call:
            assert first.sequence == 1
            break
        await pair.down.blocked.wait()
        call.cancel()
        await asyncio.wait_for(pair.down.cancelled.wait(), 10)
        assert await call.code() == grpc.StatusCode.CANCELLED
        # the span of a stream left mid-way ends with the call, still referenced here (not when collected)
        found = await finished(spans, 8)
        assert call is not None
    stream = f"/{PROVIDERS}/StreamGenerate"
    streams = [s for s in found if s.name == stream]
    assert sorted(s.kind.name for s in streams) == ["CLIENT", "CLIENT", "SERVER", "SERVER"]
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        codes = sorted(code_of(s) for s in streams if s.kind == kind)
        assert codes == [grpc.StatusCode.OK.value[0], grpc.StatusCode.CANCELLED.value[0]], kind
    refused = one(found, f"/{SELECTOR}/AnalyzePrompt", SpanKind.SERVER)
    assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refused.status.status_code is trace.StatusCode.UNSET  # a client's error, not the server's
    deadline = one(found, f"/{PROVIDERS}/Generate", SpanKind.CLIENT)
    assert deadline.status.description == "DEADLINE_EXCEEDED"


# ------------------------------------------------------------------------------------------- logs


class _Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[tuple[_Lines, _Lines]]:
    as_json, as_text = _Lines(JsonFormatter("test")), _Lines(TextFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(as_json)
    root.addHandler(as_text)
    try:
        yield as_json, as_text
    finally:
        root.removeHandler(as_json)
        root.removeHandler(as_text)
        root.setLevel(level)


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter, log_lines: tuple[_Lines, _Lines]) -> None:
    as_json, as_text = log_lines
    log = logging.getLogger("tests.tracing")
    log.info("outside")
    with trace.get_tracer("orchestratex.test").start_as_current_span("work") as span:
        log.info("inside")
    ids = f"{span.get_span_context().trace_id:032x}", f"{span.get_span_context().span_id:016x}"
    outside, inside = (json.loads(line) for line in as_json.lines)
    assert "trace_id" not in outside and "span_id" not in outside
    assert (inside["msg"], inside["trace_id"], inside["span_id"]) == ("inside", *ids)
    assert "trace_id" not in as_text.lines[0]
    assert as_text.lines[1].endswith(f"inside trace_id={ids[0]} span_id={ids[1]}")


async def test_a_handler_and_access_log_lines_carry_the_rpc_trace(
    spans: InMemorySpanExporter, pair: Pair, log_lines: tuple[_Lines, _Lines]
) -> None:
    as_json, _ = log_lines
    access_log = logging.getLogger("orchestratex.access")
    # ListModels is a routine polling RPC (ROUTINE_RPCS): its access line is at DEBUG.
    access_log.setLevel(logging.DEBUG)
    try:
        async with open_channel(f"127.0.0.1:{pair.upstream.port}") as channel:
            await selector_pb2_grpc.SelectorServiceStub(channel).AnalyzePrompt(selector_pb2.AnalyzePromptRequest())
    finally:
        access_log.setLevel(logging.NOTSET)
    found = await finished(spans, 4)
    inner_server = one(found, f"/{PROVIDERS}/ListModels", SpanKind.SERVER)
    records = [json.loads(line) for line in as_json.lines]
    handler = next(r for r in records if r["msg"] == "listing models")
    assert handler["trace_id"] == f"{inner_server.context.trace_id:032x}"
    assert handler["span_id"] == f"{inner_server.context.span_id:016x}"
    access = [r for r in records if r["logger"] == "orchestratex.access"]
    assert {r["rpc"] for r in access} == {f"/{SELECTOR}/AnalyzePrompt", f"/{PROVIDERS}/ListModels"}
    assert {r["trace_id"] for r in access} == {f"{inner_server.context.trace_id:032x}"}


def test_the_global_provider_is_the_sdk_one_while_on(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("orchestratex.test")
    with tracer.start_as_current_span("on") as span:
        assert span.is_recording()
    assert [s.name for s in spans.get_finished_spans()] == ["on"]
    assert isinstance(trace.get_tracer_provider(), SdkTracerProvider)
    with pytest.raises(RuntimeError):
        setup_tracing("test", exporter=InMemorySpanExporter())


def test_json_lines_stay_json_with_ids(spans: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("x"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    with trace.get_tracer("orchestratex.test").start_as_current_span("s"):
        handler.emit(record)
    assert set(json.loads(stream.getvalue())) >= {"trace_id", "span_id", "msg"}


def test_span_ids_never_draw_from_the_global_random_module(spans: InMemorySpanExporter) -> None:
    """A span must not move the sequence of a program (or Hypothesis) that uses the ``random`` module."""
    import random

    state = random.getstate()
    with trace.get_tracer("test").start_as_current_span("one") as span:
        assert span.get_span_context().is_valid
    assert random.getstate() == state
    assert [s.name for s in spans.get_finished_spans()][-1] == "one"
