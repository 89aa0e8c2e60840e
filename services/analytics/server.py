"""AnalyticsService servicer and ``build``: thin handlers that validate, call the store and the reports.

Tenancy: every read is scoped to the caller's tenant (``orchestratex.context.tenant``) when it is set;
an empty tenant is an internal caller and sees every tenant. Feedback on another tenant's session is
NOT_FOUND.

Feedback on a session analytics has not heard of is accepted: the orchestrator's outbox may not have
delivered the session's events yet, and analytics cannot tell such a session from one that does not
exist (the gateway asks the orchestrator first). The rating waits, with the caller's tenant, and joins
the session when its events arrive (see ``services.analytics.store.model``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.trace import Status, StatusCode

from orchestratex import context
from orchestratex.config import Settings
from orchestratex.errors import NotFound
from orchestratex.grpc_server import GrpcServer, ServiceBinding, building
from orchestratex.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2
from services.analytics import metrics, reports
from services.analytics.ingest import facts_from_request
from services.analytics.requests import (
    domain_filter,
    feedback_input,
    model_filter,
    session_limit,
    tenant_for_ingest,
    time_window,
)
from services.analytics.store import open_analytics_store
from services.analytics.store.model import AnalyticsStore, Scope

log = logging.getLogger(__name__)

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
DATABASE_FILE = "analytics.db"

Context = grpc.aio.ServicerContext[Any, Any]


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """The AnalyticsService RPCs over an :class:`AnalyticsStore`. ``clock`` returns nanoseconds (UTC)."""

    def __init__(self, store: AnalyticsStore, clock: Callable[[], int] = time.time_ns) -> None:
        self._store = store
        self._clock = clock

    def _scope(self, time_range: common_pb2.TimeRange | None, domain: int = 0) -> Scope:
        start_ns, end_ns = time_window(time_range, self._clock())
        return Scope(tenant=context.tenant.get(), start_ns=start_ns, end_ns=end_ns, domain=domain)

    async def GetModelPerformance(
        self, request: analytics_pb2.GetModelPerformanceRequest, ctx: Context
    ) -> analytics_pb2.GetModelPerformanceResponse:
        """Per-model and per-model-and-domain performance of the sessions in range."""
        scope = self._scope(_range(request), domain_filter(request.domain))
        model = model_filter(request.model)
        return reports.model_performance(await self._store.performance(scope, model), scope.domain)

    async def GetCostReport(
        self, request: analytics_pb2.GetCostReportRequest, ctx: Context
    ) -> analytics_pb2.GetCostReportResponse:
        """Spending of the sessions in range: total, per session, per model, per UTC day."""
        scope = self._scope(_range(request))
        limit = session_limit(request.session_limit)
        return reports.cost_report(await self._store.cost_summary(scope, limit))

    async def GetSelectionAccuracy(
        self, request: analytics_pb2.GetSelectionAccuracyRequest, ctx: Context
    ) -> analytics_pb2.GetSelectionAccuracyResponse:
        """Selection accuracy by shadow evaluation and by user feedback."""
        scope = self._scope(_range(request))
        return reports.selection_accuracy(await self._store.selection_accuracy(scope))

    async def SubmitFeedback(
        self, request: analytics_pb2.SubmitFeedbackRequest, ctx: Context
    ) -> analytics_pb2.SubmitFeedbackResponse:
        """Record or replace a user's rating of a session (or of one not delivered yet).

        Whether the session has finished is the orchestrator's to say, and the gateway asks it first: analytics
        hears of a session's end through the orchestrator's outbox, a moment later, so a session it still sees
        running may well have ended (a rating given right after the answer arrived was refused as "still
        running"). The rating counts under the session's current key and moves with it, as any figure does.
        """
        feedback = feedback_input(request)
        tenant = context.tenant.get()
        try:
            record, updated = await self._store.put_feedback(
                feedback.session_id, feedback.user_id, feedback.rating, feedback.comment, self._clock(), tenant=tenant
            )
        except LookupError:
            raise NotFound(f"session_id: no session {feedback.session_id!r}", field="session_id") from None
        log.info(
            "feedback %s on session %s%s",
            "updated" if updated else "recorded",
            feedback.session_id,
            " (waiting for its events)" if record.pending else "",
        )
        return analytics_pb2.SubmitFeedbackResponse(feedback=reports.feedback_proto(record), updated=updated)

    async def GetSatisfaction(
        self, request: analytics_pb2.GetSatisfactionRequest, ctx: Context
    ) -> analytics_pb2.GetSatisfactionResponse:
        """Ratings of the sessions in range: overall, per model, per domain, per day."""
        scope = self._scope(_range(request))
        return reports.satisfaction(await self._store.satisfaction(scope))

    async def IngestEvents(
        self, request: analytics_pb2.IngestEventsRequest, ctx: Context
    ) -> analytics_pb2.IngestEventsResponse:
        """Record a batch of events idempotently; ``response_delta`` events are skipped (not counted).

        Observed in :mod:`services.analytics.metrics` (batch size, lag, kinds, failures) and traced as
        one ``analytics.ingest`` span.
        """
        size = len(request.events)
        metrics.INGEST_BATCH_SIZE.observe(size)
        started = time.perf_counter()
        with metrics.tracer.start_as_current_span(
            metrics.INGEST_SPAN,
            attributes={"orx.batch_size": size},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                tenant = tenant_for_ingest(request.tenant, context.tenant.get())
                facts, skipped = facts_from_request(request)
                result = await self._store.ingest(tenant, facts)
            except BaseException as exc:
                metrics.INGEST_FAILURES.labels(metrics.failure_code(exc)).inc()
                if isinstance(exc, asyncio.CancelledError):
                    span.set_attribute("orx.cancelled", True)
                else:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            metrics.INGEST_DURATION.observe(time.perf_counter() - started)
            metrics.batch_stored(facts, result, skipped, time.time_ns())
            span.set_attributes(
                {"orx.accepted": result.accepted, "orx.duplicates": result.duplicates, "orx.skipped": skipped}
            )
        if skipped:
            log.debug("skipped %d response_delta events", skipped)
        return analytics_pb2.IngestEventsResponse(accepted=result.accepted, duplicates=result.duplicates)


def _range(
    request: analytics_pb2.GetModelPerformanceRequest
    | analytics_pb2.GetCostReportRequest
    | analytics_pb2.GetSelectionAccuracyRequest
    | analytics_pb2.GetSatisfactionRequest,
) -> common_pb2.TimeRange | None:
    return request.range if request.HasField("range") else None


async def open_store(settings: Settings) -> AnalyticsStore:
    """The analytics store for ``settings``: MongoDB when configured, else SQLite at ``<data_dir>/analytics.db``."""
    return await open_analytics_store(settings)


async def build(settings: Settings, listen: str | None = None) -> GrpcServer:
    """Build the analytics server (bound, not started); the store is closed by ``srv.stop``."""
    common = settings.common
    async with building(listen or str(common.listen["analytics"]), common.max_message_bytes) as (srv, resources):
        store = await open_store(settings)
        resources.push_async_callback(store.close)
        srv.add(
            ServiceBinding(
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, AnalyticsServicer(store), SERVICE_NAME
            )
        )
    return srv
