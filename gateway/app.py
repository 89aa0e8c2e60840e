"""The gateway application: :func:`init_app` builds it, :func:`start_gateway` runs it on a port.

Resources live in ``cleanup_ctx`` (gRPC channels opened at startup, closed at cleanup) and in typed
``web.AppKey`` state (:mod:`gateway.state`). Middlewares, outermost first: a ``SERVER`` span per request, only
when tracing is configured (:mod:`gateway.tracing`); the HTTP metrics (:mod:`gateway.metrics`); one that gives
every request a request id (propagated to the peers) and turns every failure into the JSON error body; and
one that admits requests: the ``Host`` (DNS rebinding) and the declared body size on every path, then for ``/v1``
the origin, API key -> tenant and rate limit (see :mod:`gateway.security`).
``on_shutdown`` closes WebSockets with 1001 GOING_AWAY.

Slow clients: aiohttp's ``keepalive_timeout`` bounds the time to a complete request head (it runs from the
connection's opening and from the end of each response, and is not reset by incoming bytes), handlers read
bodies within ``body_timeout`` (408), and :class:`gateway.listener.GatewaySite` caps unauthenticated
connections per address and closes connections without resetting them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc
from aiohttp import web

from gateway import metrics, openai_api, openai_errors, openapi, rest, sse, ws
from gateway.errors import GatewayError, error_response, from_orx, from_rpc
from gateway.listener import ConnectionGuard, GatewaySite, mark_authenticated
from gateway.openai_schemas import PREFIX as OPENAI_PREFIX
from gateway.security import Principal, Security, bearer_token, check_exposure
from gateway.state import (
    BACKGROUND,
    GUARD,
    OPTIONS,
    PRINCIPAL,
    SECURITY,
    SETTINGS,
    UPSTREAM,
    GatewayOptions,
)
from gateway.tracing import tracing_middleware
from gateway.upstream import Upstream
from orchestratex import context
from orchestratex.config import Settings
from orchestratex.errors import ConfigError, OrxError

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
# Explicit types: the platform's mimetypes table varies (.js especially). Other extensions are not served.
STATIC_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain",
}
_TEXT_TYPES: Final = frozenset({"text/html", "text/javascript", "text/css", "application/json", "text/plain"})
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
# Paths under /v1 that need no key (the API description is public).
_PUBLIC_V1: Final = frozenset({"/v1/openapi.json"})
# The prefixes behind keys, origins and the rate limit: REST and the OpenAI-compatible surface.
_API_PREFIXES: Final = ("/v1/", OPENAI_PREFIX + "/")
WS_PATH: Final = "/v1/ws"
# WebSocket subprotocol ``orx.bearer.<key>`` carries the key (the server selects ``orx.v1``, see ws.py).
WS_BEARER_PREFIX: Final = "orx.bearer."
_CORS_ALLOW_HEADERS: Final = "Authorization, Content-Type, Last-Event-ID, X-Request-Id"
_CORS_EXPOSE_HEADERS: Final = "Retry-After, X-Request-Id, Location, WWW-Authenticate, X-OrchestrateX-Session-Id"
_CORS_MAX_AGE: Final = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def init_app(settings: Settings, options: GatewayOptions | None = None) -> web.Application:
    """Build the gateway application. Nothing connects until the app starts.

    ``options`` default to :meth:`GatewayOptions.from_settings`. Raises :class:`ConfigError` for a bad
    key configuration.
    """
    options = options or GatewayOptions.from_settings(settings)
    middlewares = [metrics.http_middleware(options.metrics_tenants), _errors_middleware, _security_middleware]
    traced = tracing_middleware()
    if traced is not None:
        middlewares.insert(0, traced)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=options.max_body_bytes,
        handler_args={
            # From the connection's opening (or the end of the previous response) to a complete request head;
            # bytes trickling in do not extend it, so it is the header timeout as well as the idle limit.
            "keepalive_timeout": options.header_timeout,
            # How long an unread request body is drained after the answer (then listener.py lingers).
            "lingering_time": options.linger_timeout,
            # Request lines up to 32 KiB: every documented query parameter at its longest, percent-encoded.
            "max_line_size": 32 * 1024,
        },
    )
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[SECURITY] = Security.from_settings(settings, options.allowed_hosts)
    app[GUARD] = ConnectionGuard(options.max_unauthenticated_connections, options.linger_timeout)
    app[ws.CONNECTIONS] = set()
    app[BACKGROUND] = set()
    app.cleanup_ctx.append(_upstream_ctx)
    app.on_shutdown.append(ws.close_all)
    app.on_cleanup.append(_abort_lingering)
    app.on_response_prepare.append(_common_headers)
    app.on_response_prepare.append(metrics.note_status)
    app.router.add_get(WS_PATH, ws.websocket_handler)
    rest.setup_routes(app)
    sse.setup_routes(app)
    openai_api.setup_routes(app)
    openapi.setup_routes(app)
    _setup_static(app)
    return app


async def start_gateway(
    settings: Settings, host: str, port: int, options: GatewayOptions | None = None
) -> tuple[web.AppRunner, int]:
    """Start the gateway on ``host:port`` (port 0 picks a free one).

    Returns the runner (``await runner.cleanup()`` stops it gracefully) and the bound port. Raises
    :class:`ConfigError` when ``host`` is beyond loopback and no API keys are configured.
    """
    options = options or GatewayOptions.from_settings(settings)
    app = init_app(settings, options)
    check_exposure(host, app[SECURITY].keys)
    runner = web.AppRunner(app, shutdown_timeout=settings.common.shutdown_grace)
    await runner.setup()
    try:
        site = GatewaySite(runner, host, port, app[GUARD], reuse_port=settings.common.reuse_port("gateway"))
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
        settings.common.peers["orchestrator"],
        settings.common.peers["providers"],
        settings.common.peers["analytics"],
    )
    try:
        yield
    finally:
        # Socket releases and REST starts in flight get a bounded chance to finish (they make
        # the last upstream calls), then whatever is left is cancelled.
        background: set[asyncio.Task[Any]] = app[BACKGROUND]
        if background:
            await asyncio.wait(list(background), timeout=settings.common.shutdown_grace)
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
    # The OpenAI-compatible surface answers in OpenAI's error shape; the rest in the gateway's.
    openai = request.path.startswith(OPENAI_PREFIX + "/")
    render = openai_errors.error_response if openai else error_response
    try:
        return await handler(request)
    except GatewayError as exc:
        failure = exc
    except OrxError as exc:
        failure = from_orx(exc)
    except grpc.aio.AioRpcError as err:
        failure = from_rpc(err, "upstream")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        _count_invalid(exc.status)
        return openai_errors.http_error(exc) if openai else _http_error(exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        rid = context.request_id.get()
        failure = GatewayError(grpc.StatusCode.INTERNAL, f"internal error (request id {rid})", http=500)
    _count_invalid(failure.http_status)
    return render(failure)


def _count_invalid(status: int) -> None:
    """Count the rejections known by their status alone: 400 (the gateway's or a service's validation) and 413
    (aiohttp's body limit as well as the declared size). The others are counted where they are decided."""
    if status == 400:
        metrics.reject("validation")
    elif status == 413:
        metrics.reject("too_large")


async def _abort_lingering(app: web.Application) -> None:
    app[GUARD].abort_all()


@web.middleware
async def _security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit requests: Host and declared body size on every path; for ``/v1`` and ``/openai/v1`` also the
    origin, the key (-> tenant) and the rate limit."""
    security = request.app[SECURITY]
    host = request.headers.get("Host")
    if not security.hosts.permits(host):
        metrics.reject("host")
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"host: this gateway does not answer to {(host or '')[:100]!r}; without API keys it answers to loopback"
            " names (localhost, 127.0.0.1, [::1]) and to the names in ORX_GATEWAY_ALLOWED_HOSTS",
            field="host",
            http=421,
            code_name="MISDIRECTED_REQUEST",
        )
    limit = request.app[OPTIONS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        # Answered at once: nothing of the body is read, and the connection closes after the answer.
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"body: {request.content_length:,} bytes announced; the limit is {limit:,}",
            field="body",
            http=413,
            code_name="PAYLOAD_TOO_LARGE",
            close=True,
        )
    path = request.path
    if not path.startswith(_API_PREFIXES) or path in _PUBLIC_V1:
        return await handler(request)
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(security, origin, request)
    if not security.origins.permits(origin, request.host):
        metrics.reject("origin")
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "origin: this origin may not call the API (see ORX_GATEWAY_CORS_ORIGINS)",
            field="origin",
        )
    principal = _authenticate(request, security)
    bucket = principal.bucket if principal is not None else _address_bucket(request)
    wait = security.limiter.acquire(bucket)
    if wait:
        metrics.reject("rate_limit")
        raise rate_limited(wait)
    request[PRINCIPAL] = principal
    if principal is not None:
        # Outbound gRPC calls made for this request (and tasks it starts) carry x-orx-tenant.
        context.tenant.set(principal.tenant)
        mark_authenticated(request.transport)
    return await handler(request)


def rate_limited(wait: int) -> GatewayError:
    """The 429 error for a caller that must wait ``wait`` seconds."""
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"rate limit exceeded; retry after {wait} s",
        retry_after=wait,
    )


def unauthenticated(problem: str) -> GatewayError:
    """The 401 error (the message never repeats the key)."""
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {problem}")


def _address_bucket(request: web.Request) -> str:
    return f"ip:{request.remote or 'unknown'}"


def _authenticate(request: web.Request, security: Security) -> Principal | None:
    """The caller; None only for a WebSocket upgrade that will authenticate with its first message."""
    if not security.auth_required:
        return Principal(tenant="", bucket=_address_bucket(request))
    key = None
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        key = bearer_token(authorization)
        if key is None:
            _count_failure(request, security)
            metrics.reject("auth")
            raise unauthenticated("the Authorization header must be 'Bearer <API key>'")
    elif request.path == WS_PATH:
        key = ws_protocol_key(request)
        if key is None:
            return None
    if key is None:
        _count_failure(request, security)
        metrics.reject("auth")
        raise unauthenticated("an API key is required (Authorization: Bearer <key>)")
    principal = security.keys.authenticate(key)
    if principal is None:
        _count_failure(request, security)
        metrics.reject("auth")
        raise unauthenticated("the API key is not valid")
    return principal


def _count_failure(request: web.Request, security: Security) -> None:
    # Failed attempts cost the client address a token each: guessing keys is rate limited too.
    wait = security.limiter.acquire(_address_bucket(request))
    if wait:
        metrics.reject("rate_limit")
        raise rate_limited(wait)


def ws_protocol_key(request: web.Request) -> str | None:
    """The key offered as the ``orx.bearer.<key>`` WebSocket subprotocol, if any."""
    for header in request.headers.getall("Sec-WebSocket-Protocol", []):
        for item in header.split(","):
            name = item.strip()
            if name.startswith(WS_BEARER_PREFIX):
                return name[len(WS_BEARER_PREFIX) :] or None
    return None


def _preflight(security: Security, origin: str | None, request: web.Request) -> web.Response:
    if origin is None or not (
        security.origins.is_cross_origin_allowed(origin) or security.origins.is_same_origin(origin, request.host)
    ):
        metrics.reject("origin")
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "origin: this origin may not call the API (see ORX_GATEWAY_CORS_ORIGINS)",
            field="origin",
        )
    headers = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": _CORS_MAX_AGE,
    }
    return web.Response(status=204, headers=headers)


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
    body = {"error": {"code": code, "status": exc.status, "message": message}}
    if exc.status == 413:
        body["error"]["field"] = "body"
    response = rest.json_response(body, status=exc.status, headers=headers)
    if exc.status == 413:
        response.force_close()  # the rest of the body will not be read
    return response


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    rid = context.request_id.get()
    if rid:
        response.headers["X-Request-Id"] = rid
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    origin = request.headers.get("Origin")
    if origin is not None and request.path.startswith(_API_PREFIXES):
        # On every response, errors included, so a permitted page can read 401/429 bodies.
        response.headers.setdefault("Vary", "Origin")
        if request.app[SECURITY].origins.is_cross_origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE_HEADERS


def _static_index() -> dict[str, Path]:
    """Every servable file under ``static/``, by its URL path (``vendor/x/y.js``): a fixed allow-list
    built at start-up, so no request path ever reaches the file system."""
    files: dict[str, Path] = {}
    if STATIC_DIR.is_dir():
        for path in STATIC_DIR.rglob("*"):
            if path.is_file() and path.suffix in STATIC_TYPES and not path.name.startswith("."):
                files[path.relative_to(STATIC_DIR).as_posix()] = path
    return files


def _setup_static(app: web.Application) -> None:
    files = _static_index()

    def serve(name: str) -> web.Response:
        path = files[name]
        content_type = STATIC_TYPES[path.suffix]
        headers = {"Cache-Control": "no-cache"}
        if content_type == "text/html":
            headers["Content-Security-Policy"] = _PAGE_CSP
            headers["Referrer-Policy"] = "no-referrer"
        charset = "utf-8" if content_type in _TEXT_TYPES else None
        return web.Response(body=path.read_bytes(), content_type=content_type, charset=charset, headers=headers)

    async def index(request: web.Request) -> web.Response:
        if "index.html" not in files:
            raise web.HTTPNotFound()
        return serve("index.html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["path"]
        if name not in files:
            raise web.HTTPNotFound()
        return serve(name)

    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)


async def serve(settings: Settings) -> None:
    """Serve on ``settings.common.listen["gateway"]`` until SIGTERM/SIGINT, then shut down gracefully:
    stop accepting, close sockets with 1001, let requests finish, close the gRPC channels."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = settings.common.listen["gateway"]
    try:
        options = GatewayOptions.from_settings(settings)
        runner, port = await start_gateway(settings, address.host, address.port, options)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        print(f"orchestratex: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("gateway listening on %s:%d", address.host, port)
    try:
        await stop.wait()
        log.info("shutting down (grace %.1fs)", settings.common.shutdown_grace)
    finally:
        await runner.cleanup()
        log.info("stopped")
