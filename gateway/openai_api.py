"""OrchestrateX as an OpenAI-compatible model, under ``/openai/v1``.

=======================================  ======================================================================
``POST /openai/v1/chat/completions``     ``orchestratex`` and ``orchestratex/<catalogue id>``: one session
                                         (select, answer, critique, refine) through ``Orchestrate``; a plain
                                         catalogue id: one call through the providers' ``StreamGenerate``
``GET  /openai/v1/models``               ``orchestratex``, ``orchestratex/<id>`` and ``<id>`` for each model
``GET  /openai/v1/models/{id}``          one of them (ids contain ``/``)
=======================================  ======================================================================

The same keys, tenants, limits and rate limit as ``/v1`` (the middlewares in :mod:`gateway.app` admit both
prefixes); errors in OpenAI's shape (:mod:`gateway.openai_errors`). A session started here runs as the caller's
tenant and is listed with its other sessions; its id is in the response ``id`` (``chatcmpl-<session id>``) and
the ``X-OrchestrateX-Session-Id`` header. It is never detached: when the client goes away, the ``Orchestrate``
call is cancelled and with it the session. aiohttp does not cancel handlers when a client disconnects, so each
request watches its connection while it waits (:func:`_until_gone`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import grpc
import orjson
from aiohttp import web

from gateway import metrics
from gateway import openai_schemas as oas
from gateway.errors import GatewayError
from gateway.openai_errors import OpenAIError, ParamMap, error_body, from_upstream, model_not_found
from gateway.openai_request import ChatRequest, generate_request, orchestrate_request, parse_chat_request
from gateway.openai_stream import (
    SESSION_HEADER,
    ChunkStream,
    Completions,
    Progress,
    finish_reason,
    pieces,
    session_info,
    usage_json,
)
from gateway.state import OPTIONS, SETTINGS, UPSTREAM
from gateway.upstream import UnaryStream, Upstream
from orchestratex.v1 import common_pb2, orchestrator_pb2, providers_pb2, providers_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a waiting request checks that its client is still connected.
DISCONNECT_POLL_S: Final = 0.1
_NO_PARAMS: Final = ParamMap({})


class ModelCatalogue:
    """The providers' catalogue, cached for ``ttl`` seconds; an id not found refreshes it at most once a second,
    so a model added to the catalogue is found at once and unknown ids cannot flood the providers service."""

    def __init__(self, ttl: float = 30.0, miss_refresh: float = 1.0) -> None:
        self._ttl = ttl
        self._miss_refresh = miss_refresh
        self._models: dict[str, common_pb2.ModelInfo] = {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    async def models(self, upstream: Upstream, *, max_age: float | None = None) -> Mapping[str, common_pb2.ModelInfo]:
        """Every model (those whose circuit is open included: they are valid ids, answered 503 while down)."""
        limit = self._ttl if max_age is None else max_age
        if time.monotonic() - self._fetched > limit:
            async with self._lock:
                if time.monotonic() - self._fetched > limit:
                    request = providers_pb2.ListModelsRequest(include_unavailable=True)
                    try:
                        response = await upstream.providers.ListModels(request)
                    except grpc.aio.AioRpcError as err:
                        raise from_upstream(err, "providers", _NO_PARAMS) from None
                    self._models = {model.id: model for model in response.models}
                    self._fetched = time.monotonic()
        return self._models

    async def find(self, upstream: Upstream, model_id: str) -> common_pb2.ModelInfo | None:
        """The catalogue entry of ``model_id``, or None."""
        found = (await self.models(upstream)).get(model_id)
        if found is None:
            found = (await self.models(upstream, max_age=self._miss_refresh)).get(model_id)
        return found


CATALOGUE: Final = web.AppKey("openai_catalogue", ModelCatalogue)
#: ``created`` of the model objects: when this gateway started.
STARTED: Final = web.AppKey("openai_started", int)


class _ClientGone(Exception):
    """The client closed its connection while its request was being served."""


def setup_routes(app: web.Application) -> None:
    """Register the routes under :data:`gateway.openai_schemas.PREFIX`."""
    app[CATALOGUE] = ModelCatalogue()
    app[STARTED] = int(time.time())
    app.router.add_post(oas.PREFIX + "/chat/completions", chat_completions)
    app.router.add_get(oas.PREFIX + "/models", list_models)
    app.router.add_get(oas.PREFIX + "/models/{id:.+}", get_model)


# ------------------------------------------------------------------------------------------------ models


def _orchestratex_model(created: int) -> dict[str, Any]:
    return {
        "id": oas.ORCHESTRATEX,
        "object": "model",
        "created": created,
        "owned_by": "orchestratex",
        "name": "OrchestrateX",
        "description": "select, answer, critique, refine until good enough; the best answer is returned",
    }


def _pinned_model(model: common_pb2.ModelInfo, created: int) -> dict[str, Any]:
    out = {
        "id": oas.PINNED_PREFIX + model.id,
        "object": "model",
        "created": created,
        "owned_by": "orchestratex",
        "name": f"OrchestrateX with {model.display_name or model.id} as the author",
        "description": f"{model.id} answers; other models critique and it refines",
    }
    if model.context_length:
        out["context_length"] = model.context_length
    return out


def _plain_model(model: common_pb2.ModelInfo, created: int) -> dict[str, Any]:
    out = {
        "id": model.id,
        "object": "model",
        "created": created,
        "owned_by": model.provider or "orchestratex",
        "name": model.display_name or model.id,
        "description": "one call, no critique",
    }
    if model.context_length:
        out["context_length"] = model.context_length
    return out


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


async def list_models(request: web.Request) -> web.Response:
    """``GET /openai/v1/models``: ``orchestratex``, then ``orchestratex/<id>`` and ``<id>`` per catalogue model."""
    app = request.app
    models = list((await app[CATALOGUE].models(app[UPSTREAM])).values())
    created = app[STARTED]
    data = [
        _orchestratex_model(created),
        *(_pinned_model(m, created) for m in models),
        *(_plain_model(m, created) for m in models),
    ]
    return _json({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """``GET /openai/v1/models/{id}``: one model object, or 404."""
    app = request.app
    model_id = request.match_info["id"]
    created = app[STARTED]
    if model_id == oas.ORCHESTRATEX:
        return _json(_orchestratex_model(created))
    catalogue, upstream = app[CATALOGUE], app[UPSTREAM]
    if model_id.startswith(oas.PINNED_PREFIX):
        found = await catalogue.find(upstream, model_id.removeprefix(oas.PINNED_PREFIX))
        if found is not None:
            return _json(_pinned_model(found, created))
    else:
        found = await catalogue.find(upstream, model_id)
        if found is not None:
            return _json(_plain_model(found, created))
    raise model_not_found(model_id)


# ---------------------------------------------------------------------------------------- chat completions


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /openai/v1/chat/completions``."""
    app = request.app
    raw = await _read_body(request)
    chat = parse_chat_request(raw, app[SETTINGS].common.max_prompt_chars)
    upstream = app[UPSTREAM]
    try:
        if chat.orchestrated:
            if chat.pinned is not None and await app[CATALOGUE].find(upstream, chat.pinned) is None:
                raise model_not_found(chat.model)
            return await _orchestrated(request, chat)
        if await app[CATALOGUE].find(upstream, chat.model) is None:
            raise model_not_found(chat.model)
        return await _pass_through(request, chat)
    except _ClientGone:
        log.info("OpenAI client went away; its call was cancelled")
        return web.Response(status=499)


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[OPTIONS].body_timeout
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"body: not received within {limit:g} s",
            field="body",
            http=408,
            code_name="REQUEST_TIMEOUT",
            close=True,
        ) from None


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _until_gone(request: web.Request) -> None:
    # Polled: aiohttp signals a lost connection to nothing a handler can await (no handler cancellation).
    while not _gone(request):  # noqa: ASYNC110
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _unless_gone(request: web.Request, work: Awaitable[T]) -> T:
    """``work``'s result, or :class:`_ClientGone` (``work`` cancelled) as soon as the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_until_gone(request), name="openai-disconnect-watch")
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if task.cancelled():
        raise _ClientGone()
    return task.result()


async def _next(items: AsyncIterator[T], peer: str, params: ParamMap) -> T | None:
    """The next item of a gRPC stream, None at its end; a failure as this surface's error."""
    try:
        return await anext(items)
    except StopAsyncIteration:
        return None
    except grpc.aio.AioRpcError as err:
        raise from_upstream(err, peer, params) from None


def _session_failed(failed: orchestrator_pb2.SessionFailed) -> OpenAIError:
    status = orchestrator_pb2.SessionStatus.Name(failed.status).removeprefix("SESSION_STATUS_").lower()
    reason = " ".join(failed.reason.split())[:500] or "no reason given"
    return OpenAIError(
        grpc.StatusCode.UNKNOWN,
        f"the session ended without an answer ({status}): {reason}",
        http=502,
        openai_code="session_cancelled" if status == "cancelled" else "session_failed",
        retry=False,
    )


def _ended_early() -> OpenAIError:
    return OpenAIError(
        grpc.StatusCode.UNKNOWN,
        "the orchestrator ended the session's stream before its last event",
        http=502,
        openai_code="upstream_error",
        retry=False,
    )


async def _orchestrated(request: web.Request, chat: ChatRequest) -> web.StreamResponse:
    orchestrate, params = orchestrate_request(chat)
    call = request.app[UPSTREAM].orchestrator.Orchestrate(orchestrate)
    events = aiter(call)
    try:
        first = await _unless_gone(request, _next(events, "orchestrator", params))
        if first is None or not first.event.session_id:
            raise _ended_early()
        session_id = first.event.session_id
        log.info("session %s started over the OpenAI API (%s)", session_id, chat.model)
        completions = Completions(f"chatcmpl-{session_id}", int(time.time()), chat.model, chat.reasoning_field)
        if chat.stream:
            return await _stream_session(request, chat, completions, first.event, events, params)
        return await _unless_gone(request, _complete_session(completions, first.event, events, params))
    finally:
        # Not detached: a client that went away (or a failure here) ends the session too.
        call.cancel()


async def _complete_session(
    completions: Completions,
    first: orchestrator_pb2.OrchestrationEvent,
    events: AsyncIterator[orchestrator_pb2.OrchestrateResponse],
    params: ParamMap,
) -> web.Response:
    progress = Progress()
    reasoning: list[str] = []
    event: orchestrator_pb2.OrchestrationEvent | None = first
    while event is not None:
        line = progress.text(event)
        if line:
            reasoning.append(line)
        kind = event.WhichOneof("kind")
        if kind == "session_completed":
            done = event.session_completed
            body = completions.completion(
                done.final_text,
                "".join(reasoning),
                "stop",
                usage_json(done.usage, done.total_cost_usd),
                {"orchestratex": session_info(event.session_id, done)},
            )
            return _json(body, headers={SESSION_HEADER: event.session_id})
        if kind == "session_failed":
            raise _session_failed(event.session_failed)
        item = await _next(events, "orchestrator", params)
        event = None if item is None else item.event
    raise _ended_early()


async def _stream_session(
    request: web.Request,
    chat: ChatRequest,
    completions: Completions,
    first: orchestrator_pb2.OrchestrationEvent,
    events: AsyncIterator[orchestrator_pb2.OrchestrateResponse],
    params: ParamMap,
) -> web.StreamResponse:
    return await _streamed(
        request,
        ChunkStream.headers(first.session_id),
        lambda stream: _pump_session(stream, chat, completions, first, events, params),
        f"session {first.session_id}",
    )


async def _streamed(
    request: web.Request,
    headers: Mapping[str, str],
    pump: Callable[[ChunkStream], Awaitable[None]],
    what: str,
) -> web.StreamResponse:
    """Send ``pump``'s chunks as SSE with keep-alives; a client that goes away cancels the work."""
    response = web.StreamResponse(headers=headers)
    ending = "completed"
    with metrics.SSE_OPEN.track_inprogress():
        await response.prepare(request)
        stream = ChunkStream(response, request.app[OPTIONS].sse_heartbeat)
        stream.start()
        try:
            await _unless_gone(request, pump(stream))
        except (_ClientGone, ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            ending = "client_gone"
            if isinstance(exc, asyncio.CancelledError):
                metrics.sse_closed(ending)
                raise
            log.info("OpenAI client of %s went away; it is cancelled", what)
        finally:
            await stream.close()
    metrics.sse_closed(ending)
    return response


async def _pump_session(
    stream: ChunkStream,
    chat: ChatRequest,
    completions: Completions,
    first: orchestrator_pb2.OrchestrationEvent,
    events: AsyncIterator[orchestrator_pb2.OrchestrateResponse],
    params: ParamMap,
) -> None:
    await stream.send(completions.chunk({"role": "assistant", "content": ""}))
    progress = Progress()
    event: orchestrator_pb2.OrchestrationEvent | None = first
    try:
        while event is not None:
            line = progress.text(event)
            if line:
                await stream.send(completions.reasoning(line))
            kind = event.WhichOneof("kind")
            if kind == "session_completed":
                done = event.session_completed
                for piece in pieces(done.final_text):
                    await stream.send(completions.chunk({"content": piece}))
                info = {"orchestratex": session_info(event.session_id, done)}
                await stream.send(completions.chunk({}, "stop", info))
                if chat.include_usage:
                    await stream.send(completions.usage_chunk(usage_json(done.usage, done.total_cost_usd)))
                await stream.done()
                return
            if kind == "session_failed":
                raise _session_failed(event.session_failed)
            item = await _next(events, "orchestrator", params)
            event = None if item is None else item.event
        raise _ended_early()
    except GatewayError as exc:
        # The status is already 200: the error is the stream's last event, without [DONE] (as OpenAI does).
        await stream.send(error_body(exc))


# ------------------------------------------------------------------------------------------- pass-through


class _Generation:
    """``ProviderService.StreamGenerate`` on the gateway's providers channel, typed (ProviderStub in
    :mod:`gateway.upstream` has only ``ListModels``)."""

    def __init__(self, upstream: Upstream) -> None:
        stub = providers_pb2_grpc.ProviderServiceStub(upstream.channels["providers"])
        self.StreamGenerate: UnaryStream[providers_pb2.StreamGenerateRequest, providers_pb2.StreamGenerateResponse]
        self.StreamGenerate = stub.StreamGenerate


async def _pass_through(request: web.Request, chat: ChatRequest) -> web.StreamResponse:
    generate, params = generate_request(chat)
    call = _Generation(request.app[UPSTREAM]).StreamGenerate(generate)
    items = aiter(call)
    try:
        # The first item before any byte is sent: a refusal (429, 503...) is then a proper HTTP error.
        first = await _unless_gone(request, _next(items, "providers", params))
        if first is None:
            raise _ended_early()
        completions = Completions(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), chat.model, chat.reasoning_field)
        if chat.stream:
            return await _streamed(
                request,
                ChunkStream.headers(),
                lambda stream: _pump_call(stream, chat, completions, first, items, params),
                f"a {chat.model} call",
            )
        return await _unless_gone(request, _complete_call(completions, first, items, params))
    finally:
        call.cancel()


async def _complete_call(
    completions: Completions,
    first: providers_pb2.StreamGenerateResponse,
    items: AsyncIterator[providers_pb2.StreamGenerateResponse],
    params: ParamMap,
) -> web.Response:
    item: providers_pb2.StreamGenerateResponse | None = first
    while item is not None:
        if item.HasField("completed"):
            done = item.completed
            completions.model = done.served_model or completions.model
            body = completions.completion(
                done.text, done.reasoning, finish_reason(done.finish_reason), usage_json(done.usage)
            )
            return _json(body)
        # Deltas are summed up by `completed`; a `failed` event is followed by the call's status.
        item = await _next(items, "providers", params)
    raise _ended_early()


async def _pump_call(
    stream: ChunkStream,
    chat: ChatRequest,
    completions: Completions,
    first: providers_pb2.StreamGenerateResponse,
    items: AsyncIterator[providers_pb2.StreamGenerateResponse],
    params: ParamMap,
) -> None:
    await stream.send(completions.chunk({"role": "assistant", "content": ""}))
    item: providers_pb2.StreamGenerateResponse | None = first
    try:
        while item is not None:
            if item.HasField("delta"):
                delta = item.delta
                await stream.send(completions.reasoning(delta.reasoning))
                if delta.text:
                    await stream.send(completions.chunk({"content": delta.text}))
            elif item.HasField("completed"):
                done = item.completed
                completions.model = done.served_model or completions.model
                await stream.send(completions.chunk({}, finish_reason(done.finish_reason)))
                if chat.include_usage:
                    await stream.send(completions.usage_chunk(usage_json(done.usage)))
                await stream.done()
                return
            item = await _next(items, "providers", params)
        raise _ended_early()
    except GatewayError as exc:
        await stream.send(error_body(exc))
