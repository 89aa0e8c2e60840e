"""OrchestrateX: several LLMs, one excellent answer.

The library shared by every service and every client: the generated stubs (:mod:`orchestratex.v1`),
configuration primitives, the gRPC bootstrap, errors, logging and the storage plumbing. It imports nothing
from ``services`` or ``gateway`` (tests/test_layering.py), and installs without extras: ``pip install
orchestratex`` brings grpcio and protobuf, not the services' dependencies (those are ``orchestratex[server]``).

What a client needs is exported here, and pinned by tests/test_public_surface.py::

    from orchestratex import NotFound, open_channel
    from orchestratex.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    async with open_channel("localhost:50053") as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        session = await stub.GetSession(orchestrator_pb2.GetSessionRequest(session_id=...))

* the stubs: :mod:`orchestratex.v1` (``*_pb2`` messages, ``*_pb2_grpc`` stubs);
* :func:`open_channel`: a channel with default deadlines that carries the caller's request id
  (:data:`REQUEST_ID_HEADER`) and tenant (:data:`TENANT_HEADER`) on every call;
* the exception hierarchy (:class:`OrxError` and its subclasses, one per gRPC status code),
  :func:`from_rpc_error` to turn a failed call into one of them with the status's structured details
  (``field``, ``retry_after``, ``reason``: see :mod:`orchestratex.errors`), and :class:`ConfigError`;
* the configuration primitives :class:`Address` (``host:port``) and :class:`Secret` (never prints).

Every other module (``config.Settings``, ``grpc_server``, ``logging``, ``store``) serves the services and
may change with them; some of them need ``orchestratex[server]``.
"""

from __future__ import annotations

from orchestratex import v1
from orchestratex.config import Address, Secret
from orchestratex.context import REQUEST_ID_HEADER, TENANT_HEADER
from orchestratex.errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OrxError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from orchestratex.grpc_client import open_channel

__version__ = "0.1.0"

__all__ = [
    "REQUEST_ID_HEADER",
    "TENANT_HEADER",
    "Address",
    "Cancelled",
    "ConfigError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OrxError",
    "PermissionDenied",
    "ResourceExhausted",
    "Secret",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "from_rpc_error",
    "open_channel",
    "v1",
]
