"""Typed application state: the ``web.AppKey``s, the gateway's tunables and background-task tracking."""

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
    from gateway.security import Principal, Security
    from gateway.upstream import Upstream
    from gateway.ws import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class GatewayOptions:
    """Gateway tunables that are not (yet) environment settings. Tests shrink them."""

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
    #: How long ``POST /v1/orchestrations`` waits for the session's first event (None: settings.rpc_timeout).
    first_event_timeout: float | None = None
    #: When a socket closes before an orchestration reported its session id, how long to wait for the
    #: id so the session can still be cancelled.
    session_id_grace: float = 5.0
    #: How long a WebSocket without credentials on the upgrade has to send ``{"type": "auth"}``.
    auth_timeout: float = 10.0
    #: Interval of SSE heartbeat comments.
    sse_heartbeat: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> GatewayOptions:
        """The options the environment sets (limits and queue size), with ``overrides`` applied."""
        values: dict[str, Any] = {
            "send_queue_size": settings.gateway_send_queue,
            "max_ws_message_bytes": settings.gateway_max_frame_bytes,
            "max_body_bytes": settings.gateway_max_body_bytes,
        }
        values.update(overrides)
        return cls(**values)


SETTINGS: Final = web.AppKey("settings", Settings)
OPTIONS: Final = web.AppKey("options", GatewayOptions)
UPSTREAM: Final[web.AppKey[Upstream]] = web.AppKey("upstream")
CONNECTIONS: Final[web.AppKey[set[Connection]]] = web.AppKey("connections")
BACKGROUND: Final[web.AppKey[set[asyncio.Task[Any]]]] = web.AppKey("background_tasks")
SECURITY: Final[web.AppKey[Security]] = web.AppKey("security")
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
