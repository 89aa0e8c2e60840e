"""Reading variables and parsing their values: every parser raises ``ValueError`` with the problem, and
:class:`Reader` turns it into a :class:`ConfigError` that starts with the variable's name."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from orchestratex.config._values import Address, host_name
from orchestratex.errors import ConfigError

T = TypeVar("T")
N = TypeVar("N", int, float)
S = TypeVar("S", bound=str)


class Reader:
    """The variables of one environment; a blank variable counts as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, var: str) -> str:
        """The stripped text of ``var`` ("" when unset), unparsed."""
        return self.env.get(var, "").strip()

    def get(self, var: str, default: str, parse: Callable[[str], T]) -> T:
        """``parse`` of the value of ``var``, or of ``default`` when unset."""
        value = self.raw(var) or default
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{var}: {exc}") from None

    def value(self, var: str, default: T, parse: Callable[[str], T]) -> T:
        """``parse`` of the value of ``var``, or ``default`` itself when unset."""
        value = self.raw(var)
        if not value:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{var}: {exc}") from None


def address(value: str) -> Address:
    """``host:port``."""
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


def target(value: str) -> str:
    """A gRPC target: ``host:port`` or a URI-style target (``dns:``, ``unix:``, ``ipv4:``...)."""
    if "://" in value or value.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return value
    address(value)
    return value


def choice(*allowed: S) -> Callable[[str], S]:
    """One of ``allowed``, case-insensitive, returned as spelt in ``allowed`` (``choice(*get_args(SomeLiteral))``)."""

    def parse(value: str) -> S:
        for option in allowed:
            if value.lower() == option.lower():
                return option
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")

    return parse


def number(low: float, high: float) -> Callable[[str], float]:
    """A number from ``low`` to ``high``."""

    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if not low <= result <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {result:g}")
        return result

    return parse


def whole(low: float, high: float) -> Callable[[str], int]:
    """A number from ``low`` to ``high`` (written as a number, ``1e6`` included), truncated to an int."""
    inner = number(low, high)
    return lambda value: int(inner(value))


def integer(low: int, high: int) -> Callable[[str], int]:
    """An integer written as one, from ``low`` to ``high``."""

    def parse(value: str) -> int:
        try:
            result = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not low <= result <= high:
            raise ValueError(f"must be between {low} and {high}, got {result}")
        return result

    return parse


def bounded(kind: Callable[[str], N], low: N, high: N) -> Callable[[str], N]:
    """A finite ``kind`` (int or float) from ``low`` to ``high``; the wording of the providers' variables."""

    def parse(raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ValueError(f"expected {noun}, got {raw!r}") from None
        if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {raw!r}")
        return value

    return parse


def seconds_up_to(high: float) -> Callable[[str], float]:
    """More than 0 and at most ``high`` seconds (the upstream timeouts)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw!r}") from None
        if not (math.isfinite(value) and 0 < value <= high):
            raise ValueError(f"must be more than 0 and at most {high:g} seconds, got {raw!r}")
        return value

    return parse


def seconds_between(low: float, high: float) -> Callable[[str], float]:
    """From ``low`` to ``high`` seconds; the value is quoted cut to 40 characters (the gateway's variables)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {raw[:40]!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"must be between {low:g} and {high:g} seconds, got {raw[:40]!r}")
        return value

    return parse


def count_or_unlimited(high: int) -> Callable[[str], int]:
    """A whole number from 0 (no limit) to ``high``, digits only."""

    def parse(raw: str) -> int:
        if not raw.isascii() or not raw.isdigit() or int(raw) > high:
            raise ValueError(f"expected a whole number from 0 (no limit) to {high}, got {raw[:40]!r}")
        return int(raw)

    return parse


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag(value: str) -> bool:
    """1/0, true/false, yes/no or on/off."""
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"expected 1 or 0 (true/false, yes/no, on/off), got {value!r}")


def optional_number(low: float, high: float) -> Callable[[str], float | None]:
    """:func:`number`, or None for the empty string."""
    inner = number(low, high)
    return lambda value: None if value == "" else inner(value)


def origins(value: str) -> tuple[str, ...]:
    """Comma-separated http(s) origins or ``*``, without a trailing slash."""
    result = tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    for origin in result:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"expected comma-separated http(s) origins or *, got {origin!r}")
    return result


def host_names(text: str) -> tuple[str, ...]:
    """Comma-separated host names (a port, if given, is ignored), lowercase, without duplicates."""
    names: list[str] = []
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        name = host_name(item)
        if name is None:
            raise ValueError(
                f"entry {position} ({item[:60]!r}) is not a host name such as orx.example.com"
                " or orx.example.com:8080 (wildcards are not supported)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def nonempty(value: str) -> str:
    """Any text but the empty string."""
    if not value:
        raise ValueError("must not be empty")
    return value


def url(value: str) -> str:
    """An http(s) URL, without a trailing slash."""
    return http_url(value).rstrip("/")


def http_url(value: str) -> str:
    """An http(s) URL, as written."""
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value


def optional_file(value: str) -> Path | None:
    """The path of an existing file, or None for the empty string."""
    if value == "":
        return None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"no such file: {value!r}")
    return path


def optional_path(value: str) -> Path | None:
    """A path (that need not exist yet), or None for the empty string."""
    return Path(value) if value else None


def optional_seed(value: str) -> int | None:
    """A whole number from 0 to 2**63, or None for the empty string."""
    return int(number(0, 2**63)(value)) if value else None
