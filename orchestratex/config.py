"""Settings: parsed once from the environment (``ORX_`` prefix), validated, frozen, passed explicitly.

Every error names the variable, e.g. ``ORX_SELECTOR_LISTEN: expected host:port, got 'x'``.
Secrets are wrapped in :class:`Secret` so they never print.

Two checks need the world, not just the environment, and run when a process starts serving rather than
in :meth:`Settings.from_env`: :meth:`Settings.check_data_dir` (the directory can be created and written)
and :meth:`Settings.check_grpc_exposure` (a gRPC service listens beyond loopback only when told to).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from orchestratex.errors import ConfigError

T = TypeVar("T")

SERVICES = ("selector", "providers", "orchestrator", "analytics")
DEFAULT_PORTS = {"selector": 50051, "providers": 50052, "orchestrator": 50053, "analytics": 50054, "gateway": 8080}
GRPC_EXPOSURE_VAR = "ORX_GRPC_ALLOW_NON_LOOPBACK"
DATA_DIR_VAR = "ORX_DATA_DIR"


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value. Call only where it is sent to the vendor."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Address:
    """A ``host:port`` pair."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def dialable(self) -> str:
        """The address a local client dials: wildcard binds become loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "[::1]"}.get(self.host, self.host)
        return f"{host}:{self.port}"


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


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, read once at start-up."""

    listen: Mapping[str, Address]
    peers: Mapping[str, str]
    data_dir: Path
    log_level: str = "INFO"
    log_format: str = "json"
    event_loop: str = "auto"
    shutdown_grace: float = 10.0
    rpc_timeout: float = 10.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_prompt_chars: int = 200_000
    mongodb_uri: Secret = field(default_factory=lambda: Secret(""))
    mongodb_database: str = "orchestratex"
    mongodb_max_pool_size: int = 100
    mongodb_min_pool_size: int = 0
    mongodb_timeout: float = 5.0
    mongodb_socket_timeout: float = 30.0
    provider_mode: str = "auto"
    openrouter_api_key: Secret = field(default_factory=lambda: Secret(""))
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    catalogue_path: Path | None = None
    sim_profile: Path | None = None
    sim_speed: float = 1.0
    shadow_sample_rate: float | None = None
    outbox_interval: float = 1.0
    orchestrator_lease_ttl: float = 10.0
    history_refresh: float = 5.0
    loop_monitor: Path | None = None
    exploration: float = 1.0
    use_history: bool = True
    selector_seed: int | None = None
    second_opinion: bool = False
    second_opinion_model: str = ""
    second_opinion_below: float = 0.5
    gateway_api_keys: str = ""
    gateway_api_keys_file: Path | None = None
    gateway_cors_origins: tuple[str, ...] = ()
    gateway_rate_limit: float = 120.0
    gateway_max_body_bytes: int = 1024 * 1024
    gateway_max_frame_bytes: int = 1024 * 1024
    gateway_send_queue: int = 1024
    grpc_allow_non_loopback: bool = False
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_on_stdin_eof: bool = False

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

    @property
    def simulated(self) -> bool:
        """True when models are served by the simulator."""
        if self.provider_mode == "simulated":
            return True
        if self.provider_mode == "live":
            return False
        return not self.openrouter_api_key

    @property
    def storage_backend(self) -> str:
        """``mongodb`` when a URI is configured, else the embedded ``sqlite``."""
        return "mongodb" if self.mongodb_uri else "sqlite"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate the environment. Raises :class:`ConfigError` naming the variable."""
        env = os.environ if env is None else env
        r = _Reader(env)
        listen: dict[str, Address] = {}
        peers: dict[str, str] = {}
        for name, port in DEFAULT_PORTS.items():
            var = f"ORX_{name.upper()}_LISTEN"
            listen[name] = r.get(var, f"127.0.0.1:{port}", _parse_address)
            peers[name] = r.get(f"ORX_{name.upper()}_ADDR", listen[name].dialable(), _parse_target)
        key = env.get("OPENROUTER_API_KEY", "").strip()
        key_file = env.get("ORX_OPENROUTER_API_KEY_FILE", "").strip()
        if key_file and not key:
            try:
                key = Path(key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"ORX_OPENROUTER_API_KEY_FILE: cannot read {key_file!r} ({exc.strerror})") from None
        return cls(
            listen=listen,
            peers=peers,
            data_dir=Path(r.get("ORX_DATA_DIR", "./var", str)),
            log_level=r.get("ORX_LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=r.get("ORX_LOG_FORMAT", "json", _choice("json", "text")),
            event_loop=r.get("ORX_EVENT_LOOP", "auto", _choice("auto", "asyncio", "uvloop")),
            shutdown_grace=r.get("ORX_SHUTDOWN_GRACE", "10", _number(0, 600)),
            rpc_timeout=r.get("ORX_RPC_TIMEOUT", "10", _number(0.01, 3600)),
            max_message_bytes=int(r.get("ORX_MAX_MESSAGE_BYTES", str(8 * 1024 * 1024), _number(1024, 1 << 30))),
            max_prompt_chars=int(r.get("ORX_MAX_PROMPT_CHARS", "200000", _number(1, 10_000_000))),
            mongodb_uri=Secret(env.get("ORX_MONGODB_URI", "").strip()),
            mongodb_database=r.get("ORX_MONGODB_DATABASE", "orchestratex", _nonempty),
            mongodb_max_pool_size=int(r.get("ORX_MONGODB_MAX_POOL_SIZE", "100", _number(1, 100_000))),
            mongodb_min_pool_size=int(r.get("ORX_MONGODB_MIN_POOL_SIZE", "0", _number(0, 100_000))),
            mongodb_timeout=r.get("ORX_MONGODB_TIMEOUT", "5", _number(0.01, 600)),
            mongodb_socket_timeout=r.get("ORX_MONGODB_SOCKET_TIMEOUT", "30", _number(0.01, 3600)),
            provider_mode=r.get("ORX_PROVIDER_MODE", "auto", _choice("auto", "simulated", "live")),
            openrouter_api_key=Secret(key),
            openrouter_base_url=r.get("ORX_OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1", _url),
            catalogue_path=r.get("ORX_CATALOGUE", "", _optional_file),
            sim_profile=r.get("ORX_SIM_PROFILE", "", _optional_file),
            sim_speed=r.get("ORX_SIM_SPEED", "1", _number(0.001, 1000)),
            shadow_sample_rate=r.get("ORX_SHADOW_SAMPLE_RATE", "", _optional_number(0, 1)),
            outbox_interval=r.get("ORX_OUTBOX_INTERVAL", "1", _number(0.01, 3600)),
            orchestrator_lease_ttl=r.get("ORX_ORCHESTRATOR_LEASE_TTL", "10", _number(0.5, 3600)),
            history_refresh=r.get("ORX_HISTORY_REFRESH", "5", _number(0.01, 3600)),
            loop_monitor=r.get("ORX_LOOP_MONITOR", "", lambda v: Path(v) if v else None),
            exploration=r.get("ORX_EXPLORATION", "1", _number(0, 10)),
            use_history=r.get("ORX_SELECTOR_HISTORY", "on", _choice("on", "off")) == "on",
            selector_seed=r.get("ORX_SELECTOR_SEED", "", lambda v: int(_number(0, 2**63)(v)) if v else None),
            second_opinion=r.get("ORX_SELECTOR_SECOND_OPINION", "off", _choice("on", "off")) == "on",
            second_opinion_model=r.get("ORX_SELECTOR_SECOND_OPINION_MODEL", "", str),
            second_opinion_below=r.get("ORX_SELECTOR_SECOND_OPINION_BELOW", "0.5", _number(0, 1)),
            gateway_api_keys=env.get("ORX_GATEWAY_API_KEYS", "").strip(),
            gateway_api_keys_file=r.get("ORX_GATEWAY_API_KEYS_FILE", "", _optional_file),
            gateway_cors_origins=r.get("ORX_GATEWAY_CORS_ORIGINS", "", _origins),
            gateway_rate_limit=r.get("ORX_GATEWAY_RATE_LIMIT", "120", _number(0, 1_000_000)),
            gateway_max_body_bytes=int(r.get("ORX_GATEWAY_MAX_BODY_BYTES", str(1024 * 1024), _number(1024, 1 << 30))),
            gateway_max_frame_bytes=int(r.get("ORX_GATEWAY_MAX_FRAME_BYTES", str(1024 * 1024), _number(1024, 1 << 30))),
            gateway_send_queue=int(r.get("ORX_GATEWAY_SEND_QUEUE", "1024", _number(1, 1_000_000))),
            grpc_allow_non_loopback=r.get(GRPC_EXPOSURE_VAR, "0", _flag),
            restart=RestartPolicy(
                delay=r.get("ORX_RESTART_DELAY", "0.5", _number(0, 3600)),
                max_delay=r.get("ORX_RESTART_MAX_DELAY", "30", _number(0, 3600)),
                reset_after=r.get("ORX_RESTART_RESET_AFTER", "30", _number(0, 86400)),
                max_failures=r.get("ORX_RESTART_MAX_FAILURES", "5", _integer(1, 1000)),
                window=r.get("ORX_RESTART_WINDOW", "60", _number(0.001, 86400)),
            ),
            stop_on_stdin_eof=r.get("ORX_STOP_ON_STDIN_EOF", "0", _flag),
        )


def is_loopback(host: str) -> bool:
    """True when binding ``host`` accepts connections from this machine only.

    ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``, bracketed or not) are; wildcards (``0.0.0.0``,
    ``::``), other IPs and other DNS names are not, since they may be reachable from elsewhere.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, var: str, default: str, parse: Callable[[str], T]) -> T:
        raw = self.env.get(var)
        value = default if raw is None or raw.strip() == "" else raw.strip()
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{var}: {exc}") from None


def _parse_address(value: str) -> Address:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be 0-65535, got {number}")
    return Address(host, number)


def _parse_target(value: str) -> str:
    if "://" in value or value.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return value
    _parse_address(value)
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        for option in allowed:
            if value.lower() == option.lower():
                return option
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {number:g}")
        return number

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"expected 1 or 0 (true/false, yes/no, on/off), got {value!r}")


def _optional_number(low: float, high: float) -> Callable[[str], float | None]:
    inner = _number(low, high)
    return lambda value: None if value == "" else inner(value)


def _origins(value: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"expected comma-separated http(s) origins or *, got {origin!r}")
    return origins


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _optional_file(value: str) -> Path | None:
    if value == "":
        return None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"no such file: {value!r}")
    return path
