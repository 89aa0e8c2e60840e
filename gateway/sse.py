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

Clients watching the same session as the same tenant share one upstream ``WatchSession`` call (WebSocket
watchers too: :class:`gateway.upstream.WatchHub`); each event is encoded once for all of them, and what has
queued up for one response is written in one write. A client that falls ``send_queue_size`` events behind a
shared call leaves it for a call of its own from the last event it was sent, read only as fast as it reads
(gRPC flow control), as every SSE stream was before calls were shared: it is never cut off for being slow,
and never holds the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from typing import Final

import grpc
from aiohttp import web

from gateway import metrics
from gateway.errors import GatewayError, from_rpc, invalid
from gateway.events_json import EncodedEvent, dumps, event_json, is_terminal
from gateway.inputs import check_id, parse_int
from gateway.state import OPTIONS, UPSTREAM
from gateway.upstream import Upstream
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
    options = request.app[OPTIONS]
    write_lock = asyncio.Lock()
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
    except (ConnectionError, RuntimeError):
        return "client_gone"
    pinger = asyncio.create_task(_ping(response, options.sse_heartbeat, write_lock), name="sse-ping")
    try:
        return await _follow_shared(upstream, response, write_lock, session_id, after, options.send_queue_size)
    except (ConnectionError, RuntimeError):
        log.debug("SSE client of session %s went away", session_id)
        return "client_gone"
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)


class _Relay:
    """An SSE response's place on a shared watch (:class:`gateway.upstream.WatchSink`): the events waiting to be
    written (at most ``limit``), and how the upstream call ended."""

    def __init__(self, limit: int) -> None:
        self.pending: deque[EncodedEvent] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        #: More than ``limit`` events were waiting: the later ones were dropped, to be read again.
        self.overflowed = False
        self.done = False
        self.failure: BaseException | None = None

    def deliver(self, event: EncodedEvent) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= self.limit:
            self.overflowed = True
        else:
            self.pending.append(event)
        self.ready.set()

    def ended(self, failure: BaseException | None) -> None:
        self.done = True
        self.failure = failure
        self.ready.set()


async def _follow_shared(
    upstream: Upstream,
    response: web.StreamResponse,
    write_lock: asyncio.Lock,
    session_id: str,
    after: int,
    limit: int,
) -> str:
    relay = _Relay(limit)
    subscription = upstream.watches.subscribe(session_id, after, relay)
    try:
        while True:
            if not (relay.pending or relay.done or relay.overflowed):
                relay.ready.clear()
                await relay.ready.wait()
            if relay.pending:
                batch = list(relay.pending)
                relay.pending.clear()
                ending = next((i for i, event in enumerate(batch) if event.terminal), None)
                if ending is not None:
                    batch = batch[: ending + 1]
                async with write_lock:
                    await response.write(b"".join(event.sse_frame for event in batch))
                metrics.SSE_EVENTS_SENT.inc(len(batch))
                after = batch[-1].sequence
                if ending is not None:
                    return "completed"
                continue
            if relay.overflowed:
                subscription.close()
                return await _follow_alone(upstream, response, write_lock, session_id, after)
            return await _report_end(response, write_lock, relay.failure)
    finally:
        subscription.close()


async def _follow_alone(
    upstream: Upstream, response: web.StreamResponse, write_lock: asyncio.Lock, session_id: str, after: int
) -> str:
    """The session's events after ``after`` from a call of this response's own, read as fast as it is written."""
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
        return await _report_end(response, write_lock, err)
    finally:
        # A closed client (or the end) stops the upstream stream; watching never cancels the session.
        call.cancel()
    return "completed"


async def _report_end(response: web.StreamResponse, write_lock: asyncio.Lock, failure: BaseException | None) -> str:
    """Tell the client how the upstream call ended (nothing when it ended normally); the close reason."""
    if failure is None:
        return "completed"
    if isinstance(failure, grpc.aio.AioRpcError):
        error = from_rpc(failure, "orchestrator")
    elif isinstance(failure, asyncio.CancelledError):
        error = GatewayError(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down; reconnect to resume")
    else:
        error = GatewayError(grpc.StatusCode.INTERNAL, "internal error while relaying events")
    with contextlib.suppress(ConnectionError, RuntimeError):
        async with write_lock:
            await response.write(b"event: error\ndata: %s\n\n" % dumps(error.body()))
    return "upstream_error"


async def _ping(response: web.StreamResponse, interval: float, lock: asyncio.Lock) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        while True:
            await asyncio.sleep(interval)
            async with lock:
                await response.write(b": ping\n\n")
