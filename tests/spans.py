"""One test helper for spans: an in-memory exporter on the process's OpenTelemetry SDK provider."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestratex.tracing import private_id_generator


def memory_exporter() -> Iterator[InMemorySpanExporter]:
    """Yield an exporter that sees every span ended meanwhile, on the global SDK provider (installed if none is:
    OpenTelemetry allows one per process, so later tests add their own exporter to it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider(id_generator=private_id_generator()))
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"the global tracer provider is a {type(provider).__name__}"
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()
