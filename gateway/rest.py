"""REST endpoints (JSON). Bodies and responses are canonical proto3 JSON of the gRPC messages.

Every name is snake_case, the proto field names (as grpcurl prints them): responses, error bodies, body
fields and query parameters. On input, lowerCamelCase spellings are accepted too (``maxRounds``,
``pageSize``); errors name the field as the client spelt it.

=============================================  ==================================================
``POST /v1/orchestrations``                    body: ``OrchestrateRequest``; starts a session that
                                               runs on its own; 201 ``{"session_id": ...}``
``GET  /v1/orchestrations``                    ``ListSessionsResponse``; query: ``page_size``,
                                               ``page_token``, ``status``, ``thread_id``,
                                               ``start_time``, ``end_time`` (its ``range``)
``GET  /v1/orchestrations/{id}``               ``GetSessionResponse`` (``{"session": {...}}``)
``GET  /v1/orchestrations/{id}/events``        Server-Sent Events (:mod:`gateway.sse`)
``POST /v1/orchestrations/{id}:cancel``        optional body ``{"reason": ...}``;
                                               ``CancelSessionResponse``
``POST /v1/orchestrations/{id}/feedback``      body ``{"rating", "comment"?, "user_id"?}``;
                                               ``SubmitFeedbackResponse``
``GET  /v1/models``                            ``ListModelsResponse``; query: ``include_unavailable``
``GET  /v1/analytics/performance``             ``GetModelPerformanceResponse``; query: ``start_time``,
                                               ``end_time``, ``model``, ``domain``
``GET  /v1/analytics/costs``                   ``GetCostReportResponse``; + ``session_limit``
``GET  /v1/analytics/selection-accuracy``      ``GetSelectionAccuracyResponse``
``GET  /v1/analytics/satisfaction``            ``GetSatisfactionResponse``
``GET  /healthz``                              200 while the process is up
``GET  /readyz``                               200 when the orchestrator and providers report
                                               SERVING on the standard health service, else 503
=============================================  ==================================================

Errors: ``{"error": {"code": "<gRPC status name>", "status": <HTTP>, "message": "...", "field"?,
"retry_after"?}}``
with the HTTP status from :func:`gateway.errors.http_status`. As in proto3 JSON, fields at their
default value (empty lists, zeros, false) are omitted from responses.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final, TypeVar

import grpc
import orjson
from aiohttp import web
from google.protobuf.message import Message

from gateway import schemas
from gateway.errors import GatewayError, from_rpc, invalid
from gateway.events_json import message_to_dict
from gateway.inputs import (
    check_id,
    parse_domain,
    parse_feedback,
    parse_int,
    parse_json_object,
    parse_orchestrate_request,
    parse_session_status,
    parse_timestamp,
    query_value,
)
from gateway.state import OPTIONS, SETTINGS, UPSTREAM, spawn
from gateway.upstream import Upstream, check_health
from orchestratex.v1 import analytics_pb2, common_pb2, orchestrator_pb2, providers_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PAGE_SIZE: Final = 100
MAX_SESSION_LIMIT: Final = 1000
_BOOLEANS: Final = {"true": True, "false": False}


def setup_routes(app: web.Application) -> None:
    """Register the REST routes on ``app``."""
    app.router.add_post("/v1/orchestrations", create_orchestration)
    app.router.add_get("/v1/orchestrations", list_orchestrations)
    # The id excludes ':' so that ".../{id}:cancel" never reads as a session id.
    app.router.add_get("/v1/orchestrations/{id:[^/:]+}", get_orchestration)
    app.router.add_post("/v1/orchestrations/{id:[^/:]+}:cancel", cancel_orchestration)
    app.router.add_post("/v1/orchestrations/{id:[^/:]+}/feedback", submit_feedback)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/analytics/performance", analytics_performance)
    app.router.add_get("/v1/analytics/costs", analytics_costs)
    app.router.add_get("/v1/analytics/selection-accuracy", analytics_selection_accuracy)
    app.router.add_get("/v1/analytics/satisfaction", analytics_satisfaction)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def proto_response(message: Message, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response holding ``message`` in canonical proto3 JSON."""
    return json_response(message_to_dict(message), status=status, headers=headers)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


async def create_orchestration(request: web.Request) -> web.Response:
    """``POST /v1/orchestrations``: start a detached session and return its id once it exists."""
    app = request.app
    body = await _read_json_body(request, required=True)
    orchestrate = parse_orchestrate_request(body, "body", "prompt", app[SETTINGS].common.max_prompt_chars)
    # Detached: the session must outlive this request, and dropping the stream must not cancel it.
    orchestrate.detached = True
    timeout = app[OPTIONS].first_event_timeout or app[SETTINGS].common.rpc_timeout
    # An application-owned task: if the client goes away mid-request, the start still completes
    # and the stream is still dropped cleanly.
    task = spawn(app, _start_detached(app[UPSTREAM], orchestrate, timeout), "rest-orchestrate")
    session_id = await asyncio.shield(task)
    log.info("session %s started over REST", session_id)
    return json_response(
        {"session_id": session_id}, status=201, headers={"Location": f"/v1/orchestrations/{session_id}"}
    )


async def _start_detached(upstream: Upstream, request: orchestrator_pb2.OrchestrateRequest, time_limit: float) -> str:
    """Open the stream, read the first event to learn the session id, then drop the stream."""
    call = upstream.orchestrator.Orchestrate(request, timeout=time_limit)
    try:
        async for response in call:
            session_id = response.event.session_id
            if not session_id:
                raise GatewayError(grpc.StatusCode.UNKNOWN, "the orchestrator's first event carries no session id")
            return session_id
    except grpc.aio.AioRpcError as err:
        raise from_rpc(err, "orchestrator") from None
    finally:
        # Politely: with detached=true, cancelling the stream leaves the session running.
        call.cancel()
    raise GatewayError(grpc.StatusCode.UNKNOWN, "the orchestrator ended the session before its first event")


async def list_orchestrations(request: web.Request) -> web.Response:
    """``GET /v1/orchestrations``: one page of sessions, newest first."""
    query = request.query
    message = orchestrator_pb2.ListSessionsRequest()
    if found := query_value(query, "page_size"):
        message.page_size = parse_int(found[1], found[0], 1, MAX_PAGE_SIZE)
    if found := query_value(query, "page_token"):
        message.page_token = _bounded(found, schemas.MAX_PAGE_TOKEN_CHARS)
        if re.fullmatch(schemas.PAGE_TOKEN_PATTERN, message.page_token) is None:
            raise invalid(found[0], "is not a token returned by a previous page")
    if found := query_value(query, "status"):
        message.status = parse_session_status(found[1], found[0])  # type: ignore[assignment]
    if found := query_value(query, "thread_id"):
        message.thread_id = _bounded(found, schemas.MAX_ID_CHARS)
    if found := query_value(query, "q"):
        message.prompt_contains = _bounded(found, schemas.MAX_SEARCH_CHARS)
    window = _time_range(request)
    if window is not None:
        message.range.CopyFrom(window)
    upstream = request.app[UPSTREAM]
    response = await _unary("orchestrator", upstream.orchestrator.ListSessions(message))
    return proto_response(response)


async def get_orchestration(request: web.Request) -> web.Response:
    """``GET /v1/orchestrations/{id}``: one session."""
    session_id = check_id(request.match_info["id"], "session_id")
    upstream = request.app[UPSTREAM]
    response = await _unary(
        "orchestrator", upstream.orchestrator.GetSession(orchestrator_pb2.GetSessionRequest(session_id=session_id))
    )
    return proto_response(response)


async def cancel_orchestration(request: web.Request) -> web.Response:
    """``POST /v1/orchestrations/{id}:cancel``: cancel a running session."""
    session_id = check_id(request.match_info["id"], "session_id")
    body = await _read_json_body(request, required=False)
    reason = "cancelled over the REST API"
    if body is not None:
        schemas.check(schemas.CANCEL, body)
        reason = body.get("reason") or reason
    upstream = request.app[UPSTREAM]
    message = orchestrator_pb2.CancelSessionRequest(session_id=session_id, reason=reason)
    response = await _unary("orchestrator", upstream.orchestrator.CancelSession(message))
    return proto_response(response)


async def submit_feedback(request: web.Request) -> web.Response:
    """``POST /v1/orchestrations/{id}/feedback``: rate a finished session (1-5).

    The orchestrator decides whether the session exists for this tenant and has finished: analytics hears of
    sessions later (through the orchestrator's outbox), so asking it first would refuse a fresh session.
    """
    session_id = check_id(request.match_info["id"], "session_id")
    body = await _read_json_body(request, required=True)
    assert body is not None  # required=True
    message = parse_feedback(body, session_id)
    upstream = request.app[UPSTREAM]
    found = await _unary(
        "orchestrator", upstream.orchestrator.GetSession(orchestrator_pb2.GetSessionRequest(session_id=session_id))
    )
    if found.session.status == orchestrator_pb2.SESSION_STATUS_RUNNING:
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"session_id: session {session_id!r} is still running; rate it once it has finished",
            field="session_id",
        )
    response = await _unary("analytics", upstream.analytics.SubmitFeedback(message))
    return proto_response(response)


def _bounded(found: tuple[str, str], limit: int) -> str:
    name, value = found
    if len(value) > limit:
        raise invalid(name, f"is {len(value):,} characters; the limit is {limit:,}")
    return value


def _time_range(request: web.Request) -> common_pb2.TimeRange | None:
    """The ``start_time`` and ``end_time`` query parameters as a ``TimeRange``; None when neither is given."""
    start = query_value(request.query, "start_time")
    end = query_value(request.query, "end_time")
    if start is None and end is None:
        return None
    window = common_pb2.TimeRange()
    if start is not None:
        window.start_time.CopyFrom(parse_timestamp(start[1], start[0]))
    if end is not None:
        window.end_time.CopyFrom(parse_timestamp(end[1], end[0]))
    return window


async def analytics_performance(request: web.Request) -> web.Response:
    """``GET /v1/analytics/performance``: per-model (and per-model-and-domain) performance."""
    message = analytics_pb2.GetModelPerformanceRequest(range=_time_range(request))
    if found := query_value(request.query, "model"):
        message.model = _bounded(found, schemas.MAX_ID_CHARS)
    if found := query_value(request.query, "domain"):
        message.domain = parse_domain(found[1], found[0])  # type: ignore[assignment]
    response = await _unary("analytics", request.app[UPSTREAM].analytics.GetModelPerformance(message))
    return proto_response(response)


async def analytics_costs(request: web.Request) -> web.Response:
    """``GET /v1/analytics/costs``: spending in total, per session, per model and per day."""
    message = analytics_pb2.GetCostReportRequest(range=_time_range(request))
    if found := query_value(request.query, "session_limit"):
        message.session_limit = parse_int(found[1], found[0], 1, MAX_SESSION_LIMIT)
    response = await _unary("analytics", request.app[UPSTREAM].analytics.GetCostReport(message))
    return proto_response(response)


async def analytics_selection_accuracy(request: web.Request) -> web.Response:
    """``GET /v1/analytics/selection-accuracy``: how often the selected primary was the best model."""
    message = analytics_pb2.GetSelectionAccuracyRequest(range=_time_range(request))
    response = await _unary("analytics", request.app[UPSTREAM].analytics.GetSelectionAccuracy(message))
    return proto_response(response)


async def analytics_satisfaction(request: web.Request) -> web.Response:
    """``GET /v1/analytics/satisfaction``: user ratings overall, per model, per domain, per day."""
    message = analytics_pb2.GetSatisfactionRequest(range=_time_range(request))
    response = await _unary("analytics", request.app[UPSTREAM].analytics.GetSatisfaction(message))
    return proto_response(response)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the model catalogue with live health."""
    include = False
    if found := query_value(request.query, "include_unavailable"):
        if found[1] not in _BOOLEANS:
            raise invalid(found[0], f"expected true or false, got {found[1][:20]!r}")
        include = _BOOLEANS[found[1]]
    upstream = request.app[UPSTREAM]
    response = await _unary(
        "providers", upstream.providers.ListModels(providers_pb2.ListModelsRequest(include_unavailable=include))
    )
    return proto_response(response)


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: liveness; the process is up and serving HTTP."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: readiness; the peers the gateway cannot work without report SERVING."""
    upstream = request.app[UPSTREAM]
    timeout = request.app[OPTIONS].readiness_timeout
    targets = upstream.readiness
    statuses = await asyncio.gather(*(check_health(t, timeout) for t in targets))
    checks = {t.peer: status for t, status in zip(targets, statuses, strict=True)}
    ready = all(status == "SERVING" for status in statuses)
    return json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


async def _unary(peer: str, call: grpc.aio.UnaryUnaryCall[Any, T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise from_rpc(err, peer) from None


async def _read_json_body(request: web.Request, *, required: bool) -> dict[str, Any] | None:
    limit = request.app[OPTIONS].body_timeout
    try:
        async with asyncio.timeout(limit):
            raw = await request.read()
    except TimeoutError:
        raise GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"body: not received within {limit:g} s",
            field="body",
            http=408,
            code_name="REQUEST_TIMEOUT",
            close=True,
        ) from None
    if not raw.strip():
        if required:
            raise invalid("body", "is required (a JSON object)")
        return None
    return parse_json_object(raw, "body")
