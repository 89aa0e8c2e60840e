"""Value types of the settings (:class:`Secret`, :class:`Address`) and the predicates on host names."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final


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


# A Host header value: a DNS name or IPv4 address, or a bracketed IPv6 address; an optional port.
_HOST_RE: Final = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]{0,252}))(?::([0-9]{1,5}))?", re.ASCII)


def host_name(value: str) -> str | None:
    """The host name of a ``Host`` header value (``Example.com:8080`` -> ``example.com``, ``[::1]:80`` ->
    ``::1``), without a trailing dot; None when it is not a plausible host."""
    match = _HOST_RE.fullmatch(value.strip().lower())
    if match is None:
        return None
    name = match.group(1)
    if name.startswith("["):
        name = name[1:-1]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    name = name.rstrip(".")
    return name or None
