"""The gateway's listening socket: admission per client address and lingering close.

aiohttp has neither, so :class:`GatewaySite` puts a thin protocol (:class:`_Connection`) between asyncio and
aiohttp's own (``web.Server`` is aiohttp's protocol factory). Only public asyncio and aiohttp interfaces are used.

Admission
    Every connection counts against its client address until one of its requests authenticates
    (:func:`mark_authenticated`, called by the security middleware and by the WebSocket's ``auth`` message;
    without keys, any request the middleware admits). An address already holding
    ``max_unauthenticated_connections`` such connections gets a 429 JSON error and the connection is closed
    before a byte of it is parsed: a slow-headers client cannot pile up sockets.

Lingering close
    Closing a socket while the client is still sending makes the kernel answer with a reset, which destroys
    what the client has not read yet: the WebSocket close frame with 1009 after an oversized message, a 413 or
    408 answer. So when aiohttp closes a connection, the gateway half-closes it (FIN after the pending output),
    then reads and drops whatever still arrives until the client closes its side or ``linger_timeout`` passes,
    and only then releases the socket (the same idea as nginx's ``lingering_close``).

Header and body timeouts are aiohttp's and the handlers' business (see :func:`gateway.app.start_gateway`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final, cast

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

_RETRY_AFTER_S: Final = 1


def mark_authenticated(transport: object) -> None:
    """The connection behind ``transport`` has authenticated: it no longer counts against its address."""
    if isinstance(transport, _TransportView):
        transport.connection.authenticated()


class ConnectionGuard:
    """Counts each client address's open connections that have not authenticated yet."""

    def __init__(self, limit: int, linger: float) -> None:
        #: Unauthenticated connections allowed per address; 0 = no limit.
        self.limit = limit
        #: Seconds a closing connection keeps draining the client's input.
        self.linger = linger
        self._pending: dict[str, int] = {}
        self._open: set[_Connection] = set()

    def pending(self, address: str) -> int:
        """Unauthenticated connections open from ``address``."""
        return self._pending.get(address, 0)

    def _admit(self, connection: _Connection) -> bool:
        self._open.add(connection)
        if self.limit <= 0:
            return True
        count = self._pending.get(connection.address, 0)
        if count >= self.limit:
            return False
        self._pending[connection.address] = count + 1
        connection.counted = True
        return True

    def _release(self, connection: _Connection) -> None:
        if not connection.counted:
            return
        connection.counted = False
        left = self._pending.get(connection.address, 0) - 1
        if left > 0:
            self._pending[connection.address] = left
        else:
            self._pending.pop(connection.address, None)

    def _closed(self, connection: _Connection) -> None:
        self._release(connection)
        self._open.discard(connection)

    def abort_all(self) -> None:
        """Drop every connection still open (at the end of shutdown, for those still lingering)."""
        for connection in list(self._open):
            connection.abort()


def _too_many(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "code": "RESOURCE_EXHAUSTED",
                "status": 429,
                "message": f"too many unauthenticated connections from this address (limit {limit}); "
                "authenticate on the ones you have or close them",
                "retry_after": _RETRY_AFTER_S,
            }
        }
    )
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {_RETRY_AFTER_S}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Connection(asyncio.Protocol):
    """One accepted connection: admission, then everything relayed to aiohttp's protocol."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.address = "unknown"
        self.counted = False
        self.lingering = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not subclasses of asyncio's.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.address = str(peer[0])
        if not self._guard._admit(self):
            log.info("refused a connection: %s already has %d unauthenticated ones", self.address, self._guard.limit)
            transport.write(_too_many(self._guard.limit))
            self.close()
            return
        self._inner = self._factory()
        self._inner.connection_made(_TransportView(self, transport))

    def data_received(self, data: bytes) -> None:
        if self._inner is not None and not self.lingering:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None or self.lingering:
            return False  # the client finished: close for good
        keep_open: bool | None = self._inner.eof_received()
        return keep_open

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._guard._closed(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # -- used by the transport view ----------------------------------------------------------------

    def authenticated(self) -> None:
        self._guard._release(self)

    def close(self) -> None:
        """Half-close after the pending output, then drain the client until it closes or the linger ends."""
        transport = self._transport
        if self.lingering or transport is None or transport.is_closing():
            return
        self.lingering = True
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(self._guard.linger, transport.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class _TransportView(asyncio.Transport):
    """The transport aiohttp sees: the real one, except that closing lingers and reads never pause then."""

    def __init__(self, connection: _Connection, transport: asyncio.Transport) -> None:
        super().__init__()
        self.connection = connection
        self._real = transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.connection.lingering or self._real.is_closing()

    def close(self) -> None:
        self.connection.close()

    def abort(self) -> None:
        self._real.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.connection.lingering:
            self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.connection.lingering:
            self._real.writelines(list_of_data)

    def write_eof(self) -> None:
        self._real.write_eof()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def pause_reading(self) -> None:
        if not self.connection.lingering:
            self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._real.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.connection._inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        protocol: asyncio.BaseProtocol = self.connection._inner
        return protocol


class GatewaySite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, reuse_port: bool = False
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        """``http://host:port`` as requested (port 0 until started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Listen on ``host:port`` (shared with sibling workers through ``SO_REUSEPORT`` when ``reuse_port``)."""
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(guard, server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
