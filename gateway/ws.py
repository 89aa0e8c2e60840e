"""WebSocket endpoint ``/v1/ws``: start, watch and cancel orchestrations, receive their events live.

Protocol (JSON text frames; every client message may carry ``"ref"``, a string or integer echoed in
the acks, ends and errors it causes, to correlate them). Keys are snake_case, the proto field names, like
everything the gateway writes; a client may spell any key in lowerCamelCase (``sessionId``) instead.

Authentication (when the gateway has API keys): either offer the subprotocols ``orx.v1`` and
``orx.bearer.<key>`` (the server selects ``orx.v1``), send ``Authorization: Bearer <key>`` on the
upgrade (non-browser clients), or make ``{"type": "auth", "key": "..."}`` the first message (within
``auth_timeout``; answered by ``{"type": "ack", "action": "auth"}``). A missing or bad key on the socket
closes it with 4401. Each client message costs one rate-limit token; over the limit the message is
refused with a ``RESOURCE_EXHAUSTED`` error carrying ``retry_after`` (seconds), and the socket stays open.

Client -> server
    ``{"type": "orchestrate", "request": {...}}``
        ``request`` is an ``OrchestrateRequest`` in proto3 JSON form. The session is started upstream
        with ``detached=true`` so the gateway decides its fate: when this socket closes, the session
        is cancelled unless the client sent ``detach`` for it (or set ``"detached": true`` in the
        request). Server-side shutdown (close 1001) never cancels sessions: clients reconnect and
        ``watch`` them.
    ``{"type": "watch", "session_id": "...", "after_sequence": N}``
        Replay events after ``N`` (default 0), then follow live ones. Closing the socket only stops
        the stream. To resume after a reconnect, pass the last sequence received: no gap, no duplicate.
    ``{"type": "cancel", "session_id": "..."}``
        Cancel a session (``CancelSession``).
    ``{"type": "detach", "session_id": "..."}``
        Keep a session started on this socket running after the socket closes. Its events keep
        flowing while the socket is open.

Server -> client
    ``{"type": "event", "event": {...}}``: an ``OrchestrationEvent`` in canonical proto3 JSON (proto
        field names, as grpcurl prints it; see :mod:`gateway.events_json`).
    ``{"type": "ack", "action": "orchestrate"|"watch"|"cancel"|"detach", "session_id": ..., "ref"?}``:
        a request was accepted. For ``orchestrate`` it is sent just before the session's first event;
        for ``cancel`` it also carries the session's resulting ``status``.
    ``{"type": "end", "session_id": ..., "ref"?}``: an event stream finished normally.
    ``{"type": "error", "code": "INVALID_ARGUMENT", "status": 400, "message": "...", "field"?,
    "retry_after"?, "session_id"?, "ref"?}``: a request was refused or an upstream stream failed (``code``
        is the gRPC status name, ``status`` the matching HTTP status).

Sending: every server message is written as a complete WebSocket frame. An event is encoded once however many
sockets receive it (:class:`~gateway.events_json.EncodedEvent`); sockets watching the same session as the same
tenant share one upstream call (:class:`~gateway.upstream.WatchHub`). Messages for a socket are queued and
written together at the end of the event-loop iteration that queued them (one write, one system call), and
while the client does not read, they wait in the queue (bounded) until the transport drains.

Close codes: 1001 server shutting down, 1003 binary frame received, 1007 a text message that is not valid
UTF-8, 1008 consumer too slow (the per-socket send queue overflowed), 1009 message larger than the limit
(fragmented or not; the rest of it is read and dropped so that the client receives the close frame),
4401 unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import grpc
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from gateway import metrics
from gateway.errors import GatewayError, error_response, from_rpc, invalid
from gateway.events_json import EncodedEvent, dumps, websocket_text_frame
from gateway.inputs import optional_int, parse_json_object, parse_orchestrate_request, require_id, spelt
from gateway.listener import mark_authenticated
from gateway.security import Principal
from gateway.state import OPTIONS, PRINCIPAL, SECURITY, SETTINGS, UPSTREAM, spawn
from gateway.upstream import Subscription, Upstream
from orchestratex import context
from orchestratex.config import Settings
from orchestratex.v1 import orchestrator_pb2

log = logging.getLogger(__name__)

MESSAGE_TYPES: Final = ("auth", "orchestrate", "watch", "cancel", "detach")
CLOSE_UNAUTHENTICATED: Final = 4401
WS_PROTOCOL: Final = "orx.v1"
SLOW_CONSUMER_REASON: Final = b"consumer too slow: send queue full"
BINARY_REASON: Final = b"binary frames are not supported; send JSON text frames"
SHUTDOWN_REASON: Final = b"server shutting down; reconnect and watch your sessions"
_MAX_SEQUENCE: Final = 2**63 - 1
_MAX_REF_CHARS: Final = 256
_CLOSE_TIMEOUT: Final = 10.0
_WRITE_BATCH_BYTES: Final = 256 * 1024
"""Most bytes of queued messages joined into one write (then the transport drains before the next)."""

Ref = str | int | None

#: The open sockets, registered until their release completes, so that shutdown can close each one.
CONNECTIONS: Final[web.AppKey[set[Connection]]] = web.AppKey("connections")


class _Stream:
    """One upstream event stream relayed to this socket: an orchestration (its own ``Orchestrate`` call, read by
    :attr:`task`) or a watch (a :attr:`subscription` to a shared ``WatchSession`` call, whose events arrive
    through :meth:`deliver` and :meth:`ended`)."""

    __slots__ = (
        "connection",
        "detached",
        "finished",
        "kind",
        "owned",
        "ref",
        "session_id",
        "subscription",
        "task",
    )

    def __init__(
        self, connection: Connection, kind: str, ref: Ref, *, owned: bool, detached: bool, session_id: str | None
    ) -> None:
        self.connection = connection
        self.kind = kind
        self.ref = ref
        # Started on this socket: its fate (cancel on close) is this socket's business.
        self.owned = owned
        self.detached = detached
        # None until an orchestration's first event names it.
        self.session_id = session_id
        # The session's terminal event went by: nothing left to cancel.
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.subscription: Subscription | None = None

    def stop(self) -> None:
        """Stop relaying: cancelling the task cancels the gRPC call; leaving a shared watch cancels it when this
        was its last client."""
        if self.task is not None:
            self.task.cancel()
        if self.subscription is not None:
            self.subscription.close()

    def deliver(self, event: EncodedEvent) -> None:
        """A watched event (:class:`gateway.upstream.WatchSink`)."""
        self.connection._push(event.ws_frame, 1)

    def ended(self, failure: BaseException | None) -> None:
        """The watch's upstream call ended (:class:`gateway.upstream.WatchSink`)."""
        self.connection._watch_ended(self, failure)


class Connection:
    """One client socket: a receive loop, a bounded send queue drained by one sender task, and the
    upstream streams started from it."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        app: web.Application,
        principal: Principal | None,
        address: str,
        transport: asyncio.Transport | None,
        writer: AbstractStreamWriter,
    ) -> None:
        self._ws = ws
        # Frames are written straight to the connection (whole frames, as aiohttp's own writer does), several
        # in one write; ``writer.drain()`` waits while the client does not read.
        self._transport = transport
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._app = app
        self._security = app[SECURITY]
        # None until the first message authenticates the socket.
        self._principal = principal
        self._bucket = principal.bucket if principal is not None else f"ip:{address}"
        self._upstream: Upstream = app[UPSTREAM]
        self._settings: Settings = app[SETTINGS]
        options = self._options = app[OPTIONS]
        # (complete frame, orchestration events in it): events are counted as they are written.
        self._queue: deque[tuple[bytes, int]] = deque()
        self._queue_limit = options.send_queue_size
        # A write of the queued frames is due at the end of this loop iteration.
        self._flush_due: asyncio.Handle | None = None
        # Waiting for the transport to drain (the client is not reading): it writes the rest when it can.
        self._drainer: asyncio.Task[None] | None = None
        self._streams: set[_Stream] = set()
        # Streams relayed now, by session id (refuses a second stream of the same session).
        self._active: dict[str, _Stream] = {}
        # Sessions started here that have not ended: cancelled when the socket closes unless detached.
        self._owned: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[Any] | None = None
        # No more output: the socket is closing or closed.
        self._closing = False
        # The server is shutting down: leave sessions running so clients can resume them elsewhere.
        self._going_away = False
        #: The code this side closed the socket with; None while it has not (or the client closed first).
        self.close_code: int | None = None
        self._handlers: dict[str, Callable[[dict[str, Any], Ref], None]] = {
            "auth": self._on_auth,
            "orchestrate": self._on_orchestrate,
            "watch": self._on_watch,
            "cancel": self._on_cancel,
            "detach": self._on_detach,
        }

    async def run(self) -> None:
        """Serve the socket until it closes, then release everything it started.

        The release runs as an application-owned task: it must complete even when aiohttp cancels
        the handler because the client vanished (``handler_cancellation``).
        """
        guard = None
        if self._principal is None:
            guard = asyncio.create_task(self._auth_deadline(), name="ws-auth-deadline")
        try:
            await self._receive_loop()
        finally:
            self._closing = True
            self._stop_sending()
            if guard is not None:
                guard.cancel()
            await asyncio.shield(spawn(self._app, self._finish(), "ws-release"))

    async def _finish(self) -> None:
        try:
            if self._drainer is not None:
                await asyncio.gather(self._drainer, return_exceptions=True)
            await self._release()
            if self._close_task is not None:
                await asyncio.wait([self._close_task], timeout=_CLOSE_TIMEOUT)
            if not self._ws.closed:
                await self._ws.close()
        finally:
            self._app[CONNECTIONS].discard(self)

    async def going_away(self) -> None:
        """Close the socket with 1001 because the server stops; sessions are left running."""
        self._going_away = True
        self._closing = True
        if not self._ws.closed:
            self._closed_with(WSCloseCode.GOING_AWAY)
            await self._ws.close(code=WSCloseCode.GOING_AWAY, message=SHUTDOWN_REASON)

    def _closed_with(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = int(code)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self._options.auth_timeout)
        if self._principal is None:
            await self._close_unauthenticated("no auth message in time")

    async def _close_unauthenticated(self, problem: str, rejected: str = "auth") -> None:
        metrics.reject(rejected)
        self._closing = True
        if not self._ws.closed:
            self._closed_with(CLOSE_UNAUTHENTICATED)
            reason = f"unauthenticated: {problem}".encode()[:120]
            await self._ws.close(code=CLOSE_UNAUTHENTICATED, message=reason)

    # -- receiving -------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        # Iterating is what processes pings/pongs (heartbeat) and close frames, so it never stops
        # while the socket is open; handlers only start tasks.
        async for msg in self._ws:
            if msg.type is WSMsgType.TEXT:
                if self._closing:
                    continue
                if self._principal is None:
                    await self._authenticate(msg.data)
                else:
                    self._handle_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                log.info("closing websocket: binary frame received")
                self._closing = True
                self._closed_with(WSCloseCode.UNSUPPORTED_DATA)
                await self._ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=BINARY_REASON)
                return
            elif msg.type is WSMsgType.ERROR:
                # aiohttp already closed the socket with the matching code (e.g. 1009 message too big).
                error = self._ws.exception()
                log.info("websocket closed on protocol error: %s", type(error).__name__)
                self._closed_with(getattr(error, "code", WSCloseCode.PROTOCOL_ERROR))
                return

    async def _authenticate(self, text: str) -> None:
        """The first message of a socket without credentials must be ``{"type": "auth", "key": ...}``."""
        if self._security.limiter.acquire(self._bucket):
            await self._close_unauthenticated("too many attempts; retry later", "rate_limit")
            return
        try:
            data = parse_json_object(text, "message")
        except GatewayError:
            data = {}
        key = data.get("key") if data.get("type") == "auth" else None
        if not isinstance(key, str):
            await self._close_unauthenticated('the first message must be {"type": "auth", "key": "<API key>"}')
            return
        principal = self._security.keys.authenticate(key)
        if principal is None:
            await self._close_unauthenticated("the API key is not valid")
            return
        self._principal = principal
        self._bucket = principal.bucket
        mark_authenticated(self._transport)
        # Set in the handler's context: every stream task started from now on copies it, so their
        # gRPC calls carry x-orx-tenant.
        context.tenant.set(principal.tenant)
        ref = data.get("ref")
        self._send({"type": "ack", "action": "auth"}, ref if isinstance(ref, str | int) else None)

    def _handle_text(self, text: str) -> None:
        ref: Ref = None
        try:
            data = parse_json_object(text, "message")
            ref = _parse_ref(data)
            wait = self._security.limiter.acquire(self._bucket)
            if wait:
                metrics.reject("rate_limit")
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limit exceeded; retry after {wait} s", retry_after=wait
                )
            kind = data.get("type")
            if kind is None:
                raise invalid("type", f"is required; expected one of {', '.join(MESSAGE_TYPES)}")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise invalid(
                    "type", f"unknown message type {str(kind)[:40]!r}; expected one of {', '.join(MESSAGE_TYPES)}"
                )
            handler(data, ref)
        except GatewayError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                metrics.reject("validation")
            self._send_error(exc, ref=ref)

    def _on_orchestrate(self, data: dict[str, Any], ref: Ref) -> None:
        request = parse_orchestrate_request(
            data.get("request"), "request", "request.prompt", self._settings.common.max_prompt_chars
        )
        self._check_capacity()
        # The client's `detached` means "outlive this socket"; upstream it is always set so that
        # dropping the stream never cancels by itself and the gateway alone decides.
        stream = _Stream(self, "orchestrate", ref, owned=True, detached=request.detached, session_id=None)
        request.detached = True
        self._start(stream, lambda: self._upstream.orchestrator.Orchestrate(request))

    def _on_auth(self, data: dict[str, Any], ref: Ref) -> None:
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION, "type: this socket is already authenticated", field="type"
        )

    def _on_watch(self, data: dict[str, Any], ref: Ref) -> None:
        field, session_id = _session_id(data)
        after = optional_int(data, spelt(data, "after_sequence") or "after_sequence", 0, 0, _MAX_SEQUENCE)
        if session_id in self._active:
            self._send_error(
                GatewayError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{field}: this session is already streaming on this socket",
                    field=field,
                ),
                ref=ref,
                session_id=session_id,
            )
            return
        self._check_capacity()
        stream = _Stream(self, "watch", ref, owned=False, detached=True, session_id=session_id)
        self._active[session_id] = stream
        self._streams.add(stream)
        self._send({"type": "ack", "action": "watch", "session_id": session_id}, ref)
        # Events still in a shared call's backlog are delivered within this call.
        stream.subscription = self._upstream.watches.subscribe(session_id, after, stream)
        if self._closing:
            stream.subscription.close()  # the replay overflowed the send queue

    def _on_cancel(self, data: dict[str, Any], ref: Ref) -> None:
        _, session_id = _session_id(data)
        limit = self._options.max_streams_per_socket
        if len(self._tasks) >= limit:
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many pending requests on this socket (limit {limit})"
            )
        self._track(asyncio.create_task(self._cancel(session_id, ref), name="ws-cancel"))

    def _on_detach(self, data: dict[str, Any], ref: Ref) -> None:
        field, session_id = _session_id(data)
        stream = self._owned.get(session_id)
        if stream is None:
            self._send_error(
                GatewayError(
                    grpc.StatusCode.NOT_FOUND,
                    f"{field}: no running session started on this socket has this id",
                    field=field,
                ),
                ref=ref,
                session_id=session_id,
            )
            return
        stream.detached = True
        self._send({"type": "ack", "action": "detach", "session_id": session_id}, ref)

    def _check_capacity(self) -> None:
        limit = self._options.max_streams_per_socket
        if len(self._streams) >= limit:
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many concurrent streams on this socket (limit {limit})"
            )

    # -- upstream streams ------------------------------------------------------------------------

    def _start(self, stream: _Stream, open_call: Callable[[], grpc.aio.UnaryStreamCall[Any, Any]]) -> None:
        self._streams.add(stream)
        stream.task = asyncio.create_task(self._pump(stream, open_call), name=f"ws-{stream.kind}")

    async def _pump(self, stream: _Stream, open_call: Callable[[], grpc.aio.UnaryStreamCall[Any, Any]]) -> None:
        call = open_call()
        try:
            async for response in call:
                event: orchestrator_pb2.OrchestrationEvent = response.event
                if stream.session_id is None:
                    self._learn_session_id(stream, event.session_id)
                    if self._closing:
                        return  # the socket closed while we waited for the id; it is known now
                encoded = EncodedEvent(event)
                if encoded.terminal:
                    stream.finished = True
                    self._owned.pop(event.session_id, None)
                self._push(encoded.ws_frame, 1)
            if stream.owned and stream.session_id is not None:
                stream.finished = True  # the stream ended normally: so did the session
                self._owned.pop(stream.session_id, None)
            end: dict[str, Any] = {"type": "end"}
            if stream.session_id is not None:
                end["session_id"] = stream.session_id
            self._send(end, stream.ref)
        except grpc.aio.AioRpcError as err:
            if not self._closing:
                self._send_error(from_rpc(err, "orchestrator"), ref=stream.ref, session_id=stream.session_id)
        except Exception:
            # A bug, not the client's doing: report it generically and keep the socket serving.
            log.exception("event stream failed")
            failure = GatewayError(grpc.StatusCode.INTERNAL, "internal error while relaying events")
            self._send_error(failure, ref=stream.ref, session_id=stream.session_id)
        finally:
            call.cancel()
            self._streams.discard(stream)
            if stream.session_id is not None and self._active.get(stream.session_id) is stream:
                del self._active[stream.session_id]

    def _watch_ended(self, stream: _Stream, failure: BaseException | None) -> None:
        self._streams.discard(stream)
        if stream.session_id is not None and self._active.get(stream.session_id) is stream:
            del self._active[stream.session_id]
        if failure is None:
            self._send({"type": "end", "session_id": stream.session_id}, stream.ref)
        elif isinstance(failure, grpc.aio.AioRpcError):
            self._send_error(from_rpc(failure, "orchestrator"), ref=stream.ref, session_id=stream.session_id)
        elif not isinstance(failure, asyncio.CancelledError):  # cancelled: the gateway is shutting down
            failure_ = GatewayError(grpc.StatusCode.INTERNAL, "internal error while relaying events")
            self._send_error(failure_, ref=stream.ref, session_id=stream.session_id)

    def _learn_session_id(self, stream: _Stream, session_id: str) -> None:
        stream.session_id = session_id
        self._active[session_id] = stream
        self._owned[session_id] = stream
        self._send({"type": "ack", "action": "orchestrate", "session_id": session_id}, stream.ref)

    async def _cancel(self, session_id: str, ref: Ref) -> None:
        try:
            response = await self._cancel_session(session_id, "cancelled by the client")
        except grpc.aio.AioRpcError as err:
            self._send_error(from_rpc(err, "orchestrator"), ref=ref, session_id=session_id)
            return
        status = orchestrator_pb2.SessionStatus.Name(response.session.status)
        self._send({"type": "ack", "action": "cancel", "session_id": session_id, "status": status}, ref)

    async def _cancel_session(self, session_id: str, reason: str) -> orchestrator_pb2.CancelSessionResponse:
        request = orchestrator_pb2.CancelSessionRequest(session_id=session_id, reason=reason)
        return await self._upstream.orchestrator.CancelSession(request, timeout=self._settings.common.rpc_timeout)

    async def _release(self) -> None:
        """Stop every stream; cancel the sessions this socket owns unless detached or going away."""
        for stream in list(self._streams):
            # An orchestration that has not named its session yet keeps reading until it does
            # (bounded below), otherwise the session could not be cancelled.
            if stream.session_id is not None or not stream.owned:
                stream.stop()
        pumps = [s.task for s in self._streams if s.task is not None and not s.task.done()]
        if pumps:
            _, late = await asyncio.wait(pumps, timeout=self._options.session_id_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        doomed = [sid for sid, s in self._owned.items() if not s.detached and not s.finished]
        if not doomed:
            return
        if self._going_away:
            log.info("server shutdown: leaving %d session(s) running", len(doomed))
            return
        log.info("socket closed: cancelling %d session(s) it started", len(doomed))
        await asyncio.gather(*(self._cancel_on_close(sid) for sid in doomed))

    async def _cancel_on_close(self, session_id: str) -> None:
        try:
            await self._cancel_session(session_id, "client disconnected")
        except grpc.aio.AioRpcError as err:
            # Typically the session ended meanwhile; there is nobody left to tell.
            log.info("cancel of session %s on disconnect failed: %s", session_id, err.code().name)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending ---------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any], ref: Ref) -> None:
        if ref is not None:
            message["ref"] = ref
        self._push(websocket_text_frame(dumps(message)))

    def _send_error(self, exc: GatewayError, *, ref: Ref, session_id: str | None = None) -> None:
        message: dict[str, Any] = {"type": "error", **exc.fields()}
        if session_id is not None:
            message["session_id"] = session_id
        self._send(message, ref)

    def _push(self, frame: bytes, events: int = 0) -> None:
        """Queue a complete frame (holding ``events`` orchestration events); it is written at the end of this
        loop iteration with whatever else was queued meanwhile, or once the transport drains."""
        if self._closing:
            return
        queue = self._queue
        if len(queue) >= self._queue_limit:
            self._overflow()
            return
        queue.append((frame, events))
        metrics.observe_send_queue(len(queue))
        if self._flush_due is None and self._drainer is None:
            self._flush_due = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = None
        if self._drainer is not None:
            return
        try:
            self._write_queued()
        except (ConnectionError, RuntimeError):
            self._queue.clear()  # the socket is gone; the receive loop notices and cleans up
            return
        transport = self._transport
        if self._queue or (transport is not None and transport.get_write_buffer_size()):
            # The kernel did not take everything: the rest waits until the transport drains.
            self._drainer = asyncio.create_task(self._drain(), name="ws-drain")

    def _write_queued(self) -> None:
        """Write the queued frames (up to :data:`_WRITE_BATCH_BYTES`) in one write."""
        queue = self._queue
        if not queue:
            return
        transport = self._transport
        # Never a frame after the close frame (aiohttp marks the socket closed before sending it).
        if self._ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        frame, events = queue.popleft()
        if queue and len(frame) < _WRITE_BATCH_BYTES:
            frames = [frame]
            size = len(frame)
            while queue and size < _WRITE_BATCH_BYTES:
                frame, count = queue.popleft()
                frames.append(frame)
                size += len(frame)
                events += count
            frame = b"".join(frames)
        transport.write(frame)
        if events:
            metrics.WS_EVENTS_SENT.inc(events)

    async def _drain(self) -> None:
        try:
            while True:
                await self._writer.drain()
                self._write_queued()
                if not self._queue:
                    return
        except (ConnectionError, RuntimeError):
            self._queue.clear()
        finally:
            self._drainer = None
            if self._queue and not self._closing and self._flush_due is None:
                self._flush_due = self._loop.call_soon(self._flush)

    def _stop_sending(self) -> None:
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self._drainer is not None:
            self._drainer.cancel()

    def _overflow(self) -> None:
        log.warning("closing websocket: send queue full (%d messages)", self._options.send_queue_size)
        metrics.WS_SLOW_CONSUMER.inc()
        self._closing = True
        for stream in list(self._streams):
            if stream.session_id is not None or not stream.owned:
                stream.stop()
        self._closed_with(WSCloseCode.POLICY_VIOLATION)
        self._close_task = asyncio.create_task(
            self._ws.close(code=WSCloseCode.POLICY_VIOLATION, message=SLOW_CONSUMER_REASON), name="ws-close-slow"
        )


def _session_id(data: dict[str, Any]) -> tuple[str, str]:
    """The message's session id, and its key as the client spelt it (for errors)."""
    field = spelt(data, "session_id") or "session_id"
    return field, require_id(data, field)


def _parse_ref(data: dict[str, Any]) -> Ref:
    ref = data.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise invalid("ref", "expected a string or an integer")
    if isinstance(ref, str) and len(ref) > _MAX_REF_CHARS:
        raise invalid("ref", f"is {len(ref)} characters; the limit is {_MAX_REF_CHARS}")
    return ref


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: upgrade and serve one socket."""
    app = request.app
    options = app[OPTIONS]
    ws: web.WebSocketResponse = web.WebSocketResponse(
        heartbeat=options.heartbeat,
        max_msg_size=options.max_ws_message_bytes,
        # Event frames are small and frequent; compression is not worth its CPU unmeasured.
        compress=False,
        # Selected when offered; a client offering only ``orx.bearer.<key>`` gets no subprotocol back.
        protocols=(WS_PROTOCOL,),
    )
    if not ws.can_prepare(request).ok:
        return error_response(
            GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this endpoint needs a WebSocket upgrade request",
                http=426,
            ),
            headers={"Upgrade": "websocket"},
        )
    writer = await ws.prepare(request)
    connection = Connection(ws, app, request.get(PRINCIPAL), request.remote or "unknown", request.transport, writer)
    # Registered until its release completes (see Connection.run), so shutdown can find it.
    app[CONNECTIONS].add(connection)
    log.debug("websocket opened")
    with metrics.WS_OPEN.track_inprogress():
        try:
            await connection.run()
        finally:
            # The code the first side to close sent: once the client answers a close, ws.close_code is its answer.
            metrics.ws_closed(connection.close_code if connection.close_code is not None else ws.close_code)
    log.debug("websocket closed (code %s)", ws.close_code)
    return ws


async def close_all(app: web.Application) -> None:
    """``on_shutdown`` hook: close every socket with 1001 GOING_AWAY."""
    registered: set[Connection] = app[CONNECTIONS]
    connections = list(registered)
    if connections:
        log.info("closing %d websocket(s): server shutting down", len(connections))
    with contextlib.suppress(Exception):
        await asyncio.gather(*(c.going_away() for c in connections), return_exceptions=True)
