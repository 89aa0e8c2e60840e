"""Observability end to end.

(a) The whole suite under ``orchestratex up`` with every ``ORX_<SERVICE>_METRICS_LISTEN`` set: 200 orchestrations
over gRPC (each with its own tenant, request id and prompt), each session then read through the gateway's
REST API, and all five ``/metrics`` endpoints scraped and parsed with Prometheus' text parser: no metric family
has more than a fixed number of series, and no label value is a session id, a request id, a tenant, a prompt
or a key.

(c) The suite under ``orchestratex up`` exporting over OTLP (``OTEL_EXPORTER_OTLP_ENDPOINT``) to a stand-in
collector in this process, with a batch delay longer than the test: the spans reach the collector only through
each process's flush at shutdown, and one completion through the gateway is one trace across the gateway,
orchestrator, selector and providers processes, each under its own ``service.name``.

(b) The real services and the gateway in this process (tests/gateway/live_stack.py) with tracing set up on the
SDK's in-memory exporter: one completion through the gateway's OpenAI-compatible API is one trace from the
gateway's server span through the orchestrator to the selector and the providers, every span's parent in the
trace; no span carries the prompt or a key.

What (b) found about analytics: it is not in the request's path. The orchestrator's outbox delivers the events
afterwards from its own background task, so the ``IngestEvents`` call is the root of another trace: the
analytics server span is the child of the orchestrator's client span there, and when the orchestrator's own
spans are in place that trace's ``orchestrator.outbox.deliver`` span links to the session's span (a span link,
not a parent), which the test checks when it finds it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from orchestratex.tracing import setup_tracing, shutdown_tracing
from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.e2e.conftest import SERVICES, launch_suite
from tests.gateway.live_stack import running_stack
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SESSIONS = 200
CONCURRENCY = 20
MAX_SERIES = 60
"""The most label sets one metric family may have after the sessions (a histogram's buckets, sum and count of one
label set count once: bounded by the catalogue, not by the traffic). Well below SESSIONS, so a label with one
value per session cannot pass."""
MAX_SAMPLES = 5000
"""The most samples one endpoint may answer with (every bucket counted)."""
# Label values that look like ids or keys: a uuid, 16+ hex digits, a key prefix.
SUSPICIOUS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{16,}|sk-or-|orx_[A-Za-z0-9_-]{8,}", re.IGNORECASE)


# ------------------------------------------------------------------------------ (a) label cardinality


async def orchestrate(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, index: int) -> tuple[str, str, str, str]:
    """One session with its own tenant, request id and prompt; (session id, tenant, request id, prompt)."""
    tenant, rid = f"tenant-{uuid.uuid4().hex}", uuid.uuid4().hex
    prompt = f"Explain observability, variant {index} marker-{uuid.uuid4().hex}"
    request = orchestrator_pb2.OrchestrateRequest(prompt=prompt, max_rounds=2, critic_count=1)
    session_id = ""
    call = stub.Orchestrate(request, metadata=(("x-orx-tenant", tenant), ("x-request-id", rid)), timeout=120)
    async for response in call:
        session_id = session_id or response.event.session_id
    assert await call.code() == grpc.StatusCode.OK
    return session_id, tenant, rid, prompt


def series_of(text: str) -> dict[str, list[dict[str, str]]]:
    """Family name -> the label sets of its samples, from the Prometheus text format."""
    return {
        family.name: [dict(sample.labels) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


async def test_after_200_sessions_every_endpoint_has_bounded_series_and_no_private_label(tmp_path: Path) -> None:
    metrics_ports = {name: free_port() for name in SERVICES}
    env = {f"ORX_{name.upper()}_METRICS_LISTEN": f"127.0.0.1:{port}" for name, port in metrics_ports.items()}
    with launch_suite(tmp_path, ORX_SIM_SPEED="500", ORX_LOG_LEVEL="WARNING", **env) as suite:
        assert sum("/metrics" in line for line in suite.output) == len(SERVICES), "".join(suite.output)
        gate = asyncio.Semaphore(CONCURRENCY)
        async with grpc.aio.insecure_channel(suite.addr["orchestrator"]) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

            async def one(index: int) -> tuple[str, str, str, str]:
                async with gate:
                    return await orchestrate(stub, index)

            done = await asyncio.gather(*(one(i) for i in range(SESSIONS)))
        session_ids = {d[0] for d in done}
        assert len(session_ids) == SESSIONS and "" not in session_ids
        # every session read back through the gateway: its id is in the path of each request
        async with aiohttp.ClientSession() as http:
            for session_id in session_ids:
                async with http.get(f"http://{suite.addr['gateway']}/v1/orchestrations/{session_id}") as resp:
                    assert resp.status == 200, await resp.text()

            texts: dict[str, str] = {}
            for name, port in metrics_ports.items():
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    assert resp.status == 200
                    texts[name] = await resp.text()

    private = {*session_ids, *(d[1] for d in done), *(d[2] for d in done)}
    prompts = [d[3] for d in done]
    for name, text in texts.items():
        families = series_of(text)
        assert "process_resident_memory_bytes" in families and "orx_event_loop_lag_seconds" in families, name
        sizes = Counter({family: len(label_sets(samples)) for family, samples in families.items()})
        assert max(sizes.values()) <= MAX_SERIES, f"{name}: {sizes.most_common(3)}"
        assert sum(len(samples) for samples in families.values()) <= MAX_SAMPLES, name
        for family, samples in families.items():
            for labels in samples:
                for key, label in labels.items():
                    where = f"{name}: {family}{{{key}={label!r}}}"
                    assert label not in private, where
                    assert not SUSPICIOUS.search(label), where
                    assert "marker-" not in label and len(label) <= 100, where
                    assert not any(label and label in prompt for prompt in prompts if len(label) > 20), where

    # the endpoints counted the traffic: each session's Orchestrate call on the orchestrator's server side
    orchestrator = series_of(texts["orchestrator"])["orx_grpc_server_requests"]
    ok = [s for s in orchestrator if s.get("method") == "Orchestrate" and s.get("code") == "OK"]
    assert ok, orchestrator
    assert _value(texts["orchestrator"], "orx_grpc_server_requests_total", method="Orchestrate", code="OK") >= SESSIONS
    assert _value(texts["providers"], "orx_grpc_server_requests_total", method="StreamGenerate", code="OK") > 0
    assert _value(texts["orchestrator"], "orx_grpc_client_requests_total", method="StreamGenerate", code="OK") > 0


def label_sets(samples: list[dict[str, str]]) -> set[frozenset[tuple[str, str]]]:
    """The distinct label sets, a histogram's ``le`` left out."""
    return {frozenset((k, v) for k, v in labels.items() if k != "le") for labels in samples}


def _value(text: str, sample_name: str, **labels: str) -> float:
    """The sum of the samples named ``sample_name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and labels.items() <= sample.labels.items()
    )


# ------------------------------------------------------------------------------------ (b) one trace


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> Iterator[ReadableSpan]:
    """The span's parent, its parent's parent... as far as they are in ``by_id``."""
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        yield span


def named(found: list[ReadableSpan], name: str, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in found if s.name == name and s.kind == kind]


def texts_of(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    yield span.status.description or ""
    for attributes in (
        span.attributes,
        *(e.attributes for e in span.events),
        *(link.attributes for link in span.links),
    ):
        for key, item in (attributes or {}).items():
            yield key + "=" + str(item)


async def test_a_completion_through_the_gateway_is_one_trace_across_the_services(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    assert setup_tracing("stack", exporter=exporter)
    marker = f"marker-{uuid.uuid4().hex}"
    fake_key = "sk-or-v1-" + secrets.token_hex(32)
    prompt = f"Explain tracing in two sentences ({marker}); config OPENROUTER_API_KEY={fake_key}"
    try:
        async with running_stack(tmp_path) as stack, aiohttp.ClientSession() as http:
            body: dict[str, Any] = {
                "model": "orchestratex",
                "messages": [{"role": "user", "content": prompt}],
                "orchestratex": {"max_rounds": 2, "critic_count": 2, "quality_threshold": 9.9},
            }
            url = f"{stack.base}/openai/v1/chat/completions"
            async with http.post(url, json=body, headers=stack.auth()) as resp:
                assert resp.status == 200, await resp.text()
                session_id = resp.headers["X-OrchestrateX-Session-Id"]
            found = await _spans_until(exporter, _ingested)
    finally:
        shutdown_tracing()

    gateway = [s for s in found if s.kind == SpanKind.SERVER and s.name.startswith("POST /openai/v1/chat/completions")]
    assert len(gateway) == 1, sorted({(s.name, s.kind.name) for s in found})
    trace_id = gateway[0].context.trace_id
    in_trace = [s for s in found if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    # every span of the trace hangs under the gateway's request (the test's own HTTP client span is its root)
    root = [s for s in in_trace if s.parent is None or s.parent.span_id not in by_id]
    assert len(root) == 1 and (root[0] is gateway[0] or root[0].kind == SpanKind.CLIENT), [s.name for s in root]
    for span in in_trace:
        if span is not root[0]:
            assert gateway[0] in ancestors(span, by_id) or span is gateway[0], span.name

    service = "/orchestratex.v1.{}/{}".format
    orchestrate = named(in_trace, service("OrchestratorService", "Orchestrate"), SpanKind.SERVER)
    assert len(orchestrate) == 1
    orchestrate_client = by_id[orchestrate[0].parent.span_id]  # type: ignore[union-attr]
    assert orchestrate_client.kind == SpanKind.CLIENT and orchestrate_client.name == orchestrate[0].name
    assert gateway[0] in ancestors(orchestrate_client, by_id)
    # the selector and the providers answered calls made inside the session, each its client span's child
    downstream = [
        s
        for s in in_trace
        if s.kind == SpanKind.SERVER
        and s.name.startswith(("/orchestratex.v1.SelectorService/", service("ProviderService", "")))
    ]
    assert {s.name.split("/")[1] for s in downstream} == {
        "orchestratex.v1.SelectorService",
        "orchestratex.v1.ProviderService",
    }
    for span in downstream:
        parent = by_id[span.parent.span_id]  # type: ignore[union-attr]
        assert parent.kind == SpanKind.CLIENT and parent.name == span.name
        assert orchestrate[0] in ancestors(span, by_id), span.name
    providers = [s for s in downstream if "ProviderService" in s.name]
    assert len(providers) >= 3  # an answer, two critiques, a refinement

    # the other helpers' spans, where they exist, sit under the right parents
    for span in in_trace:
        lineage = [a.name for a in ancestors(span, by_id)]
        if span.name in {"orchestrator.round", "orchestrator.select"}:
            assert orchestrate[0].name in lineage, (span.name, lineage)
        if span.name in {"orchestrator.critic", "orchestrator.answer", "orchestrator.refine"}:
            assert any(n in {"orchestrator.round", "orchestrator.shadow"} for n in lineage), (span.name, lineage)
        if span.name.startswith("providers."):
            assert any(n.startswith(service("ProviderService", "")) for n in lineage), (span.name, lineage)

    # analytics: fed by the outbox after the session, in a trace of its own (see the module docstring)
    ingest = named(found, service("AnalyticsService", "IngestEvents"), SpanKind.SERVER)
    assert ingest
    for span in ingest:
        client = [s for s in found if s.context.span_id == span.parent.span_id]  # type: ignore[union-attr]
        assert len(client) == 1 and client[0].kind == SpanKind.CLIENT and client[0].name == span.name
    deliveries = [s for s in found if s.name == "orchestrator.outbox.deliver"]
    if deliveries:  # the orchestrator's spans are in place: a delivery links to the session's trace
        assert any(link.context.trace_id == trace_id for s in deliveries for link in s.links)

    everything = "\n".join(text for span in found for text in texts_of(span))
    assert marker not in everything and fake_key not in everything and "OPENROUTER_API_KEY" not in everything
    assert stack.key_a not in everything and stack.key_b not in everything
    assert session_id  # ids may appear in attributes; prompts and keys never


def _ingested(found: list[ReadableSpan]) -> bool:
    gateway_done = any(s.kind == SpanKind.SERVER and s.name.startswith("POST /openai/") for s in found)
    ingested = any(s.kind == SpanKind.SERVER and s.name.endswith("/IngestEvents") for s in found)
    return gateway_done and ingested


async def _spans_until(exporter: InMemorySpanExporter, ready: Any, within: float = 30.0) -> list[ReadableSpan]:
    deadline = time.monotonic() + within
    while not ready(list(exporter.get_finished_spans())):
        assert time.monotonic() < deadline, sorted({s.name for s in exporter.get_finished_spans()})
        await asyncio.sleep(0.05)
    return list(exporter.get_finished_spans())


# ------------------------------------------------------------------------- (c) OTLP from every process


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A stand-in OpenTelemetry collector: keeps every span it is sent, with its resource's service.name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((attributes["service.name"], span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_every_process_exports_its_spans_over_otlp_and_flushes_them_at_shutdown(tmp_path: Path) -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # longer than the test: only the flush at shutdown exports
    }
    marker = f"marker-{uuid.uuid4().hex}"
    try:
        with launch_suite(tmp_path, ORX_SIM_SPEED="500", **otel) as suite:
            async with aiohttp.ClientSession() as http:
                body = {
                    "model": "orchestratex",
                    "messages": [{"role": "user", "content": f"Explain OTLP ({marker})"}],
                    "orchestratex": {"max_rounds": 1, "critic_count": 1},
                }
                url = f"http://{suite.addr['gateway']}/openai/v1/chat/completions"
                async with http.post(url, json=body) as resp:
                    assert resp.status == 200, await resp.text()
            # the outbox delivers the session's events to analytics after the answer: wait for them
            async with grpc.aio.insecure_channel(suite.addr["analytics"]) as channel:
                stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
                deadline = time.monotonic() + 30
                while not (await stub.GetCostReport(analytics_pb2.GetCostReportRequest(), timeout=5)).session_count:
                    assert time.monotonic() < deadline, "analytics never heard of the session"
                    await asyncio.sleep(0.05)
            with collector.lock:
                assert collector.spans == []  # nothing exported before the processes stop
    finally:
        server.stop(None)

    spans = collector.spans
    gateway = [
        s for name, s in spans if name == "orchestratex-gateway" and s.name == "POST /openai/v1/chat/completions"
    ]
    assert len(gateway) == 1, sorted({(name, s.name) for name, s in spans})
    trace_id = gateway[0].trace_id
    in_trace = [(name, s) for name, s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: (name, s) for name, s in in_trace}
    server_kind = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
    servers = {(name, s.name) for name, s in in_trace if s.kind == server_kind}
    assert {
        ("orchestratex-gateway", "POST /openai/v1/chat/completions"),
        ("orchestratex-orchestrator", "/orchestratex.v1.OrchestratorService/Orchestrate"),
        ("orchestratex-selector", "/orchestratex.v1.SelectorService/SelectModels"),
        ("orchestratex-providers", "/orchestratex.v1.ProviderService/StreamGenerate"),
        ("orchestratex-providers", "/orchestratex.v1.ProviderService/Generate"),
    } <= servers
    # each gRPC server span's parent is the client span of the same method, in the calling process
    for name, span in in_trace:
        if span.kind == server_kind and span.name.startswith("/orchestratex.v1."):
            caller, parent = by_id[span.parent_span_id]
            assert parent.name == span.name and caller != name, (name, span.name, caller)
    assert all(marker.encode() not in s.SerializeToString() for _, s in spans)
    # analytics exported too: its ingestion is a trace of its own, started by the orchestrator's outbox
    ingest = [s for name, s in spans if name == "orchestratex-analytics" and s.name.endswith("/IngestEvents")]
    assert ingest
    callers = {s.span_id: name for name, s in spans}
    assert {callers.get(s.parent_span_id) for s in ingest} == {"orchestratex-orchestrator"}
