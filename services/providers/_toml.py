"""Strict, typed reading of TOML configuration tables with error messages that name file and key."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestratex.errors import ConfigError

_MISSING: Any = object()


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse ``path``; any problem becomes a :class:`ConfigError` naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: invalid TOML ({exc})") from None


class Table:
    """A TOML table being read. Every accessor records the key; :meth:`finish` rejects the rest (typos)."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str) -> None:
        self.data = data
        self.where = where
        self.source = source
        self.seen: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError for ``key`` of this table."""
        return ConfigError(f"{self.source}: {self._path(key)}: {problem}")

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def has(self, key: str) -> bool:
        """True when ``key`` is present."""
        return key in self.data

    def names(self) -> list[str]:
        """Keys of this table, in file order."""
        return list(self.data)

    def text(self, key: str, default: Any = _MISSING, *, allow_empty: bool = False) -> str:
        """A string (non-blank unless ``allow_empty``)."""
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def integer(self, key: str, low: int, high: int, default: Any = _MISSING) -> int:
        """An integer in ``[low, high]``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def number(self, key: str, low: float, high: float, default: Any = _MISSING) -> float:
        """A finite number in ``[low, high]`` (integers accepted)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {type(value).__name__}")
        if not math.isfinite(value) or not low <= value <= high:
            raise self.error(key, f"must be between {low:g} and {high:g}, got {value}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        """A boolean."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {type(value).__name__}")
        return value

    def table(self, key: str, *, required: bool = False) -> Table:
        """A sub-table (empty when absent and not required)."""
        value = self._get(key, _MISSING if required else {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {type(value).__name__}")
        return Table(value, self._path(key), self.source)

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, "expected an array of tables")
        return [Table(v, f"{self._path(key)}[{i}]", self.source) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Reject keys nobody read: they are typos or unsupported options."""
        unknown = [k for k in self.data if k not in self.seen]
        if unknown:
            raise self.error(unknown[0], "unknown key")
