"""The analytics service's Prometheus metrics, defined once, and its tracer.

Module-level metric objects on the default ``prometheus_client.REGISTRY`` are prometheus_client's idiom
(the registry is the process's; a metric registered twice is an error), and a module-level tracer is
OpenTelemetry's (a proxy: spans are no-ops until the process installs an SDK ``TracerProvider``). They are
exposed by the process's metrics endpoint (``ORX_ANALYTICS_METRICS_LISTEN``, set up in ``orchestratex``).

Labels are bounded: an event's kind (the name of its ``OrchestrationEvent`` oneof case) and a gRPC
status code, lowercased. Never a session id, a tenant, or text from the events.

==============================================  =========  =====  ===============================================
Name                                            Type       Label  Meaning
==============================================  =========  =====  ===============================================
``orx_analytics_ingest_lag_seconds``            histogram         Event time (when the orchestrator emitted it)
                                                                  to the batch holding it being stored, per
                                                                  event; a re-delivered duplicate counts again.
``orx_analytics_ingest_batch_size``             histogram         Events per ``IngestEvents`` batch received.
``orx_analytics_ingest_duration_seconds``       histogram         Time to validate and store one batch.
``orx_analytics_events_ingested_total``         counter    kind   Events stored (or found already stored), by
                                                                  kind (``session_started``, ``warning``, ...).
``orx_analytics_ingest_duplicates_total``       counter           Events already recorded (re-deliveries).
``orx_analytics_ingest_skipped_total``          counter           ``response_delta`` events received and skipped.
``orx_analytics_ingest_failures_total``         counter    code   Batches rejected or not stored, by status code
                                                                  (``invalid_argument``, ``permission_denied``,
                                                                  ``internal`` for a storage error, ...).
==============================================  =========  =====  ===============================================

Span: ``analytics.ingest`` around one batch (a child of the ``IngestEvents`` server span, itself a child
of the orchestrator's ``orchestrator.outbox.deliver`` when both ends are instrumented), with
``orx.batch_size``, ``orx.accepted``, ``orx.duplicates`` and ``orx.skipped``; ERROR with the exception's
type when the batch fails.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Sequence

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from orchestratex.errors import OrxError
from orchestratex.v1 import orchestrator_pb2
from services.analytics.store.model import EventFacts, IngestResult

tracer = trace.get_tracer("orchestratex.analytics")

INGEST_SPAN = "analytics.ingest"

#: Every kind of event (the ``OrchestrationEvent`` oneof's cases): the only values of the ``kind`` label.
KINDS = frozenset(field.name for field in orchestrator_pb2.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields)

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

INGEST_LAG = Histogram(
    "orx_analytics_ingest_lag_seconds",
    "Time from an event's emission by the orchestrator to its batch being stored.",
    buckets=_LAG_BUCKETS,
)
INGEST_BATCH_SIZE = Histogram(
    "orx_analytics_ingest_batch_size", "Events per IngestEvents batch received.", buckets=_BATCH_BUCKETS
)
INGEST_DURATION = Histogram(
    "orx_analytics_ingest_duration_seconds", "Time to validate and store one batch.", buckets=_SECONDS_BUCKETS
)
EVENTS_INGESTED = Counter(
    "orx_analytics_events_ingested", "Events stored (or found already stored), by kind.", ("kind",)
)
INGEST_DUPLICATES = Counter("orx_analytics_ingest_duplicates", "Events already recorded (re-deliveries).")
INGEST_SKIPPED = Counter("orx_analytics_ingest_skipped", "response_delta events received and skipped.")
INGEST_FAILURES = Counter(
    "orx_analytics_ingest_failures", "Batches rejected or not stored, by gRPC status code.", ("code",)
)


def kind_label(kind: str) -> str:
    """The event kind as a label (``other`` for a name outside :data:`KINDS`, which cannot happen today)."""
    return kind if kind in KINDS else "other"


def batch_stored(facts: Sequence[EventFacts], result: IngestResult, skipped: int, now_ns: int) -> None:
    """Count a stored batch: its events by kind, duplicates, skipped deltas, and each event's lag."""
    for kind, count in Tally(f.kind for f in facts).items():
        EVENTS_INGESTED.labels(kind_label(kind)).inc(count)
    if result.duplicates:
        INGEST_DUPLICATES.inc(result.duplicates)
    if skipped:
        INGEST_SKIPPED.inc(skipped)
    observe = INGEST_LAG.observe
    for fact in facts:
        # A clock behind the orchestrator's would give a negative lag: count it as none.
        observe(max(0, now_ns - fact.time_ns) / 1e9)


def failure_code(exc: BaseException) -> str:
    """A failed batch as a label: its canonical status code lowercased (``internal`` for a storage error)."""
    if isinstance(exc, OrxError):
        return str(exc.code.name).lower()
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"
