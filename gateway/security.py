"""API keys, tenants, origins (CORS) and rate limits.

Keys
    Configured as SHA-256 hashes, never in clear: ``ORX_GATEWAY_API_KEYS`` holds comma-separated
    ``tenant:sha256:<64 hex>`` entries (the ``sha256:`` prefix is optional), and/or
    ``ORX_GATEWAY_API_KEYS_FILE`` names a file with one entry per line (``#`` starts a comment).
    ``python -m gateway hash-key`` reads a key on stdin and prints its hash; ``python -m gateway new-key``
    makes a random key. Several keys may name the same tenant (rotation). A presented key is hashed and
    compared with every configured hash in constant time.

Tenants
    Each key is a tenant. The gateway sets :data:`orchestratex.context.tenant` for the request, which
    the outbound channel interceptor sends as ``x-orx-tenant``; the services scope every read and write to
    it. Without keys (allowed only on loopback) requests run as the default tenant ``""``.

Exposure
    :func:`check_exposure` refuses to serve beyond loopback without keys.

Host names (DNS rebinding)
    Without keys, a web page whose DNS name was re-pointed at 127.0.0.1 would otherwise reach the gateway as
    "same origin". :class:`HostPolicy` answers only requests whose ``Host`` is a loopback name (``localhost``,
    127.0.0.0/8, ``[::1]``, any port) or a name in ``ORX_GATEWAY_ALLOWED_HOSTS``; others get 421. With keys,
    the ``Host`` is checked only when ``ORX_GATEWAY_ALLOWED_HOSTS`` is set: a rebound page has no key.

Rate limits
    A token bucket per key (per client address when there are no keys): ``ORX_GATEWAY_RATE_LIMIT``
    requests per minute, bursts of up to that many. REST requests, WebSocket upgrades and every WebSocket
    client message cost one token each.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from orchestratex.config import Settings, host_name, is_loopback
from orchestratex.errors import ConfigError

DEFAULT_TENANT: Final = ""
KEYS_VAR: Final = "ORX_GATEWAY_API_KEYS"
KEYS_FILE_VAR: Final = "ORX_GATEWAY_API_KEYS_FILE"
LISTEN_VAR: Final = "ORX_GATEWAY_LISTEN"
_TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
# Presented keys longer than this are refused before hashing (no work amplification).
MAX_KEY_CHARS: Final = 512
_MAX_BUCKETS: Final = 100_000


def hash_key(key: str) -> str:
    """The configuration form of ``key``'s hash: ``sha256:<64 lowercase hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyEntry:
    """One configured key: its tenant and the SHA-256 digest of the key."""

    tenant: str
    digest: bytes


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and the id its rate limit is counted under."""

    tenant: str
    bucket: str


class KeyRing:
    """The configured keys. Empty means authentication is off (loopback only)."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self._entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants that have at least one key."""
        return frozenset(e.tenant for e in self._entries)

    def authenticate(self, key: str) -> Principal | None:
        """The principal ``key`` belongs to, or None. Every entry is compared, in constant time each."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: KeyEntry | None = None
        for entry in self._entries:
            # No early exit: the time taken does not depend on which entry (if any) matches.
            if hmac.compare_digest(entry.digest, digest) and found is None:
                found = entry
        if found is None:
            return None
        # The bucket id is derived from the hash, so the key itself is never kept or logged.
        return Principal(tenant=found.tenant, bucket="key:" + digest.hex()[:16])


def parse_key_entries(text: str, source: str, *, by_lines: bool) -> list[KeyEntry]:
    """Parse ``tenant:[sha256:]hex`` entries (comma-separated, or one per line with ``#`` comments).

    Raises :class:`ConfigError` naming ``source`` and the entry's position, never echoing the value
    (a pasted raw key must not end up in logs).
    """
    if by_lines:
        items = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    else:
        items = [part.strip() for part in text.split(",")]
    entries: list[KeyEntry] = []
    for number, item in enumerate(items, start=1):
        if not item:
            continue
        where = f"{source}: {'line' if by_lines else 'entry'} {number}"
        tenant, sep, rest = item.partition(":")
        if not sep:
            raise ConfigError(f"{where}: expected tenant:sha256:<64 hex digits>")
        if not _TENANT_RE.match(tenant):
            raise ConfigError(
                f"{where}: the tenant must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        hex_digest = rest.removeprefix("sha256:")
        if not _HEX_RE.match(hex_digest):
            raise ConfigError(
                f"{where}: expected a SHA-256 hash (64 hex digits) after '{tenant}:'; keys are configured as hashes"
                " (make one with: python -m gateway hash-key)"
            )
        entries.append(KeyEntry(tenant, bytes.fromhex(hex_digest)))
    return entries


def load_keyring(settings: Settings) -> KeyRing:
    """The keys from ``ORX_GATEWAY_API_KEYS`` and ``ORX_GATEWAY_API_KEYS_FILE``."""
    entries = parse_key_entries(settings.gateway.api_keys, KEYS_VAR, by_lines=False)
    path: Path | None = settings.gateway.api_keys_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{KEYS_FILE_VAR}: cannot read {str(path)!r} ({type(exc).__name__})") from None
        entries += parse_key_entries(text, f"{KEYS_FILE_VAR} ({path.name})", by_lines=True)
    return KeyRing(entries)


def check_exposure(host: str, keys: KeyRing) -> None:
    """Refuse to serve beyond loopback without API keys (raises :class:`ConfigError`)."""
    if keys or is_loopback(host):
        return
    raise ConfigError(
        f"{LISTEN_VAR}: the gateway would listen on {host!r}, beyond loopback, without API keys; "
        f"configure keys with {KEYS_VAR} or {KEYS_FILE_VAR} (tenant:sha256:<hash>, see python -m gateway hash-key), "
        f"or listen on 127.0.0.1"
    )


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class HostPolicy:
    """Which ``Host`` header values the gateway answers (see the module docstring)."""

    def __init__(self, allowed: Iterable[str], *, keys_configured: bool) -> None:
        #: Configured names besides the loopback ones (lowercase, no port).
        self.allowed = frozenset(allowed)
        #: False when every Host is answered (keys configured and no list).
        self.enforced = not keys_configured or bool(self.allowed)

    def permits(self, host: str | None) -> bool:
        """True when a request with this ``Host`` header value (None: no header) may be answered."""
        if not self.enforced or host is None:
            # No Host at all is not a browser (every browser sends it), so it cannot be a rebound page.
            return True
        name = host_name(host)
        return name is not None and (is_loopback(name) or name in self.allowed)


class OriginPolicy:
    """Which browser origins may call the API cross-origin (``ORX_GATEWAY_CORS_ORIGINS``)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        origins = tuple(o.rstrip("/").lower() for o in allowed)
        self.any = "*" in origins
        self.allowed = frozenset(o for o in origins if o != "*")

    def is_cross_origin_allowed(self, origin: str) -> bool:
        """True when a page from ``origin`` may call the API."""
        return self.any or origin.rstrip("/").lower() in self.allowed

    @staticmethod
    def is_same_origin(origin: str, host: str) -> bool:
        """True when ``origin`` names the host the request was sent to (scheme aside: proxies end TLS)."""
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == host.lower()

    def permits(self, origin: str | None, host: str) -> bool:
        """True when a request with this ``Origin`` header (None: not from a browser page) may proceed."""
        if origin is None:
            return True
        return self.is_same_origin(origin, host) or self.is_cross_origin_allowed(origin)


class RateLimiter:
    """Token buckets: ``per_minute`` tokens per minute, holding at most ``burst`` tokens. 0 disables it."""

    def __init__(self, per_minute: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, burst if burst is not None else per_minute)
        self._clock = clock
        # bucket id -> (tokens, last refill time); least recently used first, so the oldest are pruned.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the limit is 0 (off)."""
        return self.rate > 0

    def acquire(self, bucket: str, cost: float = 1.0) -> int:
        """Take ``cost`` tokens: 0 when allowed, else the whole seconds (>= 1) to wait before retrying."""
        if not self.enabled:
            return 0
        now = self._clock()
        tokens, last = self._buckets.pop(bucket, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._store(bucket, tokens - cost, now)
            return 0
        self._store(bucket, tokens, now)
        return max(1, math.ceil((cost - tokens) / self.rate))

    def _store(self, bucket: str, tokens: float, now: float) -> None:
        self._buckets[bucket] = (tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            # Forget the least recently used bucket; it was refilled long ago anyway.
            self._buckets.popitem(last=False)


@dataclass(frozen=True)
class Security:
    """Everything the middleware and the WebSocket handler need to admit a request."""

    keys: KeyRing
    origins: OriginPolicy
    limiter: RateLimiter
    hosts: HostPolicy

    @classmethod
    def from_settings(cls, settings: Settings, allowed_hosts: Iterable[str] = ()) -> Security:
        """Load keys (hashes), origins and the rate limit from the settings; ``allowed_hosts`` are the
        ``ORX_GATEWAY_ALLOWED_HOSTS`` names."""
        keys = load_keyring(settings)
        return cls(
            keys=keys,
            origins=OriginPolicy(settings.gateway.cors_origins),
            limiter=RateLimiter(settings.gateway.rate_limit),
            hosts=HostPolicy(allowed_hosts, keys_configured=bool(keys)),
        )

    @property
    def auth_required(self) -> bool:
        """True when requests must present a key."""
        return bool(self.keys)
