"""Slow and oversized clients over raw sockets, against a real gateway on 127.0.0.1:0.

Slow headers, a declared body over the limit, a stalled body and too many unauthenticated connections from one
address must each end with the server closing the connection (seen here as EOF); an oversized WebSocket message,
fragmented or not, must close with 1009 that the client can read (no connection reset). Timeouts are configured
small; every wait is a deadline on a condition, never an assertion on elapsed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.app import start_gateway
from gateway.state import GatewayOptions
from orchestratex.config import Settings

from .conftest import Peers, make_settings
from .test_security import KEY_A, keyed_env

# A deadline on conditions that should hold within a fraction of it.
DEADLINE = 30.0
pytestmark = pytest.mark.timeout(120)

Start = Callable[..., Awaitable[int]]


@pytest.fixture
async def start(settings: Settings) -> AsyncIterator[Start]:
    """``await start(settings=None, **options)`` -> the port of a gateway started with ``start_gateway``."""
    runners: list[web.AppRunner] = []

    async def start_(settings_: Settings | None = None, **options: Any) -> int:
        base = settings_ or settings
        chosen = dataclasses.replace(base, gateway=dataclasses.replace(base.gateway, rate_limit=0))
        runner, port = await start_gateway(chosen, "127.0.0.1", 0, GatewayOptions.from_settings(chosen, **options))
        runners.append(runner)
        return port

    try:
        yield start_
    finally:
        for runner in runners:
            await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), DEADLINE)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, lowercase headers, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), DEADLINE)
    return int(status_line.split()[1]), headers, body


async def trickle(writer: asyncio.StreamWriter, pause: float = 0.05) -> None:
    """A slowloris client: a request line, then header lines one byte at a time until the server closes.

    The pause paces the attack (so that a timeout reset by every byte would never fire); it synchronises nothing.
    """
    with contextlib.suppress(ConnectionError):
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for number in itertools.count():
            for byte in f"X-Padding-{number}: aaaaaaaa\r\n".encode():
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(pause)


# ---- slow headers --------------------------------------------------------------------------------------


async def test_slow_headers_are_cut_off_after_the_header_timeout(start: Start) -> None:
    port = await start(header_timeout=0.5)
    clients = [await connect(port) for _ in range(5)]
    # Header lines forever: the head never completes, but bytes keep arriving.
    attacks = [asyncio.create_task(trickle(writer)) for _, writer in clients]
    try:
        for reader, _ in clients:
            assert await read_to_eof(reader) == b""  # closed without an answer
    finally:
        for task in attacks:
            task.cancel()
        await asyncio.gather(*attacks, return_exceptions=True)
        for _, writer in clients:
            writer.close()


async def test_an_idle_connection_is_closed_but_a_prompt_one_is_served(start: Start) -> None:
    port = await start(header_timeout=0.5)
    reader, writer = await connect(port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body) == {"status": "ok"}
    assert await read_to_eof(reader) == b""  # then idle: closed after the timeout
    writer.close()


# ---- bodies --------------------------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_413_at_once_and_the_connection_closed(start: Start) -> None:
    port = await start(max_body_bytes=1024, body_timeout=0.5, linger_timeout=0.5)
    reader, writer = await connect(port)
    # 100 MB announced, nothing sent: the answer must not wait for the body.
    writer.write(
        b"POST /v1/orchestrations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    status, headers, body = await read_response(reader)
    assert status == 413
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE" and error["field"] == "body"
    assert "1,024" in error["message"]
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_a_stalled_body_is_408_and_the_connection_closed(start: Start, peers: Peers) -> None:
    port = await start(body_timeout=0.5, linger_timeout=0.5)
    reader, writer = await connect(port)
    writer.write(
        b"POST /v1/orchestrations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 500\r\n\r\n{"prompt": "'
    )
    status, headers, body = await read_response(reader)
    assert status == 408
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert error["code"] == "REQUEST_TIMEOUT" and error["field"] == "body"
    assert await read_to_eof(reader) == b""
    writer.close()
    assert peers.orchestrator.orchestrate_requests == []


# ---- unauthenticated connections per address ------------------------------------------------------------


async def test_unauthenticated_connections_per_address_are_capped(start: Start, tmp_path: Path, peers: Peers) -> None:
    settings = make_settings(tmp_path, **keyed_env(peers))
    port = await start(settings, max_unauthenticated_connections=2)
    authed = f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY_A}\r\n\r\n".encode()

    # An authenticated keep-alive connection does not count against the limit.
    a_reader, a_writer = await connect(port)
    a_writer.write(authed)
    assert (await read_response(a_reader))[0] == 200

    # Two that have not finished their headers fill it...
    b_reader, b_writer = await connect(port)
    _, c_writer = await connect(port)
    b_writer.write(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    c_writer.write(b"GET /v1/models HTTP/1.1\r\n")
    # ...so a third is refused before anything is read, with the documented error, and closed.
    d_reader, d_writer = await connect(port)
    status, headers, body = await read_response(d_reader)
    assert status == 429 and headers["connection"] == "close" and int(headers["retry-after"]) >= 1
    error = orjson.loads(body)["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED" and error["status"] == 429
    assert "unauthenticated connections" in error["message"]
    assert await read_to_eof(d_reader) == b""

    # The two counted ones were admitted: one authenticates, which frees its place for a newcomer.
    b_writer.write(f"Authorization: Bearer {KEY_A}\r\n\r\n".encode())
    assert (await read_response(b_reader))[0] == 200
    e_reader, e_writer = await connect(port)
    e_writer.write(authed)
    assert (await read_response(e_reader))[0] == 200
    for writer in (a_writer, b_writer, c_writer, d_writer, e_writer):
        writer.close()


# ---- WebSocket: oversized messages ----------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame. The all-zero mask is valid (RFC 6455 5.3) and leaves the payload as it is."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


async def ws_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connect(port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def close_code(data: bytes) -> int:
    """The code of the server's close frame (unmasked, short payload) at the start of ``data``."""
    assert len(data) >= 4 and data[0] == 0x88, data[:16]
    code: int = struct.unpack("!H", data[2:4])[0]
    return code


async def send_oversized(writer: asyncio.StreamWriter, *, fragmented: bool) -> None:
    """One text message of :data:`OVERSIZED` bytes, in :data:`CHUNK`-sized frames or in one frame."""
    if fragmented:
        count = OVERSIZED // CHUNK
        for i in range(count):
            writer.write(ws_frame(0x1 if i == 0 else 0x0, b"a" * CHUNK, fin=i == count - 1))
            await writer.drain()
    else:
        writer.write(ws_frame(0x1, b"a" * OVERSIZED))
        await writer.drain()


CHUNK = 64 * 1024
# Far beyond what the kernel buffers on loopback: the server must drain it for the close frame to arrive.
OVERSIZED = 16 * 1024 * 1024


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "one-frame"])
async def test_an_oversized_message_closes_with_1009_readable_by_the_client(start: Start, fragmented: bool) -> None:
    port = await start(max_ws_message_bytes=CHUNK, linger_timeout=DEADLINE)
    reader, writer = await ws_upgrade(port)
    sender = asyncio.create_task(send_oversized(writer, fragmented=fragmented))
    received = await read_to_eof(reader)  # a reset would raise ConnectionResetError here
    assert close_code(received) == 1009
    await asyncio.wait_for(sender, DEADLINE)  # every byte was accepted: nothing was reset
    writer.close()


async def test_invalid_utf8_closes_with_1007(start: Start) -> None:
    port = await start()
    reader, writer = await ws_upgrade(port)
    writer.write(ws_frame(0x1, b'{"type": "\xff"}'))
    assert close_code(await read_to_eof(reader)) == 1007
    writer.close()


def test_gateway_env_settings_are_parsed_with_clear_errors(tmp_path: Path) -> None:
    from orchestratex.errors import ConfigError

    settings = make_settings(
        tmp_path,
        ORX_GATEWAY_ALLOWED_HOSTS="Orx.Example.com:8443, [::1], orx.example.com",
        ORX_GATEWAY_HEADER_TIMEOUT="2.5",
        ORX_GATEWAY_BODY_TIMEOUT="7",
        ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS="0",
    )
    options = GatewayOptions.from_settings(settings)
    assert options.allowed_hosts == ("orx.example.com", "::1")
    assert (options.header_timeout, options.body_timeout, options.max_unauthenticated_connections) == (2.5, 7.0, 0)
    defaults = GatewayOptions.from_settings(make_settings(tmp_path))
    assert (defaults.header_timeout, defaults.body_timeout, defaults.max_unauthenticated_connections) == (15, 30, 64)
    for var, value in (
        ("ORX_GATEWAY_ALLOWED_HOSTS", "*.example.com"),
        ("ORX_GATEWAY_ALLOWED_HOSTS", "http://orx.example.com/"),
        ("ORX_GATEWAY_HEADER_TIMEOUT", "soon"),
        ("ORX_GATEWAY_BODY_TIMEOUT", "0"),
        ("ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS", "-1"),
    ):
        with pytest.raises(ConfigError, match=var):
            make_settings(tmp_path, **{var: value})
