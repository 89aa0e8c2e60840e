"""The sections of :class:`~orchestratex.config.Settings`: one small frozen object per consumer, each parsed
from the environment by its own ``from_env`` (the only code that reads ``ORX_*`` variables)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from orchestratex.config import _parse as p
from orchestratex.config._values import Address, Secret, is_loopback
from orchestratex.errors import ConfigError

SERVICES = ("selector", "providers", "orchestrator", "analytics")
"""The gRPC services, in the order of their default ports."""
DEFAULT_PORTS = {"selector": 50051, "providers": 50052, "orchestrator": 50053, "analytics": 50054, "gateway": 8080}
GRPC_EXPOSURE_VAR = "ORX_GRPC_ALLOW_NON_LOOPBACK"
WORKER_SERVICES = ("selector", "providers", "gateway")
"""The stateless services, which may run several worker processes on one port (``ORX_<SERVICE>_WORKERS``)."""
WORKER_INDEX_VAR = "ORX_WORKER_INDEX"
"""Set by a service's parent process on each worker it starts (0, 1, ...); never set by people."""
MAX_WORKERS = 64
METRICS_EXPOSURE_VAR = "ORX_METRICS_ALLOW_NON_LOOPBACK"
DATA_DIR_VAR = "ORX_DATA_DIR"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]
EventLoop = Literal["auto", "asyncio", "uvloop"]
StorageBackend = Literal["sqlite", "mongodb"]
ProviderMode = Literal["auto", "simulated", "live"]


def _default_listen() -> dict[str, Address]:
    return {name: Address("127.0.0.1", port) for name, port in DEFAULT_PORTS.items()}


def _default_peers() -> dict[str, str]:
    return {name: address.dialable() for name, address in _default_listen().items()}


# --------------------------------------------------------------------------------------------- common


@dataclass(frozen=True)
class MongoSettings:
    """MongoDB, which holds the stores instead of the embedded SQLite files when ``uri`` is set."""

    uri: Secret = field(default_factory=lambda: Secret(""))
    """``ORX_MONGODB_URI``, or the content of the file ``ORX_MONGODB_URI_FILE`` (a mounted Secret); empty: SQLite
    under ``data_dir``. A secret, since it may carry credentials."""
    database: str = "orchestratex"
    """``ORX_MONGODB_DATABASE``."""
    max_pool_size: int = 100
    """Connections per process at most (``ORX_MONGODB_MAX_POOL_SIZE``)."""
    min_pool_size: int = 0
    """Connections per process kept open (``ORX_MONGODB_MIN_POOL_SIZE``)."""
    timeout: float = 5.0
    """Seconds for server selection and for connecting (``ORX_MONGODB_TIMEOUT``)."""
    socket_timeout: float = 30.0
    """Seconds a socket read may take (``ORX_MONGODB_SOCKET_TIMEOUT``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MongoSettings:
        """Parse ``ORX_MONGODB_*`` (the URI file is read here); raises :class:`ConfigError` naming the variable,
        never the URI."""
        r = p.Reader(env)
        uri = r.raw("ORX_MONGODB_URI")
        uri_file = r.raw("ORX_MONGODB_URI_FILE")
        if uri and uri_file:
            raise ConfigError("ORX_MONGODB_URI_FILE: set it or ORX_MONGODB_URI, not both")
        if uri_file:
            try:
                uri = Path(uri_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"ORX_MONGODB_URI_FILE: cannot read {uri_file!r} ({exc.strerror})") from None
            except UnicodeDecodeError:
                raise ConfigError(f"ORX_MONGODB_URI_FILE: {uri_file!r} is not UTF-8 text") from None
        return cls(
            uri=Secret(uri),
            database=r.get("ORX_MONGODB_DATABASE", "orchestratex", p.nonempty),
            max_pool_size=r.get("ORX_MONGODB_MAX_POOL_SIZE", "100", p.whole(1, 100_000)),
            min_pool_size=r.get("ORX_MONGODB_MIN_POOL_SIZE", "0", p.whole(0, 100_000)),
            timeout=r.get("ORX_MONGODB_TIMEOUT", "5", p.number(0.01, 600)),
            socket_timeout=r.get("ORX_MONGODB_SOCKET_TIMEOUT", "30", p.number(0.01, 3600)),
        )


@dataclass(frozen=True)
class CommonSettings:
    """What every process reads: where everything listens, logging, the event loop, limits, storage."""

    listen: Mapping[str, Address] = field(default_factory=_default_listen)
    """Where each service (and the gateway) listens (``ORX_<SERVICE>_LISTEN``). The whole suite's map, so every
    process validates every entry."""
    peers: Mapping[str, str] = field(default_factory=_default_peers)
    """Where each service is dialled (``ORX_<SERVICE>_ADDR``; default: its listen address, wildcards as
    loopback)."""
    data_dir: Path = Path("./var")
    """The SQLite files' directory (``ORX_DATA_DIR``), checked by :meth:`check_data_dir` at start."""
    log_level: LogLevel = "INFO"
    """``ORX_LOG_LEVEL``."""
    log_format: LogFormat | None = None
    """``ORX_LOG_FORMAT``; None when unset: a service logs JSON, ``orchestratex up`` text on a terminal."""
    event_loop: EventLoop = "auto"
    """``ORX_EVENT_LOOP``: ``auto`` is uvloop where installed."""
    shutdown_grace: float = 30.0
    """Seconds in-flight work gets to finish after SIGTERM (``ORX_SHUTDOWN_GRACE``, 0-600): RPCs in every service,
    and the orchestrator's running sessions, which it lets finish (refusing new ones) before it stops."""
    rpc_timeout: float = 10.0
    """Default deadline of outbound unary calls, in seconds (``ORX_RPC_TIMEOUT``)."""
    max_message_bytes: int = 8 * 1024 * 1024
    """gRPC message size limit (``ORX_MAX_MESSAGE_BYTES``)."""
    max_prompt_chars: int = 200_000
    """Longest prompt accepted, by every service that takes one (``ORX_MAX_PROMPT_CHARS``)."""
    grpc_allow_non_loopback: bool = False
    """A gRPC service may listen beyond loopback (``ORX_GRPC_ALLOW_NON_LOOPBACK``; see
    :meth:`check_grpc_exposure`)."""
    metrics_listen: Mapping[str, Address | None] = field(default_factory=lambda: dict.fromkeys(DEFAULT_PORTS))
    """Where each service (and the gateway) serves Prometheus ``/metrics`` (``ORX_<SERVICE>_METRICS_LISTEN``,
    ``host:port``); None (unset or empty, the default): no metrics endpoint. Checked by
    :meth:`check_metrics_exposure` at start."""
    metrics_allow_non_loopback: bool = False
    """A metrics endpoint may listen beyond loopback (``ORX_METRICS_ALLOW_NON_LOOPBACK``; see
    :meth:`check_metrics_exposure`)."""
    loop_monitor: Path | None = None
    """Sample this process's event-loop lag and write a summary to this path at shutdown (``ORX_LOOP_MONITOR``)."""
    stop_on_stdin_eof: bool = False
    """Stop when stdin, a pipe, closes (``ORX_STOP_ON_STDIN_EOF``; ``up`` sets it for its children)."""
    workers: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(WORKER_SERVICES, 1))
    """Worker processes of each stateless service, sharing its port with ``SO_REUSEPORT``
    (``ORX_<SERVICE>_WORKERS``, 1-64; the selector, providers and gateway only)."""
    worker_index: int | None = None
    """This process is worker ``worker_index`` of its service (``ORX_WORKER_INDEX``, set by the parent)."""
    mongodb: MongoSettings = field(default_factory=MongoSettings)
    """The MongoDB connection (``ORX_MONGODB_*``)."""

    def workers_of(self, service: str) -> int:
        """How many worker processes ``service`` runs (1 for the stateful orchestrator and analytics)."""
        return self.workers.get(service, 1)

    def reuse_port(self, service: str) -> bool:
        """True when ``service`` shares its port with sibling workers (``SO_REUSEPORT``)."""
        return self.workers_of(service) > 1

    def connections_to(self, peer: str) -> int:
        """How many connections a client opens to ``peer``: 1, or four per worker when it runs several (the
        kernel hands each connection to one worker by a hash, so a few per worker even the split out)."""
        workers = self.workers_of(peer)
        return 1 if workers == 1 else 4 * workers

    @property
    def storage_backend(self) -> StorageBackend:
        """``mongodb`` when a URI is configured, else the embedded ``sqlite``."""
        return "mongodb" if self.mongodb.uri else "sqlite"

    def check_data_dir(self) -> None:
        """Create ``ORX_DATA_DIR`` if missing and prove it writable with a temporary file.

        Raises :class:`ConfigError` with one line naming the variable, the absolute path and the reason,
        e.g. ``ORX_DATA_DIR=/srv/orx: not writable (Read-only file system)``.
        """
        path = self.data_dir.absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"{DATA_DIR_VAR}={path}: not a directory") from None
        except OSError as exc:
            raise ConfigError(f"{DATA_DIR_VAR}={path}: cannot create ({exc.strerror or exc})") from None
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".orx-write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(f"{DATA_DIR_VAR}={path}: not writable ({exc.strerror or exc})") from None

    def check_grpc_exposure(self, service: str) -> None:
        """Refuse a gRPC listen address beyond loopback unless ``ORX_GRPC_ALLOW_NON_LOOPBACK`` is set.

        The services trust the ``x-orx-tenant`` metadata of every call, so whoever reaches their port can
        act as any tenant. Raises :class:`ConfigError` naming the variable and the opt-in.
        """
        host = self.listen[service].host
        if self.grpc_allow_non_loopback or is_loopback(host):
            return
        raise ConfigError(
            f"ORX_{service.upper()}_LISTEN: the {service} service would listen on {host!r}, beyond loopback, "
            f"where anyone who can reach the port can act as any tenant (the services trust x-orx-tenant); "
            f"listen on 127.0.0.1, or set {GRPC_EXPOSURE_VAR}=1 when only the gateway and trusted callers "
            f"can reach it (a private network)"
        )

    def check_metrics_exposure(self, service: str) -> None:
        """Refuse a metrics address beyond loopback unless ``ORX_METRICS_ALLOW_NON_LOOPBACK`` is set.

        The same rule as :meth:`check_grpc_exposure`, with its own opt-in: ``/metrics`` has no authentication
        and tells whoever reaches it the traffic, error rates, models and costs of the deployment. Raises
        :class:`ConfigError` naming the variable and the opt-in.
        """
        address = self.metrics_listen.get(service)
        if address is None or self.metrics_allow_non_loopback or is_loopback(address.host):
            return
        raise ConfigError(
            f"ORX_{service.upper()}_METRICS_LISTEN: the {service} metrics endpoint would listen on "
            f"{address.host!r}, beyond loopback, where anyone who can reach the port reads the deployment's "
            f"traffic, errors and costs (/metrics has no authentication); listen on 127.0.0.1, or set "
            f"{METRICS_EXPOSURE_VAR}=1 when only the Prometheus server can reach it (a private network)"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CommonSettings:
        """Parse the common variables; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        listen: dict[str, Address] = {}
        peers: dict[str, str] = {}
        metrics_listen: dict[str, Address | None] = {}
        for name, port in DEFAULT_PORTS.items():
            listen[name] = r.get(f"ORX_{name.upper()}_LISTEN", f"127.0.0.1:{port}", p.address)
            peers[name] = r.get(f"ORX_{name.upper()}_ADDR", listen[name].dialable(), p.target)
            metrics_listen[name] = r.value(f"ORX_{name.upper()}_METRICS_LISTEN", None, p.address)
        _check_metrics_ports(listen, metrics_listen)
        workers = {
            name: r.get(f"ORX_{name.upper()}_WORKERS", "1", p.integer(1, MAX_WORKERS)) for name in WORKER_SERVICES
        }
        for name in ("orchestrator", "analytics"):
            if r.get(f"ORX_{name.upper()}_WORKERS", "1", p.integer(1, MAX_WORKERS)) != 1:
                raise ConfigError(
                    f"ORX_{name.upper()}_WORKERS: the {name} keeps state per process (run one per database); "
                    f"only the selector, providers and gateway run several workers"
                )
        return cls(
            listen=listen,
            peers=peers,
            data_dir=Path(r.get(DATA_DIR_VAR, "./var", str)),
            log_level=r.get("ORX_LOG_LEVEL", "INFO", p.choice(*get_args(LogLevel))),
            log_format=r.value("ORX_LOG_FORMAT", None, p.choice(*get_args(LogFormat))),
            event_loop=r.get("ORX_EVENT_LOOP", "auto", p.choice(*get_args(EventLoop))),
            shutdown_grace=r.get("ORX_SHUTDOWN_GRACE", "30", p.number(0, 600)),
            rpc_timeout=r.get("ORX_RPC_TIMEOUT", "10", p.number(0.01, 3600)),
            max_message_bytes=r.get("ORX_MAX_MESSAGE_BYTES", str(8 * 1024 * 1024), p.whole(1024, 1 << 30)),
            max_prompt_chars=r.get("ORX_MAX_PROMPT_CHARS", "200000", p.whole(1, 10_000_000)),
            grpc_allow_non_loopback=r.get(GRPC_EXPOSURE_VAR, "0", p.flag),
            metrics_listen=metrics_listen,
            metrics_allow_non_loopback=r.get(METRICS_EXPOSURE_VAR, "0", p.flag),
            loop_monitor=r.get("ORX_LOOP_MONITOR", "", p.optional_path),
            stop_on_stdin_eof=r.get("ORX_STOP_ON_STDIN_EOF", "0", p.flag),
            workers=workers,
            worker_index=r.value(WORKER_INDEX_VAR, None, p.integer(0, MAX_WORKERS - 1)),
            mongodb=MongoSettings.from_env(env),
        )


_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]"})


def same_socket(a: Address, b: Address) -> bool:
    """True when binding ``a`` and ``b`` on one machine clashes: one port (not 0), one host or a wildcard."""
    return a.port == b.port != 0 and (a.host == b.host or bool({a.host, b.host} & _WILDCARDS))


def _check_metrics_ports(listen: Mapping[str, Address], metrics: Mapping[str, Address | None]) -> None:
    """A process's metrics endpoint cannot share its own listen address (the other processes may run
    elsewhere: ``orchestratex up`` checks the whole suite's addresses, which share one machine)."""
    for name, address in metrics.items():
        if address is not None and same_socket(address, listen[name]):
            raise ConfigError(
                f"ORX_{name.upper()}_METRICS_LISTEN: {address} is also ORX_{name.upper()}_LISTEN's address; "
                f"give the metrics endpoint its own port"
            )


# ------------------------------------------------------------------------------------------- selector


@dataclass(frozen=True)
class SelectorSettings:
    """How the selector ranks models and learns from analytics."""

    exploration: float = 1.0
    """Thompson-sampling exploration; 0 ranks greedily on the posterior mean (``ORX_EXPLORATION``)."""
    use_history: bool = True
    """Learn from analytics' measured quality per model and domain (``ORX_SELECTOR_HISTORY``, on/off)."""
    history_refresh: float = 5.0
    """Seconds between history refreshes from analytics (``ORX_HISTORY_REFRESH``)."""
    seed: int | None = None
    """Seed of the exploration RNG, for reproducible runs (``ORX_SELECTOR_SEED``)."""
    second_opinion: bool = False
    """Ask a cheap model for the domain of prompts the classifier is unsure of
    (``ORX_SELECTOR_SECOND_OPINION``, on/off)."""
    second_opinion_model: str = ""
    """The model asked; empty: the cheapest (``ORX_SELECTOR_SECOND_OPINION_MODEL``)."""
    second_opinion_below: float = 0.5
    """Ask only when the primary domain's probability is below this (``ORX_SELECTOR_SECOND_OPINION_BELOW``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SelectorSettings:
        """Parse the selector's variables; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        return cls(
            exploration=r.get("ORX_EXPLORATION", "1", p.number(0, 10)),
            use_history=r.get("ORX_SELECTOR_HISTORY", "on", p.choice("on", "off")) == "on",
            history_refresh=r.get("ORX_HISTORY_REFRESH", "5", p.number(0.01, 3600)),
            seed=r.get("ORX_SELECTOR_SEED", "", p.optional_seed),
            second_opinion=r.get("ORX_SELECTOR_SECOND_OPINION", "off", p.choice("on", "off")) == "on",
            second_opinion_model=r.get("ORX_SELECTOR_SECOND_OPINION_MODEL", "", str),
            second_opinion_below=r.get("ORX_SELECTOR_SECOND_OPINION_BELOW", "0.5", p.number(0, 1)),
        )


# ------------------------------------------------------------------------------------------ providers

MAX_UPSTREAM_TIMEOUT = 86_400.0
"""The longest upstream timeout accepted, in seconds."""


@dataclass(frozen=True)
class UpstreamTimeouts:
    """Timeouts of the providers' calls to model vendors, in seconds (each more than 0, at most a day)."""

    connect: float = 10.0
    """TCP/TLS connect and request write (``ORX_CONNECT_TIMEOUT``)."""
    first_token: float = 120.0
    """From sending the request to the first text or reasoning delta (``ORX_FIRST_TOKEN_TIMEOUT``)."""
    idle: float = 60.0
    """Longest silence between two data events once text has started (``ORX_IDLE_TIMEOUT``)."""
    total: float = 600.0
    """The whole call (``ORX_TOTAL_TIMEOUT``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UpstreamTimeouts:
        """Parse ``ORX_{CONNECT,FIRST_TOKEN,IDLE,TOTAL}_TIMEOUT``; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        seconds = p.seconds_up_to(MAX_UPSTREAM_TIMEOUT)
        defaults = cls()
        return cls(
            connect=r.value("ORX_CONNECT_TIMEOUT", defaults.connect, seconds),
            first_token=r.value("ORX_FIRST_TOKEN_TIMEOUT", defaults.first_token, seconds),
            idle=r.value("ORX_IDLE_TIMEOUT", defaults.idle, seconds),
            total=r.value("ORX_TOTAL_TIMEOUT", defaults.total, seconds),
        )


@dataclass(frozen=True)
class ModelLimit:
    """One model's own client-side limits (an entry of ``ORX_PROVIDER_MODEL_LIMITS``); None keeps the default."""

    rpm: int | None = None
    """Requests per minute."""
    concurrency: int | None = None
    """Requests in flight."""


def _model_limits(raw: str) -> dict[str, ModelLimit]:
    """``id=RPM[/CONCURRENCY],...`` e.g. ``z-ai/glm-4.5=120/8,openai/gpt-oss-120b:free=10,x/y=/2``."""
    limits: dict[str, ModelLimit] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        model_id, sep, spec = item.rpartition("=")
        model_id = model_id.strip()
        if not sep or not model_id:
            raise ValueError(f"expected MODEL=RPM[/CONCURRENCY], got {item!r}")
        rpm_text, _, concurrency_text = spec.partition("/")
        try:
            rpm = int(rpm_text) if rpm_text.strip() else None
            concurrency = int(concurrency_text) if concurrency_text.strip() else None
        except ValueError:
            raise ValueError(f"{model_id}: expected integers in RPM[/CONCURRENCY], got {spec!r}") from None
        if (rpm is None and concurrency is None) or any(v is not None and v < 1 for v in (rpm, concurrency)):
            raise ValueError(f"{model_id}: limits must be integers >= 1, got {spec!r}")
        limits[model_id] = ModelLimit(rpm=rpm, concurrency=concurrency)
    return limits


def limit_share(total: int, parts: int) -> int:
    """One of ``parts`` processes' share of a per-model rate or concurrency limit: ``total // parts``, at least 1.

    Rounded down so the processes together never exceed ``total`` (a vendor's quota, such as the ``:free``
    models' 20 a minute, answers an excess with 429s and long Retry-After windows); below ``parts`` each still
    gets 1, or a model would be unusable, and the sum is then ``parts``."""
    return max(1, total // max(1, parts))


def queue_share(total: int, parts: int) -> int:
    """One of ``parts`` processes' share of a per-model queue: rounded up (0 stays 0, "no queueing"). A queue
    bounds waiting calls, not requests to the vendor, so rounding up costs no quota."""
    return -(-total // max(1, parts))


_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


def _dns_name(value: str) -> str:
    """A DNS name (no port, no scheme), lowercase, without a trailing dot."""
    name = value.strip().lower().removesuffix(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"expected a DNS name without port or scheme (the providers' headless Service, e.g. providers), "
            f"got {value!r}"
        )
    return name


@dataclass(frozen=True)
class ResilienceSettings:
    """Retries, holds, circuit breakers and client-side limits of the providers' calls (``ORX_PROVIDER_*``).

    The providers service turns them into its ``ResilienceConfig`` (``services/providers/resilience``,
    whose module docstring explains each).
    """

    max_attempts: int = 3
    """Attempts per call, the first included; 1 = no retries (``ORX_PROVIDER_MAX_ATTEMPTS``)."""
    backoff_base: float = 0.5
    """Seconds; cap of the jittered wait after the first failure (``ORX_PROVIDER_BACKOFF_BASE``)."""
    backoff_max: float = 8.0
    """Seconds; the backoff cap never grows beyond this (``ORX_PROVIDER_BACKOFF_MAX``)."""
    max_retry_after: float = 30.0
    """Seconds; a longer Retry-After fails the call at once and holds the model (``ORX_PROVIDER_MAX_RETRY_AFTER``)."""
    max_rate_limit_window: float = 3600.0
    """Seconds; the longest vendor window honoured (``ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW``)."""
    auth_cooldown: float = 60.0
    """Seconds a provider is held after it rejected the key; 0 never (``ORX_PROVIDER_AUTH_COOLDOWN``)."""
    breaker_threshold: int = 5
    """Consecutive counted failures that open a model's circuit (``ORX_PROVIDER_BREAKER_THRESHOLD``)."""
    breaker_cooldown: float = 30.0
    """Seconds open after the first trip, doubled per trip in a row (``ORX_PROVIDER_BREAKER_COOLDOWN``)."""
    breaker_max_cooldown: float = 300.0
    """Seconds; cap of the growing cooldown, at least ``breaker_cooldown`` (``ORX_PROVIDER_BREAKER_MAX_COOLDOWN``;
    unset: 300, or ``breaker_cooldown`` when that is longer)."""
    rpm: int = 3000
    """Requests per minute per model (``ORX_PROVIDER_RPM``): a guard against runaway fan-out, not a vendor quota
    (OpenRouter limits only ``:free`` ids by rate); sized so 128 sessions kept busy never reach it."""
    free_rpm: int = 20
    """Requests per minute for ``:free`` model ids (``ORX_PROVIDER_FREE_RPM``)."""
    concurrency: int = 256
    """Requests in flight per model (``ORX_PROVIDER_CONCURRENCY``): 128 concurrent sessions put up to ~200 calls
    on one model (docs/benchmarks.md)."""
    queue: int = 256
    """Calls that may wait for a slot per model; 0 = no queueing (``ORX_PROVIDER_QUEUE``)."""
    queue_wait: float = 30.0
    """Seconds a call may wait for a slot, never past its deadline (``ORX_PROVIDER_QUEUE_WAIT``)."""
    model_limits: Mapping[str, ModelLimit] = field(default_factory=dict)
    """Per-model limits by model id (``ORX_PROVIDER_MODEL_LIMITS``: ``ID=RPM[/CONCURRENCY]``, comma-separated)."""
    peers: str = ""
    """A DNS name with one address per providers pod that shares the limits above (``ORX_PROVIDER_PEERS``; in
    Kubernetes the providers' headless Service). Each pod then enforces its share, re-counting the addresses
    every ``peers_interval`` seconds; empty: this pod enforces the whole limits."""
    peers_interval: float = 10.0
    """Seconds between two counts of ``peers`` (``ORX_PROVIDER_PEERS_INTERVAL``, 1-3600)."""

    def per_worker(self, workers: int) -> ResilienceSettings:
        """The limits one of ``workers`` processes enforces: each rate and concurrency divided by ``workers``
        (:func:`limit_share`, rounded down, at least 1; the queue by :func:`queue_share`, rounded up), so the
        workers together stay within the configured per-model totals. Breakers and holds are not shared: each
        worker learns them itself. The providers service divides these again by its peers at run time."""
        if workers <= 1:
            return self

        def share(value: int) -> int:
            return limit_share(value, workers)

        return replace(
            self,
            rpm=share(self.rpm),
            free_rpm=share(self.free_rpm),
            concurrency=share(self.concurrency),
            queue=queue_share(self.queue, workers),
            model_limits={
                model: ModelLimit(
                    rpm=None if limit.rpm is None else share(limit.rpm),
                    concurrency=None if limit.concurrency is None else share(limit.concurrency),
                )
                for model, limit in self.model_limits.items()
            },
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ResilienceSettings:
        """Parse ``ORX_PROVIDER_*``; unset or blank variables keep the defaults. Raises :class:`ConfigError`
        naming the variable."""
        r = p.Reader(env)
        d = cls()
        cooldown = r.value("ORX_PROVIDER_BREAKER_COOLDOWN", d.breaker_cooldown, p.bounded(float, 0.0, 3600.0))
        max_cooldown = r.value(
            "ORX_PROVIDER_BREAKER_MAX_COOLDOWN",
            max(d.breaker_max_cooldown, cooldown),
            p.bounded(float, 0.0, 86400.0),
        )
        if max_cooldown < cooldown:
            raise ConfigError(
                f"ORX_PROVIDER_BREAKER_MAX_COOLDOWN: must be >= ORX_PROVIDER_BREAKER_COOLDOWN ({cooldown:g}), "
                f"got {max_cooldown:g}"
            )
        return cls(
            max_attempts=r.value("ORX_PROVIDER_MAX_ATTEMPTS", d.max_attempts, p.bounded(int, 1, 20)),
            backoff_base=r.value("ORX_PROVIDER_BACKOFF_BASE", d.backoff_base, p.bounded(float, 0.0, 60.0)),
            backoff_max=r.value("ORX_PROVIDER_BACKOFF_MAX", d.backoff_max, p.bounded(float, 0.0, 600.0)),
            max_retry_after=r.value("ORX_PROVIDER_MAX_RETRY_AFTER", d.max_retry_after, p.bounded(float, 0.0, 3600.0)),
            max_rate_limit_window=r.value(
                "ORX_PROVIDER_MAX_RATE_LIMIT_WINDOW", d.max_rate_limit_window, p.bounded(float, 0.0, 86400.0)
            ),
            auth_cooldown=r.value("ORX_PROVIDER_AUTH_COOLDOWN", d.auth_cooldown, p.bounded(float, 0.0, 86400.0)),
            breaker_threshold=r.value("ORX_PROVIDER_BREAKER_THRESHOLD", d.breaker_threshold, p.bounded(int, 1, 1000)),
            breaker_cooldown=cooldown,
            breaker_max_cooldown=max_cooldown,
            rpm=r.value("ORX_PROVIDER_RPM", d.rpm, p.bounded(int, 1, 1_000_000)),
            free_rpm=r.value("ORX_PROVIDER_FREE_RPM", d.free_rpm, p.bounded(int, 1, 1_000_000)),
            concurrency=r.value("ORX_PROVIDER_CONCURRENCY", d.concurrency, p.bounded(int, 1, 100_000)),
            queue=r.value("ORX_PROVIDER_QUEUE", d.queue, p.bounded(int, 0, 100_000)),
            queue_wait=r.value("ORX_PROVIDER_QUEUE_WAIT", d.queue_wait, p.bounded(float, 0.0, 3600.0)),
            model_limits=r.value("ORX_PROVIDER_MODEL_LIMITS", {}, _model_limits),
            peers=r.value("ORX_PROVIDER_PEERS", "", _dns_name),
            peers_interval=r.value("ORX_PROVIDER_PEERS_INTERVAL", d.peers_interval, p.bounded(float, 1.0, 3600.0)),
        )


@dataclass(frozen=True)
class ProvidersSettings:
    """Which models the providers service serves and how it calls their vendors."""

    mode: ProviderMode = "auto"
    """``ORX_PROVIDER_MODE``: ``auto`` is simulated when no OpenRouter key is configured."""
    openrouter_api_key: Secret = field(default_factory=lambda: Secret(""))
    """``OPENROUTER_API_KEY``, or the content of the file ``ORX_OPENROUTER_API_KEY_FILE``."""
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    """Any OpenAI-compatible endpoint (``ORX_OPENROUTER_BASE_URL``)."""
    catalogue_path: Path | None = None
    """A model catalogue TOML; None: the packaged one (``ORX_CATALOGUE``)."""
    sim_profile: Path | None = None
    """A simulator profile TOML; None: the packaged one (``ORX_SIM_PROFILE``)."""
    sim_answer_key: Path | None = None
    """A JSONL answer key of checkable benchmark items, so simulated answers can be right or wrong; a
    simulation hook for ``orchestratex eval``, never applied to real providers (``ORX_SIM_ANSWER_KEY``)."""
    sim_speed: float = 1.0
    """Speeds simulated latency up (``ORX_SIM_SPEED``)."""
    app_url: str = ""
    """Sent as ``HTTP-Referer`` for OpenRouter's app attribution when set (``ORX_APP_URL``)."""
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    """Timeouts of upstream calls (``ORX_*_TIMEOUT``)."""
    stream_flush: float = 0.02
    """Seconds ``StreamGenerate`` may hold text deltas to send them as one message; the first delta is never
    held (``ORX_PROVIDER_STREAM_FLUSH_MS``, in milliseconds; 0: each delta as soon as the writer is free)."""
    stream_flush_chars: int = 4096
    """A held batch of deltas this long goes out at once (``ORX_PROVIDER_STREAM_FLUSH_CHARS``)."""
    resilience: ResilienceSettings = field(default_factory=ResilienceSettings)
    """Retries, holds, breakers and limits (``ORX_PROVIDER_*``)."""

    @property
    def simulated(self) -> bool:
        """True when models are served by the simulator."""
        if self.mode == "simulated":
            return True
        if self.mode == "live":
            return False
        return not self.openrouter_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProvidersSettings:
        """Parse the providers' variables (the key file is read here); raises :class:`ConfigError` naming the
        variable."""
        r = p.Reader(env)
        key = r.raw("OPENROUTER_API_KEY")
        key_file = r.raw("ORX_OPENROUTER_API_KEY_FILE")
        if key_file and not key:
            try:
                key = Path(key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"ORX_OPENROUTER_API_KEY_FILE: cannot read {key_file!r} ({exc.strerror})") from None
        return cls(
            mode=r.get("ORX_PROVIDER_MODE", "auto", p.choice(*get_args(ProviderMode))),
            openrouter_api_key=Secret(key),
            openrouter_base_url=r.get("ORX_OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1", p.url),
            catalogue_path=r.get("ORX_CATALOGUE", "", p.optional_file),
            sim_profile=r.get("ORX_SIM_PROFILE", "", p.optional_file),
            sim_answer_key=r.get("ORX_SIM_ANSWER_KEY", "", p.optional_file),
            sim_speed=r.get("ORX_SIM_SPEED", "1", p.number(0.001, 1000)),
            app_url=r.value("ORX_APP_URL", "", p.http_url),
            timeouts=UpstreamTimeouts.from_env(env),
            stream_flush=r.get("ORX_PROVIDER_STREAM_FLUSH_MS", "20", p.number(0, 1000)) / 1000,
            stream_flush_chars=r.get("ORX_PROVIDER_STREAM_FLUSH_CHARS", "4096", p.integer(1, 1 << 20)),
            resilience=ResilienceSettings.from_env(env),
        )


# --------------------------------------------------------------------------------------- orchestrator


@dataclass(frozen=True)
class OrchestratorSettings:
    """The orchestrator's delivery to analytics, its lease on the session store, and shadow sampling."""

    outbox_interval: float = 1.0
    """Seconds between outbox deliveries to analytics; a session's end triggers one at once
    (``ORX_OUTBOX_INTERVAL``)."""
    lease_ttl: float = 10.0
    """Seconds the orchestrator's lease on its store lives unrenewed (``ORX_ORCHESTRATOR_LEASE_TTL``)."""
    change_feed: bool = True
    """Whether followers of other replicas' sessions are woken by the store's change feed where it has one
    (MongoDB change streams on a replica set) rather than polling (``ORX_ORCHESTRATOR_CHANGE_FEED``)."""
    shadow_sample_rate: float | None = None
    """Share of sessions whose runner-up models also answer round 1 (``ORX_SHADOW_SAMPLE_RATE``); None: 0.25
    with simulated models, 0 with live ones."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OrchestratorSettings:
        """Parse the orchestrator's variables; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        return cls(
            outbox_interval=r.get("ORX_OUTBOX_INTERVAL", "1", p.number(0.01, 3600)),
            lease_ttl=r.get("ORX_ORCHESTRATOR_LEASE_TTL", "10", p.number(0.5, 3600)),
            change_feed=r.get("ORX_ORCHESTRATOR_CHANGE_FEED", "on", p.flag),
            shadow_sample_rate=r.get("ORX_SHADOW_SAMPLE_RATE", "", p.optional_number(0, 1)),
        )


# ------------------------------------------------------------------------------------------ analytics


@dataclass(frozen=True)
class AnalyticsSettings:
    """The analytics service's own settings: none yet (it reads only the common section: its address and the
    store). The section exists so that the service has one place for them."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AnalyticsSettings:
        """Nothing to parse."""
        return cls()


# -------------------------------------------------------------------------------------------- gateway

MIB = 1024 * 1024


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's authentication, limits and connection handling (``ORX_GATEWAY_*``)."""

    api_keys: str = ""
    """``tenant:sha256:<hex>`` entries, comma-separated (``ORX_GATEWAY_API_KEYS``); the gateway parses them into
    its key ring at start."""
    api_keys_file: Path | None = None
    """A file of such entries, one per line (``ORX_GATEWAY_API_KEYS_FILE``)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser; empty: same origin only (``ORX_GATEWAY_CORS_ORIGINS``)."""
    rate_limit: float = 120.0
    """Requests (and WebSocket messages) per minute per key; 0 turns it off (``ORX_GATEWAY_RATE_LIMIT``)."""
    max_body_bytes: int = MIB
    """Largest REST request body; larger ones get 413 (``ORX_GATEWAY_MAX_BODY_BYTES``)."""
    max_frame_bytes: int = MIB
    """Largest WebSocket message; larger ones close the socket with 1009 (``ORX_GATEWAY_MAX_FRAME_BYTES``)."""
    send_queue: int = 1024
    """Events queued per socket; a slower client is closed with 1008 (``ORX_GATEWAY_SEND_QUEUE``)."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` names answered besides the loopback ones, lowercase, no port (``ORX_GATEWAY_ALLOWED_HOSTS``)."""
    header_timeout: float = 15.0
    """Seconds to receive a request's head; also the keep-alive idle limit (``ORX_GATEWAY_HEADER_TIMEOUT``)."""
    body_timeout: float = 30.0
    """Seconds to receive a request's body; 408 beyond (``ORX_GATEWAY_BODY_TIMEOUT``)."""
    max_unauthenticated_connections: int = 64
    """Open connections per client address before any of their requests authenticated; 0 = no limit
    (``ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS``)."""
    metrics_tenants: int = 0
    """How many tenants get their own label in the gateway's tenant metric, the rest counted as ``other``;
    0 = no tenant in any metric (``ORX_GATEWAY_METRICS_TENANTS``, at most 1000)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        """Parse the gateway's variables; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        return cls(
            api_keys=r.raw("ORX_GATEWAY_API_KEYS"),
            api_keys_file=r.get("ORX_GATEWAY_API_KEYS_FILE", "", p.optional_file),
            cors_origins=r.get("ORX_GATEWAY_CORS_ORIGINS", "", p.origins),
            rate_limit=r.get("ORX_GATEWAY_RATE_LIMIT", "120", p.number(0, 1_000_000)),
            max_body_bytes=r.get("ORX_GATEWAY_MAX_BODY_BYTES", str(MIB), p.whole(1024, 1 << 30)),
            max_frame_bytes=r.get("ORX_GATEWAY_MAX_FRAME_BYTES", str(MIB), p.whole(1024, 1 << 30)),
            send_queue=r.get("ORX_GATEWAY_SEND_QUEUE", "1024", p.whole(1, 1_000_000)),
            allowed_hosts=r.get("ORX_GATEWAY_ALLOWED_HOSTS", "", p.host_names),
            header_timeout=r.value("ORX_GATEWAY_HEADER_TIMEOUT", 15.0, p.seconds_between(0.01, 3600)),
            body_timeout=r.value("ORX_GATEWAY_BODY_TIMEOUT", 30.0, p.seconds_between(0.01, 3600)),
            max_unauthenticated_connections=r.value(
                "ORX_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS", 64, p.count_or_unlimited(1_000_000)
            ),
            metrics_tenants=r.get("ORX_GATEWAY_METRICS_TENANTS", "0", p.integer(0, 1000)),
        )


# -------------------------------------------------------------------------------------------- restart


@dataclass(frozen=True)
class RestartPolicy:
    """How ``orchestratex up`` restarts a service whose process died (``ORX_RESTART_*``)."""

    delay: float = 0.5
    """Seconds before the first restart; each further restart waits twice as long (``ORX_RESTART_DELAY``)."""
    max_delay: float = 30.0
    """The longest wait between restarts (``ORX_RESTART_MAX_DELAY``)."""
    reset_after: float = 30.0
    """A process that ran at least this many seconds starts the backoff again at ``delay``
    (``ORX_RESTART_RESET_AFTER``)."""
    max_failures: int = 5
    """Give up, and stop the whole suite, when one service has died this many times within ``window``
    seconds (``ORX_RESTART_MAX_FAILURES``)."""
    window: float = 60.0
    """The span, in seconds, over which ``max_failures`` is counted (``ORX_RESTART_WINDOW``)."""

    def backoff(self, restarts: int) -> float:
        """The wait before restart number ``restarts + 1`` since the last run that lasted."""
        return min(self.delay * 2.0 ** min(restarts, 64), self.max_delay)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RestartPolicy:
        """Parse ``ORX_RESTART_*``; raises :class:`ConfigError` naming the variable."""
        r = p.Reader(env)
        return cls(
            delay=r.get("ORX_RESTART_DELAY", "0.5", p.number(0, 3600)),
            max_delay=r.get("ORX_RESTART_MAX_DELAY", "30", p.number(0, 3600)),
            reset_after=r.get("ORX_RESTART_RESET_AFTER", "30", p.number(0, 86400)),
            max_failures=r.get("ORX_RESTART_MAX_FAILURES", "5", p.integer(1, 1000)),
            window=r.get("ORX_RESTART_WINDOW", "60", p.number(0.001, 86400)),
        )
