"""The orchestrator's metrics and spans, observed while real sessions run against the fake peers.

The Prometheus registry is the process's, shared with every other test: each test reads a metric
before and after what it does and asserts the difference. Spans go to an in-memory exporter added to
the SDK ``TracerProvider`` of the process (set here unless another test already did); every span of
the process reaches it, so each test picks its own by trace id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.hub import now_timestamp
from services.orchestrator.lease import LEASE_NAME, Holder, OrchestratorLease
from services.orchestrator.store.sqlite import SqliteSessionStore
from tests.orchestrator.conftest import Stack, start_stack, stop_stack, wait_until
from tests.spans import memory_exporter

#: The most series (label sets, ``le`` aside) any orchestrator metric may have. Fewer than the sessions
#: run by the cardinality test, so a label holding a session id or a prompt makes it fail.
MAX_SERIES = 30


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """Samples read before an action, to assert how much each moved after it."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self.samples = samples
        self.before = {self._key(n, ls): value(n, **ls) for n, ls in samples}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        return name + repr(sorted(labels.items()))

    def __call__(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self.before[self._key(name, labels)]


def sample(name: str, **labels: str) -> tuple[str, dict[str, str]]:
    return name, labels


# ----------------------------------------------------------------------------------------- spans


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's SDK provider (tests/spans.py)."""
    yield from memory_exporter()


def session_span(exporter: InMemorySpanExporter, session_id: str) -> ReadableSpan | None:
    for span in exporter.get_finished_spans():
        if span.name == "orchestrator.session" and (span.attributes or {}).get("orx.session_id") == session_id:
            return span
    return None


async def finished_session(exporter: InMemorySpanExporter, session_id: str) -> ReadableSpan:
    """The session's span, once it has ended (after the client saw the terminal event)."""
    await wait_until(lambda: session_span(exporter, session_id) is not None)
    found = session_span(exporter, session_id)
    assert found is not None
    return found


def trace_of(exporter: InMemorySpanExporter, root: ReadableSpan) -> list[ReadableSpan]:
    assert root.context is not None
    return [
        s
        for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == root.context.trace_id
    ]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id]


def every_attribute_value(spans: Sequence[ReadableSpan]) -> Iterator[str]:
    """Every attribute value of the spans, their events and their links, as text."""
    for span in spans:
        sources = [span.attributes, *(e.attributes for e in span.events), *(link.attributes for link in span.links)]
        for attributes in sources:
            for item in (attributes or {}).values():
                if isinstance(item, (list, tuple)):
                    yield from (str(v) for v in item)
                else:
                    yield str(item)
        if span.status.description:
            yield span.status.description


async def test_a_session_traces_its_rounds_calls_and_critics_without_its_text(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    marker = uuid.uuid4().hex
    prompt = f"Tell me the secret recipe {marker}"
    answer = f"the recipe is {marker[::-1]} quality=9"
    stack.providers.answers["m/alpha"] = [answer]
    stack.providers.critic_text["m/beta"] = f"I refuse to answer in JSON {marker}."
    events = await stack.run(prompt=prompt, max_rounds=2, quality_threshold=8, critic_count=2)
    session_id = events[0].session_id
    root = await finished_session(exporter, session_id)
    spans = trace_of(exporter, root)

    assert root.attributes is not None
    assert root.attributes["orx.status"] == "completed"
    assert root.attributes["orx.stop_reason"] == "threshold"
    assert root.attributes["orx.rounds"] == 1
    assert root.attributes["orx.primary_model"] == "m/alpha"
    assert root.status.status_code != StatusCode.ERROR

    [select] = children(spans, root, "orchestrator.select")
    assert select.attributes is not None
    assert select.attributes["orx.primary_model"] == "m/alpha"
    assert select.attributes["orx.domain"] == "factual"

    [round_span] = children(spans, root, "orchestrator.round")
    assert dict(round_span.attributes or {}) == {
        "orx.round": 1,
        "orx.aggregate_score": 9.0,
        "orx.critics_scored": 1,
        "orx.decision": "stop",
        "orx.stop_reason": "threshold",
    }

    [author] = children(spans, round_span, "orchestrator.answer")
    assert author.attributes is not None
    assert author.attributes["gen_ai.request.model"] == "m/alpha"
    assert author.attributes["gen_ai.usage.output_tokens"] == len(answer.split(" "))
    assert author.attributes["orx.cost_usd"] == pytest.approx(0.00001 + 0.000002 * len(answer.split(" ")))

    critics = {
        str((s.attributes or {})["gen_ai.request.model"]): s for s in children(spans, round_span, "orchestrator.critic")
    }
    assert sorted(critics) == ["m/beta", "m/gamma"]
    good, bad = critics["m/gamma"], critics["m/beta"]
    assert (good.attributes or {})["orx.score"] == 9.0
    assert "orx.failure_kind" not in (good.attributes or {})
    assert good.status.status_code != StatusCode.ERROR
    assert (bad.attributes or {})["orx.failure_kind"] == "invalid_output"
    assert "orx.score" not in (bad.attributes or {})
    assert bad.status.status_code == StatusCode.ERROR

    texts = list(every_attribute_value(spans))
    assert texts
    for text in texts:
        assert marker not in text and marker[::-1] not in text
        assert "secret recipe" not in text and "reviewed it" not in text


async def test_the_outbox_delivery_links_to_the_session(stack: Stack, exporter: InMemorySpanExporter) -> None:
    stack.providers.answers["m/alpha"] = ["linked quality=9"]
    events = await stack.run(prompt="Link me", max_rounds=1)
    root = await finished_session(exporter, events[0].session_id)
    assert root.context is not None
    session_context = root.context

    def delivery() -> ReadableSpan | None:
        for span in exporter.get_finished_spans():
            if span.name == "orchestrator.outbox.deliver" and any(
                link.context.span_id == session_context.span_id for link in span.links
            ):
                return span
        return None

    await wait_until(lambda: delivery() is not None)
    deliver = delivery()
    assert deliver is not None and deliver.context is not None
    assert deliver.parent is None  # a trace of its own, linked to the sessions it delivers
    assert deliver.context.trace_id != session_context.trace_id
    assert deliver.attributes is not None
    assert int(str(deliver.attributes["orx.batch_size"])) >= 1
    assert deliver.attributes["orx.delivered"] == deliver.attributes["orx.batch_size"]


async def test_a_cancelled_session_span_is_cancelled_not_an_error(stack: Stack, exporter: InMemorySpanExporter) -> None:
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1), timeout=30)
    session_id = (await call.read()).event.session_id
    await asyncio.wait_for(stack.providers.started.wait(), 5)
    await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id))
    _ = [r async for r in call]
    root = await finished_session(exporter, session_id)
    spans = trace_of(exporter, root)
    assert (root.attributes or {})["orx.status"] == "cancelled"
    assert root.status.status_code != StatusCode.ERROR
    [round_span] = children(spans, root, "orchestrator.round")
    [author] = children(spans, round_span, "orchestrator.answer")
    for span in (round_span, author):
        assert (span.attributes or {}).get("orx.cancelled") is True
        assert span.status.status_code != StatusCode.ERROR


async def test_a_detached_session_span_outlives_its_call(stack: Stack, exporter: InMemorySpanExporter) -> None:
    stack.providers.hang_after["m/alpha"] = 3
    stack.providers.answers["m/alpha"] = ["a long answer with many words in it quality=9"]
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="go", max_rounds=1, detached=True), timeout=30)
    session_id = (await call.read()).event.session_id
    await asyncio.wait_for(stack.providers.started.wait(), 5)
    call.cancel()
    # The author hangs until cancelled: the session is still running, its span still open.
    record = (await stack.stub.GetSession(pb.GetSessionRequest(session_id=session_id))).session
    assert record.status == pb.SESSION_STATUS_RUNNING
    assert session_span(exporter, session_id) is None
    await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id))
    root = await finished_session(exporter, session_id)
    spans = trace_of(exporter, root)
    assert (root.attributes or {})["orx.status"] == "cancelled"
    [round_span] = children(spans, root, "orchestrator.round")
    [author] = children(spans, round_span, "orchestrator.answer")
    assert root.end_time is not None and author.end_time is not None and round_span.end_time is not None
    assert author.end_time <= round_span.end_time <= root.end_time


# --------------------------------------------------------------------------------------- metrics


async def test_a_completed_session_is_counted(stack: Stack) -> None:
    d = Deltas(
        sample("orx_orchestrator_sessions_started_total"),
        sample("orx_orchestrator_sessions_total", status="completed", stop_reason="threshold"),
        sample("orx_orchestrator_session_rounds_count", status="completed"),
        sample("orx_orchestrator_session_rounds_sum", status="completed"),
        sample("orx_orchestrator_session_duration_seconds_count", status="completed"),
        sample("orx_orchestrator_critic_calls_total"),
        sample("orx_orchestrator_event_writer_batch_size_count"),
        sample("orx_orchestrator_event_writer_batch_size_sum"),
        sample("orx_orchestrator_event_writer_commit_seconds_count"),
    )
    running = value("orx_orchestrator_sessions_running")
    stack.providers.answers["m/alpha"] = ["v1 quality=6", "v2 quality=9"]
    events = await stack.run(prompt="Count me", max_rounds=3, quality_threshold=8, plateau_epsilon=0.1)
    assert events[-1].session_completed.stop_reason == pb.STOP_REASON_THRESHOLD
    await wait_until(lambda: d("orx_orchestrator_sessions_total", status="completed", stop_reason="threshold") == 1)
    assert d("orx_orchestrator_sessions_started_total") == 1
    assert d("orx_orchestrator_session_rounds_count", status="completed") == 1
    assert d("orx_orchestrator_session_rounds_sum", status="completed") == 2
    assert d("orx_orchestrator_session_duration_seconds_count", status="completed") == 1
    assert d("orx_orchestrator_critic_calls_total") == 4
    # Every event of the session was committed by the writer (alone here, so in batches of its own).
    assert d("orx_orchestrator_event_writer_batch_size_sum") == len(events)
    assert 1 <= d("orx_orchestrator_event_writer_batch_size_count") <= len(events)
    assert d("orx_orchestrator_event_writer_commit_seconds_count") == d(
        "orx_orchestrator_event_writer_batch_size_count"
    )
    assert value("orx_orchestrator_sessions_running") == running


async def test_a_cancelled_session_is_counted_and_stops_running(stack: Stack) -> None:
    d = Deltas(
        sample("orx_orchestrator_sessions_total", status="cancelled", stop_reason="none"),
        sample("orx_orchestrator_session_rounds_count", status="cancelled"),
        sample("orx_orchestrator_session_rounds_sum", status="cancelled"),
    )
    running = value("orx_orchestrator_sessions_running")
    stack.providers.block.add("m/alpha")
    call = stack.stub.Orchestrate(pb.OrchestrateRequest(prompt="slow", max_rounds=1), timeout=30)
    session_id = (await call.read()).event.session_id
    await asyncio.wait_for(stack.providers.started.wait(), 5)
    assert value("orx_orchestrator_sessions_running") == running + 1
    await stack.stub.CancelSession(pb.CancelSessionRequest(session_id=session_id))
    _ = [r async for r in call]
    await wait_until(lambda: d("orx_orchestrator_sessions_total", status="cancelled", stop_reason="none") == 1)
    assert d("orx_orchestrator_session_rounds_count", status="cancelled") == 1
    assert d("orx_orchestrator_session_rounds_sum", status="cancelled") == 0
    assert value("orx_orchestrator_sessions_running") == running


async def test_failing_critics_are_counted_by_kind(stack: Stack) -> None:
    d = Deltas(
        sample("orx_orchestrator_critic_calls_total"),
        sample("orx_orchestrator_critic_failures_total", kind="invalid_output"),
        sample("orx_orchestrator_critic_failures_total", kind="upstream_error"),
        sample("orx_orchestrator_sessions_total", status="completed", stop_reason="no_critique"),
    )
    stack.providers.critic_text["m/beta"] = "I refuse to answer in JSON."
    stack.providers.fail_before["m/gamma"] = grpc.StatusCode.UNAVAILABLE
    stack.providers.answers["m/alpha"] = ["unscored quality=9"]
    events = await stack.run(prompt="Critique me", max_rounds=2, critic_count=2)
    assert events[-1].session_completed.stop_reason == pb.STOP_REASON_NO_CRITIQUE
    await wait_until(lambda: d("orx_orchestrator_sessions_total", status="completed", stop_reason="no_critique") == 1)
    assert d("orx_orchestrator_critic_calls_total") == 2
    assert d("orx_orchestrator_critic_failures_total", kind="invalid_output") == 1
    assert d("orx_orchestrator_critic_failures_total", kind="upstream_error") == 1


async def test_a_failed_author_is_counted_and_its_fallback_traced(stack: Stack, exporter: InMemorySpanExporter) -> None:
    d = Deltas(sample("orx_orchestrator_author_failures_total", kind="rate_limited"))
    stack.providers.fail_before["m/alpha"] = grpc.StatusCode.RESOURCE_EXHAUSTED
    stack.providers.answers["m/beta"] = ["fallback quality=9"]
    events = await stack.run(prompt="Fall back", max_rounds=1)
    assert any(e.HasField("provider_fallback") for e in events)
    assert d("orx_orchestrator_author_failures_total", kind="rate_limited") == 1
    root = await finished_session(exporter, events[0].session_id)
    spans = trace_of(exporter, root)
    [round_span] = children(spans, root, "orchestrator.round")
    attempts = sorted(children(spans, round_span, "orchestrator.answer"), key=lambda s: s.start_time or 0)
    failed, replacement = (dict(s.attributes or {}) for s in attempts)
    assert failed["gen_ai.request.model"] == "m/alpha"
    assert failed["orx.failure_kind"] == failed["error.type"] == "rate_limited"
    assert failed["orx.fallback_model"] == "m/beta"
    assert "orx.fallback" not in failed
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert replacement["gen_ai.request.model"] == "m/beta"
    assert replacement["orx.fallback"] is True
    assert attempts[1].status.status_code != StatusCode.ERROR


async def test_the_outbox_backlog_grows_while_analytics_is_down_and_drains(stack: Stack) -> None:
    d = Deltas(
        sample("orx_orchestrator_outbox_failures_total", code="unavailable"),
        sample("orx_orchestrator_outbox_delivered_events_total"),
    )
    stack.analytics.down = True
    events = await stack.run(prompt="Queue me", max_rounds=1)
    await wait_until(lambda: d("orx_orchestrator_outbox_failures_total", code="unavailable") >= 1)
    # Measured after each failed attempt: every event of the session is still waiting (deltas too).
    await wait_until(lambda: value("orx_orchestrator_outbox_backlog_events") >= len(events))
    assert d("orx_orchestrator_outbox_delivered_events_total") == 0
    stack.analytics.down = False
    delivered = [e for e in events if not e.HasField("response_delta")]
    await wait_until(lambda: value("orx_orchestrator_outbox_backlog_events") == 0)
    assert d("orx_orchestrator_outbox_delivered_events_total") == len(delivered)
    assert len(stack.analytics.events) == len(delivered)


async def test_rejected_events_are_counted(stack: Stack) -> None:
    d = Deltas(sample("orx_orchestrator_outbox_rejected_events_total"))
    stack.analytics.reject_kind = "model_selected"
    await stack.run(prompt="Reject me", max_rounds=1)
    await wait_until(lambda: d("orx_orchestrator_outbox_rejected_events_total") == 1)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def test_leases_held_taken_over_and_lost_are_counted(tmp_path: Path) -> None:
    d = Deltas(sample("orx_orchestrator_lease_takeovers_total"), sample("orx_orchestrator_leases_lost_total"))
    held = value("orx_orchestrator_leases_held")
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    try:
        dead = dataclasses.replace(Holder.this_process(), pid=_dead_pid())
        now = 1_780_000_000.0
        await store.claim_lease(LEASE_NAME, dead.encode(), int(now * 1e6), int((now + 600) * 1e6))
        lease = OrchestratorLease(store, 0.3, clock=lambda: now)
        await lease.acquire()
        assert d("orx_orchestrator_lease_takeovers_total") == 1
        assert value("orx_orchestrator_leases_held") == held + 1
        lease.start()
        thief = Holder.this_process().encode()
        at = int(now * 1e6)
        await store.claim_lease(LEASE_NAME, thief, at, at + 60_000_000, steal_from=lease._me)
        await asyncio.wait_for(lease.lost.wait(), 10)
        assert d("orx_orchestrator_leases_lost_total") == 1
        assert value("orx_orchestrator_leases_held") == held
        await lease.release()
        assert value("orx_orchestrator_leases_held") == held

        again = OrchestratorLease(store, 10)
        await store.release_lease(LEASE_NAME, thief)
        await again.acquire()
        assert value("orx_orchestrator_leases_held") == held + 1
        await again.release()
        assert value("orx_orchestrator_leases_held") == held
        assert d("orx_orchestrator_lease_takeovers_total") == 1
    finally:
        await store.close()


async def test_recovery_counts_interrupted_sessions(tmp_path: Path) -> None:
    """A session whose log has no terminal event was cut short by a crash: recovery ends it, and counts it."""
    session_id = uuid.uuid4().hex
    store = await SqliteSessionStore.open(tmp_path / "orchestrator.db")
    now = now_timestamp()
    record = pb.Session(
        session_id=session_id,
        status=pb.SESSION_STATUS_RUNNING,
        request=pb.OrchestrateRequest(prompt="crashed"),
        create_time=now,
        update_time=now,
    )
    await store.create_session("", record)
    started = pb.OrchestrationEvent(session_id=session_id, sequence=1, time=now, session_started=pb.SessionStarted())
    await store.append_events([(session_id, 1, started.SerializeToString())])
    await store.close()
    d = Deltas(sample("orx_orchestrator_sessions_interrupted_total"))
    s = await start_stack(tmp_path)
    try:
        assert d("orx_orchestrator_sessions_interrupted_total") == 1
        got = (await s.stub.GetSession(pb.GetSessionRequest(session_id=session_id))).session
        assert got.status == pb.SESSION_STATUS_FAILED
    finally:
        await stop_stack(s)


# ----------------------------------------------------------------------------------- cardinality


def series_by_metric(prefixes: tuple[str, ...]) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Every series of the metrics whose name starts with one of ``prefixes``, read from the text exposition."""
    found: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        if not family.name.startswith(prefixes):
            continue
        series = found.setdefault(family.name, set())
        for s in family.samples:
            series.add(frozenset((k, v) for k, v in s.labels.items() if k != "le"))
    return found


async def test_fifty_sessions_keep_every_metric_bounded(stack: Stack) -> None:
    markers = [uuid.uuid4().hex for _ in range(50)]
    threads = [uuid.uuid4().hex for _ in range(50)]
    stack.providers.critic_text["m/beta"] = "I refuse to answer in JSON."
    stack.providers.answers["m/alpha"] = [f"answer {i} quality={5 + i % 5}" for i in range(200)]

    async def one(i: int) -> str:
        prompt = f"question {i} {markers[i]}"
        events = await stack.run(prompt=prompt, max_rounds=2, quality_threshold=8, thread_id=threads[i])
        return events[0].session_id

    session_ids: list[str] = []
    for start in range(0, 50, 10):
        session_ids += await asyncio.gather(*(one(i) for i in range(start, start + 10)))
    assert len(set(session_ids)) == 50
    await wait_until(lambda: len({e.session_id for e in stack.analytics.events}) == 50)

    found = series_by_metric(("orx_orchestrator_",))
    assert "orx_orchestrator_sessions" in found and "orx_orchestrator_critic_failures" in found
    assert_bounded(found, [*session_ids, *markers, *threads, "question"])


def assert_bounded(found: dict[str, set[frozenset[tuple[str, str]]]], forbidden: Sequence[str]) -> None:
    """No metric has more than :data:`MAX_SERIES` series and no label value holds a forbidden text."""
    too_many = {name: len(series) for name, series in found.items() if len(series) > MAX_SERIES}
    assert not too_many, f"metrics with more than {MAX_SERIES} series: {too_many}"
    leaked = sorted(
        (name, key, label)
        for name, series in found.items()
        for labels in series
        for key, label in labels
        if any(text in label for text in forbidden)
    )
    assert not leaked, f"label values that hold a session id, a thread id or a prompt: {leaked[:5]}"
