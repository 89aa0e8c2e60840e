"""Outbound gRPC: channels to peer services with request-id/tenant propagation and default deadlines.

Every call made through these channels carries the caller's request id and tenant, and gets a
deadline when the caller did not set one — no outbound call can hang forever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from orchestratex import context

if TYPE_CHECKING:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamBase = grpc.aio.UnaryStreamClientInterceptor


def _decorate(details: grpc.aio.ClientCallDetails, default_timeout: float) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if context.REQUEST_ID_HEADER not in metadata:
        rid = context.request_id.get() or context.new_request_id()
        metadata.add(context.REQUEST_ID_HEADER, rid)
    tenant = context.tenant.get()
    if tenant and context.TENANT_HEADER not in metadata:
        metadata.add(context.TENANT_HEADER, tenant)
    timeout = details.timeout if details.timeout is not None else default_timeout
    return grpc.aio.ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


class _UnaryUnary(_UnaryUnaryBase):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_decorate(details, self.timeout), request)


class _UnaryStream(_UnaryStreamBase):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_decorate(details, self.timeout), request)


def open_channel(
    target: str,
    unary_timeout: float = 10.0,
    stream_timeout: float = 3600.0,
    max_message_bytes: int = 8 * 1024 * 1024,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure channel to a peer inside the deployment (TLS is terminated by the platform)."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 1),
            # A peer that restarts is back within seconds; gRPC's default backoff grows to 120 s, which
            # would leave e.g. the outbox idle for up to two minutes after analytics returns.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5_000),
            *options,
        ],
        interceptors=[_UnaryUnary(unary_timeout), _UnaryStream(stream_timeout)],  # type: ignore[list-item]
    )
