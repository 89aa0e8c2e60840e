"""Settings: parsed once from the environment (``ORX_`` prefix), validated, frozen, passed explicitly.

:class:`Settings` is composed of small frozen sections, one per consumer, each with its own ``from_env``
(this package is the only code that reads the ``ORX_*`` variables):

================ ============================= ================================================================
attribute        section                       holds
================ ============================= ================================================================
``common``       :class:`CommonSettings`       listen addresses and peers, metrics endpoints, data dir, logging,
                                               event loop, RPC timeout, message and prompt limits, shutdown
                                               grace, worker processes, and storage (:class:`MongoSettings`)
``selector``     :class:`SelectorSettings`     exploration, history, seed, second opinion
``providers``    :class:`ProvidersSettings`    mode, OpenRouter key and URL, catalogue, simulator, with
                                               :class:`UpstreamTimeouts` and :class:`ResilienceSettings`
``orchestrator`` :class:`OrchestratorSettings` outbox interval, lease TTL, shadow sample rate
``analytics``    :class:`AnalyticsSettings`    nothing yet
``gateway``      :class:`GatewaySettings`      API keys, CORS, rate limit, body/frame limits, hosts, timeouts
``restart``      :class:`RestartPolicy`        how ``orchestratex up`` restarts a service that died
================ ============================= ================================================================

A command parses ``common`` and only the sections it uses (``Settings.from_env(sections=("gateway",))``), so a
bad selector variable cannot stop the gateway; ``orchestratex up`` parses them all. Every error names the
variable, e.g. ``ORX_SELECTOR_LISTEN: expected host:port, got 'x'``. Choices are ``Literal`` types
(:data:`LogLevel`, :data:`LogFormat`, :data:`EventLoop`, :data:`ProviderMode`, :data:`StorageBackend`).
Secrets are wrapped in :class:`Secret` so they never print.

Two checks need the world, not just the environment, and run when a process starts serving rather than
in :meth:`Settings.from_env`: :meth:`CommonSettings.check_data_dir` (the directory can be created and written)
and :meth:`CommonSettings.check_grpc_exposure` (a gRPC service listens beyond loopback only when told to), with
its twin :meth:`CommonSettings.check_metrics_exposure` for the ``/metrics`` endpoints.

The ``OTEL_*`` variables of tracing are not read here: the OpenTelemetry SDK reads them itself, and
:func:`orchestratex.tracing.setup_tracing` only decides from them whether tracing is on.
"""

from __future__ import annotations

from orchestratex.config._sections import (
    DATA_DIR_VAR,
    DEFAULT_PORTS,
    GRPC_EXPOSURE_VAR,
    MAX_UPSTREAM_TIMEOUT,
    METRICS_EXPOSURE_VAR,
    SERVICES,
    WORKER_INDEX_VAR,
    WORKER_SERVICES,
    AnalyticsSettings,
    CommonSettings,
    EventLoop,
    GatewaySettings,
    LogFormat,
    LogLevel,
    ModelLimit,
    MongoSettings,
    OrchestratorSettings,
    ProviderMode,
    ProvidersSettings,
    ResilienceSettings,
    RestartPolicy,
    SelectorSettings,
    StorageBackend,
    UpstreamTimeouts,
    limit_share,
    queue_share,
    same_socket,
)
from orchestratex.config._settings import SECTIONS, Section, SectionNotParsed, Settings
from orchestratex.config._values import Address, Secret, host_name, is_loopback

__all__ = [
    "DATA_DIR_VAR",
    "DEFAULT_PORTS",
    "GRPC_EXPOSURE_VAR",
    "MAX_UPSTREAM_TIMEOUT",
    "METRICS_EXPOSURE_VAR",
    "SECTIONS",
    "SERVICES",
    "WORKER_INDEX_VAR",
    "WORKER_SERVICES",
    "Address",
    "AnalyticsSettings",
    "CommonSettings",
    "EventLoop",
    "GatewaySettings",
    "LogFormat",
    "LogLevel",
    "ModelLimit",
    "MongoSettings",
    "OrchestratorSettings",
    "ProviderMode",
    "ProvidersSettings",
    "ResilienceSettings",
    "RestartPolicy",
    "Secret",
    "Section",
    "SectionNotParsed",
    "SelectorSettings",
    "Settings",
    "StorageBackend",
    "UpstreamTimeouts",
    "host_name",
    "is_loopback",
    "limit_share",
    "queue_share",
    "same_socket",
]
