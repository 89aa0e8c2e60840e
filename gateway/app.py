"""The gateway application: :func:`init_app` builds it, :func:`start_gateway` runs it on a port.

Resources live in ``cleanup_ctx`` (gRPC channels opened at startup, closed at cleanup) and in typed
``web.AppKey`` state (:mod:`gateway.state`). One middleware gives every request a request id
(propagated to the peers) and turns every failure into the JSON error body; ``on_shutdown`` closes
WebSockets with 1001 GOING_AWAY.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc
from aiohttp import web

from gateway import rest, ws
from gateway.errors import GatewayError, error_response, from_orx, from_rpc
from gateway.state import BACKGROUND, CONNECTIONS, OPTIONS, SETTINGS, UPSTREAM, GatewayOptions
from gateway.upstream import Upstream
from orchestratex import context
from orchestratex.config import Settings
from orchestratex.errors import OrxError

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
# Explicit types: the platform's mimetypes table varies (.js especially).
STATIC_FILES: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# HTTP statuses aiohttp raises itself, with the code names used in error bodies.
_HTTP_CODES: Final = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def init_app(settings: Settings, options: GatewayOptions | None = None) -> web.Application:
    """Build the gateway application. Nothing connects until the app starts."""
    options = options or GatewayOptions()
    app = web.Application(middlewares=[_errors_middleware], client_max_size=options.max_body_bytes)
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[CONNECTIONS] = set()
    app[BACKGROUND] = set()
    app.cleanup_ctx.append(_upstream_ctx)
    app.on_shutdown.append(ws.close_all)
    app.on_response_prepare.append(_common_headers)
    app.router.add_get("/v1/ws", ws.websocket_handler)
    rest.setup_routes(app)
    _setup_static(app)
    return app


async def start_gateway(
    settings: Settings, host: str, port: int, options: GatewayOptions | None = None
) -> tuple[web.AppRunner, int]:
    """Start the gateway on ``host:port`` (port 0 picks a free one).

    Returns the runner (``await runner.cleanup()`` stops it gracefully) and the bound port.
    """
    runner = web.AppRunner(init_app(settings, options), shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound: int = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    upstream = Upstream.open(settings)
    app[UPSTREAM] = upstream
    log.info(
        "gateway peers: orchestrator %s, providers %s, analytics %s",
        settings.peers["orchestrator"],
        settings.peers["providers"],
        settings.peers["analytics"],
    )
    try:
        yield
    finally:
        # Socket releases and REST starts in flight get a bounded chance to finish (they make
        # the last upstream calls), then whatever is left is cancelled.
        background: set[asyncio.Task[Any]] = app[BACKGROUND]
        if background:
            await asyncio.wait(list(background), timeout=settings.shutdown_grace)
        tasks = list(background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close(grace=None)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get(context.REQUEST_ID_HEADER, "")
    # Set per request: outbound gRPC calls made while handling it carry the same id.
    context.request_id.set(rid if context.valid_request_id(rid) else context.new_request_id())
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except OrxError as exc:
        return error_response(from_orx(exc))
    except grpc.aio.AioRpcError as err:
        return error_response(from_rpc(err, "upstream"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(
            GatewayError(grpc.StatusCode.INTERNAL, f"internal error (request id {context.request_id.get()})"),
            status=500,
        )


def _http_error(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status) or exc.reason.upper().replace(" ", "_").replace("-", "_")
    if exc.status == 404:
        message = "no such resource"
    elif exc.status == 405:
        message = f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    elif exc.status == 413:
        message = "body: request body is too large"
    else:
        message = exc.text or exc.reason
        message = message.removeprefix(f"{exc.status}: ")
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    body = {"error": {"code": code, "message": message}}
    return rest.json_response(body, status=exc.status, headers=headers)


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    rid = context.request_id.get()
    if rid:
        response.headers["X-Request-Id"] = rid
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def _setup_static(app: web.Application) -> None:
    files = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    def serve(name: str) -> web.Response:
        headers = {"Cache-Control": "no-cache"}
        if name.endswith(".html"):
            headers["Content-Security-Policy"] = _PAGE_CSP
            headers["Referrer-Policy"] = "no-referrer"
        return web.Response(body=files[name], content_type=STATIC_FILES[name], charset="utf-8", headers=headers)

    async def index(request: web.Request) -> web.Response:
        return serve("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        return serve(name)

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)


async def serve(settings: Settings) -> None:
    """Serve on ``settings.listen["gateway"]`` until SIGTERM/SIGINT, then shut down gracefully:
    stop accepting, close sockets with 1001, let requests finish, close the gRPC channels."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = settings.listen["gateway"]
    runner, port = await start_gateway(settings, address.host, address.port)
    log.info("gateway listening on %s:%d", address.host, port)
    try:
        await stop.wait()
        log.info("shutting down (grace %.1fs)", settings.shutdown_grace)
    finally:
        await runner.cleanup()
        log.info("stopped")
