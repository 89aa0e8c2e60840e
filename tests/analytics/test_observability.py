"""Analytics' ingest metrics and span, observed through the real server on port 0.

The Prometheus registry is the process's, shared with every other test: each test reads a metric
before and after its batches and asserts the difference. Spans go to an in-memory exporter added to
the SDK ``TracerProvider`` of the process (set here unless another test already did); each test picks
its own spans by their attributes.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestratex.v1 import analytics_pb2 as apb
from orchestratex.v1 import orchestrator_pb2 as pb
from tests.analytics.builders import HOUR, SECOND, FakeSession, now_ns, random_session, realistic
from tests.spans import memory_exporter

# The generated service stubs are untyped (mypy sees them as Any).
Stub: TypeAlias = Any

#: The most series (label sets, ``le`` aside) any analytics metric may have: fewer than the sessions the
#: cardinality test ingests, so a label holding a session id or a tenant makes it fail.
MAX_SERIES = 30


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot(*names: str, **labels: str) -> dict[str, float]:
    return {name: value(name, **labels) for name in names}


def kinds_of(events: Sequence[pb.OrchestrationEvent]) -> Counter[str]:
    return Counter(str(e.WhichOneof("kind")) for e in events if not e.HasField("response_delta"))


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's SDK provider (tests/spans.py)."""
    yield from memory_exporter()


def ingest_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "analytics.ingest"]


async def test_a_batch_is_measured_by_size_kind_and_lag(stub: Stub) -> None:
    session = realistic(now_ns() - HOUR)
    kinds = kinds_of(session.events)
    stored = sum(kinds.values())
    skipped = len(session.events) - stored
    assert skipped == 1
    names = (
        "orx_analytics_ingest_batch_size_count",
        "orx_analytics_ingest_batch_size_sum",
        "orx_analytics_ingest_duration_seconds_count",
        "orx_analytics_ingest_lag_seconds_count",
        "orx_analytics_ingest_lag_seconds_sum",
        "orx_analytics_ingest_duplicates_total",
        "orx_analytics_ingest_skipped_total",
    )
    before = snapshot(*names)
    by_kind = {kind: value("orx_analytics_events_ingested_total", kind=kind) for kind in kinds}
    sent_ns = time.time_ns()
    response = await stub.IngestEvents(apb.IngestEventsRequest(events=session.events))
    answered_ns = time.time_ns()
    after = snapshot(*names)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert response.accepted == stored
    assert delta("orx_analytics_ingest_batch_size_count") == 1
    assert delta("orx_analytics_ingest_batch_size_sum") == len(session.events)
    assert delta("orx_analytics_ingest_duration_seconds_count") == 1
    assert delta("orx_analytics_ingest_skipped_total") == skipped
    assert delta("orx_analytics_ingest_duplicates_total") == 0
    for kind, count in kinds.items():
        assert value("orx_analytics_events_ingested_total", kind=kind) - by_kind[kind] == count, kind
    # One lag per stored event: from its time to the batch stored, between sending and the answer.
    times = [e.time.ToNanoseconds() for e in session.events if not e.HasField("response_delta")]
    assert delta("orx_analytics_ingest_lag_seconds_count") == stored
    lag = delta("orx_analytics_ingest_lag_seconds_sum")
    assert sum(sent_ns - t for t in times) / SECOND <= lag <= sum(answered_ns - t for t in times) / SECOND

    again = await stub.IngestEvents(apb.IngestEventsRequest(events=session.events))
    assert again.duplicates == stored
    assert value("orx_analytics_ingest_duplicates_total") - after["orx_analytics_ingest_duplicates_total"] == stored


async def test_rejected_batches_are_counted_by_code(stub: Stub) -> None:
    invalid = value("orx_analytics_ingest_failures_total", code="invalid_argument")
    denied = value("orx_analytics_ingest_failures_total", code="permission_denied")
    lags = value("orx_analytics_ingest_lag_seconds_count")
    bad = FakeSession(now_ns()).started()
    bad.events[0].ClearField("time")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestEvents(apb.IngestEventsRequest(events=bad.events))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    good = FakeSession(now_ns()).started()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.IngestEvents(
            apb.IngestEventsRequest(events=good.events, tenant="team-b"), metadata=(("x-orx-tenant", "team-a"),)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert value("orx_analytics_ingest_failures_total", code="invalid_argument") - invalid == 1
    assert value("orx_analytics_ingest_failures_total", code="permission_denied") - denied == 1
    assert value("orx_analytics_ingest_lag_seconds_count") == lags


async def test_each_batch_has_a_span_without_the_events_text(stub: Stub, exporter: InMemorySpanExporter) -> None:
    marker = uuid.uuid4().hex
    session = FakeSession(now_ns() - SECOND)
    session.add(session_started=pb.SessionStarted(request=pb.OrchestrateRequest(prompt=f"secret prompt {marker}")))
    session.delta("m/a", f"secret answer {marker}").response("m/a", 0.001).completed(8.0, "m/a")
    seen = len(ingest_spans(exporter))
    await stub.IngestEvents(apb.IngestEventsRequest(events=session.events, tenant=f"tenant-{marker}"))
    bad = FakeSession(now_ns()).started()
    bad.events[0].ClearField("time")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.IngestEvents(apb.IngestEventsRequest(events=bad.events))

    ok, failed = ingest_spans(exporter)[seen:]
    assert dict(ok.attributes or {}) == {
        "orx.batch_size": len(session.events),
        "orx.accepted": len(session.events) - 1,
        "orx.duplicates": 0,
        "orx.skipped": 1,
    }
    assert ok.status.status_code != StatusCode.ERROR
    assert dict(failed.attributes or {}) == {"orx.batch_size": 1}
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "InvalidArgument"
    for span in (ok, failed):
        texts = [str(v) for v in (span.attributes or {}).values()] + [str(span.status.description)]
        texts += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        assert not [t for t in texts if marker in t or session.session_id in t or "secret" in t]


async def test_fifty_sessions_keep_every_metric_bounded(stub: Stub) -> None:
    rng = random.Random(17)
    start = now_ns() - HOUR
    sessions = [random_session(rng, start + i * SECOND) for i in range(50)]
    tenants = [f"tenant-{uuid.uuid4().hex}" for _ in sessions]
    for session, tenant in zip(sessions, tenants, strict=True):
        await stub.IngestEvents(apb.IngestEventsRequest(events=session.events, tenant=tenant))

    found: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        if family.name.startswith("orx_analytics_"):
            series = found.setdefault(family.name, set())
            series.update(frozenset((k, v) for k, v in s.labels.items() if k != "le") for s in family.samples)
    assert "orx_analytics_events_ingested" in found and "orx_analytics_ingest_lag_seconds" in found
    too_many = {name: len(series) for name, series in found.items() if len(series) > MAX_SERIES}
    assert not too_many, f"metrics with more than {MAX_SERIES} series: {too_many}"
    forbidden = [*(s.session_id for s in sessions), *tenants]
    leaked = sorted(
        (name, key, label)
        for name, series in found.items()
        for labels in series
        for key, label in labels
        if any(text in label for text in forbidden)
    )
    assert not leaked, f"label values that hold a session id or a tenant: {leaked[:5]}"
    kinds = {dict(labels).get("kind") for labels in found["orx_analytics_events_ingested"]}
    assert kinds <= {f.name for f in pb.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields}
