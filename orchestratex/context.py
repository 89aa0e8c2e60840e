"""Per-request context carried across services: request id and tenant.

The server interceptor sets these from incoming metadata; the client interceptor copies them onto
every outbound call, so one request id follows a prompt through every service's logs.
"""

from __future__ import annotations

import contextvars
import uuid

REQUEST_ID_HEADER = "x-request-id"
TENANT_HEADER = "x-orx-tenant"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("orx_request_id", default="")
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("orx_tenant", default="")


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


def valid_request_id(value: str) -> bool:
    """Accept caller-supplied ids only when short and printable, so logs stay clean."""
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()
