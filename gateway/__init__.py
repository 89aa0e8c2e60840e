"""The OrchestrateX HTTP/WebSocket gateway.

Browsers and HTTP clients talk JSON to the gateway; the gateway talks gRPC to the orchestrator and
providers services. Public surface:

* :func:`gateway.app.init_app` — the aiohttp application factory;
* :func:`gateway.app.start_gateway` — run it on a host/port (port 0 picks a free one);
* ``python -m gateway`` — run it from the environment's settings.

The WebSocket protocol is documented in :mod:`gateway.ws`, the REST endpoints in :mod:`gateway.rest`.
"""

from __future__ import annotations

from gateway.app import init_app, start_gateway
from gateway.state import GatewayOptions

__all__ = ["GatewayOptions", "init_app", "start_gateway"]
