"""Typed application state: the ``web.AppKey``s, the gateway's tunables and background-task tracking.

The gateway's own environment variables (those :class:`orchestratex.config.Settings` does not parse) are
read here, once, by :meth:`GatewayOptions.from_env`:

=================================================  =======  ==============================================
``ORX_GATEWAY_ALLOWED_HOSTS``                      empty    extra ``Host`` names the gateway answers to
``ORX_GATEWAY_HEADER_TIMEOUT``                     ``15``   seconds to receive a request's headers (and
                                                            the idle time allowed between requests)
``ORX_GATEWAY_BODY_TIMEOUT``                       ``30``   seconds to receive a request body
``ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS``    ``64``   open connections per client address that
                                                            have not authenticated yet; ``0`` = no limit
=================================================  =======  ==============================================
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from aiohttp import web

from gateway.errors import GatewayError
from gateway.security import host_name
from orchestratex.config import Settings
from orchestratex.errors import ConfigError

if TYPE_CHECKING:
    from gateway.listener import ConnectionGuard
    from gateway.security import Principal, Security
    from gateway.upstream import Upstream

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

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str], **overrides: Any) -> GatewayOptions:
        """:meth:`from_settings` plus the gateway-only variables of ``env`` (see the module docstring).

        Raises :class:`ConfigError` naming the variable.
        """
        values: dict[str, Any] = {
            "allowed_hosts": parse_allowed_hosts(env.get(ALLOWED_HOSTS_VAR, "")),
            "header_timeout": _seconds(env, HEADER_TIMEOUT_VAR, 15.0),
            "body_timeout": _seconds(env, BODY_TIMEOUT_VAR, 30.0),
            "max_unauthenticated_connections": _count(env, MAX_UNAUTHENTICATED_VAR, 64),
        }
        values.update(overrides)
        return cls.from_settings(settings, **values)


ALLOWED_HOSTS_VAR: Final = "ORX_GATEWAY_ALLOWED_HOSTS"
HEADER_TIMEOUT_VAR: Final = "ORX_GATEWAY_HEADER_TIMEOUT"
BODY_TIMEOUT_VAR: Final = "ORX_GATEWAY_BODY_TIMEOUT"
MAX_UNAUTHENTICATED_VAR: Final = "ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS"


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """Comma-separated host names (a port, if given, is ignored), lowercase. Raises :class:`ConfigError`."""
    names: list[str] = []
    for number, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        name = host_name(item)
        if name is None:
            raise ConfigError(
                f"{ALLOWED_HOSTS_VAR}: entry {number} ({item[:60]!r}) is not a host name such as orx.example.com"
                " or orx.example.com:8080 (wildcards are not supported)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def _seconds(env: Mapping[str, str], var: str, default: float) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{var}: expected a number of seconds, got {raw[:40]!r}") from None
    if not (math.isfinite(value) and 0.01 <= value <= 3600):
        raise ConfigError(f"{var}: must be between 0.01 and 3600 seconds, got {raw[:40]!r}")
    return value


def _count(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) > 1_000_000:
        raise ConfigError(f"{var}: expected a whole number from 0 (no limit) to 1000000, got {raw[:40]!r}")
    return int(raw)


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
