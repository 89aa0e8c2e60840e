"""Typed application state: the ``web.AppKey``s, the gateway's tunables and background-task tracking.

The gateway's environment variables are parsed with the rest, into ``Settings.gateway``
(:class:`orchestratex.config.GatewaySettings`); :meth:`GatewayOptions.from_settings` takes them from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from aiohttp import web

from gateway.errors import GatewayError
from orchestratex.config import Settings

if TYPE_CHECKING:
    from gateway.listener import ConnectionGuard
    from gateway.security import Principal, Security
    from gateway.upstream import Upstream

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB: Final = 1024 * 1024
METRICS_TENANTS_VAR: Final = "ORX_GATEWAY_METRICS_TENANTS"
MAX_METRICS_TENANTS: Final = 1000


@dataclass(frozen=True)
class GatewayOptions:
    """Gateway tunables: those ``settings.gateway`` sets (see :meth:`from_settings`) and fixed ones. Tests shrink
    them."""

    #: Messages buffered per WebSocket before the socket is closed as too slow (1008).
    send_queue_size: int = 1024
    #: WebSocket ping interval in seconds; a peer that misses a pong is disconnected.
    heartbeat: float = 20.0
    #: Largest WebSocket message accepted from a client; larger ones close the socket with 1009.
    max_ws_message_bytes: int = MIB
    #: Largest REST request body; larger ones get 413.
    max_body_bytes: int = MIB
    #: Concurrent event streams (orchestrate + watch) one socket may hold.
    max_streams_per_socket: int = 32
    #: Timeout of each health check behind ``/readyz``.
    readiness_timeout: float = 2.0
    #: How long ``POST /v1/orchestrations`` waits for the session's first event (None: settings.common.rpc_timeout).
    first_event_timeout: float | None = None
    #: When a socket closes before an orchestration reported its session id, how long to wait for the
    #: id so the session can still be cancelled.
    session_id_grace: float = 5.0
    #: How long a WebSocket without credentials on the upgrade has to send ``{"type": "auth"}``.
    auth_timeout: float = 10.0
    #: Interval of SSE heartbeat comments.
    sse_heartbeat: float = 15.0
    #: ``Host`` names answered besides the loopback ones (``ORX_GATEWAY_ALLOWED_HOSTS``), lowercase, no port.
    allowed_hosts: tuple[str, ...] = ()
    #: Seconds a connection has to deliver a complete request head, from its opening or from the end of its
    #: previous response (``ORX_GATEWAY_HEADER_TIMEOUT``); also the keep-alive idle limit.
    header_timeout: float = 15.0
    #: Seconds a request has to deliver its whole body (``ORX_GATEWAY_BODY_TIMEOUT``); 408 beyond.
    body_timeout: float = 30.0
    #: Open connections one client address may hold before any of their requests authenticated
    #: (``ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS``); 0 = no limit.
    max_unauthenticated_connections: int = 64
    #: After the gateway closes a connection, how long it keeps reading (and dropping) what the client
    #: still sends, so the kernel does not reset the connection before the client read the last response.
    linger_timeout: float = 5.0
    #: Tenants that get their own label value in ``orx_gateway_tenant_requests_total``, the others counted as
    #: ``other`` (``ORX_GATEWAY_METRICS_TENANTS``); 0: no tenant appears in any metric (see gateway.metrics).
    metrics_tenants: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> GatewayOptions:
        """The options ``settings.gateway`` sets (limits, queue size, hosts, timeouts), with ``overrides`` applied."""
        gateway = settings.gateway
        values: dict[str, Any] = {
            "send_queue_size": gateway.send_queue,
            "max_ws_message_bytes": gateway.max_frame_bytes,
            "max_body_bytes": gateway.max_body_bytes,
            "allowed_hosts": gateway.allowed_hosts,
            "header_timeout": gateway.header_timeout,
            "body_timeout": gateway.body_timeout,
            "max_unauthenticated_connections": gateway.max_unauthenticated_connections,
            "metrics_tenants": gateway.metrics_tenants,
        }
        values.update(overrides)
        return cls(**values)


SETTINGS: Final = web.AppKey("settings", Settings)
OPTIONS: Final = web.AppKey("options", GatewayOptions)
UPSTREAM: Final[web.AppKey[Upstream]] = web.AppKey("upstream")
BACKGROUND: Final[web.AppKey[set[asyncio.Task[Any]]]] = web.AppKey("background_tasks")
SECURITY: Final[web.AppKey[Security]] = web.AppKey("security")
GUARD: Final[web.AppKey[ConnectionGuard]] = web.AppKey("connection_guard")
#: The authenticated caller of a request (None on a WebSocket that authenticates with its first message).
PRINCIPAL: Final[web.RequestKey[Principal | None]] = web.RequestKey("principal")


def spawn(app: web.Application, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Run ``coro`` as a task the application owns: referenced until done, cancelled at cleanup,
    and its failure logged rather than lost."""
    task = asyncio.create_task(coro, name=name)
    tasks = app[BACKGROUND]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # retrieving it also keeps asyncio from reporting it as lost
    if exc is None:
        return
    if isinstance(exc, GatewayError):
        log.debug("background task %s ended with %s: %s", task.get_name(), exc.code.name, exc.message)
    else:
        log.error("background task %s failed", task.get_name(), exc_info=exc)
