"""Server-Sent Events: ``GET /v1/orchestrations/{id}/events``.

A plain ``aiohttp.web.StreamResponse`` (no extra dependency: the format is four lines of code and we
need control over when the response starts, to answer 404/204 as JSON/empty before streaming).

* ``retry: 2000`` first, then one SSE event per orchestration event: ``id: <sequence>`` and
  ``data: <OrchestrationEvent JSON>`` (the default ``message`` event type);
* ``: ping`` comment lines as heartbeats while nothing happens;
* the stream ends after the terminal event (``session_completed`` / ``session_failed``);
* resume with the ``Last-Event-ID`` header (EventSource sends it on reconnect) or ``?after=<sequence>``;
* an unknown session (or another tenant's) is a 404 JSON error before the stream starts; resuming a
  session that has ended with nothing left answers 204, which makes EventSource stop reconnecting;
* an upstream failure mid-stream is sent as ``event: error`` with ``data: {"error": {...}}`` (the REST error
  body, snake_case like everything the gateway writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Final

import grpc
from aiohttp import web

from gateway import metrics
from gateway.errors import from_rpc, invalid
from gateway.events_json import dumps, event_json, is_terminal
from gateway.inputs import check_id, parse_int
from gateway.state import OPTIONS, UPSTREAM
from orchestratex.v1 import orchestrator_pb2

log = logging.getLogger(__name__)

_MAX_SEQUENCE: Final = 2**63 - 1
_SEQUENCE: Final = re.compile(r"[0-9]{1,19}", re.ASCII)
RETRY_MS: Final = 2000


def setup_routes(app: web.Application) -> None:
    """Register the SSE route."""
    app.router.add_get("/v1/orchestrations/{id:[^/:]+}/events", session_events)


def _after(request: web.Request) -> int:
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        # EventSource sends only the id it last saw, which is a sequence: digits and nothing else.
        if _SEQUENCE.fullmatch(header) is None:
            raise invalid("Last-Event-ID", f"expected the id of an event (a sequence number), got {header[:40]!r}")
        return parse_int(header, "Last-Event-ID", 0, _MAX_SEQUENCE)
    if "after" in request.query:
        return parse_int(request.query["after"], "after", 0, _MAX_SEQUENCE)
    return 0


async def session_events(request: web.Request) -> web.StreamResponse:
    """Stream a session's events after the resume point, then live ones, until the session ends."""
    session_id = check_id(request.match_info["id"], "session_id")
    after = _after(request)
    upstream = request.app[UPSTREAM]
    try:
        # Also the tenant check: another tenant's session is NOT_FOUND here, before anything streams.
        found = await upstream.orchestrator.GetSession(orchestrator_pb2.GetSessionRequest(session_id=session_id))
    except grpc.aio.AioRpcError as err:
        raise from_rpc(err, "orchestrator") from None
    session = found.session
    if session.status != orchestrator_pb2.SESSION_STATUS_RUNNING and session.last_sequence <= after:
        return web.Response(status=204)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            # Reverse proxies (nginx) must not buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    with metrics.SSE_OPEN.track_inprogress():
        await response.prepare(request)
        try:
            ending = await _relay(request, response, session_id, after)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes (with handler_cancellation).
            metrics.sse_closed("client_gone")
            raise
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
    metrics.sse_closed(ending)
    return response


async def _relay(request: web.Request, response: web.StreamResponse, session_id: str, after: int) -> str:
    """Write the session's events after ``after`` until the end; how it ended, as a close reason of
    :data:`gateway.metrics.SSE_CLOSE_REASONS`."""
    upstream = request.app[UPSTREAM]
    heartbeat = request.app[OPTIONS].sse_heartbeat
    write_lock = asyncio.Lock()
    ending = "completed"
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
    except (ConnectionError, RuntimeError):
        return "client_gone"
    pinger = asyncio.create_task(_ping(response, heartbeat, write_lock), name="sse-ping")
    call = upstream.orchestrator.WatchSession(
        orchestrator_pb2.WatchSessionRequest(session_id=session_id, after_sequence=after)
    )
    try:
        async for item in call:
            event = item.event
            frame = b"id: %d\ndata: %s\n\n" % (event.sequence, event_json(event))
            async with write_lock:
                await response.write(frame)
            metrics.SSE_EVENTS_SENT.inc()
            if is_terminal(event):
                break
    except grpc.aio.AioRpcError as err:
        ending = "upstream_error"
        failure = from_rpc(err, "orchestrator")
        with contextlib.suppress(ConnectionError, RuntimeError):
            async with write_lock:
                await response.write(b"event: error\ndata: %s\n\n" % dumps(failure.body()))
    except (ConnectionError, RuntimeError):
        ending = "client_gone"
        log.debug("SSE client of session %s went away", session_id)
    finally:
        # A closed client (or the end) stops the upstream stream; watching never cancels the session.
        call.cancel()
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
    return ending


async def _ping(response: web.StreamResponse, interval: float, lock: asyncio.Lock) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        while True:
            await asyncio.sleep(interval)
            async with lock:
                await response.write(b": ping\n\n")
